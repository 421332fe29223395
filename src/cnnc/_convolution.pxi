# Convolution by im2col and matrix products: forward, input gradient and filter gradient.
# With NumPy's OpenBLAS (_blas.pxi), each thread builds the patch matrix of a chunk of
# images small enough to stay in its cache and multiplies it at once; where NumPy has no
# OpenBLAS of its own, numpy.matmul multiplies a larger chunk at a time. Thin products take
# the direct loops (_direct_convolution.pxi). set_conv_path forces one of these paths.

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


# Bytes of patch matrix per chunk: with direct BLAS, a chunk per thread that stays in
# cache; through numpy.matmul, chunks large enough for its own threads to pay off.
cdef Py_ssize_t _GEMM_CHUNK_BYTES = 1 << 20
cdef Py_ssize_t _MATMUL_CHUNK_BYTES = 8 << 20


def _chunk_count(n, bytes_per_image, gemm):
    """Into how many chunks to cut n images: patch matrices of about a chunk's bytes at most,
    and with direct BLAS (gemm) at least 16 where there are images enough, so that threads
    that come free take over the chunks of one the system holds up (numpy.matmul takes a
    chunk at a time on its own threads). The count depends on the shape alone: each chunk
    is one product, and BLAS may round a product of another size otherwise, so any thread
    count gives the same bits."""
    chunk_bytes = _GEMM_CHUNK_BYTES if gemm else _MATMUL_CHUNK_BYTES
    wanted = max(16 if gemm else 1, -(-n * bytes_per_image // chunk_bytes))
    return max(1, min(n, wanted))


# The three passes through NumPy's OpenBLAS: the chunks shared among the threads, each
# thread with a patch matrix of its own for the largest chunk. A thread that finds no
# memory for it counts its chunks as failed, and the pass raises MemoryError.

cdef int _gemm_forward(const real[:, :, :, ::1] x, const real[:, ::1] w2, const real[::1] b,
                       real[:, ::1] y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow,
                       Py_ssize_t chunks) noexcept:
    """y (N*OH*OW, F) = patches of x @ w2 (patch, F) + b, chunk by chunk. Returns how many
    chunks found no memory."""
    cdef Py_ssize_t images = x.shape[0], height = x.shape[1], width = x.shape[2]
    cdef Py_ssize_t channels = x.shape[3], pixels = oh * ow, patch = kh * kw * channels
    cdef Py_ssize_t f = w2.shape[1], largest = (images + chunks - 1) // chunks
    cdef Py_ssize_t chunk, n, start, stop, row
    cdef real* cols
    cdef int failed = 0
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=_threads):
        cols = <real*>malloc(largest * pixels * patch * sizeof(real))
        for chunk in prange(chunks, schedule="dynamic"):
            start = chunk * images // chunks
            stop = (chunk + 1) * images // chunks
            if cols == NULL:
                failed += 1
            else:
                for n in range(start, stop):
                    _patches(&x[n, 0, 0, 0], cols + (n - start) * pixels * patch, height, width,
                             channels, kh, kw, sh, sw, top, left, oh, ow)
                _gemm(_NO_TRANS, _NO_TRANS, (stop - start) * pixels, f, patch, cols, patch,
                      &w2[0, 0], f, 0, &y[start * pixels, 0], f)
                for row in range(start * pixels, stop * pixels):
                    _add(&y[row, 0], &b[0], f)
        free(cols)
    _blas_threads_back()
    return failed


cdef int _gemm_grad_input(const real[:, ::1] dy2, const real[:, ::1] w2, real[:, :, :, ::1] dx,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                          Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow,
                          Py_ssize_t chunks) noexcept:
    """dx (N, H, W, C) = the patches of dy2 (N*OH*OW, F) @ w2.T added back where they came
    from, chunk by chunk; each thread zeroes its own images first. Returns how many chunks
    found no memory."""
    cdef Py_ssize_t images = dx.shape[0], height = dx.shape[1], width = dx.shape[2]
    cdef Py_ssize_t channels = dx.shape[3], pixels = oh * ow, patch = kh * kw * channels
    cdef Py_ssize_t f = dy2.shape[1], largest = (images + chunks - 1) // chunks
    cdef Py_ssize_t chunk, n, start, stop
    cdef real* cols
    cdef int failed = 0
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=_threads):
        cols = <real*>malloc(largest * pixels * patch * sizeof(real))
        for chunk in prange(chunks, schedule="dynamic"):
            start = chunk * images // chunks
            stop = (chunk + 1) * images // chunks
            if cols == NULL:
                failed += 1
            else:
                _gemm(_NO_TRANS, _TRANS, (stop - start) * pixels, patch, f, &dy2[start * pixels, 0],
                      f, &w2[0, 0], f, 0, cols, patch)
                _zero(&dx[start, 0, 0, 0], (stop - start) * height * width * channels)
                for n in range(start, stop):
                    _unpatch(cols + (n - start) * pixels * patch, &dx[n, 0, 0, 0], height, width,
                             channels, kh, kw, sh, sw, top, left, oh, ow)
        free(cols)
    _blas_threads_back()
    return failed


cdef int _gemm_grad_weight(const real[:, :, :, ::1] x, const real[:, ::1] dy2,
                           real[:, ::1] partial, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                           Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh,
                           Py_ssize_t ow, Py_ssize_t chunks) noexcept:
    """partial (threads * patch, F) += patches of x .T @ dy2 (N*OH*OW, F), chunk by chunk,
    each thread into its own block of rows. Returns how many chunks found no memory."""
    cdef Py_ssize_t images = x.shape[0], height = x.shape[1], width = x.shape[2]
    cdef Py_ssize_t channels = x.shape[3], pixels = oh * ow, patch = kh * kw * channels
    cdef Py_ssize_t f = dy2.shape[1], largest = (images + chunks - 1) // chunks
    cdef Py_ssize_t chunk, n, start, stop
    cdef real* cols
    cdef int failed = 0
    # as many threads as partial has blocks, whatever set_num_threads did since it was made
    cdef int team = <int>(partial.shape[0] // patch)
    _blas_on_calling_threads()
    with nogil, parallel(num_threads=team):
        cols = <real*>malloc(largest * pixels * patch * sizeof(real))
        # static: each thread sums its chunks in the same order on every run
        for chunk in prange(chunks, schedule="static"):
            start = chunk * images // chunks
            stop = (chunk + 1) * images // chunks
            if cols == NULL:
                failed += 1
            else:
                for n in range(start, stop):
                    _patches(&x[n, 0, 0, 0], cols + (n - start) * pixels * patch, height, width,
                             channels, kh, kw, sh, sw, top, left, oh, ow)
                _gemm(_TRANS, _NO_TRANS, patch, f, (stop - start) * pixels, cols, patch,
                      &dy2[start * pixels, 0], f, 1, &partial[threadid() * patch, 0], f)
        free(cols)
    _blas_threads_back()
    return failed


def _gemm_forward_pass(x, w2, b, y, kernel_size, stride, padding, out_hw, chunks):
    """y (N*OH*OW, F) = the convolution of x with w2 (patch, F) plus b, by NumPy's OpenBLAS."""
    if x.shape[0] == 0:
        return                      # an empty batch: nothing to compute, nothing to allocate
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw, chunks)
    if x.dtype == np.float32:
        failed = _gemm_forward[float](x, w2, b, y, *geometry)
    else:
        failed = _gemm_forward[double](x, w2, b, y, *geometry)
    if failed:
        raise MemoryError("no memory for a convolution's patch matrix")


def _gemm_grad_input_pass(dy2, w2, input_shape, kernel_size, stride, padding, out_hw, chunks):
    """The input gradient (N, H, W, C) of dy2 (N*OH*OW, F) through w2 (patch, F), by NumPy's
    OpenBLAS."""
    dx = np.empty(input_shape, dtype=dy2.dtype)     # each thread zeroes its own images
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw, chunks)
    if dx.dtype == np.float32:
        failed = _gemm_grad_input[float](dy2, w2, dx, *geometry)
    else:
        failed = _gemm_grad_input[double](dy2, w2, dx, *geometry)
    if failed:
        raise MemoryError("no memory for a convolution's patch matrix")
    return dx


def _gemm_grad_weight_pass(x, dy2, kernel_size, stride, padding, out_hw, chunks):
    """The filter gradient as (patch, F), by NumPy's OpenBLAS: one partial sum per thread,
    added up at the end."""
    patch, f = kernel_size[0] * kernel_size[1] * x.shape[3], dy2.shape[1]
    partial = np.zeros((_threads * patch, f), dtype=x.dtype)
    if x.shape[0]:                  # an empty batch: nothing to compute, nothing to allocate
        geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw, chunks)
        if x.dtype == np.float32:
            failed = _gemm_grad_weight[float](x, dy2, partial, *geometry)
        else:
            failed = _gemm_grad_weight[double](x, dy2, partial, *geometry)
        if failed:
            raise MemoryError("no memory for a convolution's patch matrix")
    return partial.reshape(-1, patch, f).sum(axis=0)


# The same three passes through numpy.matmul, for NumPy builds without an OpenBLAS of their
# own: a chunk of images at a time, the patch matrices built and added back by the loops
# here, on all threads.

cdef void _patch_images(const real[:, :, :, ::1] x, real[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left,
                        Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """cols (N*OH*OW, patch) = the patch matrix of every image of x, images shared among
    the threads."""
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(x.shape[0], schedule="dynamic", nogil=True, num_threads=_threads):
        _patches(&x[n, 0, 0, 0], &cols[n * pixels, 0], x.shape[1], x.shape[2], x.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


cdef void _unpatch_images(const real[:, ::1] cols, real[:, :, :, ::1] dx, Py_ssize_t kh,
                          Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                          Py_ssize_t left, Py_ssize_t oh, Py_ssize_t ow) noexcept:
    """dx += every image's patches in cols added back where they came from, images shared
    among the threads."""
    cdef Py_ssize_t n
    cdef Py_ssize_t pixels = oh * ow
    for n in prange(dx.shape[0], schedule="dynamic", nogil=True, num_threads=_threads):
        _unpatch(&cols[n * pixels, 0], &dx[n, 0, 0, 0], dx.shape[1], dx.shape[2], dx.shape[3],
                 kh, kw, sh, sw, top, left, oh, ow)


cdef void _add_to_rows(real[:, ::1] a, const real[::1] row_values) noexcept:
    """a[row] += row_values for every row (NumPy's broadcast add is slow for short rows)."""
    cdef Py_ssize_t row
    with nogil:
        for row in range(a.shape[0]):
            _add(&a[row, 0], &row_values[0], a.shape[1])


def _add_bias(rows, b):
    """rows (M, F) += b (F,) in every row."""
    if rows.size and rows.dtype == np.float32:
        _add_to_rows[float](rows, b)
    elif rows.size:
        _add_to_rows[double](rows, b)


def _matmul_chunks(n, chunks):
    """(start, stop) of each chunk of n images: ceil(n / chunks) images each, the last fewer
    (none for an empty batch)."""
    per_chunk = max(1, -(-n // chunks))
    return [(start, min(n, start + per_chunk)) for start in range(0, n, per_chunk)]


def _matmul_forward_pass(x, w2, b, y, kernel_size, stride, padding, out_hw, chunks):
    """y (N*OH*OW, F) = the convolution of x with w2 (patch, F) plus b, by numpy.matmul."""
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw)
    pixels, patch = out_hw[0] * out_hw[1], kernel_size[0] * kernel_size[1] * x.shape[3]
    for start, stop in _matmul_chunks(x.shape[0], chunks):
        cols = _scratch("cols", (stop - start) * pixels, patch, x.dtype)
        rows = y[start * pixels:stop * pixels]
        if x.dtype == np.float32:
            _patch_images[float](x[start:stop], cols, *geometry)
        else:
            _patch_images[double](x[start:stop], cols, *geometry)
        np.matmul(cols, w2, out=rows)
        _add_bias(rows, b)


def _matmul_grad_input_pass(dy2, w2, input_shape, kernel_size, stride, padding, out_hw, chunks):
    """The input gradient (N, H, W, C) of dy2 (N*OH*OW, F) through w2 (patch, F), by
    numpy.matmul."""
    dx = np.zeros(input_shape, dtype=dy2.dtype)
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw)
    pixels, patch = out_hw[0] * out_hw[1], kernel_size[0] * kernel_size[1] * input_shape[3]
    for start, stop in _matmul_chunks(input_shape[0], chunks):
        cols = _scratch("cols", (stop - start) * pixels, patch, dx.dtype)
        np.matmul(dy2[start * pixels:stop * pixels], w2.T, out=cols)
        if dx.dtype == np.float32:
            _unpatch_images[float](cols, dx[start:stop], *geometry)
        else:
            _unpatch_images[double](cols, dx[start:stop], *geometry)
    return dx


def _matmul_grad_weight_pass(x, dy2, kernel_size, stride, padding, out_hw, chunks):
    """The filter gradient as (patch, F), by numpy.matmul."""
    geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw)
    pixels, patch = out_hw[0] * out_hw[1], kernel_size[0] * kernel_size[1] * x.shape[3]
    dw = np.zeros((patch, dy2.shape[1]), dtype=x.dtype)
    for start, stop in _matmul_chunks(x.shape[0], chunks):
        cols = _scratch("cols", (stop - start) * pixels, patch, x.dtype)
        if x.dtype == np.float32:
            _patch_images[float](x[start:stop], cols, *geometry)
        else:
            _patch_images[double](x[start:stop], cols, *geometry)
        dw += cols.T @ dy2[start * pixels:stop * pixels]
    return dw


# The path the convolutions take: "auto" chooses by shape, the others force one.
_conv_path = "auto"


def set_conv_path(path):
    """Compute convolutions by one path from now on, in every thread: "auto" (the default)
    chooses by shape; "direct" takes the direct loops for all three passes; "winograd"
    takes Winograd's F(4x4, 3x3) or F(2x2, 3x3) for every 3x3 stride-1 pass (the input
    gradient's phases of a strided one included) and the direct loops for the rest; "gemm" multiplies patch matrices by NumPy's OpenBLAS from the
    kernel threads (a ValueError where NumPy ships none); "matmul" multiplies them by
    numpy.matmul. CNNC_CONV_PATH sets the first one."""
    global _conv_path
    path = _checks.conv_path(path)
    if path == "gemm" and _blas is None:
        raise ValueError("the convolution path 'gemm' calls the OpenBLAS of NumPy's wheel, and "
                         "this NumPy has none: choose 'auto', 'direct', 'winograd' or 'matmul'")
    _conv_path = path


def get_conv_path():
    """The convolution path set last: "auto", "direct", "winograd", "gemm" or "matmul"."""
    return _conv_path


def _product_path(path):
    """How a convolution multiplies its patch matrices on path: "gemm" or "matmul"."""
    if path == "gemm" or path == "matmul":
        return path
    return "gemm" if _blas is not None else "matmul"


def _pass_path(path, direct):
    """How a pass goes on path: the direct loops (Winograd's among them) where path says
    so, or (auto) where direct (_direct_serves) says they win; else _product_path."""
    if path == "direct" or path == "winograd" or (path == "auto" and direct):
        return "direct"
    return _product_path(path)


def _winograd_chosen(kernel_size, stride, c, f, ow):
    """Whether a pass the direct loops compute for a convolution with c channels in and f
    out, outputs ow wide, goes by Winograd's transforms instead: a 3x3 stride-1 one,
    always on the path "winograd", where it measured faster on "auto", never on "direct"."""
    if not _winograd_applies(kernel_size, stride):
        return False
    return _conv_path == "winograd" or (_conv_path == "auto" and _winograd_serves(c, f, ow))


def _winograd_takes(w, stride, ow):
    """_winograd_chosen for a pass with filters w (kh, kw, C, F), where they are finite
    (the transforms would spread an infinity to every output)."""
    kh, kw, c, f = w.shape
    return _winograd_chosen((kh, kw), stride, c, f, ow) and bool(np.isfinite(w).all())


# The entry points, on the path _conv_path gives; the bias gradient sums rows.

# The bias gradient sums dy's rows in shares of at least this many rows, at most 16 shares:
# fixed by the shape, so that any thread count adds the same numbers in the same order.
cdef Py_ssize_t _SHARE_ROWS = 1024


cdef void _sum_rows(const real[:, ::1] a, real[:, ::1] partial) noexcept:
    """partial[t] += the sum of the t-th of len(partial) even shares of a's rows."""
    cdef Py_ssize_t share, row
    cdef Py_ssize_t shares = partial.shape[0], rows = a.shape[0]
    for share in prange(shares, schedule="dynamic", nogil=True, num_threads=_team(shares)):
        for row in range(share * rows // shares, (share + 1) * rows // shares):
            _add(&partial[share, 0], &a[row, 0], a.shape[1])


def _pointwise(kernel_size, stride, padding):
    """Whether each output pixel is its input pixel times the filters (1x1, stride 1, no
    padding): the image is its own patch matrix, and the passes are plain products."""
    return tuple(kernel_size) == (1, 1) and tuple(stride) == (1, 1) and not any(padding)


def _product(a, b, path):
    """a @ b by the kernel threads' BLAS (gemm) or numpy.matmul."""
    return matmul(a, b) if path == "gemm" else np.matmul(a, b)


cdef void _activate(real[::1] y, real slope) noexcept:
    """y = z for z > 0 (or NaN), slope * z elsewhere (exactly 0 for slope 0), in place, in
    blocks on the threads."""
    cdef Py_ssize_t block, blocks = (y.shape[0] + _BLOCK - 1) // _BLOCK
    for block in prange(blocks, schedule="static", nogil=True,
                        num_threads=_team_for(blocks, y.shape[0], _VALUES_PER_THREAD)):
        _activate_row(&y[block * _BLOCK], _BLOCK if y.shape[0] - block * _BLOCK > _BLOCK
                      else y.shape[0] - block * _BLOCK, slope)


def _activated(y, slope):
    """y, activated in place (slope, as conv2d_forward's)."""
    if slope != 1 and y.size and y.dtype == np.float32:
        _activate[float](y.reshape(-1), slope)
    elif slope != 1 and y.size:
        _activate[double](y.reshape(-1), slope)
    return y


def conv2d_forward(x, w, b, stride, padding, slope=1.0):
    """Cross-correlation of x (N, H, W, C) with w (kh, kw, C, F), plus bias b (F,), then
    z for z > 0 and slope * z elsewhere: slope 1 (the default) is no activation, 0 is
    ReLU's max(z, 0) (exactly 0 for any z <= 0). NaN stays NaN."""
    x, w, b, stride, padding, slope, (oh, ow) = _checks.conv2d_forward(x, w, b, stride, padding,
                                                                      slope)
    n, (kh, kw, c, f) = x.shape[0], w.shape
    pixels, patch = oh * ow, kh * kw * c
    w2 = w.reshape(patch, f)
    path = _pass_path(_conv_path, _direct_serves("forward", (kh, kw), stride, padding, c, f,
                                                 x.dtype))
    if path == "direct" and _pointwise((kh, kw), stride, padding):
        return _direct_dense_pass(x.reshape(n * pixels, c), w2, b, slope).reshape(n, oh, ow, f)
    if path == "direct":
        y = np.empty((n, oh, ow, f), dtype=x.dtype)
        _direct_forward_pass(x, w, b, y, stride, padding, slope)
        return y
    elif _pointwise((kh, kw), stride, padding):
        y = _product(x.reshape(n * pixels, c), w2, path)
        _add_bias(y, b)
    else:
        y = np.empty((n * pixels, f), dtype=x.dtype)
        chunks = _chunk_count(n, pixels * patch * x.itemsize, path == "gemm")
        if path == "gemm":
            _gemm_forward_pass(x, w2, b, y, (kh, kw), stride, padding, (oh, ow), chunks)
        else:
            _matmul_forward_pass(x, w2, b, y, (kh, kw), stride, padding, (oh, ow), chunks)
    return _activated(y, slope).reshape(n, oh, ow, f)


def conv2d_grad_input(dy, w, input_shape, stride, padding):
    """Gradient of the loss w.r.t. the convolution input, given dy (N, OH, OW, F)."""
    dy, w, input_shape, stride, padding, (oh, ow) = _checks.conv2d_grad_input(
        dy, w, input_shape, stride, padding)
    n, (kh, kw, c, f) = input_shape[0], w.shape
    pixels, patch = oh * ow, kh * kw * c
    w2 = w.reshape(patch, f)
    dy2 = dy.reshape(n * pixels, f)
    if _pass_path(_conv_path, _direct_serves("grad_input", (kh, kw), stride, padding, c, f,
                                             dy.dtype)) == "direct":
        return _direct_grad_input_pass(dy, w, input_shape, stride, padding)
    path = _product_path(_conv_path)
    if _pointwise((kh, kw), stride, padding):
        return _product(dy2, w2.T, path).reshape(input_shape)
    chunks = _chunk_count(n, pixels * patch * dy.itemsize, path == "gemm")
    if path == "gemm":
        return _gemm_grad_input_pass(dy2, w2, input_shape, (kh, kw), stride, padding, (oh, ow),
                                     chunks)
    return _matmul_grad_input_pass(dy2, w2, input_shape, (kh, kw), stride, padding, (oh, ow),
                                   chunks)


def conv2d_grad_params(x, dy, kernel_size, stride, padding):
    """Gradients of the loss w.r.t. the filter (kh, kw, C, F) and the bias (F,)."""
    x, dy, kernel_size, stride, padding, out_hw = _checks.conv2d_grad_params(
        x, dy, kernel_size, stride, padding)
    n, (kh, kw), c, f = x.shape[0], kernel_size, x.shape[3], dy.shape[3]
    pixels, patch = out_hw[0] * out_hw[1], kh * kw * c
    dy2 = dy.reshape(n * pixels, f)
    path = _pass_path(_conv_path, _direct_serves("grad_weight", kernel_size, stride, padding, c,
                                                 f, x.dtype))
    if path == "direct":
        dw, db = _direct_weight_pass(x, dy2, kernel_size, stride, padding, out_hw)
        return dw.reshape(kh, kw, c, f), db
    elif _pointwise(kernel_size, stride, padding):
        dw = _product(x.reshape(n * pixels, c).T, dy2, path)
    elif path == "gemm":
        dw = _gemm_grad_weight_pass(x, dy2, kernel_size, stride, padding, out_hw,
                                    _chunk_count(n, pixels * patch * x.itemsize, True))
    else:
        dw = _matmul_grad_weight_pass(x, dy2, kernel_size, stride, padding, out_hw,
                                      _chunk_count(n, pixels * patch * x.itemsize, False))
    partial_db = np.zeros((max(1, min(16, n * pixels // _SHARE_ROWS)), f), dtype=x.dtype)
    if f and x.dtype == np.float32:
        _sum_rows[float](dy2, partial_db)
    elif f:
        _sum_rows[double](dy2, partial_db)
    return dw.reshape(kh, kw, c, f), partial_db.sum(axis=0)
