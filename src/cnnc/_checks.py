"""Argument checks shared by both kernel implementations.

The compiled kernels index raw memory with bounds checking off, so every call is
checked here first: a wrong shape, dtype or index must be a Python exception, never a
crash. The NumPy kernels run the same checks, so both backends fail the same way.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import NamedTuple

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LARGEST = 2**31 - 1  # no size, stride or padding of a real network comes near it
_INT64_MAX = 2**63 - 1  # Adam's step: a count of updates, never near it


def float_array(name, a, ndim=None, dtype=None):
    """a as a C-contiguous float32/float64 array (of ndim dimensions if given), copied only if needed."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise ValueError(f"{name} is {a.dtype} but the other operands are {dtype}")
    return np.ascontiguousarray(a)


def in_place(name, a, like=None):
    """a as an array the kernel updates in place: float, C-contiguous, writeable, like `like`."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got {a.dtype}")
    if like is not None and (a.dtype, a.shape) != (like.dtype, like.shape):
        raise ValueError(f"{name} is {a.dtype} {a.shape}, expected {like.dtype} {like.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous to be updated in place")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only but is updated in place")
    return a


def _shown(value, limit=60):
    """repr(value) cut to about `limit` characters, for messages: the 400 digits of a huge int
    say no more than its first ones, and an array of images no more than its shape."""
    try:
        text = repr(value)
    except ValueError:          # an int past Python's limit on the digits it prints
        return "a value too large to print"
    if isinstance(value, np.ndarray) and (value.ndim > 1 or len(text) > limit):
        return f"an array of shape {value.shape}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def pair(name, value, names):
    """value, a tuple or list of two, as a tuple; names says what the two are, as "(x, y)"."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair {names}, as a tuple or list, got {_shown(value)}")
    return tuple(value)


def _is_int(value):
    """Whether value is an int (Python's or NumPy's) but not a bool: True is no size or count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def ints(name, values, count, minimum=1, repeat=False):
    """values as a tuple of `count` Python ints, each in [minimum, 2**31); with repeat, one
    int stands for all of them (strides=2 for (2, 2))."""
    if repeat and _is_int(values):
        values = (values,) * count
    try:
        items = tuple(values)
    except TypeError:
        items = None
    if (items is None or len(items) != count
            or not all(_is_int(v) and minimum <= int(v) <= _LARGEST for v in items)):
        kind = "an int or " if repeat else ""
        plural = "s" if count != 1 else ""
        raise ValueError(f"{name} must be {kind}{count} int{plural} in [{minimum}, 2**31), got "
                         f"{_shown(values)}")
    return tuple(int(v) for v in items)


_MAX_DIMS = 32  # NumPy's limit on an array's dimensions


def shape(name, value):
    """value as one sample's shape: a tuple of 1 to 32 ints in [1, 2**31), such as (28, 28, 1)."""
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (items is None or not 1 <= len(items) <= _MAX_DIMS
            or not all(_is_int(v) and 1 <= int(v) <= _LARGEST for v in items)):
        raise ValueError(f"{name} must be a shape: a tuple of 1 to {_MAX_DIMS} ints >= 1 such as "
                         f"(28, 28, 1), got {_shown(value)} (one sample's shape: (H, W, C) for "
                         "images, (features,) for features)")
    return tuple(int(v) for v in items)


def integer(name, value, minimum, maximum):
    """value as a Python int from minimum to maximum, bounds a C integer of the kernels holds
    (a thread count is a C int; Adam's step is bounded as an int64)."""
    if not _is_int(value) or not minimum <= int(value) <= maximum:
        raise ValueError(f"{name} must be an int from {minimum} to {maximum}, got {_shown(value)}")
    return int(value)


def number(name, value, minimum=None, below=None, maximum=None):
    """value as a finite Python float, optionally >= minimum, < below and <= maximum. A bool is
    refused (True is no rate), and so is an int too large for a float."""
    try:
        finite = (isinstance(value, numbers.Real) and not isinstance(value, bool)
                  and math.isfinite(value))
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite number, got {_shown(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_shown(value)}")
    if below is not None and value >= below:
        raise ValueError(f"{name} must be < {below}, got {_shown(value)}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {_shown(value)}")
    return float(value)


def flag(name, value):
    """value as a Python bool: True or False (NumPy's too), not a string or a number that
    would read as one ("no" is true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {_shown(value)}")
    return bool(value)


_SEED_LIMIT = 2**128    # the seeds NumPy recommends are 128 random bits


def seed(name, value):
    """value as a seed for np.random.default_rng: None (fresh entropy) or an int from 0 to
    2**128 - 1. default_rng also takes sequences of ints, SeedSequences and generators; they
    are refused so that a seed stays a plain number, which a saved file holds as JSON."""
    if value is None:
        return None
    if not _is_int(value) or not 0 <= int(value) < _SEED_LIMIT:
        raise ValueError(f"{name} must be None or an int from 0 to 2**128 - 1, got {_shown(value)}")
    return int(value)


CONV_PATHS = ("auto", "direct", "winograd", "gemm", "matmul")


def conv_path(path):
    """path, one of the names of the compiled kernels' convolution paths."""
    if not isinstance(path, str) or path not in CONV_PATHS:
        raise ValueError(f"the convolution path must be one of {', '.join(map(repr, CONV_PATHS))}, "
                         f"got {_shown(path)}")
    return path


def output_size(name, size, window, stride, pad_before=0, pad_after=0):
    """How many windows of `window` moved by `stride` fit a padded size: at least one."""
    padded = size + pad_before + pad_after
    if window > padded:
        raise ValueError(f"{name}: a window of {window} does not fit a padded size of {padded}")
    return (padded - window) // stride + 1


MAX_THREADS = 1024


def num_threads(n, name="the number of threads"):
    """A thread count: an int from 1 to MAX_THREADS."""
    return integer(name, n, 1, MAX_THREADS)


def cpu_quota(root="/sys/fs/cgroup"):
    """How many cores' worth of CPU time the container allows (a fraction counts as a whole
    core), or None without a limit: cgroup v2's cpu.max, or v1's cfs quota and period."""
    for files in (("cpu.max",), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = []
            for name in files:
                with open(os.path.join(root, name)) as handle:
                    fields += handle.read().split()
            quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):       # absent, or "max": no limit here
            continue
        return -(-quota // period) if quota > 0 and period > 0 else None
    return None


def cores_available():
    """The cores this process may run on, and may keep busy: its CPU affinity, capped by
    a container's CPU quota (threads beyond it would only wait for their share)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = cpu_quota()
    return max(1, min(cores or 1, quota or MAX_THREADS))


def environment(variable, default):
    """Environment variable `variable` without surrounding spaces; `default` where it is unset
    or empty: for every variable cnnc reads, `CNNC_X=` means what leaving CNNC_X unset means."""
    return os.environ.get(variable, "").strip() or default


def thread_count(variable):
    """The thread count in environment variable `variable`; when it is unset or empty, the
    cores this process may use (cores_available)."""
    value = environment(variable, None)
    if value is None:
        return min(cores_available(), MAX_THREADS)
    try:
        value = int(value)
    except ValueError:
        pass                        # num_threads refuses it, naming the variable
    return num_threads(value, variable)


def expect_shape(name, shape, expected):
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(shape)}, expected {tuple(expected)}")


def positive_dims(name, shape):
    if not all(d >= 1 for d in shape):
        raise ValueError(f"{name} must have no empty dimension, got shape {tuple(shape)}")


def _conv_geometry(input_shape, kernel_size, stride, padding):
    positive_dims("the input's height, width and channels", input_shape[1:])
    stride = ints("stride", stride, 2, 1)
    padding = ints("padding (top, bottom, left, right)", padding, 4, 0)
    (kh, kw), (top, bottom, left, right) = kernel_size, padding
    oh = output_size("conv height", input_shape[1], kh, stride[0], top, bottom)
    ow = output_size("conv width", input_shape[2], kw, stride[1], left, right)
    return stride, padding, (oh, ow)


# One check per kernel, named after it: each returns its arguments ready for use, as a named
# tuple, so that a caller reads `call.out_hw` or unpacks in the order the fields are listed.

class ConvForward(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    stride: tuple       # (sh, sw)
    padding: tuple      # (top, bottom, left, right)
    slope: float        # of the activation fused into the output: 1 linear, 0 ReLU
    out_hw: tuple       # the output's (OH, OW)


class ConvGradInput(NamedTuple):
    dy: np.ndarray
    w: np.ndarray
    input_shape: tuple  # (N, H, W, C) of the gradient returned
    stride: tuple
    padding: tuple
    out_hw: tuple


class ConvGradParams(NamedTuple):
    x: np.ndarray
    dy: np.ndarray
    kernel_size: tuple  # (kh, kw)
    stride: tuple
    padding: tuple
    out_hw: tuple


class PoolForward(NamedTuple):
    x: np.ndarray
    pool_size: tuple    # (ph, pw)
    stride: tuple
    out_hw: tuple


class MaxPoolBackward(NamedTuple):
    dy: np.ndarray
    argmax: np.ndarray  # int64, C-contiguous, each index within its input plane
    input_shape: tuple


class AvgPoolBackward(NamedTuple):
    dy: np.ndarray
    input_shape: tuple
    pool_size: tuple
    stride: tuple
    out_hw: tuple


class AdamUpdate(NamedTuple):
    param: np.ndarray
    grad: np.ndarray
    m: np.ndarray
    v: np.ndarray
    lr: float
    beta1: float
    beta2: float
    eps: float
    step: int


class LeakyReLU(NamedTuple):
    x: np.ndarray
    slope: float


class LeakyReLUBackward(NamedTuple):
    x: np.ndarray
    upstream: np.ndarray
    slope: float


class Matmul(NamedTuple):
    a: np.ndarray
    b: np.ndarray


class BatchNormForward(NamedTuple):
    x: np.ndarray       # (M, C)
    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    slope: float        # of the activation fused into the output: 1 linear, 0 ReLU


class BatchNormBackward(NamedTuple):
    x: np.ndarray
    dy: np.ndarray
    gamma: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


class BatchNormInference(NamedTuple):
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float
    slope: float


def _weighted(x, w, b, ndim):
    """x and w (ndim dimensions each) and b (1) as float arrays of x's dtype."""
    x = float_array("x", x, ndim)
    return x, float_array("w", w, ndim, x.dtype), float_array("b", b, 1, x.dtype)


def _slope(slope):
    """The slope of a fused activation: 1 linear, 0 ReLU, leaky ReLU between."""
    return number("slope", slope, 0, maximum=1)


def conv2d_forward(x, w, b, stride, padding, slope):
    x, w, b = _weighted(x, w, b, 4)
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"w {w.shape} expects {w.shape[2]} input channels, x {x.shape} has {x.shape[3]}")
    expect_shape("b", b.shape, (w.shape[3],))
    positive_dims("w", w.shape)
    stride, padding, out_hw = _conv_geometry(x.shape, w.shape[:2], stride, padding)
    return ConvForward(x, w, b, stride, padding, _slope(slope), out_hw)


class ConvMaxPoolInference(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    stride: tuple
    padding: tuple
    pool_size: tuple    # (ph, pw) of the max pool over the convolution's output
    pool_stride: tuple
    slope: float
    conv_hw: tuple      # the convolution's (OH, OW)
    out_hw: tuple       # the pooled output's


def conv2d_maxpool_inference(x, w, b, stride, padding, pool_size, pool_stride, slope):
    x, w, b, stride, padding, slope, conv_hw = conv2d_forward(x, w, b, stride, padding, slope)
    pool_size = ints("pool_size", pool_size, 2, 1)
    pool_stride = ints("pool_stride", pool_stride, 2, 1)
    oh = output_size("pool height", conv_hw[0], pool_size[0], pool_stride[0])
    ow = output_size("pool width", conv_hw[1], pool_size[1], pool_stride[1])
    return ConvMaxPoolInference(x, w, b, stride, padding, pool_size, pool_stride, slope, conv_hw,
                                (oh, ow))


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    dy = float_array("dy", dy, 4)
    w = float_array("w", w, 4, dy.dtype)
    input_shape = ints("input_shape", input_shape, 4, 1)
    positive_dims("w", w.shape)
    if w.shape[2] != input_shape[3]:
        raise ValueError(f"w {w.shape} expects {w.shape[2]} input channels, input_shape {input_shape} "
                         f"has {input_shape[3]}")
    stride, padding, (oh, ow) = _conv_geometry(input_shape, w.shape[:2], stride, padding)
    expect_shape("dy", dy.shape, (input_shape[0], oh, ow, w.shape[3]))
    return ConvGradInput(dy, w, input_shape, stride, padding, (oh, ow))


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    x = float_array("x", x, 4)
    dy = float_array("dy", dy, 4, x.dtype)
    kernel_size = ints("kernel_size", kernel_size, 2, 1)
    stride, padding, (oh, ow) = _conv_geometry(x.shape, kernel_size, stride, padding)
    if dy.shape[:3] != (x.shape[0], oh, ow):
        raise ValueError(f"dy has shape {dy.shape}, expected ({x.shape[0]}, {oh}, {ow}, F)")
    if dy.shape[3] == 0:    # as conv2d_forward and conv2d_grad_input refuse a w without filters
        raise ValueError(f"dy must have at least one filter (F >= 1), got shape {dy.shape}")
    return ConvGradParams(x, dy, kernel_size, stride, padding, (oh, ow))


def maxpool2d_forward(x, pool_size, stride):
    x = float_array("x", x, 4)
    positive_dims("the input's height, width and channels", x.shape[1:])
    pool_size = ints("pool_size", pool_size, 2, 1)
    stride = ints("stride", stride, 2, 1)
    if x.shape[1] * x.shape[2] > _LARGEST:
        raise ValueError(f"max pooling takes planes of at most 2**31 - 1 pixels, got {x.shape[1:3]}")
    oh = output_size("pool height", x.shape[1], pool_size[0], stride[0])
    ow = output_size("pool width", x.shape[2], pool_size[1], stride[1])
    return PoolForward(x, pool_size, stride, (oh, ow))


def maxpool2d_backward(dy, argmax, input_shape):
    dy = float_array("dy", dy, 4)
    input_shape = ints("input_shape", input_shape, 4, 1)
    if (dy.shape[0], dy.shape[3]) != (input_shape[0], input_shape[3]):
        raise ValueError(f"dy {dy.shape} and input_shape {input_shape} differ in batch or channels")
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64:
        raise ValueError(f"argmax must be an int64 array, got {getattr(argmax, 'dtype', type(argmax))}")
    expect_shape("argmax", argmax.shape, dy.shape)
    return MaxPoolBackward(dy, np.ascontiguousarray(argmax), input_shape)


def maxpool_positions(argmax, plane):
    """argmax's positions, each in [0, plane) (a ValueError otherwise): the compiled
    backward checks each as it goes and comes here for the message, the NumPy one first."""
    if argmax.size and (argmax.min() < 0 or argmax.max() >= plane):
        raise ValueError(f"argmax indices must lie in [0, {plane}), got values from "
                         f"{argmax.min()} to {argmax.max()}")


def _pool_geometry(input_shape, pool_size, stride):
    """pool_size and stride as pairs of ints >= 1, and the output's (OH, OW)."""
    pool_size = ints("pool_size", pool_size, 2, 1)
    stride = ints("stride", stride, 2, 1)
    oh = output_size("pool height", input_shape[1], pool_size[0], stride[0])
    ow = output_size("pool width", input_shape[2], pool_size[1], stride[1])
    return pool_size, stride, (oh, ow)


def avgpool2d_forward(x, pool_size, stride):
    x = float_array("x", x, 4)
    positive_dims("the input's height, width and channels", x.shape[1:])
    return PoolForward(x, *_pool_geometry(x.shape, pool_size, stride))


def avgpool2d_backward(dy, input_shape, pool_size, stride):
    dy = float_array("dy", dy, 4)
    input_shape = ints("input_shape", input_shape, 4, 1)
    pool_size, stride, (oh, ow) = _pool_geometry(input_shape, pool_size, stride)
    expect_shape("dy", dy.shape, (input_shape[0], oh, ow, input_shape[3]))
    return AvgPoolBackward(dy, input_shape, pool_size, stride, (oh, ow))


def separate(updated, read=()):
    """Refuse an array updated in place that shares memory with another argument: the
    backends update in different orders (NumPy array by array, the compiled loops element
    by element on several threads), so they would disagree. `updated` and `read` hold
    (name, array) pairs of C-contiguous arrays: each is one run of bytes, so
    np.may_share_memory, which compares the runs, is exact (and O(1))."""
    arguments = (*updated, *read)
    for i, (name, a) in enumerate(updated, 1):
        for other, b in arguments[i:]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name} and {other} share memory, but {name} is updated in "
                                 "place: give each its own array")


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    param = in_place("param", param)
    grad = float_array("grad", grad, param.ndim, param.dtype)
    expect_shape("grad", grad.shape, param.shape)
    m = in_place("m", m, param)
    v = in_place("v", v, param)
    # grad as the kernels read it: a copy, sharing nothing, if it was not C-contiguous
    separate((("param", param), ("m", m), ("v", v)), (("grad", grad),))
    return AdamUpdate(param, grad, m, v, number("lr", lr, 0), number("beta1", beta1, 0, 1),
                      number("beta2", beta2, 0, 1), number("eps", eps, 0),
                      integer("step", step, 1, _INT64_MAX))


def leaky_relu(x, slope):
    return LeakyReLU(float_array("x", x), number("slope", slope, 0, 1.0000001))


def leaky_relu_backward(x, upstream, slope):
    x = float_array("x", x)
    upstream = float_array("upstream", upstream, x.ndim, x.dtype)
    expect_shape("upstream", upstream.shape, x.shape)
    return LeakyReLUBackward(x, upstream, number("slope", slope, 0, 1.0000001))


def matmul(a, b):
    """Two 2-D float arrays of one dtype whose product is defined. C- and Fortran-ordered ones
    (transposed views) stay as they are; others are copied, because NumPy before 2.0 multiplies
    them outside BLAS, in another order of sums, and so to other bits."""
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(m).__name__}")
        if m.ndim != 2:
            raise ValueError(f"{name} must have 2 dimensions, got shape {m.shape}")
        if m.dtype not in _FLOATS:
            raise ValueError(f"{name} must be float32 or float64, got {m.dtype}")
    if a.dtype != b.dtype:
        raise ValueError(f"a is {a.dtype} but b is {b.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply a {a.shape} by b {b.shape}")
    return Matmul(*(m if m.flags.c_contiguous or m.flags.f_contiguous else np.ascontiguousarray(m)
                    for m in (a, b)))


class DenseForward(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    slope: float        # of the activation fused into the output: 1 linear, 0 ReLU


def dense_forward(x, w, b, slope):
    x, w, b = _weighted(x, w, b, 2)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"cannot multiply x {x.shape} by w {w.shape}")
    expect_shape("b", b.shape, (w.shape[1],))
    return DenseForward(x, w, b, _slope(slope))


def epsilon(eps):
    """eps as a finite float > 0: it keeps 1 / sqrt(var + eps) finite where a channel is constant."""
    eps = number("eps", eps, 0)
    if eps == 0:
        raise ValueError("eps must be > 0 (a channel of equal values would divide by 0), got 0.0")
    return eps


def batch_rows(x, statistics):
    """x as a float (M, C) array with C >= 1, and M >= 1 where batch statistics are taken."""
    x = float_array("x", x, 2)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one channel (C >= 1), got shape {x.shape}")
    if statistics and x.shape[0] == 0:
        raise ValueError(f"batch statistics need at least one row of x (M >= 1), got shape {x.shape}")
    return x


def channel_vectors(x, **vectors):
    """Each named array as a float (C,) vector of x's dtype, C being x's last axis."""
    checked = []
    for name, v in vectors.items():
        v = float_array(name, v, 1, x.dtype)
        expect_shape(name, v.shape, (x.shape[1],))
        checked.append(v)
    return checked


def batchnorm_forward(x, gamma, beta, eps, slope):
    x = batch_rows(x, statistics=True)
    return BatchNormForward(x, *channel_vectors(x, gamma=gamma, beta=beta), epsilon(eps),
                            _slope(slope))


def batchnorm_backward(x, dy, gamma, mean, var, eps):
    x = batch_rows(x, statistics=True)
    dy = float_array("dy", dy, 2, x.dtype)
    expect_shape("dy", dy.shape, x.shape)
    return BatchNormBackward(x, dy, *channel_vectors(x, gamma=gamma, mean=mean, var=var), epsilon(eps))


def batchnorm_inference(x, gamma, beta, mean, var, eps, slope):
    x = batch_rows(x, statistics=False)
    return BatchNormInference(x, *channel_vectors(x, gamma=gamma, beta=beta, mean=mean, var=var),
                              epsilon(eps), _slope(slope))
