# Winograd convolution F(2x2, 3x3) for 3x3 convolutions of stride 1, forward and input
# gradient (_winograd.h): 2.25 times fewer multiplications than the direct loops. The
# output is cut into 2x2 tiles, a row of tiles of one image at a time; a block of rows of
# tiles, a few dozen tiles in all, is turned into the 16 positions of its input tiles,
# each position's products with the turned filters run on the direct convolution's
# register tiles (_direct_convolution.pxi), and the sums are turned back into output
# tiles, with the bias, the activation and, for a 2x2 max pool, the pooling fused into
# that last step. Blocks are fixed by the shape and every sum runs over the channels in
# order, so every thread count gives the same bits.

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

# A block holds whole rows of tiles, as many as keep it near this many tiles (one row at
# least), and its positions' inputs and sums within about _WINOGRAD_BLOCK_BYTES each.
cdef Py_ssize_t _WINOGRAD_BLOCK_TILES = 64
cdef Py_ssize_t _WINOGRAD_BLOCK_BYTES = 256 << 10

# The transform of the filters, G g G^T, for g a 3x3 filter.
_WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def _winograd_applies(kernel_size, stride):
    """Whether a pass is a 3x3 convolution of stride 1, which F(2x2, 3x3) computes."""
    return tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1)


def _winograd_serves(c, f, ow):
    """Whether "auto" takes Winograd for a 3x3 stride-1 pass with c channels in, f out and
    outputs ow wide: where it measured faster than the direct loops on the Zen 4 machine,
    with 20 channels or more on either side, 1,024 or more channel pairs and 12 or more
    pixels a row (0.71-0.95x the direct loops' time: 24 -> 96, 96 -> 24, 20 -> 80,
    32 -> 32 to 128 -> 128; about even at 24 -> 48 and 87 -> 48). With fewer channels or
    narrower images its short products and its transforms cost more than they save (1.08x
    at 64 -> 16, 1.15x at 24 -> 24, 1.1-1.23x on 8-pixel images)."""
    return min(c, f) >= 20 and c * f >= 1024 and ow >= 12


cdef inline int _winograd_input(const real* slab, Py_ssize_t slab_row, Py_ssize_t tiles,
                                Py_ssize_t channels, real* v, Py_ssize_t plane) noexcept nogil:
    if real is float:
        return cnnc_winograd_input_float(slab, slab_row, tiles, channels, v, plane)
    else:
        return cnnc_winograd_input_double(slab, slab_row, tiles, channels, v, plane)


cdef inline void _winograd_output(const real* sums, Py_ssize_t plane, Py_ssize_t width,
                                  Py_ssize_t tiles, const real* b, real slope, real* y,
                                  Py_ssize_t y_row, Py_ssize_t y_pixel, Py_ssize_t f,
                                  Py_ssize_t rows, Py_ssize_t columns, int pooled) noexcept nogil:
    if real is float:
        cnnc_winograd_output_float(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f, rows,
                                   columns, pooled)
    else:
        cnnc_winograd_output_double(sums, plane, width, tiles, b, slope, y, y_row, y_pixel, f,
                                    rows, columns, pooled)


cdef void _direct_tile_row(const real* slab, Py_ssize_t slab_width, const real* w2,
                           const real* b, real* y, Py_ssize_t y_row, Py_ssize_t y_pixel,
                           real* pooled_row, Py_ssize_t height, Py_ssize_t channels,
                           Py_ssize_t i, Py_ssize_t top, Py_ssize_t oh, Py_ssize_t ow,
                           Py_ssize_t f, Py_ssize_t w_stride, Py_ssize_t lanes,
                           real slope) noexcept nogil:
    """The output rows 2i and 2i + 1 (those below oh) of a row of tiles by the direct loops,
    from its slab of 4 input rows: into y (rows y_row apart), or, where pooled_row is given,
    into scratch that is then 2x2 max-pooled into pooled_row, as maxpool2d_inference takes
    the windows."""
    cdef Py_ssize_t a, h, j
    cdef real* scratch = y
    for a in range(2):
        if 2 * i + a >= oh:
            break
        h = 2 * i + a - top
        if pooled_row == NULL:
            scratch = y + a * y_row
        _direct_forward_row(slab + a * slab_width * channels, w2, b, scratch, y_pixel, channels,
                            3, 1, _clip(-h, 0, 3), _clip(height - h, 0, 3), slab_width, ow, f,
                            w_stride, lanes, slope)
        if pooled_row == NULL:
            continue
        if a == 0:
            for j in range(ow // 2):
                _copy(pooled_row + j * f, scratch + 2 * j * f, f)
            _max_row(pooled_row, scratch + f, ow // 2, 2 * f, f)
        else:
            _max_row(pooled_row, scratch, ow // 2, 2 * f, f)
            _max_row(pooled_row, scratch + f, ow // 2, 2 * f, f)


cdef int _winograd_forward(const real[:, :, :, ::1] x, const real[:, :, ::1] u,
                           const real[:, ::1] w2, const real[::1] b, const real[::1] zeros,
                           real[:, :, :, :] y, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t top,
                           Py_ssize_t left, real slope, int pooled) noexcept:
    """y = the activation (slope) of the 3x3 stride-1 convolution (output oh x ow) of x with
    the filters w2 (patch, padded F), whose transforms u (16, C, padded F) holds, plus b
    (padded F): y is that (N, OH, OW, F; its rows and pixels may lie apart, its channels
    may not) or, pooled, its 2x2 max pool (N, OH // 2, OW // 2, F). A block with an input
    that is not finite is computed by the direct loops, which keep an infinity or NaN to
    the outputs that see it. Returns how many blocks found no memory."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t f = y.shape[3], padded = u.shape[2]
    cdef Py_ssize_t y_row = y.strides[1] // sizeof(real), y_pixel = y.strides[2] // sizeof(real)
    cdef Py_ssize_t tile_rows = (oh + 1) // 2, tile_columns = (ow + 1) // 2
    cdef Py_ssize_t units = x.shape[0] * tile_rows
    cdef Py_ssize_t wider = channels if channels > padded else padded
    cdef Py_ssize_t most = _clip(_WINOGRAD_BLOCK_BYTES // (16 * wider * <Py_ssize_t>sizeof(real)),
                                 tile_columns, _WINOGRAD_BLOCK_TILES)
    cdef Py_ssize_t per_block = _clip(most // tile_columns, 1, units)
    cdef Py_ssize_t blocks = (units + per_block - 1) // per_block, capacity = per_block * tile_columns
    cdef Py_ssize_t slab_width = 2 * tile_columns + 2, slab_size = 4 * slab_width * channels
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t block, unit, first, stop, n, i, tiles, p, rows
    cdef int failed = 0, finite
    cdef real* slabs
    cdef real* v
    cdef real* sums
    cdef int team = _team_for(blocks, units * tile_columns * 16 * channels * padded,
                              _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        slabs = <real*>malloc(per_block * slab_size * sizeof(real))
        v = <real*>malloc(16 * capacity * channels * sizeof(real))
        sums = <real*>malloc(16 * capacity * padded * sizeof(real))
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
                               channels, 2 * i - top, 4, left, slab_width)
                    finite = finite & _winograd_input(
                        slabs + (unit - first) * slab_size, slab_width * channels, tile_columns,
                        channels, v + (unit - first) * tile_columns * channels,
                        capacity * channels)
                tiles = (stop - first) * tile_columns
                if finite:
                    for p in range(16):
                        _direct_forward_row(v + p * capacity * channels, &u[p, 0, 0], &zeros[0],
                                            sums + p * capacity * padded, padded, channels, 1, 1,
                                            0, 1, tiles, tiles, padded, padded, lanes, 1)
                for unit in range(first, stop):
                    n = unit // tile_rows
                    i = unit - n * tile_rows
                    if pooled and 2 * i + 1 >= oh:
                        continue
                    if not finite:
                        _direct_tile_row(slabs + (unit - first) * slab_size, slab_width, &w2[0, 0],
                                         &b[0], &y[n, 2 * i, 0, 0] if not pooled else sums,
                                         y_row, y_pixel if not pooled else f,
                                         &y[n, i, 0, 0] if pooled else NULL, height, channels, i,
                                         top, oh, ow, f, padded, lanes, slope)
                    elif pooled:
                        _winograd_output(sums + (unit - first) * tile_columns * padded,
                                         capacity * padded, padded, ow // 2, &b[0], slope,
                                         &y[n, i, 0, 0], y_row, y_pixel, f, 2, ow, 1)
                    else:
                        rows = 2 if 2 * i + 1 < oh else 1
                        _winograd_output(sums + (unit - first) * tile_columns * padded,
                                         capacity * padded, padded, tile_columns, &b[0], slope,
                                         &y[n, 2 * i, 0, 0], y_row, y_pixel, f, rows, ow, 0)
        free(slabs)
        free(v)
        free(sums)
    return failed


def _winograd_filters(w, width):
    """The filters w (3, 3, C, F) turned for F(2x2, 3x3): G g G^T for each, as (16, C,
    width), the filters past F zero; computed in float64 and rounded once."""
    turned = np.einsum("ai,ijcf,bj->abcf", _WINOGRAD_G, w.astype(np.float64), _WINOGRAD_G)
    u = np.zeros((16, w.shape[2], width), dtype=w.dtype)
    u[:, :, :w.shape[3]] = turned.reshape(16, w.shape[2], w.shape[3])
    return u


def _winograd_pass(x, w, b, y, padding, out_hw, slope, pooled=False):
    """y = the activation (slope) of the 3x3 stride-1 convolution of x with w (3, 3, C, F)
    plus b, by F(2x2, 3x3); or, pooled, its 2x2 max pool (windows side by side)."""
    if y.size == 0:
        return
    width = _padded_filters(w.shape[3], x.dtype)
    u, w2 = _winograd_filters(w, width), _padded(w.reshape(-1, w.shape[3]), width)
    b, zeros = _padded(b[None], width)[0], np.zeros(width, dtype=x.dtype)
    geometry = (*out_hw, padding[0], padding[2], slope, int(pooled))
    if x.dtype == np.float32:
        failed = _winograd_forward[float](x, u, w2, b, zeros, y, *geometry)
    else:
        failed = _winograd_forward[double](x, u, w2, b, zeros, y, *geometry)
    if failed:
        raise MemoryError("no memory for a Winograd convolution's block of tiles")
