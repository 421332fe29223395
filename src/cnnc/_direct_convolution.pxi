# Direct convolution: every pass as register tiles over the image itself, no patch matrix.
# The forward pass (with its activation fused into the store) cuts each output row into
# nearly equal tiles of pixels and sums each tile's filters in vector registers; the input
# gradient is the forward pass of dy through the filters turned round, once per phase of
# the stride; the filter gradient sums tiles of taps over bands of output pixels
# (_direct_conv.h). A fully connected layer (dense_forward) is a 1x1 convolution here.
# _convolution.pxi comes here where _direct_serves says so, or set_conv_path("direct") does.

cdef extern from "_direct_conv.h" nogil:
    const Py_ssize_t cnnc_lanes_f, cnnc_lanes_d, cnnc_wide_most, cnnc_narrow_most
    void cnnc_pixel_tile_float(int, int, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                               Py_ssize_t, const float*, Py_ssize_t, Py_ssize_t, const float*,
                               float*, Py_ssize_t, Py_ssize_t, float)
    void cnnc_pixel_tile_double(int, int, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                Py_ssize_t, const double*, Py_ssize_t, Py_ssize_t,
                                const double*, double*, Py_ssize_t, Py_ssize_t, double)
    void cnnc_tap_tile_float(int, int, const float*, const Py_ssize_t*, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*, Py_ssize_t)
    void cnnc_tap_tile_double(int, int, const double*, const Py_ssize_t*, Py_ssize_t, Py_ssize_t,
                              Py_ssize_t, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*, Py_ssize_t)
    void cnnc_activate_row_float(float*, Py_ssize_t, float)
    void cnnc_activate_row_double(double*, Py_ssize_t, double)
    void cnnc_column_sums_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*)
    void cnnc_column_sums_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*)

# The filter gradient is summed in partial sums over chunks of images, as many as there are
# runs of _WEIGHT_CHUNK_PIXELS output pixels, up to _WEIGHT_CHUNKS: a number fixed by the
# shape, not by the threads, so that every thread count adds the same numbers in the same
# order, and few enough that adding the partial sums up stays cheap; enough, in a small
# batch, that the threads share them evenly (with 1024 pixels a chunk, a 5x5 87 -> 48
# filter gradient of 32 11x10 images made 3 chunks for 2 threads and took 4.8 ms, against
# 3.9 ms in 6 chunks; the course CNN's second one 0.75 against 0.64 ms). Within a chunk the
# tiles of taps sum over about _WEIGHT_GROUP_PIXELS pixels at a time (several small images,
# or a band of rows of a large one): enough to pay for loading and storing their sums, few
# enough that their input and dy stay in the core's cache for every tile.
cdef Py_ssize_t _WEIGHT_CHUNKS = 16
cdef Py_ssize_t _WEIGHT_CHUNK_PIXELS = 512
cdef Py_ssize_t _WEIGHT_GROUP_PIXELS = 128


def _weight_chunks(pixels):
    """The chunks of images a filter gradient over this many output pixels sums apart."""
    return max(1, min(pixels // _WEIGHT_CHUNK_PIXELS, _WEIGHT_CHUNKS))


def _direct_serves(pass_name, kernel_size, stride, padding, c, f, dtype):
    """Whether the direct loops compute this pass ("forward", "grad_input", "grad_weight")
    of a convolution with c channels in and f out, where "auto" chooses: wherever they
    measured faster than im2col and BLAS. That is every forward pass and filter gradient
    (pointwise and thin ones too: 1.2 to 3x faster on the Zen 4 machine), and the input
    gradient of a convolution that is not pointwise, where its c outputs fill at least
    three quarters of their vectors (with fewer, BLAS on patches was faster)."""
    if pass_name != "grad_input":
        return True
    return not _pointwise(kernel_size, stride, padding) and c >= 0.75 * _padded_filters(c, dtype)


def _vector_lanes(dtype):
    """Filters (of dtype) in one vector register of this build."""
    return cnnc_lanes_f if dtype == np.float32 else cnnc_lanes_d


def _padded_filters(f, dtype):
    """The filter count the direct loops compute: whole vectors, the extra ones zero."""
    lanes = _vector_lanes(dtype)
    return -(-f // lanes) * lanes


def _padded(a, width):
    """a (rows, F) with zero columns appended up to width (a itself when already that wide)."""
    if a.shape[1] == width:
        return a
    wide = np.zeros((a.shape[0], width), dtype=a.dtype)
    wide[:, :a.shape[1]] = a
    return wide


cdef inline Py_ssize_t _clip(Py_ssize_t value, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    return low if value < low else (high if value > high else value)


cdef inline int _block_vectors(Py_ssize_t left, Py_ssize_t lanes) noexcept nogil:
    """Vectors in the next block of filters, with left filters (whole vectors) to go: two
    while two or more are left, else one."""
    return 2 if left >= 2 * lanes else 1


cdef inline Py_ssize_t _most(int vectors) noexcept nogil:
    """The most pixels (or taps) a tile of that many vectors of filters holds."""
    return cnnc_wide_most if vectors == 2 else cnnc_narrow_most


cdef void _fill_slab(const real* image, real* slab, Py_ssize_t height, Py_ssize_t width,
                     Py_ssize_t channels, Py_ssize_t h0, Py_ssize_t rows, Py_ssize_t left,
                     Py_ssize_t slab_width) noexcept nogil:
    """slab (rows, slab_width, C) = image rows h0 <= h < h0 + rows from column -left on,
    zero outside the image: every tile then reads whole patches."""
    cdef Py_ssize_t r, h, inside_start = _clip(left, 0, slab_width)
    cdef Py_ssize_t inside_end = _clip(left + width, 0, slab_width)
    cdef real* row
    for r in range(rows):
        row = slab + r * slab_width * channels
        h = h0 + r
        if h < 0 or h >= height or inside_end <= inside_start:
            _zero(row, slab_width * channels)
            continue
        _zero(row, inside_start * channels)
        _copy(row + inside_start * channels, image + (h * width + inside_start - left) * channels,
              (inside_end - inside_start) * channels)
        _zero(row + inside_end * channels, (slab_width - inside_end) * channels)


cdef inline void _pixel_tile(int vectors, int pixels, const real* px, Py_ssize_t px_row,
                             Py_ssize_t px_step, Py_ssize_t rows, Py_ssize_t run, const real* w,
                             Py_ssize_t w_row, Py_ssize_t w_stride, const real* b, real* y,
                             Py_ssize_t f, Py_ssize_t stored, real slope) noexcept nogil:
    if real is float:
        cnnc_pixel_tile_float(vectors, pixels, px, px_row, px_step, rows, run, w, w_row,
                              w_stride, b, y, f, stored, slope)
    else:
        cnnc_pixel_tile_double(vectors, pixels, px, px_row, px_step, rows, run, w, w_row,
                               w_stride, b, y, f, stored, slope)


cdef inline void _tap_tile(int vectors, int taps, const real* x, const Py_ssize_t* tap,
                           Py_ssize_t x_image, Py_ssize_t x_row, Py_ssize_t x_step,
                           const real* dy, Py_ssize_t dy_image, Py_ssize_t dy_row,
                           Py_ssize_t dy_stride, Py_ssize_t tail, Py_ssize_t images,
                           Py_ssize_t rows, Py_ssize_t columns, real* dw,
                           Py_ssize_t dw_stride) noexcept nogil:
    if real is float:
        cnnc_tap_tile_float(vectors, taps, x, tap, x_image, x_row, x_step, dy, dy_image, dy_row,
                            dy_stride, tail, images, rows, columns, dw, dw_stride)
    else:
        cnnc_tap_tile_double(vectors, taps, x, tap, x_image, x_row, x_step, dy, dy_image, dy_row,
                             dy_stride, tail, images, rows, columns, dw, dw_stride)


cdef inline void _activate_row(real* y, Py_ssize_t count, real slope) noexcept nogil:
    """y = y for y > 0 (or NaN), slope * y elsewhere (exactly 0 for slope 0), in place."""
    if real is float:
        cnnc_activate_row_float(y, count, slope)
    else:
        cnnc_activate_row_double(y, count, slope)


cdef inline void _column_sums(const real* rows, Py_ssize_t count, Py_ssize_t stride,
                              Py_ssize_t width, real* sums) noexcept nogil:
    if real is float:
        cnnc_column_sums_float(rows, count, stride, width, sums)
    else:
        cnnc_column_sums_double(rows, count, stride, width, sums)


cdef void _direct_forward_row(const real* slab, const real* w, const real* b, real* y,
                              Py_ssize_t y_pixel, Py_ssize_t channels, Py_ssize_t kw,
                              Py_ssize_t sw, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t slab_width,
                              Py_ssize_t ow, Py_ssize_t f, Py_ssize_t w_stride, Py_ssize_t lanes,
                              real slope) noexcept nogil:
    """One output row y (OW pixels y_pixel apart, F) from its slab of patch rows
    r0 <= r < r1; w (patch, w_stride) and b (w_stride,) are padded to whole vectors of
    filters."""
    cdef Py_ssize_t run = kw * channels, start = 0, tiles, tile, j0, j1
    cdef int vectors
    while start < f:
        vectors = _block_vectors(w_stride - start, lanes)
        tiles = (ow + _most(vectors) - 1) // _most(vectors)
        for tile in range(tiles):
            j0 = tile * ow // tiles
            j1 = (tile + 1) * ow // tiles
            _pixel_tile(vectors, <int>(j1 - j0), slab + (r0 * slab_width + j0 * sw) * channels,
                        slab_width * channels, sw * channels, r1 - r0, run,
                        w + r0 * run * w_stride + start, run * w_stride, w_stride, b + start,
                        y + j0 * y_pixel + start, y_pixel, _clip(f - start, 0, vectors * lanes),
                        slope)
        start += vectors * lanes


cdef void _direct_weight_images(const real* padded_images, const real* dy, real* dw,
                                real* db, Py_ssize_t images, Py_ssize_t padded_height,
                                Py_ssize_t padded_width, Py_ssize_t channels, Py_ssize_t kh,
                                Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t oh,
                                Py_ssize_t ow, Py_ssize_t f, Py_ssize_t width, Py_ssize_t lanes,
                                Py_ssize_t band) noexcept nogil:
    """dw (patch, width) and db (width,) += the filter and bias gradients of a group of
    images, given the images with their padding (images, padded_height, padded_width, C)
    and their dy (images, OH, OW, F), width F rounded up to whole vectors (the sums past F
    stay zero): a band of output rows at a time, every tile of taps over it while its input
    and dy are in cache. A tile's taps run on across filter rows, so that a thin input (a
    few channels) still fills one."""
    cdef Py_ssize_t run = kw * channels, image_row = padded_width * channels
    cdef Py_ssize_t patch = kh * run, i0 = 0, g, rows, start, tiles, tile, t0, t1, t
    cdef Py_ssize_t tap[16]
    cdef int vectors
    while i0 < oh:
        rows = band if oh - i0 > band else oh - i0
        start = 0
        while start < width:
            vectors = _block_vectors(width - start, lanes)
            tiles = (patch + _most(vectors) - 1) // _most(vectors)
            for tile in range(tiles):
                t0 = tile * patch // tiles
                t1 = (tile + 1) * patch // tiles
                for t in range(t0, t1):
                    tap[t - t0] = (t // run) * image_row + t % run
                _tap_tile(vectors, <int>(t1 - t0), padded_images + i0 * sh * image_row, tap,
                          padded_height * image_row, sh * image_row, sw * channels,
                          dy + i0 * ow * f + start, oh * ow * f, ow * f, f,
                          _clip(f - start - (vectors - 1) * lanes, 1, lanes), images, rows, ow,
                          dw + t0 * width + start, width)
            start += vectors * lanes
        for g in range(images):
            _column_sums(dy + (g * oh + i0) * ow * f, rows * ow, f, f, db)
        i0 += rows


cdef int _direct_forward(const real[:, :, :, ::1] x, const real[:, ::1] w2, const real[::1] b,
                         real[:, :, :, :] y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, real slope) noexcept:
    """y (N, OH, OW, F; its rows and pixels may lie apart, its channels may not) = the
    activation (slope) of the convolution of x with w2 (patch, padded F) plus b (padded
    F), output row by output row, rows handed out to the threads as they come free.
    Returns how many rows found no memory for their slab."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t oh = y.shape[1], ow = y.shape[2], y_pixel = y.strides[2] // sizeof(real)
    cdef Py_ssize_t f = y.shape[3], w_stride = w2.shape[1], count = x.shape[0] * oh
    cdef Py_ssize_t slab_width = (ow - 1) * sw + kw
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t row, n, h0, r0, r1
    cdef int failed = 0
    cdef real* slab
    cdef int team = _team_for(count, count * ow * kh * kw * channels * w_stride,
                              _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        slab = <real*>malloc(kh * slab_width * channels * sizeof(real))
        for row in prange(count, schedule="dynamic", chunksize=4):
            if slab == NULL:
                failed += 1
            else:
                n = row // oh
                h0 = (row - n * oh) * sh - top
                r0 = _clip(-h0, 0, kh)
                r1 = _clip(height - h0, 0, kh)
                _fill_slab(&x[n, 0, 0, 0], slab + r0 * slab_width * channels, height, width,
                           channels, h0 + r0, r1 - r0, left, slab_width)
                _direct_forward_row(slab, &w2[0, 0], &b[0], &y[n, row - n * oh, 0, 0], y_pixel,
                                    channels, kw, sw, r0, r1, slab_width, ow, f, w_stride, lanes,
                                    slope)
        free(slab)
    return failed


# dense_forward takes up to this many rows of x at a time (fewer where that leaves threads
# without work): a row of output pixels of a 1x1 convolution whose image is x, tiled as
# any other. Each output is summed in the same order however the rows are grouped.
cdef Py_ssize_t _DENSE_ROWS = 96


cdef void _direct_dense(const real[:, ::1] x, const real[:, ::1] w, const real[::1] b,
                        real[:, ::1] y, real slope) noexcept:
    """y (N, F) = the activation (slope) of x @ w (in, padded F) + b (padded F): the rows of x
    are the pixels of a 1x1 convolution, a chunk of them an output row, read where they
    lie, chunks handed out to the threads as they come free."""
    cdef Py_ssize_t m = x.shape[0], k = x.shape[1], f = y.shape[1], w_stride = w.shape[1]
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t per_chunk = _clip((m + 4 * _threads - 1) // (4 * _threads), 12, _DENSE_ROWS)
    cdef Py_ssize_t count = (m + per_chunk - 1) // per_chunk, chunk, start, rows
    cdef int team = _team_for(count, m * k * w_stride, _MULTIPLY_ADDS_PER_THREAD)
    for chunk in prange(count, schedule="dynamic", nogil=True, num_threads=team):
        start = chunk * per_chunk
        rows = per_chunk if m - start > per_chunk else m - start
        _direct_forward_row(&x[start, 0], &w[0, 0], &b[0], &y[start, 0], f, k, 1, 1, 0, 1, rows,
                            rows, f, w_stride, lanes, slope)


def dense_forward(x, w, b, slope=1.0):
    """x (N, in) @ w (in, out) + b (out,), then z for z > 0 and slope * z elsewhere, as
    conv2d_forward's slope: a fully connected layer's output in one pass, on the direct
    convolution's tiles (no patch matrix, no BLAS)."""
    return _direct_dense_pass(*_checks.dense_forward(x, w, b, slope))


def _direct_dense_pass(x, w, b, slope):
    """dense_forward on checked arguments (and a pointwise convolution's forward pass, its
    pixels the rows of x)."""
    y = np.empty((x.shape[0], w.shape[1]), dtype=x.dtype)
    if y.size == 0:
        return y
    if x.shape[1] == 0:
        y[...] = b
        return _activated(y, slope)
    width = _padded_filters(y.shape[1], x.dtype)
    w, b = _padded(w, width), _padded(b[None], width)[0]
    if x.dtype == np.float32:
        _direct_dense[float](x, w, b, y, slope)
    else:
        _direct_dense[double](x, w, b, y, slope)
    return y


cdef int _direct_weight(const real[:, :, :, ::1] x, const real[:, ::1] dy2, real[:, ::1] partial,
                        real[:, ::1] partial_db, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                        Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh,
                        Py_ssize_t ow, Py_ssize_t group) noexcept:
    """partial (chunks * patch, padded F) and partial_db (chunks, padded F) = the filter and
    bias gradients of each chunk of images, taken a group of images at a time, each image
    padded. Returns how many chunks found no memory for those copies."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t images = x.shape[0], f = dy2.shape[1], padded = partial.shape[1]
    cdef Py_ssize_t pixels = oh * ow, patch = kh * kw * channels
    cdef Py_ssize_t chunks = partial.shape[0] // patch
    cdef Py_ssize_t padded_height = (oh - 1) * sh + kh, padded_width = (ow - 1) * sw + kw
    cdef Py_ssize_t image_size = padded_height * padded_width * channels
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    # a group of small images at once, or a band of rows of one large image: about
    # _WEIGHT_GROUP_PIXELS output pixels at a time
    cdef Py_ssize_t band = _clip(_WEIGHT_GROUP_PIXELS // ow, 1, oh) if group == 1 else oh
    cdef Py_ssize_t chunk, first, stop, end, n
    cdef int failed = 0
    cdef real* buffer
    cdef int team = _team_for(chunks, images * pixels * patch * padded, _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        buffer = <real*>malloc(group * image_size * sizeof(real))
        for chunk in prange(chunks, schedule="dynamic"):
            if buffer == NULL:
                failed += 1
                continue
            first = chunk * images // chunks
            stop = (chunk + 1) * images // chunks
            while first < stop:
                end = first + group if first + group < stop else stop
                for n in range(first, end):
                    _fill_slab(&x[n, 0, 0, 0], buffer + (n - first) * image_size, height, width,
                               channels, -top, padded_height, left, padded_width)
                _direct_weight_images(buffer, &dy2[first * pixels, 0], &partial[chunk * patch, 0],
                                      &partial_db[chunk, 0], end - first, padded_height,
                                      padded_width, channels, kh, kw, sh, sw, oh, ow, f, padded,
                                      lanes, band)
                first = end
        free(buffer)
    return failed


def _direct_forward_pass(x, w, b, y, stride, padding, slope):
    """y (N, OH, OW, F), which may be a strided view, = the activation (slope, as
    conv2d_forward's) of the convolution of x with w (kh, kw, C, F) plus b, by the direct
    loops, or Winograd's where _winograd_takes the pass."""
    if y.size == 0:
        return
    if _winograd_takes(w, stride, y.shape[2]):
        _winograd_pass(x, w, b, y, padding, y.shape[1:3], slope)
        return
    width = _padded_filters(y.shape[3], x.dtype)
    w2, b = _padded(w.reshape(-1, w.shape[3]), width), _padded(b[None], width)[0]
    geometry = (*w.shape[:2], *stride, padding[0], padding[2])
    if x.dtype == np.float32:
        failed = _direct_forward[float](x, w2, b, y, *geometry, slope)
    else:
        failed = _direct_forward[double](x, w2, b, y, *geometry, slope)
    if failed:
        raise MemoryError("no memory for a convolution's rows of input")


def _phases(size, kernel, stride, before):
    """For each phase a < stride of one axis of the input gradient: (the first input index
    it holds, how many taps of the kernel reach it, and the padding of dy for its stride-1
    convolution), or None where no tap reaches it."""
    phases = []
    for a in range(stride):
        first = (a - before) % stride
        taps = -(-(kernel - a) // stride) if a < kernel else 0
        if taps == 0 or first >= size:
            phases.append(None)
            continue
        phases.append((first, taps, taps - 1 - (first + before - a) // stride))
    return phases


def _direct_grad_input_pass(dy, w, input_shape, stride, padding):
    """The input gradient (N, H, W, C) of dy (N, OH, OW, F) through w: for each phase of the
    stride (the input pixels one residue of rows and of columns apart), the forward pass of
    dy through the taps that reach it, turned round (rows and columns reversed, F and C
    swapped), written straight into those pixels (by Winograd where a phase is a 3x3
    convolution it takes: _direct_forward_pass). A stride-1 convolution has one phase."""
    kh, kw, c = w.shape[:3]
    (sh, sw), (top, left) = stride, (padding[0], padding[2])
    rows = _phases(input_shape[1], kh, sh, top)
    columns = _phases(input_shape[2], kw, sw, left)
    whole = all(rows) and all(columns)      # every input pixel in some phase that has taps
    dx = (np.empty if whole else np.zeros)(input_shape, dtype=dy.dtype)
    zero_bias = np.zeros(c, dy.dtype)
    for a, row in enumerate(rows):
        for b, column in enumerate(columns):
            if row is None or column is None:
                continue
            (first_row, ku, pad_top), (first_column, kv, pad_left) = row, column
            taps = w[a::sh, b::sw][:ku, :kv]
            turned = np.ascontiguousarray(taps[::-1, ::-1].transpose(0, 1, 3, 2))
            _direct_forward_pass(dy, turned, zero_bias, dx[:, first_row::sh, first_column::sw],
                                 (1, 1), (pad_top, 0, pad_left, 0), 1.0)
    return dx


def _direct_weight_pass(x, dy2, kernel_size, stride, padding, out_hw):
    """The filter gradient as (patch, F) and the bias gradient (F,), by the direct loops: a
    partial sum per chunk of images (chunks fixed by the batch size), added up in chunk
    order; or by Winograd's transforms where _winograd_chosen says so and every value is
    finite."""
    patch, f = kernel_size[0] * kernel_size[1] * x.shape[3], dy2.shape[1]
    if dy2.size and x.shape[3] and _winograd_chosen(kernel_size, stride, x.shape[3], f, out_hw[1]):
        grads = _winograd_weight_pass(x, dy2.reshape(x.shape[0], *out_hw, f), padding)
        if grads is not None:
            return grads
    width = _padded_filters(f, x.dtype)
    pixels = out_hw[0] * out_hw[1]
    chunks = _weight_chunks(x.shape[0] * pixels)
    partial = np.zeros((chunks * patch, width), dtype=x.dtype)
    partial_db = np.zeros((chunks, width), dtype=x.dtype)
    if x.shape[0] and f and pixels:
        group = -(-_WEIGHT_GROUP_PIXELS // pixels)
        geometry = (*kernel_size, *stride, padding[0], padding[2], *out_hw, group)
        if x.dtype == np.float32:
            failed = _direct_weight[float](x, dy2, partial, partial_db, *geometry)
        else:
            failed = _direct_weight[double](x, dy2, partial, partial_db, *geometry)
        if failed:
            raise MemoryError("no memory for a convolution's padded image")
    return (partial.reshape(chunks, patch, width).sum(axis=0)[:, :f],
            partial_db.sum(axis=0)[:f])
