"""The compiled kernels against their NumPy twins (cnnc._numpy_kernels).

The compiled module tested is the build that runs here: cnnc._kernels_avx2 where the CPU
has AVX2 and FMA, cnnc._kernels otherwise or under CNNC_AVX2=0.

1. Parity: every kernel of both modules on the same random inputs (odd sizes, strides,
   padding, ties, NaNs, float32 and float64).
2. Safety: every bad call raises ValueError or TypeError in both, the same type in both,
   and a refused Adam step leaves its arrays alone; Adam's in-place arrays sharing memory
   with another argument, zero sizes and scalars beyond their C type are handled alike.
3. Read-only and non-contiguous inputs are accepted wherever they are only read.
4. cnnc.kernels takes every kernel from one backend; both modules name them alike
   (test_kernels checks that it exposes exactly the kernel functions).
5. The two builds of the compiled kernels compute the same numbers, to the bit.
"""
import importlib
import inspect

import numpy as np
import pytest

from cnnc import _numpy_kernels, kernels

baseline = pytest.importorskip(
    "cnnc._kernels",
    reason="the compiled extension cnnc._kernels is not built (no C compiler here); "
           "CI always builds it, so these tests always run there",
)
compiled = importlib.import_module(kernels.IMPLEMENTATION) if kernels.BACKEND == "compiled" else baseline

KERNEL_NAMES = ("conv2d_forward", "conv2d_grad_input", "conv2d_grad_params",
                "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
                "batchnorm_forward", "batchnorm_backward", "batchnorm_inference", "adam_update",
                "matmul", "leaky_relu", "leaky_relu_backward")
MODULES = [pytest.param(_numpy_kernels, id="numpy"), pytest.param(compiled, id="compiled")]
DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
# Relative error, to the largest magnitude of the reference, per dtype.
TOL = {np.float32: 1e-5, np.float64: 1e-12}
ADAM_TOL = {np.float32: 1e-6, np.float64: 1e-12}


def assert_close(actual, expected, dtype, tol):
    """Same dtype (the input dtype), same shape, max |actual - expected| <= tol * max |expected|."""
    assert isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)
    assert actual.dtype == np.dtype(dtype), f"compiled returned {actual.dtype}, input was {np.dtype(dtype)}"
    assert expected.dtype == np.dtype(dtype), f"NumPy returned {expected.dtype}, input was {np.dtype(dtype)}"
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(expected)) and np.all(np.isfinite(actual))
    expected64 = expected.astype(np.float64)
    scale = np.abs(expected64).max(initial=0.0)
    error = np.abs(actual.astype(np.float64) - expected64).max(initial=0.0)
    assert error <= tol * scale, f"max error {error:.3g} > {tol:g} * {scale:.3g}"


def out_size(size, window, stride, before=0, after=0):
    return (size + before + after - window) // stride + 1


# =========================================================================== 1. parity

# (n, h, w, c_in, c_out, kh, kw, stride, padding=(top, bottom, left, right))
CONV_CASES = [
    (1, 7, 9, 1, 1, 1, 1, (1, 1), (0, 0, 0, 0)),
    (2, 7, 9, 3, 4, 3, 3, (1, 1), (1, 1, 1, 1)),
    (3, 13, 5, 2, 5, 5, 3, (2, 2), (2, 2, 1, 1)),
    (1, 28, 28, 1, 2, 5, 5, (1, 1), (2, 2, 2, 2)),
    (2, 28, 28, 2, 3, 3, 3, (2, 2), (0, 1, 0, 1)),
    (4, 7, 9, 5, 3, 2, 4, (1, 2), (0, 1, 3, 0)),
    (2, 13, 5, 3, 2, 3, 2, (3, 1), (1, 0, 0, 2)),
    (1, 9, 7, 2, 3, 3, 3, (3, 3), (4, 5, 3, 6)),    # padding > kernel - 1 on every side
    (2, 5, 13, 4, 1, 1, 5, (2, 3), (0, 0, 2, 2)),
    (3, 8, 8, 1, 5, 4, 4, (2, 2), (1, 2, 2, 1)),
    (1, 3, 3, 2, 2, 5, 5, (1, 1), (1, 1, 1, 1)),    # filter larger than the unpadded input
    (2, 1, 1, 1, 2, 3, 3, (1, 1), (2, 2, 2, 2)),    # 1x1 image, outputs that see only padding
    (2, 11, 11, 2, 3, 2, 2, (3, 3), (0, 1, 1, 0)),  # stride > kernel: skipped pixels
    (1, 6, 4, 5, 5, 4, 1, (1, 3), (3, 0, 0, 3)),
    (4, 5, 7, 1, 4, 5, 2, (1, 1), (0, 0, 0, 0)),
    (2, 28, 28, 1, 16, 3, 3, (1, 1), (0, 0, 0, 0)),  # the seed CNN's first layer
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
CONV_IDS = [f"{n}x{h}x{w}x{c}-f{f}-k{kh}x{kw}-s{s[0]}{s[1]}-p{''.join(map(str, p))}"
            for n, h, w, c, f, kh, kw, s, p in CONV_CASES]


def conv_inputs(case, dtype, seed):
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


@pytest.fixture(params=(["direct_blas"] if compiled._blas is not None else [])
                + ["numpy_matmul", "direct_loops"])
def products(request, monkeypatch):
    """Every path of the compiled convolutions: patch matrices multiplied by NumPy's OpenBLAS,
    called directly from the kernel's threads (where NumPy ships one), or by numpy.matmul
    (NumPy builds without it); and the direct loops of the forward pass, here forced on
    every filter size."""
    monkeypatch.setattr(compiled, "_direct_taken", lambda patch, f: False)
    if request.param == "numpy_matmul":
        monkeypatch.setattr(compiled, "_blas", None)
    elif request.param == "direct_loops":
        monkeypatch.setattr(compiled, "_direct_taken", lambda patch, f: True)
    return request.param


@pytest.mark.usefixtures("products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_forward_parity(case, dtype):
    x, w, b, dy = conv_inputs(case, dtype, seed=1)
    stride, padding = case[7], case[8]
    expected = _numpy_kernels.conv2d_forward(x, w, b, stride, padding)
    actual = compiled.conv2d_forward(x, w, b, stride, padding)
    assert expected.shape == dy.shape
    assert_close(actual, expected, dtype, TOL[dtype])


@pytest.mark.usefixtures("products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, padding", [((3, 3), (1, 1, 1, 1)), ((1, 1), (0, 0, 0, 0)),
                                             ((5, 5), (2, 2, 2, 2))], ids=["3x3", "1x1", "5x5"])
def test_an_empty_batch_gives_empty_results_on_every_path(kernel, padding, dtype):
    x = np.zeros((0, 9, 8, 3), dtype=dtype)
    w = np.ones((*kernel, 3, 5), dtype=dtype)
    b = np.ones(5, dtype=dtype)
    expected = _numpy_kernels.conv2d_forward(x, w, b, (1, 1), padding)
    actual = compiled.conv2d_forward(x, w, b, (1, 1), padding)
    assert actual.shape == expected.shape == (0, 9, 8, 5) and actual.dtype == np.dtype(dtype)
    dw, db = compiled.conv2d_grad_params(x, expected, kernel, (1, 1), padding)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))


@pytest.mark.usefixtures("products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_grad_input_parity(case, dtype):
    x, w, b, dy = conv_inputs(case, dtype, seed=2)
    stride, padding = case[7], case[8]
    expected = _numpy_kernels.conv2d_grad_input(dy, w, x.shape, stride, padding)
    actual = compiled.conv2d_grad_input(dy, w, x.shape, stride, padding)
    assert expected.shape == x.shape
    assert_close(actual, expected, dtype, TOL[dtype])


@pytest.mark.usefixtures("products")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv2d_grad_params_parity(case, dtype):
    x, w, b, dy = conv_inputs(case, dtype, seed=3)
    stride, padding = case[7], case[8]
    expected_dw, expected_db = _numpy_kernels.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    actual_dw, actual_db = compiled.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    assert expected_dw.shape == w.shape and expected_db.shape == b.shape
    assert_close(actual_dw, expected_dw, dtype, TOL[dtype])
    assert_close(actual_db, expected_db, dtype, TOL[dtype])


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
    (1, 5, 5, 2, (5, 5), (1, 1)),    # a single window
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
POOL_IDS = [f"{n}x{h}x{w}x{c}-k{p[0]}x{p[1]}-s{s[0]}{s[1]}" for n, h, w, c, p, s in POOL_CASES]
POOL_KINDS = ["normal", "ties", "signed_zeros", "all_equal", "nan", "nan_ties", "all_nan",
              "infinities", "all_neg_inf"]


def pool_input(kind, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
    elif kind == "signed_zeros":
        x = rng.choice([-1.0, -0.0, 0.0], size=shape, p=[0.2, 0.4, 0.4])
    elif kind == "all_equal":
        x = np.full(shape, 0.5)
    elif kind == "nan":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.2] = np.nan
    elif kind == "nan_ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
        x[rng.random(shape) < 0.3] = np.nan
    elif kind == "all_nan":
        x = np.full(shape, np.nan)
    elif kind == "infinities":
        x = rng.choice([-np.inf, -1.0, 0.0, np.inf, np.nan], size=shape, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    elif kind == "all_neg_inf":
        x = np.full(shape, -np.inf)
    else:
        raise AssertionError(kind)
    return x.astype(dtype)


def reference_pool(x, pool_size, stride):
    """Window maxima in row-major window order: the first maximum wins, the first NaN wins."""
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool_size, stride
    oh, ow = out_size(h, ph, sh), out_size(w, pw, sw)
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int64)
    for i in range(oh):
        for j in range(ow):
            best = x[:, i * sh, j * sw].copy()
            where = np.full((n, c), i * sh * w + j * sw, dtype=np.int64)
            for r in range(ph):
                for q in range(pw):
                    value = x[:, i * sh + r, j * sw + q]
                    better = (value > best) | (np.isnan(value) & ~np.isnan(best))
                    best = np.where(better, value, best)
                    where = np.where(better, (i * sh + r) * w + j * sw + q, where)
            y[:, i, j], argmax[:, i, j] = best, where
    return y, argmax


@pytest.mark.parametrize("kind", POOL_KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_maxpool2d_forward_parity(case, dtype, kind):
    n, h, w, c, pool_size, stride = case
    x = pool_input(kind, (n, h, w, c), dtype, seed=4)
    expected_y, expected_argmax = _numpy_kernels.maxpool2d_forward(x, pool_size, stride)
    actual_y, actual_argmax = compiled.maxpool2d_forward(x, pool_size, stride)
    for y, argmax in ((expected_y, expected_argmax), (actual_y, actual_argmax)):
        assert y.dtype == np.dtype(dtype)
        assert argmax.dtype == np.int64
        assert y.shape == argmax.shape == (n, out_size(h, pool_size[0], stride[0]),
                                           out_size(w, pool_size[1], stride[1]), c)
    # The maximum is one of the inputs: equal bit for bit, NaN for NaN, -0.0 for -0.0.
    np.testing.assert_array_equal(actual_y, expected_y)
    np.testing.assert_array_equal(np.signbit(actual_y), np.signbit(expected_y))
    np.testing.assert_array_equal(actual_argmax, expected_argmax)
    # And both pick the first maximum (or first NaN) of each window, as documented.
    reference_y, reference_argmax = reference_pool(x, pool_size, stride)
    np.testing.assert_array_equal(expected_argmax, reference_argmax)
    np.testing.assert_array_equal(expected_y, reference_y)
    # argmax points at the maximum it reports.
    flat = x.reshape(n, h * w, c)
    picked = np.take_along_axis(flat, actual_argmax.reshape(n, -1, c), axis=1).reshape(actual_y.shape)
    np.testing.assert_array_equal(picked, actual_y)


@pytest.mark.parametrize("kind", ["normal", "ties", "all_equal"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=POOL_IDS)
def test_maxpool2d_backward_parity(case, dtype, kind):
    """Overlapping windows over tied inputs send many gradients to the same pixel."""
    n, h, w, c, pool_size, stride = case
    x = pool_input(kind, (n, h, w, c), dtype, seed=5)
    _, argmax = _numpy_kernels.maxpool2d_forward(x, pool_size, stride)
    dy = np.random.default_rng(6).standard_normal(argmax.shape).astype(dtype)
    expected = _numpy_kernels.maxpool2d_backward(dy, argmax, x.shape)
    actual = compiled.maxpool2d_backward(dy, argmax, x.shape)
    assert expected.shape == x.shape
    assert_close(actual, expected, dtype, TOL[dtype])
    np.testing.assert_allclose(actual.sum(dtype=np.float64), dy.sum(dtype=np.float64),
                               rtol=1e-4, atol=1e-4 * np.abs(dy).sum())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_shape,dy_hw", [((1, 7, 9, 1), (3, 4)), ((3, 5, 13, 4), (6, 2)),
                                               ((2, 1, 1, 3), (2, 3))])
def test_maxpool2d_backward_parity_for_any_valid_indices(input_shape, dy_hw, dtype):
    """The scatter needs only indices in [0, H*W), not ones a forward pass produced."""
    n, h, w, c = input_shape
    rng = np.random.default_rng(7)
    argmax = rng.integers(0, h * w, (n, *dy_hw, c)).astype(np.int64)
    argmax[..., 0, 0, :] = h * w - 1           # both ends of the range
    argmax[..., -1, -1, :] = 0
    dy = rng.standard_normal(argmax.shape).astype(dtype)
    expected = _numpy_kernels.maxpool2d_backward(dy, argmax, input_shape)
    actual = compiled.maxpool2d_backward(dy, argmax, input_shape)
    assert expected.shape == input_shape
    assert_close(actual, expected, dtype, TOL[dtype])


# (lr, beta1, beta2, eps)
ADAM_HYPER = [(1e-3, 0.9, 0.999, 1e-8), (0.1, 0.5, 0.9, 1e-6), (0.01, 0.0, 0.0, 1e-3),
              (0.0, 0.9, 0.999, 0.0)]


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 3, 4)])
@pytest.mark.parametrize("hyper", ADAM_HYPER, ids=lambda h: "lr{}-b{}-{}-eps{}".format(*h))
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_parity_over_ten_steps(dtype, hyper, shape):
    rng = np.random.default_rng(8)
    param = rng.standard_normal(shape).astype(dtype)
    m = (0.1 * rng.standard_normal(shape)).astype(dtype)
    v = (0.1 * rng.random(shape)).astype(dtype)
    states = {name: (param.copy(), m.copy(), v.copy()) for name in ("numpy", "compiled")}
    for step in range(1, 11):
        grad = rng.standard_normal(shape).astype(dtype)
        grad_before = grad.copy()
        for module, name in ((_numpy_kernels, "numpy"), (compiled, "compiled")):
            module.adam_update(*states[name][:1], grad, *states[name][1:], *hyper, step)
        np.testing.assert_array_equal(grad, grad_before)  # grad is only read
    for expected, actual in zip(states["numpy"], states["compiled"]):
        assert_close(actual, expected, dtype, ADAM_TOL[dtype])
    if hyper[0] == 0.0:
        np.testing.assert_array_equal(states["compiled"][0], param)
    else:
        assert not np.array_equal(states["compiled"][0], param)  # it did update in place


@pytest.mark.parametrize("layout", ["plain", "a_transposed", "b_transposed", "both_transposed",
                                    "strided"])
@pytest.mark.parametrize("shape", [(301, 203, 157), (50, 256, 1152), (3, 900, 1000), (257, 1152, 256), (7, 3, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_parity(dtype, shape, layout):
    """Large enough for the threaded BLAS path (and one tiny case for NumPy's)."""
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if layout in ("a_transposed", "both_transposed") else (m, k))
    b = rng.standard_normal((n, k) if layout in ("b_transposed", "both_transposed") else (k, n))
    a, b = a.astype(dtype), b.astype(dtype)
    if layout in ("a_transposed", "both_transposed"):
        a = a.T
    if layout in ("b_transposed", "both_transposed"):
        b = b.T
    if layout == "strided":
        a = np.repeat(a, 2, axis=1)[:, ::2]
    expected = _numpy_kernels.matmul(a, b)
    np.testing.assert_allclose(expected, a.astype(np.float64) @ b.astype(np.float64),
                               rtol=0, atol=TOL[dtype] * 10 * np.abs(expected).max())
    actual = compiled.matmul(a, b)
    assert actual.shape == (m, n) and actual.flags.c_contiguous
    assert_close(actual, expected, dtype, TOL[dtype])


def leaky_inputs(dtype, seed=0):
    """x with zeros of both signs, NaN and infinities among random values, and an upstream."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5, 7, 2)).astype(dtype)
    x.flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30]
    return x, rng.standard_normal(x.shape).astype(dtype)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_parity_is_bitwise(dtype, slope):
    x, upstream = leaky_inputs(dtype)
    forward = [m.leaky_relu(x, slope) for m in (_numpy_kernels, compiled)]
    backward = [m.leaky_relu_backward(x, upstream, slope) for m in (_numpy_kernels, compiled)]
    for pair in (forward, backward):
        assert pair[0].dtype == pair[1].dtype == dtype
        np.testing.assert_array_equal(pair[0], pair[1])
        np.testing.assert_array_equal(np.signbit(pair[0]), np.signbit(pair[1]))
    positive = x > 0
    np.testing.assert_array_equal(forward[1][positive], x[positive])
    np.testing.assert_array_equal(backward[1][positive], upstream[positive])
    np.testing.assert_array_equal(backward[1][~positive], upstream[~positive] * dtype(slope))


# Average pooling: the max pooling cases, and windows as large as the image (global
# average pooling), overlapping ones, and more channels than a vector holds.
AVGPOOL_CASES = POOL_CASES + [
    (3, 7, 9, 35, (7, 9), (1, 1)),   # global average pooling
    (2, 4, 4, 1, (4, 4), (2, 2)),    # global, with a stride larger than what is left
    (3, 11, 9, 16, (3, 3), (2, 2)),  # overlapping
    (2, 9, 7, 3, (3, 2), (1, 1)),    # overlapping, non-square
    (1, 13, 11, 35, (5, 4), (2, 3)),
]
AVGPOOL_IDS = [f"{n}x{h}x{w}x{c}-k{p[0]}x{p[1]}-s{s[0]}{s[1]}"
               for n, h, w, c, p, s in AVGPOOL_CASES]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=AVGPOOL_IDS)
def test_avgpool2d_parity(case, dtype):
    n, h, w, c, pool_size, stride = case
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((n, h, w, c)) + 3).astype(dtype)
    expected = _numpy_kernels.avgpool2d_forward(x, pool_size, stride)
    assert expected.shape == (n, out_size(h, pool_size[0], stride[0]),
                              out_size(w, pool_size[1], stride[1]), c)
    assert_close(compiled.avgpool2d_forward(x, pool_size, stride), expected, dtype, TOL[dtype])
    dy = rng.standard_normal(expected.shape).astype(dtype)
    expected_dx = _numpy_kernels.avgpool2d_backward(dy, x.shape, pool_size, stride)
    assert expected_dx.shape == x.shape
    assert_close(compiled.avgpool2d_backward(dy, x.shape, pool_size, stride), expected_dx, dtype,
                 TOL[dtype])


# (M, C): rows and channels; the compiled sums over rows go in chunks of 16384 values, or
# 16 rows of more channels, so the larger ones take several chunks, the last one short.
BN_SHAPES = [(m, c) for m in (1, 2, 7, 1000) for c in (1, 3, 16, 35)] + [
    (20001, 1), (3001, 16), (2 * 14 * 14, 64), (50, 2000)]


def bn_inputs(shape, dtype, seed):
    """x far from zero mean (as the accuracy of a one-pass variance would suffer), gamma,
    beta and dy."""
    rng = np.random.default_rng(seed)
    m, c = shape
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, c) + rng.uniform(-20, 20, c))
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dy = rng.standard_normal(shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dy))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_batchnorm_parity(shape, dtype):
    x, gamma, beta, dy = bn_inputs(shape, dtype, seed=12)
    expected = _numpy_kernels.batchnorm_forward(x, gamma, beta, 1e-5)
    actual = compiled.batchnorm_forward(x, gamma, beta, 1e-5)
    for got, want in zip(actual, expected):
        assert_close(got, want, dtype, TOL[dtype])
    _, mean, var = expected
    expected = _numpy_kernels.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    actual = compiled.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    for got, want in zip(actual, expected):
        assert_close(got, want, dtype, TOL[dtype])


@pytest.mark.parametrize("module", MODULES)
def test_batchnorm_statistics_are_accurate_far_from_zero(module):
    """Two passes: a mean of 1e4 does not swamp a variance of 1e-2, which one pass, E[x^2] -
    E[x]^2, would lose entirely in float32 (here over several chunks of rows)."""
    deviations = np.random.default_rng(15).standard_normal((20000, 2)) * 0.1
    x = (1e4 + deviations).astype(np.float32)
    _, mean, var = module.batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32), 1e-5)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(var, exact.var(axis=0), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 35), (3001, 16)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_batchnorm_inference_parity(shape, dtype):
    x, gamma, beta, _ = bn_inputs(shape, dtype, seed=13)
    rng = np.random.default_rng(14)
    mean = rng.uniform(-20, 20, shape[1]).astype(dtype)
    var = rng.uniform(0.01, 9, shape[1]).astype(dtype)
    expected = _numpy_kernels.batchnorm_inference(x, gamma, beta, mean, var, 1e-3)
    assert expected.shape == shape
    assert_close(compiled.batchnorm_inference(x, gamma, beta, mean, var, 1e-3), expected, dtype,
                 TOL[dtype])


# =========================================================================== 2. safety


def arr(*shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def fwd(**kw):
    a = dict(x=arr(2, 7, 9, 3), w=arr(3, 3, 3, 4), b=arr(4), stride=(1, 1), padding=(1, 1, 1, 1))
    a.update(kw)
    return "conv2d_forward", (a["x"], a["w"], a["b"], a["stride"], a["padding"])


def gin(**kw):
    a = dict(dy=arr(2, 7, 9, 4), w=arr(3, 3, 3, 4), input_shape=(2, 7, 9, 3), stride=(1, 1),
             padding=(1, 1, 1, 1))
    a.update(kw)
    return "conv2d_grad_input", (a["dy"], a["w"], a["input_shape"], a["stride"], a["padding"])


def gpar(**kw):
    a = dict(x=arr(2, 7, 9, 3), dy=arr(2, 7, 9, 4), kernel_size=(3, 3), stride=(1, 1),
             padding=(1, 1, 1, 1))
    a.update(kw)
    return "conv2d_grad_params", (a["x"], a["dy"], a["kernel_size"], a["stride"], a["padding"])


def pfwd(**kw):
    a = dict(x=arr(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "maxpool2d_forward", (a["x"], a["pool_size"], a["stride"])


def valid_argmax(shape=(2, 3, 4, 3), plane=63):
    return (np.arange(np.prod(shape), dtype=np.int64) % plane).reshape(shape)


def pbwd(**kw):
    a = dict(dy=arr(2, 3, 4, 3), argmax=valid_argmax(), input_shape=(2, 7, 9, 3))
    a.update(kw)
    return "maxpool2d_backward", (a["dy"], a["argmax"], a["input_shape"])


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def adam(**kw):
    a = dict(param=arr(4, 5), grad=arr(4, 5, seed=1), m=arr(4, 5, seed=2),
             v=np.abs(arr(4, 5, seed=3)), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=3)
    a.update(kw)
    return "adam_update", tuple(a[k] for k in ("param", "grad", "m", "v", "lr", "beta1", "beta2",
                                               "eps", "step"))


def same(*names):
    """Adam arguments in which the named ones are one and the same array."""
    one = np.abs(arr(4, 5, seed=4))
    return adam(**{name: one for name in names})


def overlapping(*names, offset, start=0):
    """Adam arguments in which the named ones are (4, 5) views of one buffer, each starting
    `offset` bytes after the one before (from byte `start`): they share memory where
    offset < 160, their size in bytes; a whole number of float64 or not."""
    buffer = bytearray(start + 160 + (len(names) - 1) * offset)
    views = [np.frombuffer(buffer, np.float64, 20, start + i * offset).reshape(4, 5)
             for i in range(len(names))]
    for i, view in enumerate(views):
        view[...] = np.abs(arr(4, 5, seed=5 + i))
    return adam(**dict(zip(names, views)))


# Adam calls whose arrays share memory, and the two arguments the refusal names: the first
# of param, m and v (updated in place) that overlaps another argument, and that argument.
ALIASED = {
    "m-is-v": (lambda: same("m", "v"), "m and v"),
    "grad-is-v": (lambda: same("grad", "v"), "v and grad"),
    "param-is-m": (lambda: same("param", "m"), "param and m"),
    "param-is-grad": (lambda: same("param", "grad"), "param and grad"),
    "param-m-v-one-array": (lambda: same("param", "m", "v"), "param and m"),
    "m-v-views-of-the-same-memory": (lambda: overlapping("m", "v", offset=0), "m and v"),
    "m-v-overlapping-slices": (lambda: overlapping("m", "v", offset=56), "m and v"),
    "v-m-overlapping-by-one-value": (lambda: overlapping("v", "m", offset=152), "m and v"),
    "param-grad-overlapping": (lambda: overlapping("grad", "param", offset=24), "param and grad"),
    "param-v-half-a-value-apart": (lambda: overlapping("param", "v", offset=4, start=4),
                                   "param and v"),
}


def leaky(**kw):
    a = dict(x=arr(2, 3, 4), slope=0.01)
    a.update(kw)
    return "leaky_relu", (a["x"], a["slope"])


def leaky_back(**kw):
    a = dict(x=arr(2, 3, 4), upstream=arr(2, 3, 4, seed=1), slope=0.01)
    a.update(kw)
    return "leaky_relu_backward", (a["x"], a["upstream"], a["slope"])


def avgf(**kw):
    a = dict(x=arr(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "avgpool2d_forward", (a["x"], a["pool_size"], a["stride"])


def avgb(**kw):
    a = dict(dy=arr(2, 3, 4, 3), input_shape=(2, 7, 9, 3), pool_size=(2, 2), stride=(2, 2))
    a.update(kw)
    return "avgpool2d_backward", (a["dy"], a["input_shape"], a["pool_size"], a["stride"])


def bnf(**kw):
    a = dict(x=arr(6, 3), gamma=arr(3, seed=1), beta=arr(3, seed=2), eps=1e-5)
    a.update(kw)
    return "batchnorm_forward", (a["x"], a["gamma"], a["beta"], a["eps"])


def bnb(**kw):
    a = dict(x=arr(6, 3), dy=arr(6, 3, seed=1), gamma=arr(3, seed=2), mean=arr(3, seed=3),
             var=np.abs(arr(3, seed=4)), eps=1e-5)
    a.update(kw)
    return "batchnorm_backward", (a["x"], a["dy"], a["gamma"], a["mean"], a["var"], a["eps"])


def bni(**kw):
    a = dict(x=arr(6, 3), gamma=arr(3, seed=1), beta=arr(3, seed=2), mean=arr(3, seed=3),
             var=np.abs(arr(3, seed=4)), eps=1e-5)
    a.update(kw)
    return "batchnorm_inference", (a["x"], a["gamma"], a["beta"], a["mean"], a["var"], a["eps"])


def mm(**kw):
    a = dict(a=arr(5, 4), b=arr(4, 3, seed=1))
    a.update(kw)
    return "matmul", (a["a"], a["b"])


BAD_CALLS = {
    # matmul
    "matmul-a-1d": lambda: mm(a=arr(4)),
    "matmul-b-3d": lambda: mm(b=arr(4, 3, 1)),
    "matmul-inner-mismatch": lambda: mm(b=arr(5, 3)),
    "matmul-mixed-dtypes": lambda: mm(b=arr(4, 3, dtype=np.float32)),
    "matmul-int": lambda: mm(a=np.ones((5, 4), np.int64)),
    "matmul-list": lambda: mm(a=[[1.0] * 4] * 5),
    # leaky_relu and its backward
    "leaky-x-list": lambda: leaky(x=[1.0, -1.0]),
    "leaky-x-int": lambda: leaky(x=np.ones(4, np.int64)),
    "leaky-slope-negative": lambda: leaky(slope=-0.1),
    "leaky-slope-above-1": lambda: leaky(slope=1.5),
    "leaky-slope-nan": lambda: leaky(slope=float("nan")),
    "leaky-back-upstream-shape": lambda: leaky_back(upstream=arr(2, 3, 5)),
    "leaky-back-upstream-dtype": lambda: leaky_back(upstream=arr(2, 3, 4, dtype=np.float32)),
    "leaky-back-upstream-ndim": lambda: leaky_back(upstream=arr(24)),
    # conv2d_forward
    "fwd-x-3d": lambda: fwd(x=arr(7, 9, 3)),
    "fwd-x-5d": lambda: fwd(x=arr(1, 2, 7, 9, 3)),
    "fwd-w-3d": lambda: fwd(w=arr(3, 3, 3)),
    "fwd-b-2d": lambda: fwd(b=arr(1, 4)),
    "fwd-x-float16": lambda: fwd(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "fwd-x-int64": lambda: fwd(x=np.ones((2, 7, 9, 3), np.int64)),
    "fwd-x-int32": lambda: fwd(x=np.ones((2, 7, 9, 3), np.int32)),
    "fwd-w-float16": lambda: fwd(w=arr(3, 3, 3, 4, dtype=np.float16)),
    "fwd-x-complex": lambda: fwd(x=arr(2, 7, 9, 3).astype(np.complex128)),
    "fwd-x32-w64": lambda: fwd(x=arr(2, 7, 9, 3, dtype=np.float32)),
    "fwd-x64-w32": lambda: fwd(w=arr(3, 3, 3, 4, dtype=np.float32)),
    "fwd-b32": lambda: fwd(b=arr(4, dtype=np.float32)),
    "fwd-w-channels": lambda: fwd(w=arr(3, 3, 2, 4)),
    "fwd-b-short": lambda: fwd(b=arr(3)),
    "fwd-b-long": lambda: fwd(b=arr(5)),
    "fwd-w-zero-filters": lambda: fwd(w=arr(3, 3, 3, 0), b=arr(0)),
    "fwd-x-zero-height": lambda: fwd(x=arr(2, 0, 9, 3)),
    "fwd-x-zero-channels": lambda: fwd(x=arr(2, 7, 9, 0), w=arr(3, 3, 0, 4)),
    "fwd-stride-0": lambda: fwd(stride=(0, 1)),
    "fwd-stride-negative": lambda: fwd(stride=(1, -1)),
    "fwd-stride-1-long": lambda: fwd(stride=(1,)),
    "fwd-stride-3-long": lambda: fwd(stride=(1, 1, 1)),
    "fwd-stride-int": lambda: fwd(stride=1),
    "fwd-stride-float": lambda: fwd(stride=(1.0, 1)),
    "fwd-stride-None": lambda: fwd(stride=None),
    "fwd-padding-negative": lambda: fwd(padding=(1, 1, -1, 1)),
    "fwd-padding-2-long": lambda: fwd(padding=(1, 1)),
    "fwd-window-too-tall": lambda: fwd(w=arr(10, 3, 3, 4)),
    "fwd-window-too-wide": lambda: fwd(w=arr(3, 12, 3, 4)),
    "fwd-window-too-big-unpadded": lambda: fwd(w=arr(8, 3, 3, 4), padding=(0, 0, 0, 0)),
    "fwd-x-list": lambda: fwd(x=arr(2, 7, 9, 3).tolist()),
    "fwd-w-list": lambda: fwd(w=arr(3, 3, 3, 4).tolist()),
    "fwd-b-list": lambda: fwd(b=[0.0, 0.0, 0.0, 0.0]),
    "fwd-x-None": lambda: fwd(x=None),
    # conv2d_grad_input
    "gin-dy-wrong-width": lambda: gin(dy=arr(2, 7, 8, 4)),
    "gin-dy-wrong-height": lambda: gin(dy=arr(2, 8, 9, 4)),
    "gin-dy-wrong-filters": lambda: gin(dy=arr(2, 7, 9, 5)),
    "gin-dy-wrong-batch": lambda: gin(dy=arr(3, 7, 9, 4)),
    "gin-dy-3d": lambda: gin(dy=arr(7, 9, 4)),
    "gin-dy-int": lambda: gin(dy=np.ones((2, 7, 9, 4), np.int64)),
    "gin-dy-float16": lambda: gin(dy=arr(2, 7, 9, 4, dtype=np.float16)),
    "gin-dy32-w64": lambda: gin(dy=arr(2, 7, 9, 4, dtype=np.float32)),
    "gin-w-3d": lambda: gin(w=arr(3, 3, 3)),
    "gin-input-shape-3-long": lambda: gin(input_shape=(7, 9, 3)),
    "gin-input-shape-5-long": lambda: gin(input_shape=(2, 7, 9, 3, 1)),
    "gin-input-shape-zero-height": lambda: gin(input_shape=(2, 0, 9, 3)),
    "gin-input-shape-zero-batch": lambda: gin(input_shape=(0, 7, 9, 3), dy=arr(0, 7, 9, 4)),
    "gin-input-shape-negative": lambda: gin(input_shape=(2, -7, 9, 3)),
    "gin-input-shape-float": lambda: gin(input_shape=(2, 7.0, 9, 3)),
    "gin-input-shape-channels": lambda: gin(input_shape=(2, 7, 9, 2)),
    "gin-stride-0": lambda: gin(stride=(1, 0)),
    "gin-padding-negative": lambda: gin(padding=(-1, 0, 0, 0)),
    "gin-window-too-big": lambda: gin(w=arr(8, 3, 3, 4), padding=(0, 0, 0, 0)),
    "gin-dy-list": lambda: gin(dy=arr(2, 7, 9, 4).tolist()),
    # conv2d_grad_params
    "gpar-dy-wrong-width": lambda: gpar(dy=arr(2, 7, 8, 4)),
    "gpar-dy-wrong-batch": lambda: gpar(dy=arr(3, 7, 9, 4)),
    "gpar-dy-3d": lambda: gpar(dy=arr(7, 9, 4)),
    "gpar-x-3d": lambda: gpar(x=arr(7, 9, 3)),
    "gpar-x-float16": lambda: gpar(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "gpar-dy-int": lambda: gpar(dy=np.ones((2, 7, 9, 4), np.int32)),
    "gpar-x64-dy32": lambda: gpar(dy=arr(2, 7, 9, 4, dtype=np.float32)),
    "gpar-kernel-size-3-long": lambda: gpar(kernel_size=(3, 3, 3)),
    "gpar-kernel-size-0": lambda: gpar(kernel_size=(0, 3)),
    "gpar-kernel-too-big": lambda: gpar(kernel_size=(10, 3)),
    "gpar-stride-negative": lambda: gpar(stride=(-1, 1)),
    "gpar-padding-negative": lambda: gpar(padding=(0, 0, 0, -2)),
    "gpar-x-zero-width": lambda: gpar(x=arr(2, 7, 0, 3)),
    "gpar-dy-list": lambda: gpar(dy=arr(2, 7, 9, 4).tolist()),
    # maxpool2d_forward
    "pfwd-x-3d": lambda: pfwd(x=arr(7, 9, 3)),
    "pfwd-x-float16": lambda: pfwd(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "pfwd-x-int": lambda: pfwd(x=np.ones((2, 7, 9, 3), np.int64)),
    "pfwd-x-bool": lambda: pfwd(x=np.ones((2, 7, 9, 3), bool)),
    "pfwd-pool-0": lambda: pfwd(pool_size=(0, 2)),
    "pfwd-pool-negative": lambda: pfwd(pool_size=(2, -2)),
    "pfwd-pool-3-long": lambda: pfwd(pool_size=(2, 2, 2)),
    "pfwd-stride-0": lambda: pfwd(stride=(2, 0)),
    "pfwd-stride-negative": lambda: pfwd(stride=(-2, 2)),
    "pfwd-stride-1-long": lambda: pfwd(stride=(2,)),
    "pfwd-window-too-tall": lambda: pfwd(pool_size=(8, 2)),
    "pfwd-window-too-wide": lambda: pfwd(pool_size=(2, 10)),
    "pfwd-x-zero-height": lambda: pfwd(x=arr(2, 0, 9, 3)),
    "pfwd-x-zero-channels": lambda: pfwd(x=arr(2, 7, 9, 0)),
    "pfwd-x-list": lambda: pfwd(x=arr(2, 7, 9, 3).tolist()),
    # maxpool2d_backward
    "pbwd-argmax-int32": lambda: pbwd(argmax=valid_argmax().astype(np.int32)),
    "pbwd-argmax-uint64": lambda: pbwd(argmax=valid_argmax().astype(np.uint64)),
    "pbwd-argmax-float": lambda: pbwd(argmax=valid_argmax().astype(np.float64)),
    "pbwd-argmax-wrong-channels": lambda: pbwd(argmax=valid_argmax((2, 3, 4, 2))),
    "pbwd-argmax-wrong-width": lambda: pbwd(argmax=valid_argmax((2, 3, 5, 3))),
    "pbwd-argmax-3d": lambda: pbwd(argmax=valid_argmax((2, 12, 3))),
    "pbwd-argmax-negative": lambda: pbwd(argmax=np.where(valid_argmax() == 5, -1, valid_argmax())),
    "pbwd-argmax-equal-plane": lambda: pbwd(argmax=np.where(valid_argmax() == 5, 63, valid_argmax())),
    "pbwd-argmax-huge": lambda: pbwd(argmax=np.where(valid_argmax() == 5, 2**40, valid_argmax())),
    "pbwd-argmax-int64-min": lambda: pbwd(
        argmax=np.where(valid_argmax() == 5, np.iinfo(np.int64).min, valid_argmax())),
    "pbwd-argmax-list": lambda: pbwd(argmax=valid_argmax().tolist()),
    "pbwd-dy-float16": lambda: pbwd(dy=arr(2, 3, 4, 3, dtype=np.float16)),
    "pbwd-dy-int": lambda: pbwd(dy=np.ones((2, 3, 4, 3), np.int64)),
    "pbwd-dy-3d": lambda: pbwd(dy=arr(3, 4, 3), argmax=valid_argmax((3, 4, 3))),
    "pbwd-dy-list": lambda: pbwd(dy=arr(2, 3, 4, 3).tolist()),
    "pbwd-dy-batch": lambda: pbwd(dy=arr(3, 3, 4, 3), argmax=valid_argmax((3, 3, 4, 3))),
    "pbwd-dy-channels": lambda: pbwd(dy=arr(2, 3, 4, 2), argmax=valid_argmax((2, 3, 4, 2))),
    "pbwd-input-shape-3-long": lambda: pbwd(input_shape=(2, 63, 3)),
    "pbwd-input-shape-zero-height": lambda: pbwd(input_shape=(2, 0, 9, 3)),
    "pbwd-input-shape-zero-width": lambda: pbwd(input_shape=(2, 7, 0, 3)),
    "pbwd-input-shape-too-small": lambda: pbwd(input_shape=(2, 7, 8, 3)),  # plane 56 <= max index 62
    # avgpool2d_forward
    "avgf-x-3d": lambda: avgf(x=arr(7, 9, 3)),
    "avgf-x-int": lambda: avgf(x=np.ones((2, 7, 9, 3), np.int64)),
    "avgf-x-float16": lambda: avgf(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "avgf-x-list": lambda: avgf(x=arr(2, 7, 9, 3).tolist()),
    "avgf-pool-0": lambda: avgf(pool_size=(0, 2)),
    "avgf-pool-3-long": lambda: avgf(pool_size=(2, 2, 2)),
    "avgf-stride-0": lambda: avgf(stride=(2, 0)),
    "avgf-stride-negative": lambda: avgf(stride=(-2, 2)),
    "avgf-window-too-tall": lambda: avgf(pool_size=(8, 2)),
    "avgf-window-too-wide": lambda: avgf(pool_size=(2, 10)),
    "avgf-x-zero-height": lambda: avgf(x=arr(2, 0, 9, 3)),
    "avgf-x-zero-channels": lambda: avgf(x=arr(2, 7, 9, 0)),
    # avgpool2d_backward
    "avgb-dy-wrong-height": lambda: avgb(dy=arr(2, 4, 4, 3)),
    "avgb-dy-wrong-width": lambda: avgb(dy=arr(2, 3, 5, 3)),
    "avgb-dy-wrong-batch": lambda: avgb(dy=arr(1, 3, 4, 3)),
    "avgb-dy-wrong-channels": lambda: avgb(dy=arr(2, 3, 4, 2)),
    "avgb-dy-3d": lambda: avgb(dy=arr(3, 4, 3)),
    "avgb-dy-int": lambda: avgb(dy=np.ones((2, 3, 4, 3), np.int32)),
    "avgb-dy-list": lambda: avgb(dy=arr(2, 3, 4, 3).tolist()),
    "avgb-input-shape-3-long": lambda: avgb(input_shape=(7, 9, 3)),
    "avgb-input-shape-zero-width": lambda: avgb(input_shape=(2, 7, 0, 3)),
    "avgb-input-shape-negative": lambda: avgb(input_shape=(2, -7, 9, 3)),
    "avgb-input-shape-float": lambda: avgb(input_shape=(2, 7, 9.0, 3)),
    "avgb-window-too-big": lambda: avgb(pool_size=(8, 2)),
    "avgb-pool-0": lambda: avgb(pool_size=(2, 0)),
    "avgb-stride-negative": lambda: avgb(stride=(2, -1)),
    "avgb-stride-None": lambda: avgb(stride=None),
    # batchnorm_forward
    "bnf-x-1d": lambda: bnf(x=arr(6)),
    "bnf-x-4d": lambda: bnf(x=arr(2, 3, 1, 3)),
    "bnf-x-int": lambda: bnf(x=np.ones((6, 3), np.int64)),
    "bnf-x-list": lambda: bnf(x=arr(6, 3).tolist()),
    "bnf-x-no-rows": lambda: bnf(x=arr(0, 3)),
    "bnf-x-no-channels": lambda: bnf(x=arr(6, 0), gamma=arr(0), beta=arr(0)),
    "bnf-gamma-short": lambda: bnf(gamma=arr(2)),
    "bnf-gamma-2d": lambda: bnf(gamma=arr(1, 3)),
    "bnf-gamma-float32": lambda: bnf(gamma=arr(3, dtype=np.float32)),
    "bnf-beta-long": lambda: bnf(beta=arr(4)),
    "bnf-beta-list": lambda: bnf(beta=[0.0, 0.0, 0.0]),
    "bnf-x32-gamma64": lambda: bnf(x=arr(6, 3, dtype=np.float32)),
    "bnf-eps-0": lambda: bnf(eps=0.0),
    "bnf-eps-negative": lambda: bnf(eps=-1e-5),
    "bnf-eps-nan": lambda: bnf(eps=float("nan")),
    "bnf-eps-None": lambda: bnf(eps=None),
    # batchnorm_backward
    "bnb-dy-wrong-shape": lambda: bnb(dy=arr(6, 4)),
    "bnb-dy-wrong-rows": lambda: bnb(dy=arr(5, 3)),
    "bnb-dy-float32": lambda: bnb(dy=arr(6, 3, dtype=np.float32)),
    "bnb-dy-1d": lambda: bnb(dy=arr(18)),
    "bnb-x-no-rows": lambda: bnb(x=arr(0, 3), dy=arr(0, 3)),
    "bnb-mean-short": lambda: bnb(mean=arr(2)),
    "bnb-var-float32": lambda: bnb(var=np.abs(arr(3, dtype=np.float32))),
    "bnb-gamma-list": lambda: bnb(gamma=[1.0, 1.0, 1.0]),
    "bnb-eps-0": lambda: bnb(eps=0),
    "bnb-eps-inf": lambda: bnb(eps=float("inf")),
    # batchnorm_inference
    "bni-x-3d": lambda: bni(x=arr(2, 3, 3)),
    "bni-x-no-channels": lambda: bni(x=arr(6, 0), gamma=arr(0), beta=arr(0), mean=arr(0),
                                     var=arr(0)),
    "bni-mean-long": lambda: bni(mean=arr(4)),
    "bni-var-2d": lambda: bni(var=np.abs(arr(3, 1))),
    "bni-beta-int": lambda: bni(beta=np.zeros(3, np.int64)),
    "bni-eps-negative": lambda: bni(eps=-1.0),
    "bni-eps-string": lambda: bni(eps="1e-5"),
    # adam_update
    "adam-param-transposed": lambda: adam(param=arr(5, 4).T),
    "adam-param-strided": lambda: adam(param=arr(4, 10)[:, ::2]),
    "adam-param-readonly": lambda: adam(param=readonly(arr(4, 5))),
    "adam-param-float16": lambda: adam(param=arr(4, 5, dtype=np.float16)),
    "adam-param-int": lambda: adam(param=np.ones((4, 5), np.int64)),
    "adam-param-list": lambda: adam(param=arr(4, 5).tolist()),
    "adam-m-wrong-shape": lambda: adam(m=arr(5, 4)),
    "adam-m-flat": lambda: adam(m=arr(20)),
    "adam-m-float32": lambda: adam(m=arr(4, 5, dtype=np.float32)),
    "adam-m-transposed": lambda: adam(m=arr(5, 4).T),
    "adam-m-readonly": lambda: adam(m=readonly(arr(4, 5))),
    "adam-m-list": lambda: adam(m=arr(4, 5).tolist()),
    "adam-v-wrong-shape": lambda: adam(v=arr(4, 6)),
    "adam-v-float32": lambda: adam(v=arr(4, 5, dtype=np.float32)),
    "adam-v-readonly": lambda: adam(v=readonly(arr(4, 5))),
    "adam-grad-wrong-shape": lambda: adam(grad=arr(5, 4)),
    "adam-grad-flat": lambda: adam(grad=arr(20)),
    "adam-grad-float32": lambda: adam(grad=arr(4, 5, dtype=np.float32)),
    "adam-grad-int": lambda: adam(grad=np.ones((4, 5), np.int64)),
    "adam-grad-list": lambda: adam(grad=arr(4, 5).tolist()),
    "adam-step-0": lambda: adam(step=0),
    "adam-step-negative": lambda: adam(step=-1),
    "adam-step-float": lambda: adam(step=1.5),
    "adam-step-None": lambda: adam(step=None),
    "adam-lr-nan": lambda: adam(lr=float("nan")),
    "adam-lr-inf": lambda: adam(lr=float("inf")),
    "adam-lr-negative": lambda: adam(lr=-1e-3),
    "adam-lr-string": lambda: adam(lr="0.001"),
    "adam-beta1-1": lambda: adam(beta1=1.0),
    "adam-beta1-negative": lambda: adam(beta1=-0.1),
    "adam-beta1-nan": lambda: adam(beta1=float("nan")),
    "adam-beta2-1": lambda: adam(beta2=1.0),
    "adam-beta2-above-1": lambda: adam(beta2=1.5),
    "adam-eps-negative": lambda: adam(eps=-1e-8),
    "adam-eps-nan": lambda: adam(eps=float("nan")),
    **{f"adam-aliased-{key}": maker for key, (maker, _) in ALIASED.items()},
}
BAD_IDS = list(BAD_CALLS)
BAD_MAKERS = list(BAD_CALLS.values())


def call(module, maker):
    name, args = maker()
    return getattr(module, name)(*args)


@pytest.mark.parametrize("maker", BAD_MAKERS, ids=BAD_IDS)
@pytest.mark.parametrize("module", MODULES)
def test_bad_call_raises(module, maker):
    with pytest.raises((ValueError, TypeError)):
        call(module, maker)


@pytest.mark.parametrize("maker", BAD_MAKERS, ids=BAD_IDS)
def test_bad_call_raises_the_same_exception_type_in_both(maker):
    raised = []
    for module in (_numpy_kernels, compiled):
        with pytest.raises(Exception) as info:
            call(module, maker)
        raised.append(info.type)
    assert raised[0] is raised[1], f"NumPy raised {raised[0].__name__}, compiled {raised[1].__name__}"


ADAM_BAD = [(key, maker) for key, maker in BAD_CALLS.items() if key.startswith("adam-")]


@pytest.mark.parametrize("maker", [m for _, m in ADAM_BAD], ids=[k for k, _ in ADAM_BAD])
@pytest.mark.parametrize("module", MODULES)
def test_refused_adam_update_leaves_param_m_and_v_unchanged(module, maker):
    _, args = maker()
    param, grad, m, v = args[:4]
    before = [np.array(a, copy=True) for a in (param, grad, m, v)]
    with pytest.raises((ValueError, TypeError)):
        module.adam_update(*args)
    for after, snapshot in zip((param, grad, m, v), before):
        np.testing.assert_array_equal(np.asarray(after), snapshot)


def test_valid_calls_behind_the_bad_ones_are_accepted():
    """The bad calls differ from these in one argument only, so each one tests its check."""
    for maker in (fwd, gin, gpar, pfwd, pbwd, avgf, avgb, bnf, bnb, bni, adam, mm, leaky, leaky_back):
        for module in (_numpy_kernels, compiled):
            name, args = maker()
            result = getattr(module, name)(*args)
            if name == "adam_update":
                assert not np.array_equal(args[0], maker()[1][0])
            else:
                outputs = result if isinstance(result, tuple) else (result,)
                assert all(isinstance(o, np.ndarray) and o.size for o in outputs)


@pytest.mark.parametrize("key", list(ALIASED))
@pytest.mark.parametrize("module", MODULES)
def test_adam_update_refuses_arrays_sharing_memory_and_names_them(module, key):
    """With param, m or v sharing memory with another argument, each backend would compute
    something else (and the threads of the compiled one race); both refuse alike."""
    maker, names = ALIASED[key]
    with pytest.raises(ValueError, match=f"^{names} share memory, but"):
        call(module, maker)


def disjoint_views(count, seed):
    """`count` (4, 5) views, side by side in one buffer: one memory, nothing shared."""
    buffer = np.abs(arr(20 * count, seed=seed))
    return [buffer[20 * i:20 * (i + 1)].reshape(4, 5) for i in range(count)]


def test_adam_update_takes_views_that_share_only_a_buffer_and_grads_it_copies():
    """Neighbouring slices of one buffer share no memory; a non-contiguous grad over param
    is copied before any update, so there is nothing shared left to refuse."""
    for module in (_numpy_kernels, compiled):
        for views in (disjoint_views(4, seed=6), disjoint_views(4, seed=6)[::-1]):
            separate = [a.copy() for a in views]
            module.adam_update(*views, 1e-2, 0.9, 0.999, 1e-8, 2)
            module.adam_update(*separate, 1e-2, 0.9, 0.999, 1e-8, 2)
            for got, want in zip(views, separate):
                np.testing.assert_array_equal(got, want)
        buffer = arr(4, 10, seed=7)
        param, grad = buffer[:2].reshape(4, 5), buffer[:, ::2]
        expected = param.copy(), grad.copy(), np.zeros((4, 5)), np.ones((4, 5))
        module.adam_update(*expected, 1e-2, 0.9, 0.999, 1e-8, 2)
        module.adam_update(param, grad, np.zeros((4, 5)), np.ones((4, 5)), 1e-2, 0.9, 0.999,
                           1e-8, 2)
        np.testing.assert_array_equal(param, expected[0])


# Zero sizes: every kernel with an empty batch, no channels or no filters, and what both
# backends do: None where they accept the call (an empty batch, empty products and
# elementwise arrays), else the start of the ValueError (any input or filter without
# channels; any filter bank without filters, as for w so for conv2d_grad_params' dy; an
# input_shape with an empty dimension).
ZERO_SIZED = {
    "fwd-batch-0": (lambda: fwd(x=arr(0, 7, 9, 3)), None),
    "fwd-channels-0": (lambda: fwd(x=arr(2, 7, 9, 0), w=arr(3, 3, 0, 4)),
                       "w must have no empty dimension"),
    "fwd-filters-0": (lambda: fwd(w=arr(3, 3, 3, 0), b=arr(0)), "w must have no empty dimension"),
    "gin-batch-0": (lambda: gin(dy=arr(0, 7, 9, 4), input_shape=(0, 7, 9, 3)),
                    "input_shape must be 4 ints in"),
    "gin-channels-0": (lambda: gin(w=arr(3, 3, 0, 4), input_shape=(2, 7, 9, 0)),
                       "input_shape must be 4 ints in"),
    "gin-filters-0": (lambda: gin(dy=arr(2, 7, 9, 0), w=arr(3, 3, 3, 0)),
                      "w must have no empty dimension"),
    "gpar-batch-0": (lambda: gpar(x=arr(0, 7, 9, 3), dy=arr(0, 7, 9, 4)), None),
    "gpar-channels-0": (lambda: gpar(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "gpar-filters-0": (lambda: gpar(dy=arr(2, 7, 9, 0)), "dy must have at least one filter"),
    "gpar-filters-0-1x1": (lambda: gpar(dy=arr(2, 7, 9, 0), kernel_size=(1, 1),
                                        padding=(0, 0, 0, 0)), "dy must have at least one filter"),
    "gpar-batch-0-filters-0": (lambda: gpar(x=arr(0, 7, 9, 3), dy=arr(0, 7, 9, 0)),
                               "dy must have at least one filter"),
    "pfwd-batch-0": (lambda: pfwd(x=arr(0, 7, 9, 3)), None),
    "pfwd-channels-0": (lambda: pfwd(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "pbwd-batch-0": (lambda: pbwd(dy=arr(0, 3, 4, 3), argmax=valid_argmax((0, 3, 4, 3)),
                                  input_shape=(0, 7, 9, 3)), "input_shape must be 4 ints in"),
    "pbwd-channels-0": (lambda: pbwd(dy=arr(2, 3, 4, 0), argmax=valid_argmax((2, 3, 4, 0)),
                                     input_shape=(2, 7, 9, 0)), "input_shape must be 4 ints in"),
    "avgf-batch-0": (lambda: avgf(x=arr(0, 7, 9, 3)), None),
    "avgf-channels-0": (lambda: avgf(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "avgb-batch-0": (lambda: avgb(dy=arr(0, 3, 4, 3), input_shape=(0, 7, 9, 3)),
                     "input_shape must be 4 ints in"),
    "avgb-channels-0": (lambda: avgb(dy=arr(2, 3, 4, 0), input_shape=(2, 7, 9, 0)),
                        "input_shape must be 4 ints in"),
    "bnf-rows-0": (lambda: bnf(x=arr(0, 3)), "batch statistics need at least one row of x"),
    "bnf-channels-0": (lambda: bnf(x=arr(6, 0), gamma=arr(0), beta=arr(0)),
                       "x must have at least one channel"),
    "bnb-rows-0": (lambda: bnb(x=arr(0, 3), dy=arr(0, 3)),
                   "batch statistics need at least one row of x"),
    "bni-rows-0": (lambda: bni(x=arr(0, 3)), None),
    "bni-channels-0": (lambda: bni(x=arr(6, 0), gamma=arr(0), beta=arr(0), mean=arr(0),
                                   var=arr(0)), "x must have at least one channel"),
    "adam-empty": (lambda: adam(param=arr(0), grad=arr(0), m=arr(0), v=arr(0)), None),
    "adam-3x0": (lambda: adam(param=arr(3, 0), grad=arr(3, 0), m=arr(3, 0), v=arr(3, 0)), None),
    "matmul-no-rows": (lambda: mm(a=arr(0, 4)), None),
    "matmul-no-inner": (lambda: mm(a=arr(5, 0), b=arr(0, 3)), None),
    "matmul-no-columns": (lambda: mm(b=arr(4, 0)), None),
    "leaky-empty": (lambda: leaky(x=arr(0, 3)), None),
    "leaky-back-empty": (lambda: leaky_back(x=arr(0, 3), upstream=arr(0, 3)), None),
}


def outcome(module, maker):
    """What the kernel gives (run: Adam's updated arrays), or the ValueError it raises."""
    name, args = maker()
    try:
        return run(module, name, args)
    except ValueError as error:
        return error


@pytest.mark.usefixtures("products")
@pytest.mark.parametrize("key", list(ZERO_SIZED))
def test_zero_sizes_give_the_same_result_or_the_same_error_in_both(key):
    maker, refusal = ZERO_SIZED[key]
    expected, actual = outcome(_numpy_kernels, maker), outcome(compiled, maker)
    if refusal is not None:
        for error in (expected, actual):
            assert isinstance(error, ValueError), f"accepted: {error!r}"
            assert str(error).startswith(refusal), str(error)
        assert str(actual) == str(expected)
        return
    assert not isinstance(expected, ValueError) and not isinstance(actual, ValueError), (
        expected, actual)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# Integer scalars outside the range of the C integer the compiled kernels make of them
# (stride, padding and sizes: int32 and up; Adam's step: int64), bools, floats, NaN and
# strings are ValueErrors naming the argument in both backends; NumPy's integers in range
# are ints like Python's. Each argument with the value its call takes by default.
INT_ARGUMENTS = {
    "step": (lambda v: adam(step=v), 3, "step must be an int from 1 to 9223372036854775807"),
    "conv-stride": (lambda v: fwd(stride=(1, v)), 1, "stride must be 2 ints"),
    "conv-padding": (lambda v: fwd(padding=(1, 1, v, 1)), 1, "padding (top, bottom, left, right) "
                                                             "must be 4 ints"),
    "grad-input-stride": (lambda v: gin(stride=(v, 1)), 1, "stride must be 2 ints"),
    "grad-input-shape": (lambda v: gin(input_shape=(v, 7, 9, 3)), 2, "input_shape must be 4 ints"),
    "grad-params-kernel-size": (lambda v: gpar(kernel_size=(v, 3)), 3,
                                "kernel_size must be 2 ints"),
    "pool-size": (lambda v: pfwd(pool_size=(2, v)), 2, "pool_size must be 2 ints"),
    "pool-stride": (lambda v: pfwd(stride=(v, 2)), 2, "stride must be 2 ints"),
    "pool-backward-input-shape": (lambda v: pbwd(input_shape=(v, 7, 9, 3)), 2,
                                  "input_shape must be 4 ints"),
    "avgpool-size": (lambda v: avgf(pool_size=(v, 2)), 2, "pool_size must be 2 ints"),
    "avgpool-stride": (lambda v: avgf(stride=(2, v)), 2, "stride must be 2 ints"),
    "avgpool-backward-input-shape": (lambda v: avgb(input_shape=(v, 7, 9, 3)), 2,
                                     "input_shape must be 4 ints"),
    "avgpool-backward-stride": (lambda v: avgb(stride=(v, 2)), 2, "stride must be 2 ints"),
}
# Each bad value made from the argument's default.
BAD_INTEGERS = {
    "10**400": lambda default: 10**400,
    "10**5000": lambda default: 10**5000,           # more digits than Python prints
    "2**63": lambda default: 2**63,
    "2**64": lambda default: 2**64,
    "uint64-max": lambda default: np.uint64(2**64 - 1),
    "-1": lambda default: -1,
    "True": lambda default: True,
    "False": lambda default: False,
    "numpy-bool": lambda default: np.True_,
    "as-float": float,
    "2.5": lambda default: 2.5,
    "nan": lambda default: float("nan"),
    "inf": lambda default: float("inf"),
    "None": lambda default: None,
    "as-string": str,
}
GOOD_INTEGERS = [np.int64, np.int8, np.uint16]


@pytest.mark.parametrize("bad", list(BAD_INTEGERS))
@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_bad_integer_scalars_are_value_errors_naming_the_argument_in_both(argument, bad):
    make, default, refusal = INT_ARGUMENTS[argument]
    value = BAD_INTEGERS[bad](default)
    for module in (_numpy_kernels, compiled):
        name, args = make(value)
        with pytest.raises(ValueError) as info:
            getattr(module, name)(*args)
        assert str(info.value).startswith(refusal), str(info.value)
        assert len(str(info.value)) < 200


@pytest.mark.parametrize("kind", GOOD_INTEGERS, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_numpy_integers_are_taken_as_ints_in_both(argument, kind):
    make, default, _ = INT_ARGUMENTS[argument]
    results = []
    for module in (_numpy_kernels, compiled):
        expected = run(module, *make(default))
        results.append(run(module, *make(kind(default))))
        for got, want in zip(results[-1], expected):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_largest_step_is_taken_alike_in_both():
    """At step 2**63 - 1, as from a few thousand steps on, beta**step is 0 and Adam's bias
    corrections are 1."""
    results = []
    for module in (_numpy_kernels, compiled):
        results.append(run(module, *adam(step=2**63 - 1)))
        for got, want in zip(results[-1], run(module, *adam(step=10**6))):
            np.testing.assert_array_equal(got, want)
    for got, want in zip(*results):
        assert_close(got, want, np.float64, ADAM_TOL[np.float64])


FLOAT_ARGUMENTS = {
    "lr": lambda v: adam(lr=v),
    "beta1": lambda v: adam(beta1=v),
    "beta2": lambda v: adam(beta2=v),
    "eps": lambda v: adam(eps=v),
    "slope": lambda v: leaky(slope=v),
    "slope-backward": lambda v: leaky_back(slope=v),
}
BAD_FLOATS = {"10**400": 10**400, "-10**400": -(10**400), "True": True, "False": False,
              "nan": float("nan"), "-inf": float("-inf"), "float32-inf": np.float32("inf"),
              "None": None, "string": "0.25", "complex": 0.25j}


@pytest.mark.parametrize("bad", list(BAD_FLOATS))
@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_bad_real_scalars_are_value_errors_naming_the_argument_in_both(argument, bad):
    parameter = argument.split("-")[0]
    for module in (_numpy_kernels, compiled):
        name, args = FLOAT_ARGUMENTS[argument](BAD_FLOATS[bad])
        with pytest.raises(ValueError, match=f"^{parameter} must be a finite number, got "):
            getattr(module, name)(*args)


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_numpy_and_python_numbers_of_one_value_are_alike_in_both(argument):
    for module in (_numpy_kernels, compiled):
        expected = run(module, *FLOAT_ARGUMENTS[argument](0.25))
        for value in (np.float32(0.25), np.float64(0.25), 2**-2):
            for got, want in zip(run(module, *FLOAT_ARGUMENTS[argument](value)), expected):
                np.testing.assert_array_equal(got, want)
        expected = run(module, *FLOAT_ARGUMENTS[argument](0.0))
        for value in (0, np.int64(0), np.uint8(0)):
            for got, want in zip(run(module, *FLOAT_ARGUMENTS[argument](value)), expected):
                np.testing.assert_array_equal(got, want)


EPS_CALLS = {"forward": lambda v: bnf(eps=v), "backward": lambda v: bnb(eps=v),
             "inference": lambda v: bni(eps=v)}


@pytest.mark.parametrize("bad", list(BAD_FLOATS) + ["0", "-1e-5", "-0.0"])
@pytest.mark.parametrize("kernel", list(EPS_CALLS))
def test_an_eps_that_is_not_a_finite_number_above_0_is_a_value_error_naming_it_in_both(kernel, bad):
    value = {"0": 0, "-1e-5": -1e-5, "-0.0": -0.0}.get(bad, BAD_FLOATS.get(bad))
    for module in (_numpy_kernels, compiled):
        name, args = EPS_CALLS[kernel](value)
        with pytest.raises(ValueError, match="^eps must be "):
            getattr(module, name)(*args)


@pytest.mark.parametrize("kernel", list(EPS_CALLS))
def test_numpy_and_python_numbers_for_eps_are_alike_in_both(kernel):
    for module in (_numpy_kernels, compiled):
        for plain, others in ((0.25, (np.float32(0.25), np.float64(0.25), 2**-2)),
                              (1.0, (1, np.int64(1), np.uint8(1)))):
            expected = run(module, *EPS_CALLS[kernel](plain))
            for value in others:
                for got, want in zip(run(module, *EPS_CALLS[kernel](value)), expected):
                    np.testing.assert_array_equal(got, want)


# ================================================== 3. read-only and non-contiguous inputs


def variant(kind, a):
    """An array equal to a, laid out or flagged as `kind` says."""
    if kind == "readonly":
        out = readonly(a)
    elif kind == "strided_rows":          # like x[:, ::2] (or b[::2])
        axis = 1 if a.ndim > 1 else 0
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.zeros(shape, a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = a
        out = big[tuple(index)]
    elif kind == "strided_last_axis":     # channels with a stride of two elements
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    elif kind == "fortran":               # transposed, copied, transposed back
        out = a.T.copy().T
    elif kind == "reversed":              # negative strides
        out = a[..., ::-1].copy()[..., ::-1]
    elif kind == "readonly_strided":
        out = variant("strided_rows", a)
        out.setflags(write=False)
    else:
        raise AssertionError(kind)
    np.testing.assert_array_equal(out, a)
    if kind == "readonly" or kind == "readonly_strided":
        assert not out.flags.writeable
    if kind != "readonly" and a.size > 1 and (a.ndim > 1 or kind != "fortran"):
        assert not out.flags.c_contiguous
    return out


VARIANTS = ["readonly", "strided_rows", "strided_last_axis", "fortran", "reversed", "readonly_strided"]


def read_only_inputs(name, dtype):
    """Arguments for kernel `name` and the positions of the array arguments it only reads."""
    rng = np.random.default_rng(9)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    stride, padding = (2, 1), (1, 2, 0, 1)
    if name == "conv2d_forward":
        return (r(2, 7, 9, 3), r(3, 2, 3, 4), r(4), stride, padding), (0, 1, 2)
    if name == "conv2d_grad_input":
        oh, ow = out_size(7, 3, 2, 1, 2), out_size(9, 2, 1, 0, 1)
        return (r(2, oh, ow, 4), r(3, 2, 3, 4), (2, 7, 9, 3), stride, padding), (0, 1)
    if name == "conv2d_grad_params":
        oh, ow = out_size(7, 3, 2, 1, 2), out_size(9, 2, 1, 0, 1)
        return (r(2, 7, 9, 3), r(2, oh, ow, 4), (3, 2), stride, padding), (0, 1)
    if name == "maxpool2d_forward":
        return (r(2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "maxpool2d_backward":
        x = r(2, 7, 9, 3)
        _, argmax = _numpy_kernels.maxpool2d_forward(x, (3, 3), (2, 2))
        return (r(*argmax.shape), argmax, x.shape), (0, 1)
    if name == "avgpool2d_forward":
        return (r(2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "avgpool2d_backward":
        return (r(2, 3, 4, 3), (2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "batchnorm_forward":
        return (r(50, 3), r(3), r(3), 1e-5), (0, 1, 2)
    if name == "batchnorm_backward":
        return (r(50, 3), r(50, 3), r(3), r(3), np.abs(r(3)), 1e-5), (0, 1, 2, 3, 4)
    if name == "batchnorm_inference":
        return (r(50, 3), r(3), r(3), r(3), np.abs(r(3)), 1e-5), (0, 1, 2, 3, 4)
    if name == "adam_update":
        return (r(4, 5), r(4, 5), r(4, 5), np.abs(r(4, 5)), 1e-2, 0.9, 0.999, 1e-8, 2), (1,)
    if name == "matmul":
        return (r(37, 19), r(19, 23)), (0, 1)
    if name == "leaky_relu":
        return (r(2, 7, 9, 3), 0.01), (0,)
    if name == "leaky_relu_backward":
        return (r(2, 7, 9, 3), r(2, 7, 9, 3), 0.01), (0, 1)
    raise AssertionError(name)


READ_ARGS = [(name, position) for name in KERNEL_NAMES
             for position in read_only_inputs(name, np.float64)[1]] + [
             (name, "all") for name in KERNEL_NAMES if len(read_only_inputs(name, np.float64)[1]) > 1]


def run(module, name, args):
    """The kernel's outputs as a tuple; for Adam, the updated param, m and v (on copies)."""
    if name == "adam_update":
        args = list(args)
        for i in (0, 2, 3):
            args[i] = args[i].copy()
        module.adam_update(*args)
        return args[0], args[2], args[3]
    result = getattr(module, name)(*args)
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", VARIANTS)
@pytest.mark.parametrize("name,position", READ_ARGS, ids=[f"{n}-{p}" for n, p in READ_ARGS])
@pytest.mark.parametrize("module", MODULES)
def test_read_only_and_non_contiguous_inputs_give_the_same_result(module, name, position, kind, dtype):
    args, read_positions = read_only_inputs(name, dtype)
    expected = run(module, name, args)
    changed = list(args)
    for i in (read_positions if position == "all" else (position,)):
        changed[i] = variant(kind, args[i])
    snapshots = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in changed]
    actual = run(module, name, tuple(changed))
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        if name != "adam_update":
            assert got.flags.writeable
            assert not any(np.shares_memory(got, a) for a in changed if isinstance(a, np.ndarray))
    for after, before in zip(changed, snapshots):
        if isinstance(after, np.ndarray):
            np.testing.assert_array_equal(after, before)  # inputs are only read


# =========================================================================== 4. kernels.py

# Besides the kernels, memory_pool() is a context manager (a NumPy allocator on the
# compiled backend, a plain block on NumPy); it is the one other callable allowed.
OTHER_CALLABLES = {"memory_pool", "set_num_threads", "get_num_threads"}


def public_functions(module):
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and callable(value)
            and getattr(value, "__module__", None) == module.__name__}


def test_kernels_module_functions_come_from_one_backend():
    assert kernels.BACKEND in ("compiled", "numpy")
    backend = compiled if kernels.BACKEND == "compiled" else _numpy_kernels
    for name in sorted(set(KERNEL_NAMES) | OTHER_CALLABLES):
        assert getattr(kernels, name) is getattr(backend, name)


def test_both_modules_define_the_same_public_functions():
    assert public_functions(compiled) == public_functions(_numpy_kernels)
    assert set(KERNEL_NAMES) <= public_functions(compiled)
    assert public_functions(compiled) - set(KERNEL_NAMES) <= OTHER_CALLABLES
    for module in (compiled, _numpy_kernels):
        for name in KERNEL_NAMES:
            assert getattr(module, name).__name__ == name


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_twin_functions_have_the_same_signature_and_docstrings(name):
    numpy_function, compiled_function = getattr(_numpy_kernels, name), getattr(compiled, name)
    assert inspect.signature(compiled_function) == inspect.signature(numpy_function)
    for function in (numpy_function, compiled_function, getattr(kernels, name)):
        assert function.__doc__ and function.__doc__.strip()


def test_modules_have_docstrings():
    for module in (kernels, compiled, _numpy_kernels):
        assert module.__doc__ and module.__doc__.strip()


# The compiled kernels inside compiled.memory_pool(), which swaps NumPy's allocator: the
# same results, and results made inside stay intact when later arrays reuse freed memory.

def pool_workload(dtype, seed):
    """Every kernel on tensors big enough (>= 64 KiB) for the pool to keep their memory."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 28, 28, 8)).astype(dtype)
    w = rng.standard_normal((3, 3, 8, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = compiled.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    dx = compiled.conv2d_grad_input(y, w, x.shape, (1, 1), (1, 1, 1, 1))
    dw, db = compiled.conv2d_grad_params(x, y, (3, 3), (1, 1), (1, 1, 1, 1))
    pooled, argmax = compiled.maxpool2d_forward(x, (3, 3), (2, 2))
    dpool = compiled.maxpool2d_backward(pooled, argmax, x.shape)
    averaged = compiled.avgpool2d_forward(x, (3, 3), (2, 2))
    daverage = compiled.avgpool2d_backward(averaged, x.shape, (3, 3), (2, 2))
    normalized = compiled.batchnorm_forward(y.reshape(-1, 6), b, b, 1e-5)
    dnormal = compiled.batchnorm_backward(y.reshape(-1, 6), y.reshape(-1, 6), b, *normalized[1:], 1e-5)
    param, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    for step in (1, 2):
        compiled.adam_update(param, y[..., :1].repeat(8, axis=3), m, v, 1e-3, 0.9, 0.999, 1e-8, step)
    return [y, dx, dw, db, pooled, argmax, dpool, averaged, daverage, *normalized, *dnormal,
            param, m, v]


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_kernels_inside_memory_pool_match_outside(dtype):
    expected = pool_workload(dtype, seed=10)
    with compiled.memory_pool():
        first = pool_workload(dtype, seed=10)
        del first
        inside = pool_workload(dtype, seed=10)      # now on reused blocks
        kept = [a.copy() for a in inside]
        scribble = [np.full_like(a, 7) for a in pool_workload(dtype, seed=11)]
    after = pool_workload(dtype, seed=12)          # outside again, freed blocks still pooled
    del scribble, after
    for got, copy, want in zip(inside, kept, expected):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, copy)


@pytest.mark.parametrize("module", MODULES)
def test_memory_pool_is_a_context_manager_that_restores_the_allocator(module):
    get_handler_name = (getattr(np, "_core", None) or np.core).multiarray.get_handler_name

    before = get_handler_name()
    assert module.memory_pool.__doc__ and module.memory_pool.__doc__.strip()
    with pytest.raises(KeyError):
        with module.memory_pool():
            big = np.ones(1 << 15)
            raise KeyError("leave the block by an exception")
    assert get_handler_name() == before
    np.testing.assert_array_equal(big, 1.0)


def test_kernels_and_pool_are_safe_from_several_python_threads():
    """Four Python threads running every kernel at once, each inside the pool, get what one
    thread alone gets: scratch buffers, BLAS thread settings and pool lists don't mix."""
    from concurrent.futures import ThreadPoolExecutor

    expected = [pool_workload(np.float32, seed) for seed in range(4)]

    def work(seed):
        with compiled.memory_pool():
            for _ in range(5):
                result = pool_workload(np.float32, seed)
            return [a.copy() for a in result]

    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(work, range(4)))
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def numpy_ships_openblas():
    import glob
    import os
    root = os.path.dirname(os.path.dirname(np.__file__))
    return bool(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))


@pytest.mark.skipif(not numpy_ships_openblas(), reason="this NumPy is not a wheel with its own OpenBLAS")
def test_numpy_wheels_openblas_is_found_for_direct_products():
    """Where NumPy ships its own OpenBLAS (its PyPI wheels), the compiled kernels use it."""
    assert compiled._blas is not None and all(compiled._blas.values())


@pytest.mark.skipif(compiled._blas is None, reason="NumPy's OpenBLAS is not called directly here")
def test_openblas_keeps_its_thread_count_across_kernel_calls():
    """The kernels run OpenBLAS on their own threads and give NumPy its thread count back."""
    import ctypes
    get_threads = ctypes.CFUNCTYPE(ctypes.c_int)(compiled._blas["get_threads"])
    before = get_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 20, 20, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 32)).astype(np.float32)
    compiled.conv2d_forward(x, w, np.zeros(32, np.float32), (1, 1), (1, 1, 1, 1))
    a = rng.standard_normal((300, 200))
    np.testing.assert_allclose(compiled.matmul(a, a.T), a @ a.T, rtol=1e-12, atol=1e-9)
    assert get_threads() == before
    with compiled.memory_pool():        # where a Network computes: one thread throughout
        assert get_threads() == 1
        compiled.matmul(a, a.T)
        assert get_threads() == 1
    assert get_threads() == before


# ====================================================================== 5. the two builds

def avx2_build():
    try:
        module = importlib.import_module("cnnc._kernels_avx2")
    except ImportError:
        return None
    return module if baseline._cpu_has_avx2_fma() else None


def every_kernel_once(module, dtype, seed):
    """Each kernel of the module on one set of random inputs (the direct convolution loops
    where the filters take them)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 15, 13, 1)).astype(dtype)
    w1 = rng.standard_normal((3, 3, 1, 35)).astype(dtype)
    x2 = rng.standard_normal((3, 15, 13, 4)).astype(dtype)
    w2 = rng.standard_normal((4, 4, 4, 8)).astype(dtype)
    b = rng.standard_normal(35).astype(dtype)
    y1 = module.conv2d_forward(x, w1, b, (1, 2), (1, 0, 1, 1))
    y2 = module.conv2d_forward(x2, w2, b[:8], (2, 1), (1, 2, 0, 1))
    pooled, argmax = module.maxpool2d_forward(y2, (2, 2), (2, 2))
    param, grad = rng.standard_normal((2, 1000)).astype(dtype)
    m, v = np.zeros_like(param), np.zeros_like(param)
    for step in range(1, 4):
        module.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
    averaged = module.avgpool2d_forward(y1, (3, 3), (2, 1))
    rows = y1.reshape(-1, 35)
    y, mean, var = module.batchnorm_forward(rows, b, b[::-1].copy(), 1e-5)
    return [y1, y2, *module.conv2d_grad_params(x2, y2, (4, 4), (2, 1), (1, 2, 0, 1)),
            module.conv2d_grad_input(y2, w2, x2.shape, (2, 1), (1, 2, 0, 1)), pooled, argmax,
            module.maxpool2d_backward(pooled, argmax, y2.shape), averaged,
            module.avgpool2d_backward(averaged, y1.shape, (3, 3), (2, 1)), y, mean, var,
            *module.batchnorm_backward(rows, y, b, mean, var, 1e-5),
            module.batchnorm_inference(rows, b, b, mean, var, 1e-3), param, m, v,
            module.matmul(x2.reshape(-1, 4).T, x2.reshape(-1, 4)),
            module.leaky_relu(y1, 0.01), module.leaky_relu_backward(y1, y1, 0.01)]


@pytest.mark.skipif(avx2_build() is None,
                    reason="no AVX2 build here (a CPU without AVX2 and FMA, or a compiler without them)")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_the_avx2_build_computes_what_the_baseline_build_computes_to_the_bit(dtype, seed):
    for wide, narrow in zip(every_kernel_once(avx2_build(), dtype, seed),
                            every_kernel_once(baseline, dtype, seed)):
        np.testing.assert_array_equal(wide, narrow)
