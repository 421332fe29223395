# Direct convolution (forward and filter gradient), for thin products: few filters, or few
# taps. There im2col copies every input value kh*kw times to feed a product too thin for
# BLAS to run fast; instead each output pixel's filters are summed in vector registers,
# a block of 8 or 16 filters for a tile of pixels at a time (_direct_conv.h).
# conv2d_forward and conv2d_grad_params (_convolution.pxi) come here where _direct_taken
# says so, or set_conv_path("direct") does; the input gradient always multiplies matrices.

cdef extern from "_direct_conv.h" nogil:
    void cnnc_pixels_8x8_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                           Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x4_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, Py_ssize_t, Py_ssize_t, const float*, float*,
                            Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_8x8_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                           const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                           Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_pixels_16x4_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, Py_ssize_t, Py_ssize_t, const double*, double*,
                            Py_ssize_t, Py_ssize_t, Py_ssize_t)
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


cdef inline void _pixel_tile(const real* px, Py_ssize_t px_row, Py_ssize_t px_step,
                             Py_ssize_t rows, Py_ssize_t run, const real* w, Py_ssize_t w_row,
                             Py_ssize_t w_stride, const real* b, real* y, Py_ssize_t f,
                             Py_ssize_t stored, Py_ssize_t pixels) noexcept nogil:
    """A tile of pixels for one block of filters: _direct_conv.h."""
    if real is float:
        if w_stride == _HALF_LANES:
            cnnc_pixels_8x8_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored,
                              pixels)
        else:
            cnnc_pixels_16x4_f(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f,
                               stored, pixels)
    else:
        if w_stride == _HALF_LANES:
            cnnc_pixels_8x8_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f, stored,
                              pixels)
        else:
            cnnc_pixels_16x4_d(px, px_row, px_step, rows, run, w, w_row, w_stride, b, y, f,
                               stored, pixels)


cdef inline Py_ssize_t _lanes_of(Py_ssize_t w_stride) noexcept nogil:
    """Filters per block for filters padded to w_stride (_padded_filters)."""
    return _HALF_LANES if w_stride == _HALF_LANES else _LANES


cdef inline Py_ssize_t _tile_of(Py_ssize_t w_stride) noexcept nogil:
    """Pixels per tile for filters padded to w_stride."""
    return _HALF_TILE if w_stride == _HALF_LANES else _TILE


cdef void _fill_slab(const real* image, real* slab, Py_ssize_t height, Py_ssize_t width,
                     Py_ssize_t channels, Py_ssize_t h0, Py_ssize_t r0, Py_ssize_t r1,
                     Py_ssize_t left, Py_ssize_t slab_width) noexcept nogil:
    """slab rows r0 <= r < r1 = image row h0 + r from column -left on, slab_width pixels
    wide, zero outside the image: every tile then reads whole patches."""
    cdef Py_ssize_t r, inside_start = _clip(left, 0, slab_width)
    cdef Py_ssize_t inside_end = _clip(left + width, 0, slab_width)
    cdef real* row
    for r in range(r0, r1):
        row = slab + r * slab_width * channels
        _zero(row, inside_start * channels)
        if inside_end > inside_start:
            _copy(row + inside_start * channels,
                  image + ((h0 + r) * width + inside_start - left) * channels,
                  (inside_end - inside_start) * channels)
        _zero(row + inside_end * channels, (slab_width - inside_end) * channels)


cdef void _direct_forward_row(const real* slab, const real* w, const real* b, real* y,
                              Py_ssize_t channels, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t r0,
                              Py_ssize_t r1, Py_ssize_t slab_width, Py_ssize_t ow, Py_ssize_t f,
                              Py_ssize_t w_stride) noexcept nogil:
    """One output row y (OW, F) from its slab of patch rows r0 <= r < r1; w (patch,
    w_stride) and b (w_stride,) are padded to whole blocks of filters."""
    cdef Py_ssize_t lanes = _lanes_of(w_stride)
    cdef Py_ssize_t tile = _tile_of(w_stride), run = kw * channels
    cdef Py_ssize_t step, j, block, start
    for step in range((ow + tile - 1) // tile):
        j = step * tile
        for block in range(w_stride // lanes):
            start = block * lanes
            _pixel_tile(slab + (r0 * slab_width + j * sw) * channels, slab_width * channels,
                        sw * channels, r1 - r0, run, w + r0 * run * w_stride + start,
                        run * w_stride, w_stride, b + start, y + j * f + start, f,
                        lanes if f - start > lanes else f - start,
                        tile if ow - j > tile else ow - j)


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
    cdef Py_ssize_t lanes = _lanes_of(f)
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


cdef int _direct_forward(const real[:, :, :, ::1] x, const real[:, ::1] w2, const real[::1] b,
                         real[:, ::1] y, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                         Py_ssize_t sw, Py_ssize_t top, Py_ssize_t left, Py_ssize_t oh,
                         Py_ssize_t ow) noexcept:
    """y (N*OH*OW, F) = the convolution of x with w2 (patch, padded F) plus b (padded F),
    output row by output row, rows handed out to the threads as they come free. Returns
    how many rows found no memory for their slab."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t f = y.shape[1], w_stride = w2.shape[1], count = x.shape[0] * oh
    cdef Py_ssize_t tile = _tile_of(w_stride)
    cdef Py_ssize_t slab_width = ((ow + tile - 1) // tile * tile - 1) * sw + kw
    cdef Py_ssize_t row, n, h0, r0, r1
    cdef int failed = 0
    cdef real* slab
    with nogil, parallel(num_threads=_team(count)):
        slab = <real*>malloc(kh * slab_width * channels * sizeof(real))
        for row in prange(count, schedule="dynamic", chunksize=4):
            if slab == NULL:
                failed += 1
            else:
                n = row // oh
                h0 = (row - n * oh) * sh - top
                r0 = _clip(-h0, 0, kh)
                r1 = _clip(height - h0, 0, kh)
                _fill_slab(&x[n, 0, 0, 0], slab, height, width, channels, h0, r0, r1, left,
                           slab_width)
                _direct_forward_row(slab, &w2[0, 0], &b[0], &y[row * ow, 0], channels, kw, sw, r0,
                                    r1, slab_width, ow, f, w_stride)
        free(slab)
    return failed


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
        # static: each thread sums its images in the same order on every run
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
        failed = _direct_forward[float](x, w2, b, y, *geometry)
    else:
        failed = _direct_forward[double](x, w2, b, y, *geometry)
    if failed:
        raise MemoryError("no memory for a convolution's rows of input")


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
