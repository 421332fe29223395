# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled cnnc kernels: the same functions, with the same signatures, as _numpy_kernels.

Every entry point runs the shared argument checks (_checks) before it touches memory.
The loops release the GIL and run in parallel where the build found OpenMP; matrix
products call the OpenBLAS of NumPy's wheel from those threads (numpy.matmul elsewhere).
"""
import contextlib
import ctypes
import glob
import os
import threading

import numpy as np

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport (WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
                               PyThread_release_lock, PyThread_type_lock)
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport fma, sqrt
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset, strncpy

from . import _checks

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
    static int cnnc_cpu_has_avx2_fma(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int cnnc_cpu_has_avx2_fma(void) { return 0; }
    #endif
    """
    int cnnc_cpu_has_avx2_fma()


def _cpu_has_avx2_fma():
    """Whether this CPU (and its operating system) runs AVX2 and FMA instructions."""
    return bool(cnnc_cpu_has_avx2_fma())

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CNNC_HAS_OPENMP 1
    #else
    #define CNNC_HAS_OPENMP 0
    #endif
    """
    bint CNNC_HAS_OPENMP

# Threads for the loops over the batch: CNNC_NUM_THREADS, or every core (one where the
# compiler had no OpenMP: the loops then run on the calling thread, whatever is asked).
cdef int _threads = _checks.thread_count("CNNC_NUM_THREADS")
if not CNNC_HAS_OPENMP:
    _threads = 1

# A child made by fork() has none of the parent's threads, and GNU OpenMP's pool does not
# know it: the child's first parallel loop would wait forever for workers that are gone.
# A team of one thread needs no pool, so the child computes on its own thread.
cdef extern from *:
    """
    #if defined(_WIN32)
    static int cnnc_at_fork_in_child(void (*handler)(void)) { (void)handler; return 0; }
    #else
    #include <pthread.h>
    static int cnnc_at_fork_in_child(void (*handler)(void)) {
        return pthread_atfork(NULL, NULL, handler);
    }
    #endif
    """
    int cnnc_at_fork_in_child(void (*handler)() noexcept nogil)


cdef void _one_thread_after_fork() noexcept nogil:
    global _threads
    _threads = 1


def set_num_threads(n):
    """Run the loops on n threads from now on (CNNC_NUM_THREADS sets the first count)."""
    global _threads
    n = _checks.num_threads(n)
    _threads = n if CNNC_HAS_OPENMP else 1


def get_num_threads():
    """How many threads the loops run on (1 in a child made by fork(), and in a build
    without OpenMP)."""
    return _threads


if cnnc_at_fork_in_child(_one_thread_after_fork) != 0:
    raise ImportError("cnnc._kernels could not register its fork handler (pthread_atfork)")

ctypedef fused real:
    float
    double

# Elementwise kernels share out their arrays in blocks of this many elements.
cdef Py_ssize_t _BLOCK = 16384


cdef inline int _team(Py_ssize_t pieces) noexcept nogil:
    """Threads for a loop over this many pieces: no more threads than pieces."""
    return _threads if pieces >= _threads else (<int>pieces if pieces > 0 else 1)


# Innermost loops over contiguous runs, kept out of the prange bodies so the compiler
# can vectorize them (OpenMP's lastprivate copies of loop variables prevent that).

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


cdef void _patches(const real* image, real* cols, Py_ssize_t height, Py_ssize_t width,
                   Py_ssize_t channels, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """im2col of one NHWC image: row (i, j) of cols is the patch under output pixel (i, j),
    laid out (r, q, c), with zeros off the edge.

    A filter row (q, c) is one contiguous run of kw*C values in NHWC, copied at once
    when it lies inside the image.
    """
    cdef Py_ssize_t i, j, r, q, h, w, w0
    cdef Py_ssize_t run = kw * channels
    cdef real* dst
    for i in range(oh):
        for j in range(ow):
            w0 = j * sw - left
            for r in range(kh):
                h = i * sh - top + r
                dst = cols + ((i * ow + j) * kh + r) * run
                if h < 0 or h >= height:
                    _zero(dst, run)
                elif w0 >= 0 and w0 + kw <= width:
                    _copy(dst, image + (h * width + w0) * channels, run)
                else:
                    for q in range(kw):
                        w = w0 + q
                        if 0 <= w < width:
                            _copy(dst + q * channels, image + (h * width + w) * channels, channels)
                        else:
                            _zero(dst + q * channels, channels)


cdef void _unpatch(const real* cols, real* image, Py_ssize_t height, Py_ssize_t width,
                   Py_ssize_t channels, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """col2im of one image, the adjoint of _patches: adds every patch back where it came from."""
    cdef Py_ssize_t i, j, r, q, h, w, w0
    cdef Py_ssize_t run = kw * channels
    cdef const real* src
    for i in range(oh):
        for j in range(ow):
            w0 = j * sw - left
            for r in range(kh):
                h = i * sh - top + r
                if h < 0 or h >= height:
                    continue
                src = cols + ((i * ow + j) * kh + r) * run
                if w0 >= 0 and w0 + kw <= width:
                    _add(image + (h * width + w0) * channels, src, run)
                else:
                    for q in range(kw):
                        w = w0 + q
                        if 0 <= w < width:
                            _add(image + (h * width + w) * channels, src + q * channels, channels)


# ---------------------------------------------------------------------------------------
# Matrix products. NumPy's own OpenBLAS is called directly, from this module's threads,
# one single-threaded product per chunk of images: OpenBLAS's own worker threads keep
# spinning for a long time after each product and would take the cores from the loops
# here. Each thread builds the patch matrix of a chunk small enough to stay in its
# cache and multiplies it at once. Where NumPy has no OpenBLAS of its own (other builds),
# the products go through numpy.matmul instead, a chunk at a time.

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

# Bytes of patch matrix per chunk: per thread and in cache with direct BLAS (256 KiB to
# 1 MiB measured alike on the seed CNN); through numpy.matmul, large enough for its own
# threads to pay off (8 MiB beat 1, 4, 16 and 64 MiB).
cdef Py_ssize_t _CHUNK_BYTES = (1 << 20) if _blas is not None else (8 << 20)


cdef inline void _gemm(int transa, int transb, int64_t m, int64_t n, int64_t k, const real* a,
                       int64_t lda, const real* b, int64_t ldb, real beta, real* c,
                       int64_t ldc) noexcept nogil:
    """c = op(a) @ op(b) + beta * c, row-major."""
    if real is float:
        _sgemm(_ROW_MAJOR, transa, transb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    else:
        _dgemm(_ROW_MAJOR, transa, transb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)


cdef enum _Pass:
    _FORWARD = 0        # y = patches @ w2 + b
    _GRAD_INPUT = 1     # dx = unpatch(dy @ w2.T)
    _GRAD_WEIGHT = 2    # dw = patches.T @ dy, one partial sum per thread


cdef int _conv_pass(_Pass which, const real[:, :, :, ::1] image, real[:, :, :, ::1] image_grad,
                    const real[:, ::1] w2, const real[:, ::1] rows, real[:, ::1] out,
                    const real[::1] b, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow,
                    Py_ssize_t chunks) noexcept:
    """One convolution pass over the batch, chunk by chunk, chunks shared among the threads.

    `image` is x (forward, weight gradient) and `image_grad` dx (input gradient), both
    (N, H, W, C); `w2` is the filter as (patch, F) (forward, input gradient); `rows` is dy
    as (N*OH*OW, F) (gradients); `out` is y (forward) or the per-thread partial weight
    gradients (threads * patch, F). Returns how many chunks found no memory.
    """
    cdef const real[:, :, :, ::1] batch = image if which != _GRAD_INPUT else image_grad
    cdef Py_ssize_t images = batch.shape[0], height = batch.shape[1], width = batch.shape[2]
    cdef Py_ssize_t channels = batch.shape[3], pixels = oh * ow, patch = kh * kw * channels
    cdef Py_ssize_t f = w2.shape[1] if which == _FORWARD else rows.shape[1]
    cdef Py_ssize_t largest = (images + chunks - 1) // chunks
    cdef Py_ssize_t chunk, n, start, stop, row
    cdef real* cols
    cdef int failed = 0
    # the weight gradient's team is as large as its per-thread buffer, whatever
    # set_num_threads did since that was made
    cdef int team = <int>(out.shape[0] // patch) if which == _GRAD_WEIGHT else _threads
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=team):
        cols = <real*>malloc(largest * pixels * patch * sizeof(real))
        for chunk in prange(chunks, schedule="static"):
            start = chunk * images // chunks
            stop = (chunk + 1) * images // chunks
            if cols == NULL:
                failed += 1
            elif which == _FORWARD:
                for n in range(start, stop):
                    _patches(&image[n, 0, 0, 0], cols + (n - start) * pixels * patch, height, width,
                             channels, kh, kw, sh, sw, top, left, oh, ow)
                _gemm(_NO_TRANS, _NO_TRANS, (stop - start) * pixels, f, patch, cols, patch,
                      &w2[0, 0], f, 0, &out[start * pixels, 0], f)
                for row in range(start * pixels, stop * pixels):
                    _add(&out[row, 0], &b[0], f)
            elif which == _GRAD_WEIGHT:
                for n in range(start, stop):
                    _patches(&image[n, 0, 0, 0], cols + (n - start) * pixels * patch, height, width,
                             channels, kh, kw, sh, sw, top, left, oh, ow)
                _gemm(_TRANS, _NO_TRANS, patch, f, (stop - start) * pixels, cols, patch,
                      &rows[start * pixels, 0], f, 1, &out[threadid() * patch, 0], f)
            else:
                _gemm(_NO_TRANS, _TRANS, (stop - start) * pixels, patch, f, &rows[start * pixels, 0],
                      f, &w2[0, 0], f, 0, cols, patch)
                _zero(&image_grad[start, 0, 0, 0], (stop - start) * height * width * channels)
                for n in range(start, stop):
                    _unpatch(cols + (n - start) * pixels * patch, &image_grad[n, 0, 0, 0], height,
                             width, channels, kh, kw, sh, sw, top, left, oh, ow)
        free(cols)
    _blas_threads_back()
    return failed


# ---------------------------------------------------------------------------------------
# Direct convolution (forward and filter gradient), for thin products: few filters, or few
# taps. There im2col copies every input value kh*kw times to feed a product too thin for
# BLAS to run fast; instead each output pixel's filters are summed in vector registers,
# a block of 8 or 16 filters for a tile of pixels at a time (_direct_conv.h). The input
# gradient always takes the GEMM path.

cdef extern from "_direct_conv.h" nogil:
    void cnnc_pixels_8x8_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                           Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x4_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                            Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_8x1_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                           Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x1_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                            Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_8x8_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                           Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x4_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                            Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_8x1_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                           Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x1_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                            Py_ssize_t, Py_ssize_t)
    void cnnc_tap_sum_8_f(const float*, Py_ssize_t, Py_ssize_t, const float*, Py_ssize_t,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t, float*)
    void cnnc_tap_sum_16_f(const float*, Py_ssize_t, Py_ssize_t, const float*, Py_ssize_t,
                           Py_ssize_t, Py_ssize_t, Py_ssize_t, float*)
    void cnnc_tap_sum_8_d(const double*, Py_ssize_t, Py_ssize_t, const double*, Py_ssize_t,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t, double*)
    void cnnc_tap_sum_16_d(const double*, Py_ssize_t, Py_ssize_t, const double*, Py_ssize_t,
                           Py_ssize_t, Py_ssize_t, Py_ssize_t, double*)

cdef enum:
    _LANES = 16         # filters per block
    _HALF_LANES = 8     # for 8 filters or fewer
    _TILE = 4           # pixels per tile of 16 filters
    _HALF_TILE = 8      # pixels per tile of 8 filters



def _direct_taken(patch, f):
    """Whether the direct loops compute this convolution: products of patch = kh*kw*C taps
    by f filters where im2col and BLAS measured slower (a few taps; or few filters)."""
    return patch <= 9 or (f <= 16 and patch <= 75) or (f <= 32 and patch <= 25)


def _padded_filters(f):
    """The filter count the direct loops compute: whole lane blocks, the extra ones zero."""
    return _HALF_LANES if f <= _HALF_LANES else -(-f // _LANES) * _LANES


def _padded(a, width):
    """a (rows, F) with zero columns appended up to width (a itself when already that wide)."""
    if a.shape[1] == width:
        return a
    wide = np.zeros((a.shape[0], width), dtype=a.dtype)
    wide[:, :a.shape[1]] = a
    return wide


cdef inline Py_ssize_t _clip(Py_ssize_t value, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    return low if value < low else (high if value > high else value)


cdef inline Py_ssize_t _first_inside(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """The smallest j >= 0 with j * stride + offset >= 0."""
    return 0 if offset >= 0 else (stride - 1 - offset) // stride


cdef inline Py_ssize_t _end_inside(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                   Py_ssize_t count) noexcept nogil:
    """One past the largest j < count with j * stride + offset < size."""
    cdef Py_ssize_t end = 0 if size <= offset else (size - offset + stride - 1) // stride
    return end if end < count else count


cdef inline void _pixel_tile(bint whole, const real* px, Py_ssize_t px_row, Py_ssize_t px_step,
                             Py_ssize_t rows, Py_ssize_t run, const real* w, Py_ssize_t w_row,
                             Py_ssize_t w_stride, const real* b, real* y, Py_ssize_t f,
                             Py_ssize_t stored) noexcept nogil:
    """A tile of pixels (whole) or one pixel, for one block of filters: _direct_conv.h."""
    if real is float:
        if w_stride == _HALF_LANES and whole:
            cnnc_pixels_8x8_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        elif w_stride == _HALF_LANES:
            cnnc_pixels_8x1_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        elif whole:
            cnnc_pixels_16x4_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        else:
            cnnc_pixels_16x1_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
    else:
        if w_stride == _HALF_LANES and whole:
            cnnc_pixels_8x8_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        elif w_stride == _HALF_LANES:
            cnnc_pixels_8x1_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        elif whole:
            cnnc_pixels_16x4_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)
        else:
            cnnc_pixels_16x1_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored)


cdef void _direct_forward_row(const real* image, const real* w, const real* b, real* y,
                              Py_ssize_t height, Py_ssize_t width, Py_ssize_t channels,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t h0,
                              Py_ssize_t left, Py_ssize_t ow, Py_ssize_t f,
                              Py_ssize_t w_stride) noexcept nogil:
    """One output row y (OW, F) of one image, its top patch row at h0; w (patch, w_stride)
    and b (w_stride,) are padded to whole blocks of filters."""
    cdef Py_ssize_t r0 = _clip(-h0, 0, kh), r1 = _clip(height - h0, 0, kh)
    cdef Py_ssize_t lanes = _HALF_LANES if w_stride == _HALF_LANES else _LANES
    cdef Py_ssize_t tile = _HALF_TILE if w_stride == _HALF_LANES else _TILE
    cdef Py_ssize_t run = kw * channels, px_row = width * channels
    cdef Py_ssize_t j = 0, w0, q0, q1, block, start
    cdef bint whole
    while j < ow:
        w0 = j * sw - left
        whole = j + tile <= ow and w0 >= 0 and w0 + (tile - 1) * sw + kw <= width
        q0 = 0 if whole else _clip(-w0, 0, kw)
        q1 = kw if whole else _clip(width - w0, 0, kw)
        for block in range(w_stride // lanes):
            start = block * lanes
            _pixel_tile(whole, image + ((h0 + r0) * width + w0 + q0) * channels, px_row,
                        sw * channels, r1 - r0, (q1 - q0) * channels,
                        w + ((r0 * kw + q0) * channels) * w_stride + start, run * w_stride,
                        w_stride, b + start, y + j * f + start, f,
                        lanes if f - start > lanes else f - start)
        j += tile if whole else 1


cdef inline void _tap_sum(const real* x, Py_ssize_t x_row, Py_ssize_t x_step, const real* dy,
                          Py_ssize_t dy_row, Py_ssize_t dy_stride, Py_ssize_t rows,
                          Py_ssize_t columns, real* dw, Py_ssize_t lanes) noexcept nogil:
    """One tap of the filter gradient over one image, one block of filters: _direct_conv.h."""
    if real is float:
        if lanes == _HALF_LANES:
            cnnc_tap_sum_8_f(x, x_row, x_step, dy, dy_row, dy_stride, rows, columns, dw)
        else:
            cnnc_tap_sum_16_f(x, x_row, x_step, dy, dy_row, dy_stride, rows, columns, dw)
    else:
        if lanes == _HALF_LANES:
            cnnc_tap_sum_8_d(x, x_row, x_step, dy, dy_row, dy_stride, rows, columns, dw)
        else:
            cnnc_tap_sum_16_d(x, x_row, x_step, dy, dy_row, dy_stride, rows, columns, dw)


cdef void _direct_weight_image(const real* image, const real* dy, real* dw, Py_ssize_t height,
                               Py_ssize_t width, Py_ssize_t channels, Py_ssize_t kh,
                               Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                               Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow,
                               Py_ssize_t f) noexcept nogil:
    """dw (patch, F) += the filter gradient of one image, given its dy (OH, OW, F); F is a
    whole number of blocks of filters."""
    cdef Py_ssize_t lanes = _HALF_LANES if f == _HALF_LANES else _LANES
    cdef Py_ssize_t r, q, c, top_row, end_row, first, end, block, start, tap
    for r in range(kh):
        top_row = _first_inside(r - top, sh)
        end_row = _end_inside(r - top, sh, height, oh)
        if top_row >= end_row:
            continue
        for q in range(kw):
            first = _first_inside(q - left, sw)
            end = _end_inside(q - left, sw, width, ow)
            if first >= end:
                continue
            for c in range(channels):
                tap = (r * kw + q) * channels + c
                for block in range(f // lanes):
                    start = block * lanes
                    _tap_sum(image + ((top_row * sh + r - top) * width + first * sw + q - left)
                             * channels + c, sh * width * channels, sw * channels,
                             dy + (top_row * ow + first) * f + start, ow * f, f,
                             end_row - top_row, end - first, dw + tap * f + start, lanes)


cdef void _direct_forward(const real[:, :, :, ::1] x, const real[:, ::1] w2, const real[::1] b,
                          real[:, ::1] y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                          Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh,
                          Py_ssize_t ow) noexcept:
    """y (N*OH*OW, F) = the convolution of x with w2 (patch, padded F) plus b (padded F),
    output row by output row, rows shared among the threads."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t f = y.shape[1], w_stride = w2.shape[1], count = x.shape[0] * oh
    cdef Py_ssize_t row, n, i
    for row in prange(count, schedule="static", nogil=True, num_threads=_team(count)):
        n = row // oh
        i = row - n * oh
        _direct_forward_row(&x[n, 0, 0, 0], &w2[0, 0], &b[0], &y[row * ow, 0], height, width,
                            channels, kh, kw, sw, i * sh - top, left, ow, f, w_stride)


cdef int _direct_weight(const real[:, :, :, ::1] x, const real[:, ::1] dy2, real[:, ::1] partial,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """partial (threads * patch, padded F) += each thread's share of the filter gradient, image
    by image, each image's dy copied into padded rows when F is not a whole number of
    blocks. Returns how many images found no memory for that copy."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t f = dy2.shape[1], padded = partial.shape[1], pixels = oh * ow
    cdef Py_ssize_t patch = kh * kw * channels, n, pixel
    cdef int team = <int>(partial.shape[0] // patch)     # one buffer row block per thread
    cdef int failed = 0
    cdef real* rows
    with nogil, parallel(num_threads=team):
        rows = <real*>calloc(pixels * padded, sizeof(real)) if padded != f else NULL
        for n in prange(x.shape[0], schedule="static"):
            if padded != f and rows == NULL:
                failed += 1
            elif padded != f:
                for pixel in range(pixels):
                    _copy(rows + pixel * padded, &dy2[n * pixels + pixel, 0], f)
            if padded == f or rows != NULL:
                _direct_weight_image(&x[n, 0, 0, 0], &dy2[n * pixels, 0] if padded == f else rows,
                                     &partial[threadid() * patch, 0], height, width, channels,
                                     kh, kw, sh, sw, top, left, oh, ow, padded)
        free(rows)
    return failed


def _direct_forward_pass(x, w2, b, y, kernel_size, stride, padding, out_hw):
    """y (N*OH*OW, F) = the convolution of x with w2 (patch, F) plus b, by the direct loops."""
    if x.shape[0] == 0 or y.shape[1] == 0 or out_hw[0] * out_hw[1] == 0:
        return
    width = _padded_filters(y.shape[1])
    w2, b = _padded(w2, width), _padded(b[None], width)[0]
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw)
    if x.dtype == np.float32:
        _direct_forward[float](x, w2, b, y, *geometry)
    else:
        _direct_forward[double](x, w2, b, y, *geometry)


def _direct_weight_pass(x, dy2, kernel_size, stride, padding, out_hw):
    """The filter gradient as (patch, F), by the direct loops."""
    patch, f = kernel_size[0] * kernel_size[1] * x.shape[3], dy2.shape[1]
    width = _padded_filters(f)
    partial = np.zeros((_threads * patch, width), dtype=x.dtype)
    if x.shape[0] and f and out_hw[0] * out_hw[1]:
        geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw)
        if x.dtype == np.float32:
            failed = _direct_weight[float](x, dy2, partial, *geometry)
        else:
            failed = _direct_weight[double](x, dy2, partial, *geometry)
        if failed:
            raise MemoryError("no memory for a convolution's padded gradient rows")
    return partial.reshape(-1, patch, width).sum(axis=0)[:, :f]


cdef void _patch_images(const real[:, :, :, ::1] x, real[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept:
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(x.shape[0], schedule="static", nogil=True, num_threads=_threads):
        _patches(&x[n, 0, 0, 0], &cols[n * pixels, 0], x.shape[1], x.shape[2], x.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


cdef void _unpatch_images(const real[:, ::1] cols, real[:, :, :, ::1] dx, Py_ssize_t kh,
                          Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                          Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept:
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(dx.shape[0], schedule="static", nogil=True, num_threads=_threads):
        _unpatch(&cols[n * pixels, 0], &dx[n, 0, 0, 0], dx.shape[1], dx.shape[2], dx.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


_local = threading.local()


def _scratch(role, rows, columns, dtype):
    """A (rows, columns) work array of this thread, reused from call to call."""
    buffers = _local.__dict__.setdefault("buffers", {})
    size = rows * columns
    buffer = buffers.get((role, dtype))
    if buffer is None or buffer.size < size:
        buffer = buffers[(role, dtype)] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(rows, columns)


def _chunk_count(n, bytes_per_image):
    """Into how many chunks to cut n images: patch matrices of about _CHUNK_BYTES at most,
    and a multiple of the threads, so that they share the work evenly."""
    wanted = max(1, -(-n * bytes_per_image // _CHUNK_BYTES))
    return max(1, min(n, -(-wanted // _threads) * _threads))


def _run_pass(which, image, image_grad, w2, rows, out, b, kernel_size, stride, padding, out_hw,
              chunks):
    if rows is not None and rows.shape[0] == 0 or image is not None and image.shape[0] == 0:
        return                      # an empty batch: nothing to compute, nothing to allocate
    args = (image, image_grad, w2, rows, out, b, *kernel_size, *stride, padding[0], padding[2],
            *out_hw, chunks)
    if (image if image is not None else image_grad).dtype == np.float32:
        failed = _conv_pass[float](which, *args)
    else:
        failed = _conv_pass[double](which, *args)
    if failed:
        raise MemoryError("no memory for a convolution's patch matrix")


def _matmul_pass(which, x, w2, rows, out, b, kernel_size, stride, padding, out_hw, chunks):
    """The same passes through numpy.matmul, for NumPy builds without their own OpenBLAS."""
    (kh, kw), (sh, sw), top, left = kernel_size, stride, padding[0], padding[2]
    n, pixels, patch = x.shape[0], out_hw[0] * out_hw[1], kh * kw * x.shape[3]
    per_chunk = -(-n // chunks)
    single = x.dtype == np.float32
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        cols = _scratch("cols", (stop - start) * pixels, patch, x.dtype)
        part = slice(start * pixels, stop * pixels)
        if which == _GRAD_INPUT:
            np.matmul(rows[part], w2.T, out=cols)
            if single:
                _unpatch_images[float](cols, x[start:stop], kh, kw, sh, sw, top, left, *out_hw)
            else:
                _unpatch_images[double](cols, x[start:stop], kh, kw, sh, sw, top, left, *out_hw)
            continue
        if single:
            _patch_images[float](x[start:stop], cols, kh, kw, sh, sw, top, left, *out_hw)
        else:
            _patch_images[double](x[start:stop], cols, kh, kw, sh, sw, top, left, *out_hw)
        if which == _FORWARD:
            np.matmul(cols, w2, out=out[part])
            if single:
                _add_to_rows[float](out[part], b)
            else:
                _add_to_rows[double](out[part], b)
        else:
            out += cols.T @ rows[part]


cdef void _matmul_split(int transa, int transb, const real* a, int64_t lda, const real* b,
                        int64_t ldb, real* c, int64_t m, int64_t n, int64_t k) noexcept:
    """c = op(a) @ op(b), its longer side shared evenly among the threads."""
    cdef bint by_rows = m >= n
    cdef int64_t side = m if by_rows else n
    cdef int64_t chunks = _threads if _threads < side else side
    cdef int64_t chunk, start, size
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=chunks):
        for chunk in prange(chunks, schedule="static"):
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


def conv2d_forward(x, w, b, stride, padding):
    """Cross-correlation of x (N, H, W, C) with w (kh, kw, C, F), plus bias b (F,)."""
    x, w, b, stride, padding, (oh, ow) = _checks.conv2d_forward(x, w, b, stride, padding)
    n, (kh, kw, c, f) = x.shape[0], w.shape
    pixels, patch = oh * ow, kh * kw * c
    w2 = w.reshape(patch, f)
    y = np.empty((n * pixels, f), dtype=x.dtype)
    chunks = _chunk_count(n, pixels * patch * x.itemsize)
    if _direct_taken(patch, f):
        _direct_forward_pass(x, w2, b, y, (kh, kw), stride, padding, (oh, ow))
    elif _blas is not None:
        _run_pass(_FORWARD, x, None, w2, None, y, b, (kh, kw), stride, padding, (oh, ow), chunks)
    else:
        _matmul_pass(_FORWARD, x, w2, None, y, b, (kh, kw), stride, padding, (oh, ow), chunks)
    return y.reshape(n, oh, ow, f)


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    """Gradient of the loss w.r.t. the convolution input, given dy (N, OH, OW, F)."""
    dy, w, input_shape, stride, padding, (oh, ow) = _checks.conv2d_grad_input(
        dy, w, input_shape, stride, padding)
    n, (kh, kw, c, f) = input_shape[0], w.shape
    pixels, patch = oh * ow, kh * kw * c
    w2 = w.reshape(patch, f)
    dy2 = dy.reshape(n * pixels, f)
    chunks = _chunk_count(n, pixels * patch * dy.itemsize)
    if _blas is not None:
        dx = np.empty(input_shape, dtype=dy.dtype)   # each thread zeroes its own images
        _run_pass(_GRAD_INPUT, None, dx, w2, dy2, None, None, (kh, kw), stride, padding, (oh, ow),
                  chunks)
    else:
        dx = np.zeros(input_shape, dtype=dy.dtype)
        _matmul_pass(_GRAD_INPUT, dx, w2, dy2, None, None, (kh, kw), stride, padding, (oh, ow),
                     chunks)
    return dx


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    """Gradients of the loss w.r.t. the filter (kh, kw, C, F) and the bias (F,)."""
    x, dy, kernel_size, stride, padding, out_hw = _checks.conv2d_grad_params(
        x, dy, kernel_size, stride, padding)
    n, (kh, kw), c, f = x.shape[0], kernel_size, x.shape[3], dy.shape[3]
    pixels, patch = out_hw[0] * out_hw[1], kh * kw * c
    dy2 = dy.reshape(n * pixels, f)
    chunks = _chunk_count(n, pixels * patch * x.itemsize)
    if _direct_taken(patch, f):
        dw = _direct_weight_pass(x, dy2, kernel_size, stride, padding, out_hw)
    elif _blas is not None:
        partial = np.zeros((_threads * patch, f), dtype=x.dtype)
        _run_pass(_GRAD_WEIGHT, x, None, None, dy2, partial, None, kernel_size, stride, padding,
                  out_hw, chunks)
        dw = partial.reshape(-1, patch, f).sum(axis=0)
    else:
        dw = np.zeros((patch, f), dtype=x.dtype)
        _matmul_pass(_GRAD_WEIGHT, x, None, dy2, dw, None, kernel_size, stride, padding, out_hw,
                     chunks)
    partial_db = np.zeros((_threads, f), dtype=x.dtype)
    if f and x.dtype == np.float32:
        _sum_rows[float](dy2, partial_db)
    elif f:
        _sum_rows[double](dy2, partial_db)
    return dw.reshape(kh, kw, c, f), partial_db.sum(axis=0)


cdef void _add_to_rows(real[:, ::1] a, const real[::1] row_values) noexcept:
    """a[row] += row_values for every row (NumPy's broadcast add is slow for short rows)."""
    cdef Py_ssize_t row
    with nogil:
        for row in range(a.shape[0]):
            _add(&a[row, 0], &row_values[0], a.shape[1])


cdef void _sum_rows(const real[:, ::1] a, real[:, ::1] partial) noexcept:
    """partial[t] += the sum of the t-th of len(partial) even shares of a's rows."""
    cdef Py_ssize_t share, row
    cdef Py_ssize_t shares = partial.shape[0], rows = a.shape[0]
    for share in prange(shares, schedule="static", nogil=True, num_threads=shares):
        for row in range(share * rows // shares, (share + 1) * rows // shares):
            _add(&partial[share, 0], &a[row, 0], a.shape[1])


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
    for n in prange(x.shape[0], schedule="static", nogil=True, num_threads=_threads):
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
    for block in prange(blocks, schedule="static", nogil=True, num_threads=_team(blocks)):
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
    for block in prange(blocks, schedule="static", nogil=True, num_threads=_team(blocks)):
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
    for block in prange(blocks, schedule="static", nogil=True, num_threads=_team(blocks)):
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

# ---------------------------------------------------------------------------------------
# Memory pool. A training step allocates the same large arrays every time (activations,
# gradients); returned to the system and faulted back in page by page, they cost more
# than the arithmetic on them. Inside memory_pool(), NumPy takes array memory from this
# pool, which keeps freed blocks of 64 KiB and up (at most _POOL_CAP bytes) for the next
# array of the same rounded size. Every block carries a header saying how big it is.

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

cnp.import_array()

cdef enum:
    _HEADER = 64            # bytes before the data: keeps it 64-byte aligned as malloc's 16
    _POOL_MIN = 1 << 16     # smaller blocks go straight to malloc and free
    _PAGE = 4096
    _POOL_SLOTS = 64

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
        base = <char *>malloc(capacity + _HEADER)
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
