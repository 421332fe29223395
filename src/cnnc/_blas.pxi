# Matrix products by NumPy's own OpenBLAS, called directly from this module's threads, one
# single-threaded product per thread: OpenBLAS's own worker threads keep spinning for a
# long time after each product and would take the cores from the loops here. Where NumPy
# has no OpenBLAS of its own (other builds), _blas is None and the products go through
# numpy.matmul instead.

cdef enum:
    _ROW_MAJOR = 101
    _NO_TRANS = 111
    _TRANS = 112

ctypedef void (*_sgemm_t)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                          const float*, int64_t, float, float*, int64_t) noexcept nogil
ctypedef void (*_dgemm_t)(int, int, int, int64_t, int64_t, int64_t, double, const double*, int64_t,
                          const double*, int64_t, double, double*, int64_t) noexcept nogil
ctypedef void (*_set_threads_t)(int) noexcept nogil
ctypedef int (*_get_threads_t)() noexcept nogil
cdef _sgemm_t _sgemm = NULL
cdef _dgemm_t _dgemm = NULL
cdef _set_threads_t _blas_set_threads = NULL
cdef _get_threads_t _blas_get_threads = NULL


def _numpy_openblas():
    """Addresses of cblas_sgemm and cblas_dgemm (64-bit ints), openblas_set_num_threads and
    openblas_get_num_threads in the OpenBLAS that NumPy's wheel ships, or None."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in glob.glob(os.path.join(root, "numpy.libs", "*openblas*")):
        library = ctypes.CDLL(path)
        for prefix in ("scipy_", ""):
            names = {"sgemm": "cblas_sgemm64_", "dgemm": "cblas_dgemm64_",
                     "set_threads": "openblas_set_num_threads64_",
                     "get_threads": "openblas_get_num_threads64_"}
            try:
                return {key: ctypes.cast(getattr(library, prefix + name), ctypes.c_void_p).value
                        for key, name in names.items()}
            except AttributeError:
                continue
    return None


_blas = _numpy_openblas()
if _blas is not None:
    _sgemm = <_sgemm_t><size_t>_blas["sgemm"]
    _dgemm = <_dgemm_t><size_t>_blas["dgemm"]
    _blas_set_threads = <_set_threads_t><size_t>_blas["set_threads"]
    _blas_get_threads = <_get_threads_t><size_t>_blas["get_threads"]

# OpenBLAS's thread count is 1 while any kernel call multiplies from this module's threads,
# and what it was once the last such call is done; a NumPy product in another Python thread
# meanwhile runs on one thread too. (NumPy's OpenBLAS has no count per calling thread: its
# openblas_set_num_threads_local sets the process-wide one.) Counted with the GIL held.
cdef int _blas_callers = 0
cdef int _blas_threads_before = 1


cdef void _blas_on_calling_threads() noexcept:
    """From here on, OpenBLAS computes each product on the thread that asks for it."""
    global _blas_callers, _blas_threads_before
    if _blas_set_threads != NULL:
        if _blas_callers == 0:
            _blas_threads_before = _blas_get_threads()
            _blas_set_threads(1)
        _blas_callers += 1


cdef void _blas_threads_back() noexcept:
    """Undoes _blas_on_calling_threads."""
    global _blas_callers
    if _blas_set_threads != NULL:
        _blas_callers -= 1
        if _blas_callers == 0:
            _blas_set_threads(_blas_threads_before)


cdef inline void _gemm(int transa, int transb, int64_t m, int64_t n, int64_t k, const real* a,
                       int64_t lda, const real* b, int64_t ldb, real beta, real* c,
                       int64_t ldc) noexcept nogil:
    """c = op(a) @ op(b) + beta * c, row-major."""
    if real is float:
        _sgemm(_ROW_MAJOR, transa, transb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    else:
        _dgemm(_ROW_MAJOR, transa, transb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


cdef void _matmul_split(int transa, int transb, const real* a, int64_t lda, const real* b,
                        int64_t ldb, real* c, int64_t m, int64_t n, int64_t k) noexcept:
    """c = op(a) @ op(b), its longer side cut into chunks of at least 32 (at most 16 chunks)
    that the threads take as they come free: a count fixed by the shape, since BLAS may
    round a product of another size otherwise, so any thread count gives the same bits."""
    cdef bint by_rows = m >= n
    cdef int64_t side = m if by_rows else n
    cdef int64_t chunks = side // 32 if side // 32 < 16 else 16
    cdef int64_t chunk, start, size
    if chunks < 1:
        chunks = 1
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=_team(chunks)):
        for chunk in prange(chunks, schedule="dynamic"):
            start = chunk * side // chunks
            size = (chunk + 1) * side // chunks - start
            if by_rows:     # rows of op(a): a row offset as stored, a column offset transposed
                _gemm(transa, transb, size, n, k, a + (start * lda if transa == _NO_TRANS else start),
                      lda, b, ldb, 0, c + start * n, n)
            else:           # columns of op(b): likewise the other way round
                _gemm(transa, transb, m, size, k, a, lda,
                      b + (start if transb == _NO_TRANS else start * ldb), ldb, 0, c + start, n)
    _blas_threads_back()


def _layout(m):
    """(array, transposed, leading dimension) with the array C-contiguous as stored."""
    if m.flags.c_contiguous:
        return m, False, m.shape[1]
    if m.T.flags.c_contiguous:
        return m.T, True, m.shape[0]
    m = np.ascontiguousarray(m)
    return m, False, m.shape[1]


def matmul(a, b):
    """a @ b for 2-D float arrays (a transposed view is fine)."""
    a, b = _checks.matmul(a, b)
    (m, k), n = a.shape, b.shape[1]
    if _blas is None or m * n * k < (1 << 20):   # small products: not worth waking threads
        return np.matmul(a, b)
    stored_a, trans_a, lda = _layout(a)
    stored_b, trans_b, ldb = _layout(b)
    c = np.empty((m, n), dtype=a.dtype)
    ta, tb = (_TRANS if trans_a else _NO_TRANS), (_TRANS if trans_b else _NO_TRANS)
    cdef cnp.ndarray pa = stored_a, pb = stored_b, pc = c
    if a.dtype == np.float32:
        _matmul_split[float](ta, tb, <float*>cnp.PyArray_DATA(pa), lda, <float*>cnp.PyArray_DATA(pb),
                             ldb, <float*>cnp.PyArray_DATA(pc), m, n, k)
    else:
        _matmul_split[double](ta, tb, <double*>cnp.PyArray_DATA(pa), lda,
                              <double*>cnp.PyArray_DATA(pb), ldb, <double*>cnp.PyArray_DATA(pc), m,
                              n, k)
    return c
