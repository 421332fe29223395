"""NumPy implementations of the cnnc kernels.

The compiled extension `_kernels` has the same functions with the same signatures;
`kernels` picks one of the two. Shapes are NHWC for images and (kh, kw, c_in, c_out)
for filters. `stride` is (sh, sw); `padding` is (top, bottom, left, right) zero padding.
"""
import contextlib

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _checks


def _pad(x, padding):
    top, bottom, left, right = padding
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _windows(x, window, stride, out_hw):
    """View of x as (N, OH, OW, kh, kw, C): the input patch under every output pixel."""
    (kh, kw), (sh, sw), (oh, ow) = window, stride, out_hw
    view = sliding_window_view(x, (kh, kw), axis=(1, 2))
    return view[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].transpose(0, 1, 2, 4, 5, 3)


def _im2col(x, kernel_size, stride, padding, out_hw):
    """Patches of the padded input as a (N*OH*OW, kh*kw*C) matrix."""
    n, _, _, c = x.shape
    (kh, kw), (oh, ow) = kernel_size, out_hw
    patches = _windows(_pad(x, padding), kernel_size, stride, out_hw)
    return patches.reshape(n * oh * ow, kh * kw * c)


def conv2d_forward(x, w, b, stride, padding, slope=1.0):
    """Cross-correlation of x (N, H, W, C) with w (kh, kw, C, F), plus bias b (F,), then
    z for z > 0 and slope * z elsewhere: slope 1 (the default) is no activation, 0 is
    ReLU's max(z, 0) (exactly 0 for any z <= 0). NaN stays NaN."""
    x, w, b, stride, padding, slope, (oh, ow) = _checks.conv2d_forward(x, w, b, stride, padding,
                                                                      slope)
    kh, kw, c, f = w.shape
    cols = _im2col(x, (kh, kw), stride, padding, (oh, ow))
    y = cols @ w.reshape(kh * kw * c, f)
    y += b
    return _activate(y, slope).reshape(x.shape[0], oh, ow, f)


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    """Gradient of the loss w.r.t. the convolution input, given dy (N, OH, OW, F)."""
    dy, w, input_shape, stride, padding, (oh, ow) = _checks.conv2d_grad_input(
        dy, w, input_shape, stride, padding)
    n, h, wd, c = input_shape
    kh, kw, _, f = w.shape
    sh, sw = stride
    top, bottom, left, right = padding
    patches = (dy.reshape(-1, f) @ w.reshape(kh * kw * c, f).T).reshape(n, oh, ow, kh, kw, c)
    dx = np.zeros((n, h + top + bottom, wd + left + right, c), dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] += patches[:, :, :, i, j]
    return np.ascontiguousarray(dx[:, top : top + h, left : left + wd])


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    """Gradients of the loss w.r.t. the filter (kh, kw, C, F) and the bias (F,)."""
    x, dy, kernel_size, stride, padding, out_hw = _checks.conv2d_grad_params(
        x, dy, kernel_size, stride, padding)
    kh, kw = kernel_size
    c, f = x.shape[3], dy.shape[3]
    cols = _im2col(x, kernel_size, stride, padding, out_hw)
    dy2 = dy.reshape(-1, f)
    return (cols.T @ dy2).reshape(kh, kw, c, f), dy2.sum(axis=0)


def maxpool2d_forward(x, pool_size, stride):
    """Max over each window, and where it was: argmax holds h * W + w in the input plane.

    The first maximum in row-major window order wins ties, as in PyTorch; a NaN wins over
    any number.
    """
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.maxpool2d_forward(x, pool_size, stride)
    n, h, w, c = x.shape
    windows = _windows(x, (ph, pw), (sh, sw), (oh, ow)).transpose(0, 1, 2, 5, 3, 4)
    windows = windows.reshape(n, oh, ow, c, ph * pw)
    local = windows.argmax(axis=-1)
    y = np.take_along_axis(windows, local[..., None], axis=-1)[..., 0]
    rows = np.arange(oh).reshape(1, oh, 1, 1) * sh + local // pw
    cols = np.arange(ow).reshape(1, 1, ow, 1) * sw + local % pw
    return np.ascontiguousarray(y), rows * w + cols


def maxpool2d_inference(x, pool_size, stride):
    """Max over each window, as maxpool2d_forward's first result, without finding where it
    was: what inference needs. A NaN wins over any number."""
    return maxpool2d_forward(x, pool_size, stride)[0]


def conv2d_maxpool_inference(x, w, b, stride, padding, pool_size, pool_stride, slope=1.0):
    """maxpool2d_inference(conv2d_forward(x, w, b, stride, padding, slope), pool_size,
    pool_stride): a convolution and the max pool after it, in inference."""
    x, w, b, stride, padding, pool_size, pool_stride, slope, _, _ = (
        _checks.conv2d_maxpool_inference(x, w, b, stride, padding, pool_size, pool_stride, slope))
    return maxpool2d_inference(conv2d_forward(x, w, b, stride, padding, slope), pool_size,
                               pool_stride)


def maxpool2d_backward(dy, argmax, input_shape):
    """Scatter dy (N, OH, OW, C) back to the input positions recorded in argmax."""
    dy, argmax, input_shape = _checks.maxpool2d_backward(dy, argmax, input_shape)
    n, h, w, c = input_shape
    _checks.maxpool_positions(argmax, h * w)
    batch = np.arange(n).reshape(n, 1, 1, 1)
    channel = np.arange(c).reshape(1, 1, 1, c)
    flat = ((batch * (h * w) + argmax) * c + channel).ravel()
    dx = np.bincount(flat, weights=dy.ravel(), minlength=n * h * w * c)
    return dx.astype(dy.dtype, copy=False).reshape(input_shape)


def avgpool2d_forward(x, pool_size, stride):
    """Mean over each window: the sum in float64 times 1 / (ph * pw), then rounded."""
    x, (ph, pw), stride, (oh, ow) = _checks.avgpool2d_forward(x, pool_size, stride)
    windows = _windows(x, (ph, pw), stride, (oh, ow))
    means = windows.sum(axis=(3, 4), dtype=np.float64) * (1.0 / (ph * pw))
    return means.astype(x.dtype, copy=False)


def avgpool2d_backward(dy, input_shape, pool_size, stride):
    """Each dy (N, OH, OW, C) spread equally over its window; overlapping windows add up."""
    dy, input_shape, (ph, pw), (sh, sw), (oh, ow) = _checks.avgpool2d_backward(
        dy, input_shape, pool_size, stride)
    dx = np.zeros(input_shape, dtype=dy.dtype)
    for r in range(ph):
        for q in range(pw):
            dx[:, r : r + (oh - 1) * sh + 1 : sh, q : q + (ow - 1) * sw + 1 : sw] += dy
    dx *= dx.dtype.type(1.0 / (ph * pw))
    return dx


def _normalize(x, mean, scale, shift):
    """(x - mean) * scale + shift per channel, in x's dtype, the vectors rounded to it."""
    dtype = x.dtype
    return (x - mean.astype(dtype)) * scale.astype(dtype) + shift.astype(dtype)


def batchnorm_forward(x, gamma, beta, eps, slope=1.0):
    """Batch normalization of x (M, C) over its rows: y = (x - mean) / sqrt(var + eps) * gamma
    + beta, with the batch's mean and biased variance (returned as well), both taken in
    float64 in two passes: the mean, then the squared deviations from it; then y for y > 0
    and slope * y elsewhere, as conv2d_forward's slope."""
    x, gamma, beta, eps, slope = _checks.batchnorm_forward(x, gamma, beta, eps, slope)
    mean = x.mean(axis=0, dtype=np.float64)
    var = np.square(x - mean).mean(axis=0)
    y = _normalize(x, mean, gamma / np.sqrt(var + eps), beta)
    return _activate(y, slope), mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_backward(x, dy, gamma, mean, var, eps):
    """Gradients through batchnorm_forward: dx, dgamma = sum(dy * x_hat), dbeta = sum(dy),
    where dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat)) and
    x_hat = (x - mean) / sqrt(var + eps), the sums taken in float64."""
    x, dy, gamma, mean, var, eps = _checks.batchnorm_backward(x, dy, gamma, mean, var, eps)
    rows = x.shape[0]
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    centered = x - mean
    dbeta = dy.sum(axis=0, dtype=np.float64)
    dgamma = (dy.astype(np.float64) * centered).sum(axis=0) * inv_std
    # dy - (x - mean) * (inv_std * dgamma / M) - dbeta / M, times gamma * inv_std
    tilt, offset = (inv_std * dgamma / rows).astype(x.dtype), (dbeta / rows).astype(x.dtype)
    dx = (dy - (centered * tilt + offset)) * (gamma * inv_std).astype(x.dtype)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def batchnorm_inference(x, gamma, beta, mean, var, eps, slope=1.0):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta with the given (running) mean and var,
    then activated (slope, as batchnorm_forward's)."""
    x, gamma, beta, mean, var, eps, slope = _checks.batchnorm_inference(x, gamma, beta, mean,
                                                                        var, eps, slope)
    return _activate(_normalize(x, mean, gamma / np.sqrt(var.astype(np.float64) + eps), beta),
                     slope)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step with bias correction, in place on param, m and v.

    The operations, their order and their roundings are those of torch.optim.Adam on the
    CPU, fused multiply-adds included (computed through float64, which is exact for
    float32 but for a double rounding about once in 2**29), so float32 results match
    PyTorch's to the bit nearly everywhere. `step` counts from 1.
    """
    param, grad, m, v, lr, beta1, beta2, eps, step = _checks.adam_update(
        param, grad, m, v, lr, beta1, beta2, eps, step)
    scalar, wide = param.dtype.type, np.float64
    keep_grad = scalar(1.0 - beta1)
    # m = lerp(m, grad, 1 - beta1), as PyTorch evaluates it
    if keep_grad < 0.5:
        m[...] = wide(keep_grad) * (grad - m) + m
    else:
        m[...] = wide(keep_grad - scalar(1)) * (grad - m) + grad
    v *= scalar(beta2)
    v[...] = (scalar(1.0 - beta2) * grad).astype(wide) * grad + v
    step_size = lr / (1.0 - beta1**step)
    denom = np.sqrt(v) / scalar((1.0 - beta2**step) ** 0.5) + scalar(eps)
    param -= scalar(step_size) * m / denom


def _activate(z, slope):
    """z for z > 0 (or NaN), slope * z elsewhere (exactly 0 for slope 0)."""
    if slope == 1:
        return z
    return np.where((z > 0) | np.isnan(z), z, z * slope if slope else 0).astype(z.dtype)


def dense_forward(x, w, b, slope=1.0):
    """x (N, in) @ w (in, out) + b (out,), then z for z > 0 and slope * z elsewhere, as
    conv2d_forward's slope: a fully connected layer's output in one pass."""
    x, w, b, slope = _checks.dense_forward(x, w, b, slope)
    return _activate(x @ w + b, slope)


def matmul(a, b):
    """a @ b for 2-D float arrays (a transposed view is fine)."""
    a, b = _checks.matmul(a, b)
    return a @ b


def leaky_relu(x, slope):
    """x where x > 0, slope * x elsewhere, for 0 <= slope <= 1 (slope 0 is ReLU).

    This is max(x, slope * x); where slope * x is NaN though x is not (an infinite x
    times a slope of 0), x is kept.
    """
    x, slope = _checks.leaky_relu(x, slope)
    with np.errstate(invalid="ignore"):
        out = x * x.dtype.type(slope)
    return np.fmax(x, out, out=out)


def leaky_relu_backward(x, upstream, slope):
    """upstream where x > 0, slope * upstream elsewhere: the gradient through leaky_relu."""
    x, upstream, slope = _checks.leaky_relu_backward(x, upstream, slope)
    slope = x.dtype.type(slope)
    out = (x > 0).astype(x.dtype)
    out *= 1 - slope
    out += slope
    out *= upstream
    return out


def memory_pool():
    """A block in which NumPy allocates as it always does: pooling needs the compiled backend."""
    return contextlib.nullcontext()


_threads = _checks.thread_count("CNNC_NUM_THREADS")


def set_num_threads(n):
    """Keep n as the thread count; the NumPy kernels run on NumPy's own threads."""
    global _threads
    _threads = _checks.num_threads(n)


def get_num_threads():
    """The thread count set last (CNNC_NUM_THREADS, or the cores, at first)."""
    return _threads


# The compiled kernels compute a convolution by one of several paths; these have one. The
# names are checked alike, so that code choosing a path runs on either backend.
_conv_path = "auto"


def set_conv_path(path):
    """Check path against the compiled kernels' convolution paths ("auto", "direct",
    "winograd", "gemm", "matmul") and keep it for get_conv_path; the NumPy kernels have
    one path, and take it whatever the name."""
    global _conv_path
    _conv_path = _checks.conv_path(path)


def get_conv_path():
    """The convolution path set last: "auto", "direct", "winograd", "gemm" or
    "matmul"."""
    return _conv_path
