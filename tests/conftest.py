"""What the test modules share: the dtypes and their tolerances, one assert_close, the
output size, the cases of convolution and pooling, PyTorch where it is installed, and the
fixtures that run a test on every kernel implementation.

`backend` runs a test on the NumPy kernels, on the baseline compiled build with each of
its convolution paths chosen through set_conv_path (_checks.CONV_PATHS; "gemm" where
NumPy ships an OpenBLAS), and on each wider build (AVX2, AVX-512) on its default path
where this CPU runs it; test_kernels checks that every build computes what the baseline
computes to the float tolerances, and the same bits on any thread count. `implementation`
runs a test once per module, for kernels with one path.
"""
import importlib

import numpy as np
import pytest

from cnnc import _builds, _checks, _numpy_kernels

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]

# The largest error allowed against a float64 reference, relative to the reference's
# largest magnitude: float32 sums of up to 1600 products (64 channels, 5x5 filters), added
# in whatever order a backend takes, stay within 2e-6 of it; float64 ones within 1e-14.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def assert_close(actual, expected, dtype, tol=None, scale=None):
    """actual is an array of dtype, of expected's shape, finite where expected is, and
    max |actual - expected| <= tol * scale (tol: TOL[dtype] unless given; scale: max
    |expected| unless given, as where expected is a difference of much larger terms)."""
    tol = TOL[dtype] if tol is None else tol
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == np.dtype(dtype), f"got {actual.dtype}, the input was {np.dtype(dtype)}"
    assert actual.shape == np.shape(expected), (actual.shape, np.shape(expected))
    expected = np.asarray(expected, dtype=np.float64)
    actual = actual.astype(np.float64)
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected))
    finite = np.isfinite(expected)
    if scale is None:
        scale = np.abs(expected[finite]).max(initial=0.0)
    error = np.abs(actual[finite] - expected[finite]).max(initial=0.0)
    assert error <= tol * scale, f"max error {error:.3g} > {tol:g} * {scale:.3g}"


def out_size(size, window, stride, before=0, after=0):
    """Outputs along one axis: (size + before + after - window) // stride + 1."""
    return (size + before + after - window) // stride + 1


# ---------------------------------------------------------------- cases

# (n, h, w, c_in, c_out, kh, kw, stride, padding=(top, bottom, left, right))
CONV_CASES = [
    (1, 7, 9, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0)),
    (3, 7, 5, 2, 2, 1, 1, (1, 1), (0, 0, 0, 0)),    # 1x1, stride 1, no padding: a plain product
    (1, 7, 5, 2, 3, 1, 1, (2, 3), (2, 0, 1, 1)),    # 1x1 that is not a plain product
    (2, 7, 9, 3, 4, 3, 3, (1, 1), (1, 1, 1, 1)),
    (1, 7, 5, 1, 2, 3, 3, (1, 1), (0, 0, 0, 0)),
    (3, 13, 5, 2, 5, 5, 3, (2, 2), (2, 2, 1, 1)),
    (1, 28, 28, 1, 2, 5, 5, (1, 1), (2, 2, 2, 2)),
    (2, 28, 28, 2, 3, 3, 3, (2, 2), (0, 1, 0, 1)),
    (4, 7, 9, 5, 3, 2, 4, (1, 2), (0, 1, 3, 0)),
    (2, 13, 5, 3, 2, 3, 2, (3, 1), (1, 0, 0, 2)),
    (2, 6, 11, 3, 2, 4, 4, (3, 3), (1, 2, 0, 3)),
    (2, 5, 8, 2, 2, 2, 3, (1, 2), (0, 1, 2, 0)),
    (1, 9, 7, 1, 2, 5, 5, (3, 1), (2, 2, 0, 1)),
    (2, 7, 7, 2, 1, 3, 2, (2, 3), (3, 0, 0, 2)),    # padding > kernel - 1 on top
    (1, 9, 7, 2, 3, 3, 3, (3, 3), (4, 5, 3, 6)),    # padding > kernel - 1 on every side
    (1, 5, 5, 3, 2, 5, 5, (1, 1), (0, 0, 0, 0)),    # 1x1 output
    (2, 5, 13, 4, 1, 1, 5, (2, 3), (0, 0, 2, 2)),
    (3, 8, 8, 1, 5, 4, 4, (2, 2), (1, 2, 2, 1)),
    (1, 3, 3, 2, 2, 5, 5, (1, 1), (1, 1, 1, 1)),    # filter larger than the unpadded input
    (2, 1, 1, 1, 2, 3, 3, (1, 1), (2, 2, 2, 2)),    # 1x1 image, outputs that see only padding
    (2, 11, 11, 2, 3, 2, 2, (3, 3), (0, 1, 1, 0)),  # stride > kernel: skipped pixels
    (2, 4, 3, 1, 2, 2, 2, (3, 2), (0, 1, 1, 0)),
    (1, 6, 4, 5, 5, 4, 1, (1, 3), (3, 0, 0, 3)),
    (4, 5, 7, 1, 4, 5, 2, (1, 1), (0, 0, 0, 0)),
    (2, 28, 28, 1, 16, 3, 3, (1, 1), (0, 0, 0, 0)),  # the course CNN's first layer
    (3, 9, 11, 2, 35, 3, 3, (2, 1), (1, 0, 2, 1)),   # filters in two whole blocks of 16 and 3 more
    (2, 6, 7, 3, 32, 2, 2, (1, 1), (1, 1, 1, 1)),
    (2, 9, 10, 3, 12, 3, 3, (1, 1), (1, 1, 1, 1)),   # 12 filters computed as one block of 16
    # the layers of benchmarks/suite.py's networks, on a batch of two
    (2, 28, 28, 1, 6, 5, 5, (1, 1), (2, 2, 2, 2)),
    (2, 14, 14, 6, 16, 5, 5, (1, 1), (0, 0, 0, 0)),
    (2, 32, 32, 3, 32, 3, 3, (1, 1), (1, 1, 1, 1)),
    (2, 32, 32, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1)),
    (2, 16, 16, 32, 64, 3, 3, (1, 1), (1, 1, 1, 1)),
    (2, 32, 32, 3, 32, 5, 5, (2, 2), (2, 2, 2, 2)),
    (2, 16, 16, 32, 64, 1, 1, (1, 1), (0, 0, 0, 0)),
    (2, 16, 16, 64, 64, 5, 5, (2, 2), (2, 2, 2, 2)),
    (2, 8, 8, 64, 32, 1, 1, (1, 1), (0, 0, 0, 0)),
]
# The cases of the most products, run with the slow tests only.
SLOW_CONV_CASES = {(2, 32, 32, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1)),
                   (2, 16, 16, 32, 64, 3, 3, (1, 1), (1, 1, 1, 1)),
                   (2, 16, 16, 64, 64, 5, 5, (2, 2), (2, 2, 2, 2))}
CONV_PARAMS = [pytest.param(case, id=f"{n}x{h}x{w}x{c}-f{f}-k{kh}x{kw}-s{s[0]}{s[1]}-p{''.join(map(str, p))}",
                            marks=[pytest.mark.slow] if case in SLOW_CONV_CASES else [])
               for case in CONV_CASES for n, h, w, c, f, kh, kw, s, p in [case]]


def conv_inputs(case, dtype, seed):
    """x, w, b and an upstream gradient dy of the output's shape, for a CONV_CASES case."""
    n, h, w, c, f, kh, kw, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    top, bottom, left, right = padding
    oh = out_size(h, kh, stride[0], top, bottom)
    ow = out_size(w, kw, stride[1], left, right)
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    return x, wt, b, dy


# (n, h, w, c, pool_size, stride)
POOL_CASES = [
    (1, 7, 9, 1, (2, 2), (2, 2)),    # does not tile: last row and column dropped
    (2, 8, 8, 3, (2, 2), (2, 2)),    # tiles
    (4, 28, 28, 2, (2, 2), (2, 2)),
    (2, 12, 9, 1, (3, 3), (3, 3)),   # tiles with window 3
    (3, 13, 5, 2, (3, 3), (2, 2)),   # overlapping
    (2, 7, 9, 4, (3, 3), (1, 1)),    # overlapping
    (1, 9, 7, 5, (2, 3), (1, 2)),    # non-square window, mixed stride
    (2, 13, 5, 3, (3, 1), (3, 1)),
    (2, 9, 7, 1, (4, 3), (3, 3)),
    (1, 5, 5, 2, (5, 5), (1, 1)),    # a single window
    (1, 5, 4, 2, (5, 4), (1, 1)),    # a single non-square window
    (2, 6, 9, 2, (1, 1), (1, 1)),    # identity
    (1, 7, 9, 2, (2, 4), (3, 2)),    # stride > window: skipped rows
    (2, 7, 6, 16, (3, 2), (2, 1)),   # as many channels as the compiled loops take a pixel at once
    (1, 6, 8, 35, (2, 2), (2, 3)),
    # the pooling layers of benchmarks/suite.py's networks, on a batch of two
    (2, 28, 28, 6, (2, 2), (2, 2)),
    (2, 10, 10, 16, (2, 2), (2, 2)),
    (2, 26, 26, 32, (2, 2), (2, 2)),
    (2, 16, 16, 64, (2, 2), (2, 2)),
]
# Average pooling: the same, and windows as large as the image (global average pooling),
# overlapping ones, and more channels than a vector holds.
AVGPOOL_CASES = POOL_CASES + [
    (3, 7, 9, 35, (7, 9), (1, 1)),   # global average pooling
    (2, 4, 4, 1, (4, 4), (2, 2)),    # global, with a stride larger than what is left
    (3, 11, 9, 16, (3, 3), (2, 2)),  # overlapping
    (2, 9, 7, 3, (3, 2), (1, 1)),    # overlapping, non-square
    (1, 8, 7, 2, (3, 3), (1, 2)),    # overlapping rows, pixels in no window at the right
    (2, 6, 6, 1, (2, 2), (3, 3)),    # stride > window: rows and columns in no window
    (1, 13, 11, 35, (5, 4), (2, 3)),
]


def pool_ids(cases):
    return [f"{n}x{h}x{w}x{c}-k{p[0]}x{p[1]}-s{s[0]}{s[1]}" for n, h, w, c, p, s in cases]


# ---------------------------------------------------------------- kernel implementations

def _compiled_build(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# The compiled builds that run here: the baseline one wherever the extension is built, and
# each instruction-set build (cnnc._builds) built here that this CPU runs, by its name.
BASELINE = _compiled_build(_builds.BUILDS[0].module)
_CPU = _compiled_build(_builds.CPU_MODULE)
WIDER_BUILDS = {build.isa: _compiled_build(build.module) for build in _builds.BUILDS[1:]
                if _CPU is not None and all(map(_CPU.supports, build.features))}
WIDER_BUILDS = {isa: module for isa, module in WIDER_BUILDS.items() if module is not None}


def _takes_path(module, path):
    """Whether module computes convolutions on path here ("gemm" needs NumPy's OpenBLAS)."""
    before = module.get_conv_path()
    try:
        module.set_conv_path(path)
    except ValueError:
        return False
    finally:
        module.set_conv_path(before)
    return True


IMPLEMENTATIONS = [pytest.param(_numpy_kernels, id="numpy")]
BACKENDS = [pytest.param((_numpy_kernels, "auto"), id="numpy")]
if BASELINE is not None:
    IMPLEMENTATIONS.append(pytest.param(BASELINE, id="compiled"))
    BACKENDS += [pytest.param((BASELINE, path), id=f"compiled-{path}")
                 for path in _checks.CONV_PATHS if _takes_path(BASELINE, path)]
for _isa, _module in WIDER_BUILDS.items():
    IMPLEMENTATIONS.append(pytest.param(_module, id=_isa))
    BACKENDS.append(pytest.param((_module, "auto"), id=_isa))


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A kernel module with its convolution path set (and set back after the test)."""
    module, path = request.param
    before = module.get_conv_path()
    module.set_conv_path(path)
    yield module
    module.set_conv_path(before)


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request):
    """Each kernel module once, its convolution path left as it is."""
    return request.param


# ---------------------------------------------------------------- PyTorch

@pytest.fixture(scope="session")
def torch():
    """PyTorch on one thread (small problems; no oversubscription), or the test skipped
    where it is not installed."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional test dependency")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(previous)


# cnnc is NHWC with filters (kh, kw, c_in, c_out); torch is NCHW with weights
# (c_out, c_in, kh, kw).

def distinct_statistics(norm, seed=5):
    """Give each feature of the BatchNorm `norm` a scale, shift and running statistics of its
    own, the variances small so that eps weighs: a conversion that reorders the features or
    drops eps then predicts something else."""
    rng = np.random.default_rng(seed)
    size = norm.num_features
    norm.params["w"][:] = rng.uniform(0.5, 2, size)
    norm.params["b"][:] = rng.normal(size=size)
    norm.running_mean[:] = rng.normal(size=size)
    norm.running_var[:] = rng.uniform(0.01, 0.1, size)


def nhwc_to_torch(x):
    """(N, H, W, C) array -> contiguous (N, C, H, W) tensor with the same values."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def torch_to_nhwc(t):
    """(N, C, H, W) tensor -> (N, H, W, C) array."""
    return np.ascontiguousarray(np.transpose(t.detach().numpy(), (0, 2, 3, 1)))


def filters_to_torch(w):
    """cnnc filters (kh, kw, c_in, c_out) -> torch weight (c_out, c_in, kh, kw)."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1))))


def filters_from_torch(t):
    """torch weight (c_out, c_in, kh, kw) -> cnnc filters (kh, kw, c_in, c_out)."""
    return np.ascontiguousarray(np.transpose(t.detach().numpy(), (2, 3, 1, 0)))

