# Max pooling over NHWC windows, forward (the maxima and where they were) and backward
# (each gradient back to its maximum's position).

cdef inline void _keep_max(real* best, int32_t* where, const real* src, int32_t position,
                           Py_ssize_t count) noexcept nogil:
    """best = max(best, src) elementwise, where = position wherever src won; NaN wins."""
    cdef Py_ssize_t k
    cdef real value, current
    cdef bint take
    for k in range(count):
        value = src[k]
        current = best[k]
        take = (value > current) | ((value != value) & (current == current))
        best[k] = value if take else current
        where[k] = position if take else where[k]


cdef void _maxpool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y, int32_t[:, :, :, ::1] argmax,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """Window maxima in row-major window order: the first maximum wins, a NaN beats a number.

    The channels of one pixel are contiguous in NHWC, so the innermost loop compares a
    whole pixel of the window against the running maxima, without branches; positions
    are int32 there, the width of a float32, so that it vectorizes.
    """
    cdef Py_ssize_t n, i, j, r, q, c, h, w
    cdef Py_ssize_t width = x.shape[2], channels = x.shape[3]
    cdef const real* src
    cdef real* best
    cdef int32_t* where
    cdef int32_t position
    for n in prange(x.shape[0], schedule="dynamic", nogil=True, num_threads=_threads):
        for i in range(y.shape[1]):
            for j in range(y.shape[2]):
                best = &y[n, i, j, 0]
                where = &argmax[n, i, j, 0]
                src = &x[n, i * sh, j * sw, 0]
                position = <int32_t>(i * sh * width + j * sw)
                for c in range(channels):
                    best[c] = src[c]
                    where[c] = position
                for r in range(ph):
                    h = i * sh + r
                    for q in range(pw):
                        if r == 0 and q == 0:
                            continue
                        w = j * sw + q
                        _keep_max(best, where, &x[n, h, w, 0], <int32_t>(h * width + w), channels)


def maxpool2d_forward(x, pool_size, stride):
    """Max over each window, and where it was: argmax holds h * W + w in the input plane.

    The first maximum in row-major window order wins ties, as in PyTorch; a NaN wins over
    any number.
    """
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.maxpool2d_forward(x, pool_size, stride)
    n, c = x.shape[0], x.shape[3]
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = _scratch("argmax", n * oh * ow, c, np.int32).reshape(n, oh, ow, c)
    if x.dtype == np.float32:
        _maxpool_forward[float](x, y, argmax, ph, pw, sh, sw)
    else:
        _maxpool_forward[double](x, y, argmax, ph, pw, sh, sw)
    return y, argmax.astype(np.int64)


cdef void _maxpool_backward(const real[:, :, :, ::1] dy, const int64_t[:, :, :, ::1] argmax,
                            real[:, ::1] dx) noexcept:
    """dx[n, argmax * C + c] += dy[n, i, j, c]; dx is (N, H*W*C), starting at 0."""
    cdef Py_ssize_t n, i, j, c
    cdef Py_ssize_t channels = dy.shape[3]
    for n in prange(dy.shape[0], schedule="dynamic", nogil=True, num_threads=_threads):
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
