# Pooling over NHWC windows. Max pooling: forward (the maxima and where they were) and
# backward (each gradient back to its maximum's position). Average pooling: forward (each
# window's mean) and backward (each gradient spread over its window).

cdef extern from "_pool_rows.h" nogil:
    void cnnc_max_row_float(float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_max_row_double(double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_max_where_row_float(float*, int32_t*, const float*, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t)
    void cnnc_max_where_row_double(double*, int32_t*, const double*, Py_ssize_t, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t)


cdef inline void _max_row(real* out, const real* src, Py_ssize_t count, Py_ssize_t step,
                          Py_ssize_t channels) noexcept nogil:
    """One window position over an output row: _pool_rows.h."""
    if real is float:
        cnnc_max_row_float(out, src, count, step, channels)
    else:
        cnnc_max_row_double(out, src, count, step, channels)


cdef inline void _pool_window_row(real* out, const real* src, bint first, Py_ssize_t count,
                                  Py_ssize_t pw, Py_ssize_t step,
                                  Py_ssize_t channels) noexcept nogil:
    """One row of the windows of an output row of count pixels: the windows' pixels
    src + j * step + q * channels for q < pw taken into out in window order (_max_row),
    out starting from the first of them where this is the windows' first row."""
    cdef Py_ssize_t j, q
    for q in range(pw):
        if first and q == 0:
            for j in range(count):
                _copy(out + j * channels, src + j * step, channels)
        else:
            _max_row(out, src + q * channels, count, step, channels)


cdef inline void _max_where_row(real* out, int32_t* where, const real* src, Py_ssize_t count,
                                Py_ssize_t step, Py_ssize_t channels, Py_ssize_t position,
                                Py_ssize_t position_step) noexcept nogil:
    """One window position over an output row, with where the maxima were: _pool_rows.h."""
    if real is float:
        cnnc_max_where_row_float(out, where, src, count, step, channels, position, position_step)
    else:
        cnnc_max_where_row_double(out, where, src, count, step, channels, position, position_step)


cdef int _maxpool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y,
                          int64_t[:, :, :, ::1] argmax, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """Window maxima in row-major window order, the first maximum winning and a NaN beating
    a number, and where each was (h * W + w in its input plane): output row by output row,
    each window position a pass over the whole row (_max_where_row). The passes keep the
    positions as int32, the width of a float32, so that they vectorize, and the finished
    row widens them into argmax. Returns how many rows found no memory for that."""
    cdef Py_ssize_t oh = y.shape[1], ow = y.shape[2], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t count = x.shape[0] * oh, row, n, i, j, r, q, c, start
    cdef real* out
    cdef int32_t* where
    cdef int64_t* wide
    cdef int failed = 0
    with nogil, parallel(num_threads=_team_for(count, count * ow * channels * ph * pw,
                                               _VALUES_PER_THREAD)):
        where = <int32_t*>malloc(ow * channels * sizeof(int32_t))
        for row in prange(count, schedule="dynamic"):
            if where == NULL:
                failed += 1
                continue
            n = row // oh
            i = row - n * oh
            out = &y[n, i, 0, 0]
            start = i * sh * width
            for j in range(ow):
                _copy(out + j * channels, &x[n, i * sh, j * sw, 0], channels)
                for c in range(channels):
                    where[j * channels + c] = <int32_t>(start + j * sw)
            for r in range(ph):
                for q in range(pw):
                    if r == 0 and q == 0:
                        continue
                    _max_where_row(out, where, &x[n, i * sh + r, q, 0], ow, sw * channels,
                                   channels, start + r * width + q, sw)
            wide = &argmax[n, i, 0, 0]
            for j in range(ow * channels):
                wide[j] = where[j]
        free(where)
    return failed


cdef void _maxpool_inference(const real[:, :, :, ::1] x, real[:, :, :, ::1] y, Py_ssize_t ph,
                             Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """Window maxima, a NaN winning: output row by output row, each window position a pass
    over the whole row (_pool_window_row)."""
    cdef Py_ssize_t oh = y.shape[1], ow = y.shape[2], channels = x.shape[3]
    cdef Py_ssize_t count = x.shape[0] * oh, row, n, i, r
    for row in prange(count, schedule="dynamic", nogil=True,
                      num_threads=_team_for(count, count * ow * channels * ph * pw,
                                            _VALUES_PER_THREAD)):
        n = row // oh
        i = row - n * oh
        for r in range(ph):
            _pool_window_row(&y[n, i, 0, 0], &x[n, i * sh + r, 0, 0], r == 0, ow, pw,
                             sw * channels, channels)


def maxpool2d_inference(x, pool_size, stride):
    """Max over each window, as maxpool2d_forward's first result, without finding where it
    was: what inference needs. A NaN wins over any number."""
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.maxpool2d_forward(x, pool_size, stride)
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)
    if y.size and x.dtype == np.float32:
        _maxpool_inference[float](x, y, ph, pw, sh, sw)
    elif y.size:
        _maxpool_inference[double](x, y, ph, pw, sh, sw)
    return y


def maxpool2d_forward(x, pool_size, stride):
    """Max over each window, and where it was: argmax holds h * W + w in the input plane.

    The first maximum in row-major window order wins ties, as in PyTorch; a NaN wins over
    any number.
    """
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.maxpool2d_forward(x, pool_size, stride)
    n, c = x.shape[0], x.shape[3]
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    argmax = np.empty((n, oh, ow, c), dtype=np.int64)
    if x.dtype == np.float32:
        failed = _maxpool_forward[float](x, y, argmax, ph, pw, sh, sw)
    else:
        failed = _maxpool_forward[double](x, y, argmax, ph, pw, sh, sw)
    if failed:
        raise MemoryError("no memory for a max pool's row of positions")
    return y, argmax


cdef Py_ssize_t _maxpool_backward(const real[:, :, :, ::1] dy,
                                  const int64_t[:, :, :, ::1] argmax, real[:, ::1] dx) noexcept:
    """dx[n, argmax * C + c] += dy[n, i, j, c], dx (N, H*W*C) zeroed an image at a time just
    before its gradients land there (in cache); a position outside the plane is counted,
    not followed. Returns how many there were."""
    cdef Py_ssize_t n, i, j, c, position
    cdef Py_ssize_t channels = dy.shape[3], plane = dx.shape[1] // channels if channels else 0
    cdef Py_ssize_t outside = 0
    for n in prange(dy.shape[0], schedule="dynamic", nogil=True,
                    num_threads=_team_for(dy.shape[0], dx.shape[0] * dx.shape[1],
                                          _VALUES_PER_THREAD)):
        _zero(&dx[n, 0], dx.shape[1])
        for i in range(dy.shape[1]):
            for j in range(dy.shape[2]):
                for c in range(channels):
                    position = argmax[n, i, j, c]
                    if position < 0 or position >= plane:
                        outside += 1
                    else:
                        dx[n, position * channels + c] += dy[n, i, j, c]
    return outside


def maxpool2d_backward(dy, argmax, input_shape):
    """Scatter dy (N, OH, OW, C) back to the input positions recorded in argmax."""
    dy, argmax, input_shape = _checks.maxpool2d_backward(dy, argmax, input_shape)
    n, h, w, c = input_shape
    dx = np.empty((n, h * w * c), dtype=dy.dtype)
    if dx.size == 0 or dy.size == 0:
        dx[...] = 0
    elif dy.dtype == np.float32:
        outside = _maxpool_backward[float](dy, argmax, dx)
    else:
        outside = _maxpool_backward[double](dy, argmax, dx)
    if dx.size and dy.size and outside:
        _checks.maxpool_positions(argmax, h * w)
    return dx.reshape(input_shape)


cdef inline void _window_mean(real* out, double* total, const real* corner, Py_ssize_t ph,
                              Py_ssize_t pw, Py_ssize_t row_stride, Py_ssize_t channels,
                              double reciprocal) noexcept nogil:
    """out = the sum of the ph x pw pixels from corner on, in float64 in row-major window
    order, times reciprocal (1 / (ph * pw))."""
    cdef Py_ssize_t r, q, c
    for c in range(channels):
        total[c] = corner[c]
    for r in range(ph):
        for q in range(pw):
            if r or q:
                _accumulate(total, corner + r * row_stride + q * channels, channels)
    for c in range(channels):
        out[c] = <real>(total[c] * reciprocal)


cdef void _avgpool_forward(const real[:, :, :, ::1] x, real[:, :, :, ::1] y, double[:, ::1] totals,
                           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """y = the window means, output rows handed out to the threads as they come free, each
    thread summing into its own row of totals."""
    cdef Py_ssize_t oh = y.shape[1], ow = y.shape[2], channels = x.shape[3]
    cdef Py_ssize_t row_stride = x.shape[2] * channels, count = x.shape[0] * oh
    cdef Py_ssize_t row, n, i, j
    cdef double reciprocal = 1.0 / (ph * pw)
    cdef double* total
    for row in prange(count, schedule="dynamic", nogil=True, num_threads=<int>totals.shape[0]):
        n = row // oh
        i = row - n * oh
        total = &totals[threadid(), 0]
        for j in range(ow):
            _window_mean(&y[n, i, j, 0], total, &x[n, i * sh, j * sw, 0], ph, pw, row_stride,
                         channels, reciprocal)


def avgpool2d_forward(x, pool_size, stride):
    """Mean over each window: the sum in float64 times 1 / (ph * pw), then rounded."""
    x, (ph, pw), (sh, sw), (oh, ow) = _checks.avgpool2d_forward(x, pool_size, stride)
    n, c = x.shape[0], x.shape[3]
    y = np.empty((n, oh, ow, c), dtype=x.dtype)
    totals = _rows_apart(_team(n * oh), c)
    if x.dtype == np.float32:
        _avgpool_forward[float](x, y, totals, ph, pw, sh, sw)
    else:
        _avgpool_forward[double](x, y, totals, ph, pw, sh, sw)
    return y


cdef inline Py_ssize_t _first_window(Py_ssize_t position, Py_ssize_t window,
                                     Py_ssize_t stride) noexcept nogil:
    """The first window (moved by stride) that holds position: the first i with
    i * stride + window > position."""
    return 0 if position < window else (position - window) // stride + 1


cdef inline Py_ssize_t _windows_end(Py_ssize_t position, Py_ssize_t stride,
                                    Py_ssize_t windows) noexcept nogil:
    """One past the last window (of `windows`) that holds position: i * stride <= position."""
    return position // stride + 1 if position // stride + 1 < windows else windows


cdef inline void _scale(real* dst, const real* src, real factor, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dst[k] = src[k] * factor


cdef inline void _pixel_gradient(real* out, const real* dy, Py_ssize_t i0, Py_ssize_t i1,
                                 Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t ow, Py_ssize_t channels,
                                 real reciprocal) noexcept nogil:
    """out = the sum of dy over windows [i0, i1) x [j0, j1) of one image, times reciprocal."""
    cdef Py_ssize_t i, j
    if i0 >= i1 or j0 >= j1:
        _zero(out, channels)
        return
    if i1 - i0 == 1 and j1 - j0 == 1:       # windows that do not overlap: in one pass
        _scale(out, dy + (i0 * ow + j0) * channels, reciprocal, channels)
        return
    _copy(out, dy + (i0 * ow + j0) * channels, channels)
    for i in range(i0, i1):
        for j in range(j0, j1):
            if i != i0 or j != j0:
                _add(out, dy + (i * ow + j) * channels, channels)
    _scale(out, out, reciprocal, channels)


cdef void _avgpool_backward(const real[:, :, :, ::1] dy, real[:, :, :, ::1] dx, Py_ssize_t ph,
                            Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw) noexcept:
    """dx pixel by pixel: the sum of dy over the windows that hold it, times 1 / (ph * pw).
    One thread writes each pixel, adding in window order, so overlapping windows race for
    nothing and every run gives the same bits."""
    cdef Py_ssize_t height = dx.shape[1], width = dx.shape[2], channels = dx.shape[3]
    cdef Py_ssize_t oh = dy.shape[1], ow = dy.shape[2], count = dx.shape[0] * height
    cdef Py_ssize_t row, n, h, w, i0, i1
    cdef real reciprocal = 1.0 / (ph * pw)
    for row in prange(count, schedule="dynamic", nogil=True, num_threads=_team(count)):
        n = row // height
        h = row - n * height
        i0 = _first_window(h, ph, sh)
        i1 = _windows_end(h, sh, oh)
        for w in range(width):
            _pixel_gradient(&dx[n, h, w, 0], &dy[n, 0, 0, 0], i0, i1, _first_window(w, pw, sw),
                            _windows_end(w, sw, ow), ow, channels, reciprocal)


def avgpool2d_backward(dy, input_shape, pool_size, stride):
    """Each dy (N, OH, OW, C) spread equally over its window; overlapping windows add up."""
    dy, input_shape, (ph, pw), (sh, sw), _ = _checks.avgpool2d_backward(
        dy, input_shape, pool_size, stride)
    dx = np.empty(input_shape, dtype=dy.dtype)
    if dy.dtype == np.float32:
        _avgpool_backward[float](dy, dx, ph, pw, sh, sw)
    else:
        _avgpool_backward[double](dy, dx, ph, pw, sh, sw)
    return dx
