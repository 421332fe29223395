# Elementwise kernels: leaky ReLU and its gradient, _BLOCK values at a time per thread.

cdef inline void _leaky_block(const real* x, real* out, Py_ssize_t count, real slope) noexcept nogil:
    cdef Py_ssize_t k
    cdef real value, product
    for k in range(count):
        value = x[k]
        product = value * slope
        out[k] = value if (value > 0) | (product != product) else product


cdef void _leaky_relu(const real[::1] x, real[::1] out, real slope) noexcept:
    cdef Py_ssize_t block, start
    cdef Py_ssize_t size = x.shape[0], blocks = (size + _BLOCK - 1) // _BLOCK
    for block in prange(blocks, schedule="dynamic", nogil=True, num_threads=_team_for(blocks, size, _VALUES_PER_THREAD)):
        start = block * _BLOCK
        _leaky_block(&x[start], &out[start], _BLOCK if start + _BLOCK <= size else size - start, slope)


def leaky_relu(x, slope):
    """x where x > 0, slope * x elsewhere, for 0 <= slope <= 1 (slope 0 is ReLU).

    This is max(x, slope * x); where slope * x is NaN though x is not (an infinite x
    times a slope of 0), x is kept.
    """
    x, slope = _checks.leaky_relu(x, slope)
    out = np.empty_like(x)
    if x.dtype == np.float32:
        _leaky_relu[float](x.reshape(-1), out.reshape(-1), slope)
    else:
        _leaky_relu[double](x.reshape(-1), out.reshape(-1), slope)
    return out


cdef inline void _leaky_backward_block(const real* x, const real* upstream, real* out,
                                       Py_ssize_t count, real slope) noexcept nogil:
    cdef Py_ssize_t k
    cdef real value, gradient, scaled
    for k in range(count):
        value = x[k]
        gradient = upstream[k]
        scaled = gradient * slope   # unconditionally, so that the loop vectorizes
        out[k] = gradient if value > 0 else scaled


cdef void _leaky_relu_backward(const real[::1] x, const real[::1] upstream, real[::1] out,
                               real slope) noexcept:
    cdef Py_ssize_t block, start
    cdef Py_ssize_t size = x.shape[0], blocks = (size + _BLOCK - 1) // _BLOCK
    for block in prange(blocks, schedule="dynamic", nogil=True, num_threads=_team_for(blocks, size, _VALUES_PER_THREAD)):
        start = block * _BLOCK
        _leaky_backward_block(&x[start], &upstream[start], &out[start],
                              _BLOCK if start + _BLOCK <= size else size - start, slope)


def leaky_relu_backward(x, upstream, slope):
    """upstream where x > 0, slope * upstream elsewhere: the gradient through leaky_relu."""
    x, upstream, slope = _checks.leaky_relu_backward(x, upstream, slope)
    out = np.empty_like(x)
    if x.dtype == np.float32:
        _leaky_relu_backward[float](x.reshape(-1), upstream.reshape(-1), out.reshape(-1), slope)
    else:
        _leaky_relu_backward[double](x.reshape(-1), upstream.reshape(-1), out.reshape(-1), slope)
    return out
