"""The NumPy kernels against naive nested-loop references computed in float64, finite
differences for the gradients, and PyTorch where it is installed."""
import numpy as np
import pytest

from cnnc import _numpy_kernels as nk

from .gradcheck import assert_grad_close, numerical_grad

DTYPES = [np.float32, np.float64]
# Relative tolerance (to the largest reference magnitude) per dtype.
TOL = {np.float32: 2e-5, np.float64: 1e-12}


# --------------------------------------------------------------------------- references


def _padded(x, padding):
    top, bottom, left, right = padding
    n, h, w, c = x.shape
    xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=np.float64)
    xp[:, top : top + h, left : left + w] = x
    return xp


def _out_size(size, before, after, k, s):
    return (size + before + after - k) // s + 1


def ref_conv_forward(x, w, b, stride, padding):
    xp = _padded(x, padding)
    w, b = w.astype(np.float64), b.astype(np.float64)
    n, hp, wp, _ = xp.shape
    kh, kw, _, f = w.shape
    sh, sw = stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    y = np.zeros((n, oh, ow, f))
    for ni in range(n):
        for i in range(oh):
            for j in range(ow):
                acc = b.copy()
                for di in range(kh):
                    for dj in range(kw):
                        acc += xp[ni, i * sh + di, j * sw + dj] @ w[di, dj]
                y[ni, i, j] = acc
    return y


def ref_conv_grad_input(dy, w, input_shape, stride, padding):
    n, h, wd, c = input_shape
    top, bottom, left, right = padding
    dy, w = dy.astype(np.float64), w.astype(np.float64)
    kh, kw = w.shape[:2]
    sh, sw = stride
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c))
    for ni in range(n):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for di in range(kh):
                    for dj in range(kw):
                        dxp[ni, i * sh + di, j * sw + dj] += w[di, dj] @ dy[ni, i, j]
    return dxp[:, top : top + h, left : left + wd]


def ref_conv_grad_params(x, dy, kernel_size, stride, padding):
    xp = _padded(x, padding)
    dy = dy.astype(np.float64)
    kh, kw = kernel_size
    sh, sw = stride
    dw = np.zeros((kh, kw, x.shape[3], dy.shape[3]))
    for ni in range(dy.shape[0]):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for di in range(kh):
                    for dj in range(kw):
                        dw[di, dj] += np.outer(xp[ni, i * sh + di, j * sw + dj], dy[ni, i, j])
    return dw, dy.sum(axis=(0, 1, 2))


def ref_maxpool_forward(x, pool_size, stride):
    """Max per window; the first maximum in row-major window order wins ties."""
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool_size, stride
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    y = np.zeros((n, oh, ow, c))
    idx = np.zeros((n, oh, ow, c), dtype=np.int64)
    for ni in range(n):
        for i in range(oh):
            for j in range(ow):
                for ci in range(c):
                    best, where = None, None
                    for di in range(ph):
                        for dj in range(pw):
                            r, q = i * sh + di, j * sw + dj
                            v = float(x[ni, r, q, ci])
                            if best is None or v > best:
                                best, where = v, r * w + q
                    y[ni, i, j, ci] = best
                    idx[ni, i, j, ci] = where
    return y, idx


def ref_maxpool_backward(dy, argmax, input_shape):
    n, h, w, c = input_shape
    dx = np.zeros(input_shape)
    for ni in range(n):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for ci in range(c):
                    k = int(argmax[ni, i, j, ci])
                    dx[ni, k // w, k % w, ci] += dy[ni, i, j, ci]
    return dx


def assert_close(actual, expected, dtype):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(initial=0.0), 1.0)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=TOL[dtype],
                               atol=TOL[dtype] * scale)


# --------------------------------------------------------------------------- convolution

# (n, h, w, c, f, kh, kw, stride, padding=(top, bottom, left, right))
CONV_CASES = [
    (1, 7, 5, 1, 2, (3, 3), (1, 1), (0, 0, 0, 0)),
    (2, 9, 9, 2, 3, (3, 3), (2, 2), (1, 1, 1, 1)),
    (2, 6, 11, 3, 2, (4, 4), (3, 3), (1, 2, 0, 3)),
    (3, 7, 5, 2, 2, (1, 1), (1, 1), (0, 0, 0, 0)),
    (1, 7, 5, 2, 3, (1, 1), (2, 3), (2, 0, 1, 1)),
    (2, 5, 8, 2, 2, (2, 3), (1, 2), (0, 1, 2, 0)),
    (1, 9, 7, 1, 2, (5, 5), (3, 1), (2, 2, 0, 1)),
    (2, 7, 7, 2, 1, (3, 2), (2, 3), (3, 0, 0, 2)),   # padding > kernel - 1 on top
    (1, 5, 5, 3, 2, (5, 5), (1, 1), (0, 0, 0, 0)),   # 1x1 output
    (2, 4, 3, 1, 2, (2, 2), (3, 2), (0, 1, 1, 0)),
]


def _conv_inputs(case, dtype, seed=0):
    n, h, w, c, f, (kh, kw), stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = rng.standard_normal((kh, kw, c, f)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    top, bottom, left, right = padding
    oh = _out_size(h, top, bottom, kh, stride[0])
    ow = _out_size(w, left, right, kw, stride[1])
    dy = rng.standard_normal((n, oh, ow, f)).astype(dtype)
    return x, wt, b, dy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_matches_naive(case, dtype):
    x, w, b, _ = _conv_inputs(case, dtype)
    stride, padding = case[6], case[7]
    x0, w0, b0 = x.copy(), w.copy(), b.copy()
    y = nk.conv2d_forward(x, w, b, stride, padding)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, ref_conv_forward(x, w, b, stride, padding), dtype)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad_input_matches_naive(case, dtype):
    x, w, _, dy = _conv_inputs(case, dtype)
    stride, padding = case[6], case[7]
    dy0 = dy.copy()
    dx = nk.conv2d_grad_input(dy, w, x.shape, stride, padding)
    assert dx.dtype == np.dtype(dtype)
    assert dx.shape == x.shape
    assert_close(dx, ref_conv_grad_input(dy, w, x.shape, stride, padding), dtype)
    np.testing.assert_array_equal(dy, dy0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad_params_matches_naive(case, dtype):
    x, w, _, dy = _conv_inputs(case, dtype)
    stride, padding = case[6], case[7]
    x0, dy0 = x.copy(), dy.copy()
    dw, db = nk.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    ref_dw, ref_db = ref_conv_grad_params(x, dy, w.shape[:2], stride, padding)
    assert dw.dtype == np.dtype(dtype) and db.dtype == np.dtype(dtype)
    assert dw.shape == w.shape and db.shape == (w.shape[3],)
    assert_close(dw, ref_dw, dtype)
    assert_close(db, ref_db, dtype)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)


def test_conv2d_forward_hand_computed():
    """A 3x3 image, 2x2 ones filter, stride 1, one row of zeros on top only."""
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1))
    y = nk.conv2d_forward(x, w, np.array([0.5]), (1, 1), (1, 0, 0, 0))
    expected = np.array([[0 + 1, 1 + 2], [0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]])
    np.testing.assert_array_equal(y[0, :, :, 0], expected + 0.5)


def test_conv2d_kernels_are_adjoint():
    """<conv(x), dy> == <x, grad_input(dy)> and == <w, grad_w(x, dy)> (bias zero)."""
    case = (2, 7, 6, 2, 3, (3, 2), (2, 1), (1, 0, 2, 1))
    x, w, _, dy = _conv_inputs(case, np.float64, seed=3)
    stride, padding = case[6], case[7]
    y = nk.conv2d_forward(x, w, np.zeros(w.shape[3]), stride, padding)
    lhs = np.sum(y * dy)
    dx = nk.conv2d_grad_input(dy, w, x.shape, stride, padding)
    dw, _ = nk.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    np.testing.assert_allclose(np.sum(x * dx), lhs, rtol=1e-12)
    np.testing.assert_allclose(np.sum(w * dw), lhs, rtol=1e-12)


# --------------------------------------------------------------------------- max pooling

# (n, h, w, c, pool, stride)
POOL_CASES = [
    (2, 6, 6, 2, (2, 2), (2, 2)),
    (1, 7, 7, 3, (2, 2), (2, 2)),   # does not tile: last row/col dropped
    (2, 7, 5, 2, (3, 3), (2, 2)),   # overlapping windows
    (1, 9, 9, 1, (3, 3), (1, 1)),
    (2, 6, 11, 2, (2, 3), (2, 3)),
    (1, 7, 8, 2, (3, 2), (2, 1)),
    (1, 5, 5, 2, (1, 1), (1, 1)),
    (2, 9, 7, 1, (4, 3), (3, 3)),
    (1, 5, 4, 2, (5, 4), (1, 1)),   # one window covers everything
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool2d_forward_matches_naive(case, dtype):
    n, h, w, c, pool, stride = case
    x = np.random.default_rng(1).standard_normal((n, h, w, c)).astype(dtype)
    x0 = x.copy()
    y, argmax = nk.maxpool2d_forward(x, pool, stride)
    ref_y, ref_idx = ref_maxpool_forward(x, pool, stride)
    assert y.dtype == np.dtype(dtype)
    assert np.issubdtype(argmax.dtype, np.integer)
    assert argmax.shape == y.shape
    np.testing.assert_array_equal(y, ref_y.astype(dtype))
    np.testing.assert_array_equal(argmax, ref_idx)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool2d_forward_ties_pick_first_in_window(case, dtype):
    """With many ties (values in {0, 1, 2}) the first maximum in row-major order wins."""
    n, h, w, c, pool, stride = case
    x = np.random.default_rng(2).integers(0, 3, size=(n, h, w, c)).astype(dtype)
    y, argmax = nk.maxpool2d_forward(x, pool, stride)
    ref_y, ref_idx = ref_maxpool_forward(x, pool, stride)
    np.testing.assert_array_equal(y, ref_y.astype(dtype))
    np.testing.assert_array_equal(argmax, ref_idx)


def test_maxpool2d_forward_all_equal_window_points_at_window_start():
    x = np.full((1, 5, 5, 2), 3.0)
    y, argmax = nk.maxpool2d_forward(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(y, np.full((1, 2, 2, 2), 3.0))
    starts = np.array([[0 * 5 + 0, 0 * 5 + 2], [2 * 5 + 0, 2 * 5 + 2]])
    np.testing.assert_array_equal(argmax[0, :, :, 0], starts)
    np.testing.assert_array_equal(argmax[0, :, :, 1], starts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool2d_backward_matches_naive(case, dtype):
    n, h, w, c, pool, stride = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    y, argmax = nk.maxpool2d_forward(x, pool, stride)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy0, argmax0 = dy.copy(), argmax.copy()
    dx = nk.maxpool2d_backward(dy, argmax, x.shape)
    assert dx.dtype == np.dtype(dtype)
    assert dx.shape == x.shape
    assert_close(dx, ref_maxpool_backward(dy, argmax, x.shape), dtype)
    np.testing.assert_array_equal(dy, dy0)
    np.testing.assert_array_equal(argmax, argmax0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool2d_backward_accumulates_repeated_indices(dtype):
    """Arbitrary argmax maps, many outputs pointing at the same input: gradients add up."""
    rng = np.random.default_rng(5)
    shape = (2, 5, 3, 3)
    argmax = rng.integers(0, 4, size=(2, 3, 2, 3))  # only the first 4 positions of each plane
    dy = rng.standard_normal(argmax.shape).astype(dtype)
    dx = nk.maxpool2d_backward(dy, argmax, shape)
    assert dx.dtype == np.dtype(dtype)
    assert_close(dx, ref_maxpool_backward(dy, argmax, shape), dtype)
    np.testing.assert_allclose(dx.sum(axis=(1, 2)), dy.sum(axis=(1, 2)),
                               rtol=TOL[dtype], atol=TOL[dtype] * 10)


# --------------------------------------------------------------------------- Adam


def textbook_adam(p, g, m, v, lr, b1, b2, eps, t):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.parametrize(
    "lr, b1, b2, eps",
    [(1e-3, 0.9, 0.999, 1e-8), (0.1, 0.5, 0.9, 1e-3), (0.05, 0.0, 0.99, 1e-6), (1.0, 0.8, 0.0, 1e-8)],
)
def test_adam_update_float64_matches_textbook(lr, b1, b2, eps):
    rng = np.random.default_rng(6)
    shape = (7, 5)
    param = rng.standard_normal(shape)
    m, v = np.zeros(shape), np.zeros(shape)
    ref_p, ref_m, ref_v = param.copy(), m.copy(), v.copy()
    p_id, m_id, v_id = id(param), id(m), id(v)
    for t in range(1, 7):
        g = rng.standard_normal(shape) * (0.1 if t % 2 else 3.0)
        g0 = g.copy()
        nk.adam_update(param, g, m, v, lr, b1, b2, eps, t)
        ref_p, ref_m, ref_v = textbook_adam(ref_p, g, ref_m, ref_v, lr, b1, b2, eps, t)
        np.testing.assert_array_equal(g, g0)
        np.testing.assert_allclose(param, ref_p, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(m, ref_m, rtol=1e-12, atol=1e-14 * np.abs(ref_m).max())
        np.testing.assert_allclose(v, ref_v, rtol=1e-12, atol=1e-300)
    assert (id(param), id(m), id(v)) == (p_id, m_id, v_id)
    assert param.dtype == m.dtype == v.dtype == np.float64


def test_adam_update_first_step_moves_by_about_lr():
    """At t=1 bias correction makes the step lr * g / (|g| + eps), i.e. about lr * sign(g)."""
    g = np.array([[2.0, -0.5, 1e-3]])
    param, m, v = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
    nk.adam_update(param, g, m, v, 0.01, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_allclose(param, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-12)


def test_adam_update_float32_stays_float32_and_tracks_textbook():
    rng = np.random.default_rng(7)
    shape = (4, 6)
    param = rng.standard_normal(shape).astype(np.float32)
    m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    ref_p, ref_m, ref_v = param.astype(np.float64), np.zeros(shape), np.zeros(shape)
    for t in range(1, 6):
        g = rng.standard_normal(shape).astype(np.float32)
        nk.adam_update(param, g, m, v, 1e-2, 0.9, 0.999, 1e-8, t)
        ref_p, ref_m, ref_v = textbook_adam(ref_p, g.astype(np.float64), ref_m, ref_v,
                                            1e-2, 0.9, 0.999, 1e-8, t)
        assert param.dtype == m.dtype == v.dtype == np.float32
        np.testing.assert_allclose(param, ref_p, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m, ref_m, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(v, ref_v, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- average pooling


def ref_avgpool_forward(x, pool_size, stride):
    n, h, w, c = x.shape
    (ph, pw), (sh, sw) = pool_size, stride
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    y = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            for di in range(ph):
                for dj in range(pw):
                    y[:, i, j] += x[:, i * sh + di, j * sw + dj]
    return y / (ph * pw)


def ref_avgpool_backward(dy, input_shape, pool_size, stride):
    (ph, pw), (sh, sw) = pool_size, stride
    dx = np.zeros(input_shape)
    for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
            for di in range(ph):
                for dj in range(pw):
                    dx[:, i * sh + di, j * sw + dj] += dy[:, i, j] / (ph * pw)
    return dx


AVGPOOL_CASES = POOL_CASES + [
    (2, 7, 9, 3, (7, 9), (1, 1)),   # global average pooling
    (1, 8, 7, 2, (3, 3), (1, 2)),   # overlapping rows, pixels in no window at the right
    (2, 6, 6, 1, (2, 2), (3, 3)),   # stride > window: rows and columns in no window
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVGPOOL_CASES)
def test_avgpool2d_matches_naive(case, dtype):
    n, h, w, c, pool, stride = case
    rng = np.random.default_rng(8)
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    x0 = x.copy()
    y = nk.avgpool2d_forward(x, pool, stride)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, ref_avgpool_forward(x, pool, stride), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy0 = dy.copy()
    dx = nk.avgpool2d_backward(dy, x.shape, pool, stride)
    assert dx.dtype == np.dtype(dtype) and dx.shape == x.shape
    assert_close(dx, ref_avgpool_backward(dy, x.shape, pool, stride), dtype)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)


@pytest.mark.parametrize("case", [(2, 5, 6, 2, (3, 3), (2, 1)), (1, 4, 5, 3, (4, 5), (1, 1)),
                                  (1, 7, 7, 1, (2, 2), (3, 3))])
def test_avgpool2d_backward_is_the_gradient_of_the_forward(case):
    n, h, w, c, pool, stride = case
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, h, w, c))
    dy = rng.standard_normal(nk.avgpool2d_forward(x, pool, stride).shape)
    numeric = numerical_grad(lambda: np.sum(nk.avgpool2d_forward(x, pool, stride) * dy), x)
    assert_grad_close(nk.avgpool2d_backward(dy, x.shape, pool, stride), numeric)


def test_avgpool2d_on_an_empty_batch_is_empty():
    y = nk.avgpool2d_forward(np.zeros((0, 5, 4, 3), np.float32), (2, 2), (2, 2))
    assert y.shape == (0, 2, 2, 3) and y.dtype == np.float32


# --------------------------------------------------------------------------- batch normalization


def ref_batchnorm_forward(x, gamma, beta, eps):
    """Per channel, in float64: the mean, the mean squared deviation from it, then y."""
    x = x.astype(np.float64)
    m, c = x.shape
    y, mean, var = np.zeros((m, c)), np.zeros(c), np.zeros(c)
    for k in range(c):
        column = x[:, k]
        mean[k] = sum(column) / m
        var[k] = sum((v - mean[k]) ** 2 for v in column) / m
        y[:, k] = (column - mean[k]) / np.sqrt(var[k] + eps) * float(gamma[k]) + float(beta[k])
    return y, mean, var


def ref_batchnorm_backward(x, dy, gamma, mean, var, eps):
    """The textbook formulas, in float64."""
    x, dy, gamma, mean, var = (a.astype(np.float64) for a in (x, dy, gamma, mean, var))
    m = x.shape[0]
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


BN_SHAPES = [(1, 1), (1, 3), (2, 1), (7, 3), (40, 16), (300, 35)]


def bn_inputs(shape, dtype, seed=10):
    rng = np.random.default_rng(seed)
    m, c = shape
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2, c) + rng.uniform(-5, 5, c)
    gamma, beta, dy = rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dy))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_forward_and_backward_match_the_formulas(shape, dtype):
    x, gamma, beta, dy = bn_inputs(shape, dtype)
    before = [a.copy() for a in (x, gamma, beta, dy)]
    y, mean, var = nk.batchnorm_forward(x, gamma, beta, 1e-5)
    for got, want in zip((y, mean, var), ref_batchnorm_forward(x, gamma, beta, 1e-5)):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)
    grads = nk.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    for got, want in zip(grads, ref_batchnorm_backward(x, dy, gamma, mean, var, 1e-5)):
        assert got.dtype == np.dtype(dtype)
        assert_close(got, want, dtype)
    for after, snapshot in zip((x, gamma, beta, dy), before):
        np.testing.assert_array_equal(after, snapshot)


@pytest.mark.parametrize("shape", [(5, 2), (9, 3)])
def test_batchnorm_backward_is_the_gradient_of_the_forward(shape):
    x, gamma, beta, dy = bn_inputs(shape, np.float64, seed=12)
    _, mean, var = nk.batchnorm_forward(x, gamma, beta, 1e-3)
    dx, dgamma, dbeta = nk.batchnorm_backward(x, dy, gamma, mean, var, 1e-3)

    def loss():
        return np.sum(nk.batchnorm_forward(x, gamma, beta, 1e-3)[0] * dy)

    for analytic, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        assert_grad_close(analytic, numerical_grad(loss, wrt))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (40, 16)])
def test_batchnorm_inference_matches_the_formula(shape, dtype):
    x, gamma, beta, _ = bn_inputs(shape, dtype, seed=13)
    rng = np.random.default_rng(14)
    mean = rng.uniform(-5, 5, shape[1]).astype(dtype)
    var = rng.uniform(0.1, 4, shape[1]).astype(dtype)
    y = nk.batchnorm_inference(x, gamma, beta, mean, var, 1e-3)
    expected = ((x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * gamma
                + beta)
    assert y.dtype == np.dtype(dtype) and y.shape == shape
    assert_close(y, expected, dtype)


# --------------------------------------------------------------------------- PyTorch


@pytest.fixture
def torch():
    """PyTorch on one thread, or the test skipped where it is not installed."""
    torch = pytest.importorskip("torch", reason="PyTorch is an optional test dependency")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(previous)


def assert_matches(actual, expected, tol):
    """max |actual - expected| <= tol * max(max |expected|, 1)."""
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(initial=0.0), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("shape", [(2, 1), (7, 3), (300, 35)])
def test_batchnorm_matches_torch_in_training_mode(torch, shape):
    x, gamma, beta, dy = bn_inputs(shape, np.float64, seed=15)
    m = shape[0]
    tx, tgamma, tbeta = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    running_mean, running_var = torch.zeros(shape[1], dtype=torch.float64), torch.ones(
        shape[1], dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, running_mean, running_var, tgamma, tbeta,
                                        training=True, momentum=1.0, eps=1e-5)
    ty.backward(torch.tensor(dy))
    y, mean, var = nk.batchnorm_forward(x, gamma, beta, 1e-5)
    assert_matches(y, ty.detach().numpy(), 1e-12)
    assert_matches(mean, running_mean.numpy(), 1e-12)
    assert_matches(var, running_var.numpy() * (m - 1) / m, 1e-12)   # torch keeps the unbiased one
    dx, dgamma, dbeta = nk.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    for got, want in ((dx, tx.grad), (dgamma, tgamma.grad), (dbeta, tbeta.grad)):
        assert_matches(got, want.numpy(), 1e-10)


def test_batchnorm_inference_matches_torch(torch):
    x, gamma, beta, _ = bn_inputs((50, 6), np.float64, seed=16)
    mean, var = np.linspace(-1, 1, 6), np.linspace(0.5, 2, 6)
    ty = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(mean), torch.tensor(var),
                                        torch.tensor(gamma), torch.tensor(beta), training=False,
                                        eps=1e-5)
    assert_matches(nk.batchnorm_inference(x, gamma, beta, mean, var, 1e-5), ty.numpy(), 1e-12)


@pytest.mark.parametrize("case", [(2, 7, 9, 3, (2, 2), (2, 2)), (2, 9, 7, 4, (3, 3), (2, 2)),
                                  (1, 8, 6, 2, (3, 2), (1, 1)), (3, 5, 7, 2, (5, 7), (1, 1))])
def test_avgpool2d_matches_torch(torch, case):
    n, h, w, c, pool, stride = case
    rng = np.random.default_rng(17)
    x = rng.standard_normal((n, h, w, c))
    tx = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    ty = torch.nn.functional.avg_pool2d(tx, pool, stride)
    dy = rng.standard_normal(ty.shape)
    ty.backward(torch.tensor(dy))
    dy = dy.transpose(0, 2, 3, 1)       # NCHW -> NHWC
    assert_matches(nk.avgpool2d_forward(x, pool, stride), ty.detach().numpy().transpose(0, 2, 3, 1),
                   1e-12)
    assert_matches(nk.avgpool2d_backward(dy, x.shape, pool, stride),
                   tx.grad.numpy().transpose(0, 2, 3, 1), 1e-10)
