# Convolution by im2col and matrix products: forward, input gradient and filter gradient.
# With NumPy's OpenBLAS (_blas.pxi), each thread builds the patch matrix of a chunk of
# images small enough to stay in its cache and multiplies it at once; where NumPy has no
# OpenBLAS of its own, numpy.matmul multiplies a larger chunk at a time. Thin products take
# the direct loops (_direct_convolution.pxi).

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


# Bytes of patch matrix per chunk: per thread and in cache with direct BLAS (256 KiB to
# 1 MiB measured alike on the seed CNN); through numpy.matmul, large enough for its own
# threads to pay off (8 MiB beat 1, 4, 16 and 64 MiB).
cdef Py_ssize_t _CHUNK_BYTES = (1 << 20) if _blas is not None else (8 << 20)


def _chunk_count(n, bytes_per_image):
    """Into how many chunks to cut n images: patch matrices of about _CHUNK_BYTES at most,
    and a multiple of the threads, so that they share the work evenly."""
    wanted = max(1, -(-n * bytes_per_image // _CHUNK_BYTES))
    return max(1, min(n, -(-wanted // _threads) * _threads))


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


cdef void _patch_images(const real[:, :, :, ::1] x, real[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """cols (N*OH*OW, patch) = the patch matrix of every image of x, images shared among
    the threads."""
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(x.shape[0], schedule="static", nogil=True, num_threads=_threads):
        _patches(&x[n, 0, 0, 0], &cols[n * pixels, 0], x.shape[1], x.shape[2], x.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


cdef void _unpatch_images(const real[:, ::1] cols, real[:, :, :, ::1] dx, Py_ssize_t kh,
                          Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                          Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """dx += every image's patches in cols added back where they came from, images shared
    among the threads."""
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(dx.shape[0], schedule="static", nogil=True, num_threads=_threads):
        _unpatch(&cols[n * pixels, 0], &dx[n, 0, 0, 0], dx.shape[1], dx.shape[2], dx.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


cdef void _add_to_rows(real[:, ::1] a, const real[::1] row_values) noexcept:
    """a[row] += row_values for every row (NumPy's broadcast add is slow for short rows)."""
    cdef Py_ssize_t row
    with nogil:
        for row in range(a.shape[0]):
            _add(&a[row, 0], &row_values[0], a.shape[1])


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


# The entry points: the direct loops where _direct_taken says so, else the passes through
# NumPy's OpenBLAS, or through numpy.matmul where _blas is None; the bias gradient sums rows.

cdef void _sum_rows(const real[:, ::1] a, real[:, ::1] partial) noexcept:
    """partial[t] += the sum of the t-th of len(partial) even shares of a's rows."""
    cdef Py_ssize_t share, row
    cdef Py_ssize_t shares = partial.shape[0], rows = a.shape[0]
    for share in prange(shares, schedule="static", nogil=True, num_threads=shares):
        for row in range(share * rows // shares, (share + 1) * rows // shares):
            _add(&partial[share, 0], &a[row, 0], a.shape[1])


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
