# Winograd convolution for 3x3 convolutions of stride 1, every pass (_winograd.h):
# F(4x4, 3x3), 4 times fewer multiplications than the direct loops, or F(2x2, 3x3), 2.25
# times fewer, where rounding the output up to 4x4 tiles would waste more (_winograd_tile).
# The output is cut into m x m tiles, a row of tiles of one image at a time; a block of rows
# of tiles, a few dozen tiles in all, is turned into the (m + 2)^2 positions of its input
# tiles, and each position's products run on the direct convolution's register tiles
# (_direct_convolution.pxi). The forward pass (and the input gradient, a forward pass of
# dy) multiplies them by the turned filters and turns the sums back into output tiles, with
# the bias, the activation and, for a 2x2 max pool, the pooling fused into that last step.
# The filter gradient turns dy's tiles into positions too, sums each position's products
# over the tiles, and turns those sums back into 3x3 filters. Blocks and chunks are fixed by
# the shape and every sum runs in order, so every thread count gives the same bits.

cdef extern from "_winograd.h" nogil:
    int cnnc_winograd_input_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*,
                                  Py_ssize_t)
    int cnnc_winograd_input_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*,
                                   Py_ssize_t)
    void cnnc_winograd_output_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                    const float*, float, float*, Py_ssize_t, Py_ssize_t,
                                    Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    void cnnc_winograd_output_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const double*, double, double*, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    int cnnc_winograd4_input_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, float*,
                                   Py_ssize_t)
    int cnnc_winograd4_input_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, double*,
                                    Py_ssize_t)
    void cnnc_winograd4_output_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const float*, float, float*, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    void cnnc_winograd4_output_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      const double*, double, double*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, Py_ssize_t, int)
    int cnnc_winograd_gradient_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     Py_ssize_t, Py_ssize_t, Py_ssize_t, float*, Py_ssize_t,
                                     Py_ssize_t, float*)
    int cnnc_winograd_gradient_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, Py_ssize_t, double*, Py_ssize_t,
                                      Py_ssize_t, double*)
    int cnnc_winograd4_gradient_float(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, Py_ssize_t, float*, Py_ssize_t,
                                      Py_ssize_t, float*)
    int cnnc_winograd4_gradient_double(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                       Py_ssize_t, Py_ssize_t, Py_ssize_t, double*, Py_ssize_t,
                                       Py_ssize_t, double*)

# A block holds whole rows of tiles, as many as keep it near this many tiles (one row at
# least), and its positions' inputs and sums within about _WINOGRAD_BLOCK_BYTES each.
cdef Py_ssize_t _WINOGRAD_BLOCK_TILES = 64
cdef Py_ssize_t _WINOGRAD_BLOCK_BYTES = 256 << 10

# The transform of the filters, G g G^T for g a 3x3 filter, by output tile side: F(2x2, 3x3)
# and F(4x4, 3x3) (_winograd.h).
# (Written over a common denominator: this module divides integers as C does.)
_WINOGRAD_G = {
    2: np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]]) / 2.0,
    4: np.array([[6, 0, 0], [-4, -4, -4], [-4, 4, -4], [1, 2, 4], [1, -2, 4], [0, 0, 24]]) / 24.0,
}


def _winograd_applies(kernel_size, stride):
    """Whether a pass is a 3x3 convolution of stride 1, which F(2x2, 3x3) computes."""
    return tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1)


def _winograd_serves(c, f, ow):
    """Whether "auto" takes Winograd for a 3x3 stride-1 pass with c channels in, f out and
    outputs ow wide: where it measured faster than the direct loops on the Zen 4 machine,
    with 16 channels or more on each side, rows of 12 or more pixels, and 32 channels or
    more on one side or rows of 24 or more. There F(4x4, 3x3) took 0.62-0.92x the direct
    loops' time (16 -> 32, 32 -> 16, 16 -> 64, 64 -> 16, 32 -> 32, 128 -> 128 on 16 to 32
    pixels; 16 -> 16, 20 -> 20 and 24 -> 24 on 32 pixels) and F(2x2, 3x3), where rows of
    4x4 tiles would waste more, 0.76-0.93x (24 -> 96 and 96 -> 24 on 14x14, 40 -> 40).
    Elsewhere the short products and the transforms cost about what they save (16 -> 16
    and 24 -> 24 on 16x16: 0.97-1.01x) or more (8x8 images with 32 channels: 1.2-2.3x)."""
    return min(c, f) >= 16 and ow >= 12 and (max(c, f) >= 32 or ow >= 24)


cdef inline Py_ssize_t _winograd_block_rows(Py_ssize_t positions, Py_ssize_t channels,
                                            Py_ssize_t padded, Py_ssize_t tile_columns,
                                            Py_ssize_t itemsize) noexcept nogil:
    """The rows of tiles a block holds: as many as keep it near _WINOGRAD_BLOCK_TILES tiles
    and its positions' inputs and sums within about _WINOGRAD_BLOCK_BYTES each, one at
    least."""
    cdef Py_ssize_t wider = channels if channels > padded else padded
    return _clip(_WINOGRAD_BLOCK_BYTES // (positions * wider * itemsize), tile_columns,
                 _WINOGRAD_BLOCK_TILES) // tile_columns


cdef inline int _winograd_input(int m, const real* slab, Py_ssize_t slab_row, Py_ssize_t tiles,
                                Py_ssize_t channels, real* v, Py_ssize_t plane) noexcept nogil:
    """The input transform of F(m x m, 3x3), m 2 or 4; whether every input was finite."""
    if real is float:
        if m == 4:
            return cnnc_winograd4_input_float(slab, slab_row, tiles, channels, v, plane)
        return cnnc_winograd_input_float(slab, slab_row, tiles, channels, v, plane)
    else:
        if m == 4:
            return cnnc_winograd4_input_double(slab, slab_row, tiles, channels, v, plane)
        return cnnc_winograd_input_double(slab, slab_row, tiles, channels, v, plane)


cdef inline void _winograd_output(int m, const real* sums, Py_ssize_t plane, Py_ssize_t width,
                                  Py_ssize_t tiles, const real* b, real slope, real* y,
                                  Py_ssize_t y_row, Py_ssize_t y_pixel, Py_ssize_t f,
                                  Py_ssize_t rows, Py_ssize_t columns, int pooled) noexcept nogil:
    """The output transform of F(m x m, 3x3), m 2 or 4."""
    if real is float:
        if m == 4:
            cnnc_winograd4_output_float(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f,
                                        rows, columns, pooled)
        else:
            cnnc_winograd_output_float(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f,
                                       rows, columns, pooled)
    else:
        if m == 4:
            cnnc_winograd4_output_double(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f,
                                         rows, columns, pooled)
        else:
            cnnc_winograd_output_double(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f,
                                        rows, columns, pooled)


cdef inline int _winograd_gradient(int m, const real* dy, Py_ssize_t dy_row, Py_ssize_t dy_pixel,
                                   Py_ssize_t rows, Py_ssize_t columns, Py_ssize_t tiles,
                                   Py_ssize_t f, real* g, Py_ssize_t plane, Py_ssize_t width,
                                   real* db) noexcept nogil:
    """The output-gradient transform of F(m x m, 3x3), m 2 or 4, with the tiles' values
    added to db; whether every value was finite."""
    if real is float:
        if m == 4:
            return cnnc_winograd4_gradient_float(dy, dy_row, dy_pixel, rows, columns, tiles, f, g,
                                                 plane, width, db)
        return cnnc_winograd_gradient_float(dy, dy_row, dy_pixel, rows, columns, tiles, f, g,
                                            plane, width, db)
    else:
        if m == 4:
            return cnnc_winograd4_gradient_double(dy, dy_row, dy_pixel, rows, columns, tiles, f,
                                                  g, plane, width, db)
        return cnnc_winograd_gradient_double(dy, dy_row, dy_pixel, rows, columns, tiles, f, g,
                                             plane, width, db)


cdef void _direct_tile_row(int m, const real* slab, Py_ssize_t slab_width, const real* w2,
                           const real* b, real* out, Py_ssize_t y_row, Py_ssize_t y_pixel,
                           int pooled, real* scratch, Py_ssize_t height, Py_ssize_t channels,
                           Py_ssize_t i, Py_ssize_t top, Py_ssize_t oh, Py_ssize_t ow,
                           Py_ssize_t f, Py_ssize_t w_stride, Py_ssize_t lanes,
                           real slope) noexcept nogil:
    """The output rows m i to m i + m - 1 (those below oh) of a row of tiles by the direct
    loops, from its slab of m + 2 input rows, into out (the output's row m i; rows y_row
    apart); or, pooled, each pair of rows computed into scratch and 2x2 max-pooled into out
    (the pooled row m i / 2), as maxpool2d_inference takes the windows."""
    cdef Py_ssize_t a, h, row
    for a in range(m):
        row = m * i + a
        if row >= oh or (pooled and row // 2 >= oh // 2):
            break
        h = row - top
        _direct_forward_row(slab + a * slab_width * channels, w2, b,
                            scratch if pooled else out + a * y_row, f if pooled else y_pixel,
                            channels, 3, 1, _clip(-h, 0, 3), _clip(height - h, 0, 3), slab_width,
                            ow, f, w_stride, lanes, slope)
        if pooled:
            _pool_window_row(out + (a // 2) * y_row, scratch, a % 2 == 0, ow // 2, 2, 2 * f, f)


cdef int _winograd_forward(const real[:, :, :, ::1] x, const real[:, :, ::1] u,
                           const real[:, ::1] w2, const real[::1] b, const real[::1] zeros,
                           real[:, :, :, :] y, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t top,
                           Py_ssize_t left, real slope, int pooled, int m) noexcept:
    """y = the activation (slope) of the 3x3 stride-1 convolution (output oh x ow) of x with
    the filters w2 (patch, padded F), whose F(m x m, 3x3) transforms u ((m + 2)^2, C,
    padded F) holds, plus b (padded F): y is that (N, OH, OW, F; its rows and pixels may
    lie apart, its channels may not) or, pooled, its 2x2 max pool (N, OH // 2, OW // 2, F).
    A block with an input that is not finite is computed by the direct loops, which keep
    an infinity or NaN to the outputs that see it. Returns how many blocks found no
    memory."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t f = y.shape[3], padded = u.shape[2], positions = u.shape[0], side = m + 2
    cdef Py_ssize_t y_row = y.strides[1] // sizeof(real), y_pixel = y.strides[2] // sizeof(real)
    cdef Py_ssize_t tile_rows = (oh + m - 1) // m, tile_columns = (ow + m - 1) // m
    cdef Py_ssize_t pooled_tiles = (ow // 2 + m // 2 - 1) // (m // 2)
    cdef Py_ssize_t units = x.shape[0] * tile_rows
    cdef Py_ssize_t per_block = _clip(_winograd_block_rows(positions, channels, padded,
                                                           tile_columns, sizeof(real)), 1, units)
    cdef Py_ssize_t blocks = (units + per_block - 1) // per_block
    cdef Py_ssize_t capacity = per_block * tile_columns
    cdef Py_ssize_t slab_width = m * tile_columns + 2, slab_size = side * slab_width * channels
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t most_rows = m // 2 if pooled else m     # output rows a tile holds
    cdef Py_ssize_t block, unit, first, stop, n, i, tiles, p, rows
    cdef int failed = 0, finite
    cdef real* slabs
    cdef real* v
    cdef real* sums
    cdef int team = _team_for(blocks, units * tile_columns * positions * channels * padded,
                              _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        slabs = <real*>malloc(per_block * slab_size * sizeof(real))
        v = <real*>malloc(positions * capacity * channels * sizeof(real))
        sums = <real*>malloc(positions * capacity * padded * sizeof(real))
        for block in prange(blocks, schedule="dynamic"):
            if slabs == NULL or v == NULL or sums == NULL:
                failed += 1
            else:
                first = block * per_block
                stop = first + per_block if first + per_block < units else units
                finite = 1
                for unit in range(first, stop):
                    n = unit // tile_rows
                    i = unit - n * tile_rows
                    _fill_slab(&x[n, 0, 0, 0], slabs + (unit - first) * slab_size, height, width,
                               channels, m * i - top, side, left, slab_width)
                    finite = finite & _winograd_input(
                        m, slabs + (unit - first) * slab_size, slab_width * channels,
                        tile_columns, channels, v + (unit - first) * tile_columns * channels,
                        capacity * channels)
                tiles = (stop - first) * tile_columns
                if finite:
                    for p in range(positions):
                        _direct_forward_row(v + p * capacity * channels, &u[p, 0, 0], &zeros[0],
                                            sums + p * capacity * padded, padded, channels, 1, 1,
                                            0, 1, tiles, tiles, padded, padded, lanes, 1)
                for unit in range(first, stop):
                    n = unit // tile_rows
                    i = unit - n * tile_rows
                    rows = (oh // 2 if pooled else oh) - i * most_rows
                    if rows <= 0:
                        continue
                    if not finite:
                        _direct_tile_row(m, slabs + (unit - first) * slab_size, slab_width,
                                         &w2[0, 0], &b[0], &y[n, i * most_rows, 0, 0], y_row,
                                         y_pixel, pooled, sums, height, channels, i, top, oh, ow,
                                         f, padded, lanes, slope)
                    else:
                        _winograd_output(m, sums + (unit - first) * tile_columns * padded,
                                         capacity * padded, padded,
                                         pooled_tiles if pooled else tile_columns, &b[0], slope,
                                         &y[n, i * most_rows, 0, 0], y_row, y_pixel, f,
                                         rows if rows < most_rows else most_rows, ow, pooled)
        free(slabs)
        free(v)
        free(sums)
    return failed


cdef tuple _winograd_weight(const real[:, :, :, ::1] x, const real[:, :, :, ::1] dy,
                            real[:, :, ::1] partial, real[:, ::1] partial_db, Py_ssize_t top,
                            Py_ssize_t left, int m):
    """partial (chunks * (m + 2)^2, C, padded F) and partial_db (chunks, padded F) += the
    gradients of the F(m x m, 3x3)-transformed filters and the bias gradient of each chunk
    of images (chunks fixed by the shape), for the 3x3 stride-1 convolution of x whose
    output gradient is dy: blocks of rows of tiles turned into their positions' B^T d B
    and A dY A^T, and each position's products summed over the block's tiles on the
    direct filter gradient's register tiles. Returns (chunks that found no memory, chunks
    with an input or dy value that is not finite)."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t images = x.shape[0], oh = dy.shape[1], ow = dy.shape[2], f = dy.shape[3]
    cdef Py_ssize_t padded = partial.shape[2], side = m + 2, positions = side * side
    cdef Py_ssize_t chunks = partial.shape[0] // positions
    cdef Py_ssize_t tile_rows = (oh + m - 1) // m, tile_columns = (ow + m - 1) // m
    cdef Py_ssize_t per_block = _winograd_block_rows(positions, channels, padded, tile_columns,
                                                     sizeof(real))
    cdef Py_ssize_t capacity = per_block * tile_columns
    cdef Py_ssize_t slab_width = m * tile_columns + 2, slab_size = side * slab_width * channels
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t chunk, first, stop, block_stop, unit, n, i, tiles, p, start, part, parts
    cdef Py_ssize_t c0, c1
    cdef Py_ssize_t offsets[16]
    cdef int failed = 0, nonfinite = 0, finite, vectors
    cdef real* slabs
    cdef real* v
    cdef real* g
    for p in range(16):
        offsets[p] = p
    cdef int team = _team_for(chunks, images * tile_rows * tile_columns * positions * channels
                              * padded, _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        slabs = <real*>malloc(per_block * slab_size * sizeof(real))
        v = <real*>malloc(positions * capacity * channels * sizeof(real))
        g = <real*>calloc(positions * capacity * padded, sizeof(real))    # past F: zero
        for chunk in prange(chunks, schedule="dynamic"):
            if slabs == NULL or v == NULL or g == NULL:
                failed += 1
                continue
            first = chunk * images // chunks * tile_rows
            stop = (chunk + 1) * images // chunks * tile_rows
            finite = 1
            while first < stop:
                block_stop = first + per_block if first + per_block < stop else stop
                for unit in range(first, block_stop):
                    n = unit // tile_rows
                    i = unit - n * tile_rows
                    _fill_slab(&x[n, 0, 0, 0], slabs + (unit - first) * slab_size, height, width,
                               channels, m * i - top, side, left, slab_width)
                    finite = finite & _winograd_input(
                        m, slabs + (unit - first) * slab_size, slab_width * channels,
                        tile_columns, channels, v + (unit - first) * tile_columns * channels,
                        capacity * channels)
                    finite = finite & _winograd_gradient(
                        m, &dy[n, m * i, 0, 0], ow * f, f, _clip(oh - m * i, 0, m), ow,
                        tile_columns, f, g + (unit - first) * tile_columns * padded,
                        capacity * padded, padded, &partial_db[chunk, 0])
                tiles = (block_stop - first) * tile_columns
                for p in range(positions):
                    start = 0
                    while start < padded:
                        vectors = _block_vectors(padded - start, lanes)
                        parts = (channels + _most(vectors) - 1) // _most(vectors)
                        for part in range(parts):
                            c0 = part * channels // parts
                            c1 = (part + 1) * channels // parts
                            _tap_tile(vectors, <int>(c1 - c0), v + p * capacity * channels + c0,
                                      offsets, 0, 0, channels, g + p * capacity * padded + start,
                                      0, 0, padded, lanes, 1, 1, tiles,
                                      &partial[chunk * positions + p, c0, start], padded)
                        start = start + vectors * lanes
                first = block_stop
            if not finite:
                nonfinite += 1
        free(slabs)
        free(v)
        free(g)
    return failed, nonfinite


def _winograd_weight_pass(x, dy, padding):
    """The filter gradient (3 * 3 * C, F) and bias gradient (F,) of the 3x3 stride-1
    convolution of x whose output gradient is dy (N, OH, OW, F), by F(m x m, 3x3)'s
    transforms (_winograd_tile): a partial sum per chunk of images as the direct loops
    take them, added up in chunk order and turned back (G^T sum G) in float64. None where
    an input or dy value is not finite: the transforms would spread it to other taps."""
    m = _winograd_tile(dy.shape[1:3])
    c, f, positions = x.shape[3], dy.shape[3], (m + 2) ** 2
    width = _padded_filters(f, x.dtype)
    chunks = _weight_chunks(x.shape[0] * dy.shape[1] * dy.shape[2])
    partial = np.zeros((chunks * positions, c, width), dtype=x.dtype)
    partial_db = np.zeros((chunks, width), dtype=x.dtype)
    if x.dtype == np.float32:
        failed, nonfinite = _winograd_weight[float](x, dy, partial, partial_db, padding[0],
                                                    padding[2], m)
    else:
        failed, nonfinite = _winograd_weight[double](x, dy, partial, partial_db, padding[0],
                                                     padding[2], m)
    if failed:
        raise MemoryError("no memory for a Winograd filter gradient's block of tiles")
    if nonfinite:
        return None
    sums = partial.reshape(chunks, m + 2, m + 2, c, width).sum(axis=0)[..., :f]
    g = _WINOGRAD_G[m]
    dw = np.einsum("ai,abcf,bj->ijcf", g, sums.astype(np.float64), g, optimize=True)
    return dw.astype(x.dtype).reshape(9 * c, f), partial_db.sum(axis=0)[:f]


def _winograd_filters(w, width, m):
    """The filters w (3, 3, C, F) turned for F(m x m, 3x3): G g G^T for each, as
    ((m + 2)^2, C, width), the filters past F zero; computed in float64 and rounded once."""
    g = _WINOGRAD_G[m]
    turned = np.einsum("ai,ijcf,bj->abcf", g, w.astype(np.float64), g)
    u = np.zeros(((m + 2) ** 2, w.shape[2], width), dtype=w.dtype)
    u[:, :, :w.shape[3]] = turned.reshape((m + 2) ** 2, w.shape[2], w.shape[3])
    return u


def _winograd_tile(out_hw):
    """The output tile side for an output of out_hw: 4 (F(4x4, 3x3), 36 multiplications for
    16 outputs) unless rounding the output up to whole 4x4 tiles computes over 15% more
    than to 2x2 tiles (a 14x14 output: 16x16 against 14x14), then 2."""
    def covered(m):
        return -(-out_hw[0] // m) * m * -(-out_hw[1] // m) * m
    return 4 if covered(4) <= 1.15 * covered(2) else 2


def _winograd_pass(x, w, b, y, padding, out_hw, slope, pooled=False):
    """y = the activation (slope) of the 3x3 stride-1 convolution of x with w (3, 3, C, F)
    plus b, by F(4x4, 3x3) or F(2x2, 3x3) (_winograd_tile); or, pooled, its 2x2 max pool
    (windows side by side)."""
    if y.size == 0:
        return
    m = _winograd_tile(out_hw)
    width = _padded_filters(w.shape[3], x.dtype)
    u, w2 = _winograd_filters(w, width, m), _padded(w.reshape(-1, w.shape[3]), width)
    b, zeros = _padded(b[None], width)[0], np.zeros(width, dtype=x.dtype)
    geometry = (*out_hw, padding[0], padding[2], slope, int(pooled), m)
    if x.dtype == np.float32:
        failed = _winograd_forward[float](x, u, w2, b, zeros, y, *geometry)
    else:
        failed = _winograd_forward[double](x, u, w2, b, zeros, y, *geometry)
    if failed:
        raise MemoryError("no memory for a Winograd convolution's block of tiles")
