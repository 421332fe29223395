"""One plain NumPy reference for each kernel, written to be read: every backend is checked
against these. Sums over a window are loops over its offsets, each offset one slice of the
(padded) input for every output pixel at once; the arithmetic is in float64 unless a
function says otherwise. Layout as in the kernels: NHWC images, (kh, kw, C, F) filters,
stride (sh, sw), padding (top, bottom, left, right)."""
import numpy as np

from .conftest import out_size


def _padded(x, padding):
    top, bottom, left, right = padding
    return np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))


def _out_hw(size_hw, window, stride):
    return tuple(out_size(size, k, s) for size, k, s in zip(size_hw, window, stride))


def _under_offset(a, r, q, stride, out_hw):
    """a[:, i*sh + r, j*sw + q] for every output pixel (i, j): what window offset (r, q) sees."""
    (sh, sw), (oh, ow) = stride, out_hw
    return a[:, r:r + (oh - 1) * sh + 1:sh, q:q + (ow - 1) * sw + 1:sw]


# ---------------------------------------------------------------- convolution

def conv2d_forward(x, w, b, stride, padding):
    """y[n, i, j] = b + sum over offsets (r, q) of x_padded[n, i*sh + r, j*sw + q] @ w[r, q]."""
    xp, w = _padded(x, padding), w.astype(np.float64)
    kh, kw = w.shape[:2]
    out_hw = _out_hw(xp.shape[1:3], (kh, kw), stride)
    y = np.zeros((x.shape[0], *out_hw, w.shape[3])) + b.astype(np.float64)
    for r in range(kh):
        for q in range(kw):
            y += np.einsum("nhwc,cf->nhwf", _under_offset(xp, r, q, stride, out_hw), w[r, q])
    return y


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    """The adjoint of conv2d_forward in x: each offset sends dy @ w[r, q].T back where it
    read from; what lands on the padding is dropped."""
    n, h, wd, c = input_shape
    top, bottom, left, right = padding
    dy, w = dy.astype(np.float64), w.astype(np.float64)
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c))
    for r in range(w.shape[0]):
        for q in range(w.shape[1]):
            _under_offset(dxp, r, q, stride, dy.shape[1:3])[...] += np.einsum(
                "nhwf,cf->nhwc", dy, w[r, q])
    return dxp[:, top:top + h, left:left + wd]


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    """dw[r, q] = sum over pixels of the outer product of what offset (r, q) sees and dy;
    db = the sum of dy over batch and pixels."""
    xp, dy = _padded(x, padding), dy.astype(np.float64)
    kh, kw = kernel_size
    dw = np.zeros((kh, kw, x.shape[3], dy.shape[3]))
    for r in range(kh):
        for q in range(kw):
            dw[r, q] = np.einsum("nhwc,nhwf->cf", _under_offset(xp, r, q, stride, dy.shape[1:3]), dy)
    return dw, dy.sum(axis=(0, 1, 2))


# ---------------------------------------------------------------- pooling

def maxpool2d_forward(x, pool_size, stride):
    """Window maxima (in x's dtype: a maximum is one of the inputs) and where each came from,
    as an index h*W + w into its image plane. Offsets are visited in row-major window order
    and only a larger value replaces the one kept: the first maximum wins ties, and the
    first NaN wins over any number (a NaN is kept once seen)."""
    n, h, w, c = x.shape
    out_hw = _out_hw((h, w), pool_size, stride)
    rows = np.arange(out_hw[0])[:, None, None] * stride[0]   # (OH, 1, 1): each window's top
    cols = np.arange(out_hw[1])[None, :, None] * stride[1]   # (1, OW, 1): each window's left
    best = _under_offset(x, 0, 0, stride, out_hw).copy()
    where = np.broadcast_to(rows * w + cols, best.shape).astype(np.int64)
    for r in range(pool_size[0]):
        for q in range(pool_size[1]):
            value = _under_offset(x, r, q, stride, out_hw)
            better = (value > best) | (np.isnan(value) & ~np.isnan(best))
            best = np.where(better, value, best)
            where = np.where(better, (rows + r) * w + cols + q, where)
    return best, where


def maxpool2d_backward(dy, argmax, input_shape):
    """Each upstream value added to the input element its window's maximum came from."""
    n, h, w, c = input_shape
    dx = np.zeros((n, h * w, c))
    batch, _, _, channel = np.indices(argmax.shape)
    np.add.at(dx, (batch, argmax, channel), dy.astype(np.float64))
    return dx.reshape(input_shape)


def avgpool2d_forward(x, pool_size, stride):
    """The mean of each window."""
    x = x.astype(np.float64)
    out_hw = _out_hw(x.shape[1:3], pool_size, stride)
    total = sum(_under_offset(x, r, q, stride, out_hw)
                for r in range(pool_size[0]) for q in range(pool_size[1]))
    return total / (pool_size[0] * pool_size[1])


def avgpool2d_backward(dy, input_shape, pool_size, stride):
    """Each upstream value shared evenly among the elements of its window."""
    dx = np.zeros(input_shape)
    share = dy.astype(np.float64) / (pool_size[0] * pool_size[1])
    for r in range(pool_size[0]):
        for q in range(pool_size[1]):
            _under_offset(dx, r, q, stride, dy.shape[1:3])[...] += share
    return dx


# ---------------------------------------------------------------- batch normalization

def batchnorm_forward(x, gamma, beta, eps):
    """Per channel (column) of x (M, C): the batch mean, the biased variance, and
    y = (x - mean) / sqrt(var + eps) * gamma + beta."""
    x = x.astype(np.float64)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


def batchnorm_backward(x, dy, gamma, mean, var, eps):
    """(dx, dgamma, dbeta) through batchnorm_forward, the batch statistics included."""
    x, dy, gamma, mean, var = (a.astype(np.float64) for a in (x, dy, gamma, mean, var))
    m = x.shape[0]
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def batchnorm_inference(x, gamma, beta, mean, var, eps):
    """(x - mean) / sqrt(var + eps) * gamma + beta with the given statistics."""
    x, gamma, beta, mean, var = (a.astype(np.float64) for a in (x, gamma, beta, mean, var))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


# ---------------------------------------------------------------- Adam

def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """Textbook Adam with bias correction (Kingma and Ba, algorithm 1): the new
    (param, m, v), as new arrays."""
    param, grad, m, v = (a.astype(np.float64) for a in (param, grad, m, v))
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# ---------------------------------------------------------------- elementwise and products

def leaky_relu(x, slope):
    """x where x > 0, slope * x elsewhere, in x's dtype (each output is one rounding of one
    product, so backends agree to the bit). Where slope * x is NaN though x is not (an
    infinite x times a slope of 0), x is kept."""
    with np.errstate(invalid="ignore"):
        scaled = x * x.dtype.type(slope)
    scaled = np.where(np.isnan(scaled) & ~np.isnan(x), x, scaled)
    return np.where(x > 0, x, scaled)


def leaky_relu_backward(x, upstream, slope):
    """upstream where x > 0, slope * upstream elsewhere (NaN x included), in x's dtype."""
    return np.where(x > 0, upstream, upstream * x.dtype.type(slope))


def matmul(a, b):
    """a @ b in float64."""
    return a.astype(np.float64) @ b.astype(np.float64)
