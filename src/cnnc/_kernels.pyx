# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled cnnc kernels: the same functions, with the same signatures, as _numpy_kernels.

Every entry point runs the shared argument checks (_checks) before it touches memory.
The loops release the GIL and run over the batch in parallel where the build found
OpenMP; matrix products go to NumPy's BLAS.
"""
import numpy as np

from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from . import _checks

# Threads for the loops over the batch. One by default: on small machines NumPy's BLAS
# threads, which keep spinning between matrix products, make more threads here slower.
cdef int _threads = _checks.thread_count("CNNC_NUM_THREADS")

ctypedef fused real:
    float
    double


cdef void _im2col(const real[:, :, :, ::1] x, real[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left,
                  Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """cols[(n, i, j), (r, q, c)] = x[n, i*sh - top + r, j*sw - left + q, c], 0 off the edge."""
    cdef Py_ssize_t n, i, j, r, q, h, w, row, col
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef size_t pixel = channels * sizeof(real)
    for n in prange(x.shape[0], schedule="static", nogil=True, num_threads=_threads):
        for i in range(oh):
            for j in range(ow):
                row = (n * oh + i) * ow + j
                for r in range(kh):
                    h = i * sh - top + r
                    for q in range(kw):
                        w = j * sw - left + q
                        col = (r * kw + q) * channels
                        if 0 <= h < height and 0 <= w < width:
                            memcpy(&cols[row, col], &x[n, h, w, 0], pixel)
                        else:
                            memset(&cols[row, col], 0, pixel)


cdef void _col2im(const real[:, ::1] cols, real[:, :, :, ::1] dx, Py_ssize_t kh, Py_ssize_t kw,
                  Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left,
                  Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """The adjoint of _im2col: adds every patch back where it came from (dx starts at 0)."""
    cdef Py_ssize_t n, i, j, r, q, h, w, c, row, col
    cdef Py_ssize_t height = dx.shape[1], width = dx.shape[2], channels = dx.shape[3]
    for n in prange(dx.shape[0], schedule="static", nogil=True, num_threads=_threads):
        for i in range(oh):
            for j in range(ow):
                row = (n * oh + i) * ow + j
                for r in range(kh):
                    h = i * sh - top + r
                    if h < 0 or h >= height:
                        continue
                    for q in range(kw):
                        w = j * sw - left + q
                        if w < 0 or w >= width:
                            continue
                        col = (r * kw + q) * channels
                        for c in range(channels):
                            dx[n, h, w, c] += cols[row, col + c]


def _im2col_matrix(x, kernel_size, stride, padding, out_hw):
    """The (N*OH*OW, kh*kw*C) patch matrix of x."""
    n, _, _, c = x.shape
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, out_hw
    cols = np.empty((n * oh * ow, kh * kw * c), dtype=x.dtype)
    if x.dtype == np.float32:
        _im2col[float](x, cols, kh, kw, sh, sw, padding[0], padding[2], oh, ow)
    else:
        _im2col[double](x, cols, kh, kw, sh, sw, padding[0], padding[2], oh, ow)
    return cols


def conv2d_forward(x, w, b, stride, padding):
    """Cross-correlation of x (N, H, W, C) with w (kh, kw, C, F), plus bias b (F,)."""
    x, w, b, stride, padding, (oh, ow) = _checks.conv2d_forward(x, w, b, stride, padding)
    kh, kw, c, f = w.shape
    cols = _im2col_matrix(x, (kh, kw), stride, padding, (oh, ow))
    y = np.matmul(cols, w.reshape(kh * kw * c, f))
    y += b
    return y.reshape(x.shape[0], oh, ow, f)


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    """Gradient of the loss w.r.t. the convolution input, given dy (N, OH, OW, F)."""
    dy, w, input_shape, stride, padding, (oh, ow) = _checks.conv2d_grad_input(
        dy, w, input_shape, stride, padding)
    kh, kw, c, f = w.shape
    (sh, sw), top, left = stride, padding[0], padding[2]
    cols = np.matmul(dy.reshape(-1, f), w.reshape(kh * kw * c, f).T)
    dx = np.zeros(input_shape, dtype=dy.dtype)
    if dy.dtype == np.float32:
        _col2im[float](cols, dx, kh, kw, sh, sw, top, left, oh, ow)
    else:
        _col2im[double](cols, dx, kh, kw, sh, sw, top, left, oh, ow)
    return dx


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    """Gradients of the loss w.r.t. the filter (kh, kw, C, F) and the bias (F,)."""
    x, dy, kernel_size, stride, padding, out_hw = _checks.conv2d_grad_params(
        x, dy, kernel_size, stride, padding)
    (kh, kw), c, f = kernel_size, x.shape[3], dy.shape[3]
    cols = _im2col_matrix(x, kernel_size, stride, padding, out_hw)
    dy2 = dy.reshape(-1, f)
    return np.matmul(cols.T, dy2).reshape(kh, kw, c, f), dy2.sum(axis=0)


cdef void _maxpool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y, int64_t[:, :, :, ::1] argmax,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """Window maxima in row-major window order: the first maximum wins, a NaN beats a number."""
    cdef Py_ssize_t n, i, j, r, q, c, h, w
    cdef Py_ssize_t width = x.shape[2], channels = x.shape[3]
    cdef real value, best
    for n in prange(x.shape[0], schedule="static", nogil=True, num_threads=_threads):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                for c in range(channels):
                    y[n, i, j, c] = x[n, i * sh, j * sw, c]
                    argmax[n, i, j, c] = i * sh * width + j * sw
                for r in range(ph):
                    h = i * sh + r
                    for q in range(pw):
                        w = j * sw + q
                        for c in range(channels):
                            value = x[n, h, w, c]
                            best = y[n, i, j, c]
                            if value > best or (value != value and best == best):
                                y[n, i, j, c] = value
                                argmax[n, i, j, c] = h * width + w


def maxpool2d_forward(x, pool_size, stride):
    """Max over each window, and where it was: argmax holds h * W + w in the input plane.

    The first maximum in row-major window order wins ties, as in PyTorch; a NaN wins over
    any number.
    """
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.maxpool2d_forward(x, pool_size, stride)
    n, c = x.shape[0], x.shape[3]
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int64)
    if x.dtype == np.float32:
        _maxpool_forward[float](x, y, argmax, ph, pw, sh, sw)
    else:
        _maxpool_forward[double](x, y, argmax, ph, pw, sh, sw)
    return y, argmax


cdef void _maxpool_backward(const real[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] argmax,
                            real[:, ::1] dx) noexcept:
    """dx[n, argmax * C + c] += dy[n, i, j, c]; dx is (N, H*W*C), starting at 0."""
    cdef Py_ssize_t n, i, j, c
    cdef Py_ssize_t channels = dy.shape[3]
    for n in prange(dy.shape[0], schedule="static", nogil=True, num_threads=_threads):
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for c in range(channels):
                    dx[n, argmax[n, i, j, c] * channels + c] += dy[n, i, j, c]


def maxpool2d_backward(dy, argmax, input_shape):
    """Scatter dy (N, OH, OW, C) back to the input positions recorded in argmax."""
    dy, argmax, input_shape = _checks.maxpool2d_backward(dy, argmax, input_shape)
    n, h, w, c = input_shape
    dx = np.zeros((n, h * w * c), dtype=dy.dtype)
    if dy.dtype == np.float32:
        _maxpool_backward[float](dy, argmax, dx)
    else:
        _maxpool_backward[double](dy, argmax, dx)
    return dx.reshape(input_shape)


cdef void _adam(real[::1] param, const real[::1] grad, real[::1] m, real[::1] v, real keep_grad,
                real beta2, real keep_square, real bias2_sqrt, real eps, real step_size) noexcept:
    cdef Py_ssize_t k
    cdef real g, mk, vk
    with nogil:
        for k in range(param.shape[0]):
            g = grad[k]
            mk = m[k] + keep_grad * (g - m[k])
            vk = v[k] * beta2
            vk = vk + keep_square * g * g
            m[k] = mk
            v[k] = vk
            param[k] = param[k] - step_size * mk / (<real>sqrt(vk) / bias2_sqrt + eps)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step with bias correction, in place on param, m and v.

    The operations and their order are those of torch.optim.Adam's single-tensor CPU
    path, with the scalars rounded to the parameter dtype as PyTorch rounds them; PyTorch's
    vectorized fused multiply-adds can still differ in the last bits. `step` counts from 1.
    """
    param, grad, m, v, lr, beta1, beta2, eps, step = _checks.adam_update(
        param, grad, m, v, lr, beta1, beta2, eps, step)
    step_size = lr / (1.0 - beta1**step)
    bias2_sqrt = (1.0 - beta2**step) ** 0.5
    flat = [a.reshape(-1) for a in (param, grad, m, v)]
    if param.dtype == np.float32:
        _adam[float](*flat, 1.0 - beta1, beta2, 1.0 - beta2, bias2_sqrt, eps, step_size)
    else:
        _adam[double](*flat, 1.0 - beta1, beta2, 1.0 - beta2, bias2_sqrt, eps, step_size)

