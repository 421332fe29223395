# Adam's update, fused into one pass over each parameter array, with PyTorch's operations
# and roundings.

cdef inline real _fma(real a, real b, real c) noexcept nogil:
    """a * b + c rounded once, as PyTorch's vectorized kernels compute it (for float32
    through float64: exact but for a double rounding about once in 2**29)."""
    if real is float:
        return <float>(<double>a * <double>b + <double>c)
    else:
        return fma(a, b, c)


cdef inline void _adam_block(real* param, const real* grad, real* m, real* v, Py_ssize_t count,
                             bint small, real coefficient, real beta2, real keep_square,
                             real bias2_sqrt, real eps, real step_size) noexcept nogil:
    cdef Py_ssize_t k
    cdef real g, mk, vk
    for k in range(count):
        g = grad[k]
        mk = m[k]
        mk = _fma(coefficient, g - mk, mk if small else g)
        vk = _fma(keep_square * g, g, v[k] * beta2)
        m[k] = mk
        v[k] = vk
        param[k] = param[k] - step_size * mk / (<real>sqrt(vk) / bias2_sqrt + eps)


cdef void _adam(real[::1] param, const real[::1] grad, real[::1] m, real[::1] v, real keep_grad,
                real beta2, real keep_square, real bias2_sqrt, real eps, real step_size) noexcept:
    cdef Py_ssize_t block, start
    cdef Py_ssize_t size = param.shape[0], blocks = (size + _BLOCK - 1) // _BLOCK
    cdef bint small = keep_grad < 0.5   # PyTorch's lerp has two forms, by weight
    cdef real coefficient = keep_grad if small else keep_grad - 1
    for block in prange(blocks, schedule="dynamic", nogil=True, num_threads=_team_for(blocks, size, _VALUES_PER_THREAD)):
        start = block * _BLOCK
        _adam_block(&param[start], &grad[start], &m[start], &v[start],
                    _BLOCK if start + _BLOCK <= size else size - start, small, coefficient,
                    beta2, keep_square, bias2_sqrt, eps, step_size)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step):
    """One Adam step with bias correction, in place on param, m and v.

    The operations, their order and their roundings are those of torch.optim.Adam on the
    CPU, fused multiply-adds included (computed through float64, which is exact for
    float32 but for a double rounding about once in 2**29), so float32 results match
    PyTorch's to the bit nearly everywhere. `step` counts from 1.
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
