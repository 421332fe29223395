# The memory pool, a NumPy allocator (NEP 49). A training step allocates the same large
# arrays every time (activations, gradients); returned to the system and faulted back in
# page by page, they cost more than the arithmetic on them. Inside memory_pool(), NumPy
# takes array memory from this pool, which keeps freed blocks of 64 KiB and up (at most
# _POOL_CAP bytes) for the next array of the same rounded size, blocks of 4 MiB and up on
# huge pages where Linux has them. Every block carries a header saying how big it is.

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil

    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

    object PyDataMem_SetHandler(object handler)

cdef extern from "_large_pages.h" nogil:
    void *cnnc_large_block(size_t size)

cnp.import_array()

cdef enum:
    _HEADER = 64            # bytes before the data: keeps it 64-byte aligned as malloc's 16
    _POOL_MIN = 1 << 16     # smaller blocks go straight to malloc and free
    _PAGE = 4096
    _POOL_SLOTS = 64
    _LARGE = 4 << 20        # blocks this big and bigger go on huge pages (_large_pages.h)

cdef size_t _POOL_CAP = <size_t>1 << 30

cdef struct _Header:
    size_t capacity         # usable bytes after the header
    int pooled              # whether free() may keep the block

cdef void *_pool_blocks[_POOL_SLOTS]
cdef size_t _pool_sizes[_POOL_SLOTS]
cdef int _pool_count = 0
cdef size_t _pool_bytes = 0
cdef PyThread_type_lock _pool_lock = PyThread_allocate_lock()
cdef PyDataMem_Handler _pool_handler


cdef void *_pool_malloc(void *ctx, size_t size) noexcept nogil:
    global _pool_count, _pool_bytes
    cdef size_t capacity
    cdef int i
    cdef char *base = NULL
    if size > (<size_t>-1) // 2:
        return NULL                 # no array is that large; refuse before any rounding wraps
    if size < _POOL_MIN:
        base = <char *>malloc(size + _HEADER)
        if base == NULL:
            return NULL
        (<_Header *>base).capacity = size
        (<_Header *>base).pooled = 0
        return base + _HEADER
    capacity = (size + _PAGE - 1) // _PAGE * _PAGE
    PyThread_acquire_lock(_pool_lock, WAIT_LOCK)
    for i in range(_pool_count):
        if _pool_sizes[i] == capacity:
            base = <char *>_pool_blocks[i]
            _pool_count -= 1
            _pool_blocks[i] = _pool_blocks[_pool_count]
            _pool_sizes[i] = _pool_sizes[_pool_count]
            _pool_bytes -= capacity
            break
    PyThread_release_lock(_pool_lock)
    if base == NULL:
        base = <char *>(cnnc_large_block(capacity + _HEADER) if capacity >= _LARGE
                        else malloc(capacity + _HEADER))
        if base == NULL:
            return NULL
    (<_Header *>base).capacity = capacity
    (<_Header *>base).pooled = 1
    return base + _HEADER


cdef void _pool_free(void *ctx, void *ptr, size_t size) noexcept nogil:
    global _pool_count, _pool_bytes
    cdef char *base
    cdef size_t capacity
    cdef void *evicted = NULL
    if ptr == NULL:
        return
    base = <char *>ptr - _HEADER
    capacity = (<_Header *>base).capacity
    if not (<_Header *>base).pooled or capacity > _POOL_CAP:
        free(base)
        return
    PyThread_acquire_lock(_pool_lock, WAIT_LOCK)
    while _pool_count > 0 and (_pool_count == _POOL_SLOTS or _pool_bytes + capacity > _POOL_CAP):
        _pool_count -= 1            # drop the oldest block to make room
        _pool_bytes -= _pool_sizes[0]
        evicted = _pool_blocks[0]
        _pool_blocks[0] = _pool_blocks[_pool_count]
        _pool_sizes[0] = _pool_sizes[_pool_count]
        free(evicted)
    _pool_blocks[_pool_count] = base
    _pool_sizes[_pool_count] = capacity
    _pool_count += 1
    _pool_bytes += capacity
    PyThread_release_lock(_pool_lock)


cdef void *_pool_calloc(void *ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef void *ptr
    if elsize != 0 and nelem > (<size_t>-1 - _HEADER - _PAGE) // elsize:
        return NULL
    ptr = _pool_malloc(ctx, nelem * elsize)
    if ptr != NULL:
        memset(ptr, 0, nelem * elsize)
    return ptr


cdef void *_pool_realloc(void *ctx, void *ptr, size_t new_size) noexcept nogil:
    cdef void *moved
    cdef size_t old_capacity
    if ptr == NULL:
        return _pool_malloc(ctx, new_size)
    old_capacity = (<_Header *>(<char *>ptr - _HEADER)).capacity
    moved = _pool_malloc(ctx, new_size)
    if moved == NULL:
        return NULL
    memcpy(moved, ptr, old_capacity if old_capacity < new_size else new_size)
    _pool_free(ctx, ptr, old_capacity)
    return moved


strncpy(_pool_handler.name, b"cnnc_memory_pool", 126)
_pool_handler.version = 1
_pool_handler.allocator.ctx = NULL
_pool_handler.allocator.malloc = _pool_malloc
_pool_handler.allocator.calloc = _pool_calloc
_pool_handler.allocator.realloc = _pool_realloc
_pool_handler.allocator.free = _pool_free
_pool_capsule = PyCapsule_New(&_pool_handler, b"mem_handler", NULL)


@contextlib.contextmanager
def memory_pool():
    """Within the block, NumPy arrays reuse the memory of freed arrays of the same size,
    and OpenBLAS computes every product, NumPy's included, on the thread that asks for it
    (its own threads would keep spinning between products and take the cores from the
    kernels' loops).

    Arrays made inside may outlive the block; their memory returns to the pool when
    they are freed. The pool keeps at most 1 GiB.
    """
    previous = PyDataMem_SetHandler(_pool_capsule)
    _blas_on_calling_threads()
    try:
        yield
    finally:
        _blas_threads_back()
        PyDataMem_SetHandler(previous)
