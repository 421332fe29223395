# Innermost loops over contiguous runs of values, shared by the kernels. They are kept out
# of the prange bodies so the compiler can vectorize them (OpenMP's lastprivate copies of
# loop variables prevent that).


cdef inline void _copy(real* dst, const real* src, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dst[k] = src[k]


cdef inline void _zero(real* dst, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dst[k] = 0


cdef inline void _add(real* dst, const real* src, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dst[k] += src[k]


cdef inline void _accumulate(double* total, const real* src, Py_ssize_t count) noexcept nogil:
    """total += src, in float64 whatever the type of src."""
    cdef Py_ssize_t k
    for k in range(count):
        total[k] += src[k]
