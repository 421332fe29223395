# Batch normalization of x (M, C): a batch's pixels in rows, their channels in columns.
# Sums over the rows per channel, then an affine map per channel of every row. In NHWC a
# row is C values side by side, so the innermost loops run along rows, vectorized, adding
# into C-wide float64 sums.
#
# The sums go chunk by chunk of rows, about _BLOCK values each: how many chunks depends on
# the shape alone, each chunk has its own row of partial sums (_rows_apart), and these are
# added in chunk order, so every run gives the same bits whatever the number of threads.

cdef inline Py_ssize_t _rows_per_chunk(Py_ssize_t channels) noexcept nogil:
    """About _BLOCK values, and at least 16 rows: the partial sums of many channels then
    take a few times less memory than x itself."""
    return _BLOCK // channels if channels * 16 <= _BLOCK else 16


cdef inline Py_ssize_t _chunk_end(Py_ssize_t chunk, Py_ssize_t per, Py_ssize_t rows) noexcept nogil:
    return (chunk + 1) * per if (chunk + 1) * per < rows else rows


cdef inline void _add_squared_deviations(double* total, const real* src, const double* mean,
                                         Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    cdef double deviation
    for k in range(count):
        deviation = src[k] - mean[k]
        total[k] += deviation * deviation


cdef inline void _divide_into(double* dst, const double* src, double divisor,
                              Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dst[k] = src[k] / divisor


cdef void _chunk_moments(const real[:, ::1] x, double[:, ::1] sums, double[:, ::1] means,
                         double[:, ::1] squares) noexcept:
    """Per chunk of rows, into its row of sums, means and squares (zeros at first): the sum
    of each column, its mean, then the squared deviations from that mean, the chunk read
    again while it is in cache."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], chunks = sums.shape[0]
    cdef Py_ssize_t per = _rows_per_chunk(channels)
    cdef Py_ssize_t chunk, row, start, stop
    for chunk in prange(chunks, schedule="dynamic", nogil=True, num_threads=_team(chunks)):
        start = chunk * per
        stop = _chunk_end(chunk, per, rows)
        for row in range(start, stop):
            _accumulate(&sums[chunk, 0], &x[row, 0], channels)
        _divide_into(&means[chunk, 0], &sums[chunk, 0], <double>(stop - start), channels)
        for row in range(start, stop):
            _add_squared_deviations(&squares[chunk, 0], &x[row, 0], &means[chunk, 0], channels)


cdef void _merge_moments(const double[:, ::1] sums, const double[:, ::1] means,
                         const double[:, ::1] squares, Py_ssize_t rows, double[::1] mean,
                         double[::1] var) noexcept nogil:
    """The mean and biased variance of all rows from those of the chunks, in chunk order:
    the squared deviations of each chunk, plus its size times its mean's squared distance
    from the mean of all (Chan, Golub and LeVeque), all terms >= 0."""
    cdef Py_ssize_t chunk, c, chunks = sums.shape[0], channels = mean.shape[0]
    cdef Py_ssize_t per = _rows_per_chunk(channels)
    cdef double size, distance
    for c in range(channels):
        mean[c] = 0
        var[c] = 0
    for chunk in range(chunks):
        _accumulate(&mean[0], &sums[chunk, 0], channels)
    for c in range(channels):
        mean[c] = mean[c] / rows
    for chunk in range(chunks):
        size = _chunk_end(chunk, per, rows) - chunk * per
        for c in range(channels):
            distance = means[chunk, c] - mean[c]
            var[c] = var[c] + (squares[chunk, c] + size * (distance * distance))
    for c in range(channels):
        var[c] = var[c] / rows


def _moments(x):
    """The mean and biased variance (float64) of each column of x (M >= 1, C)."""
    rows, channels = x.shape
    chunks = (rows + _rows_per_chunk(channels) - 1) // _rows_per_chunk(channels)
    sums, means, squares = (_rows_apart(chunks, channels) for _ in range(3))
    if x.dtype == np.float32:
        _chunk_moments[float](x, sums, means, squares)
    else:
        _chunk_moments[double](x, sums, means, squares)
    mean, var = np.empty(channels), np.empty(channels)
    _merge_moments(sums, means, squares, rows, mean, var)
    return mean, var


cdef inline void _normalize_row(real* y, const real* x, const real* mean, const real* scale,
                                const real* shift, Py_ssize_t count, real slope) noexcept nogil:
    """One row normalized, then activated (slope, as conv2d_forward's) as it is stored."""
    cdef Py_ssize_t k
    for k in range(count):
        y[k] = (x[k] - mean[k]) * scale[k] + shift[k]
    if slope != 1:
        _activate_row(y, count, slope)


cdef void _normalize(const real[:, ::1] x, const real[::1] mean, const real[::1] scale,
                     const real[::1] shift, real[:, ::1] y, real slope) noexcept:
    """y = the activation (slope) of (x - mean) * scale + shift, row by row, chunks of rows
    on the threads."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t per = _rows_per_chunk(channels), chunks = (rows + per - 1) // per
    cdef Py_ssize_t chunk, row
    for chunk in prange(chunks, schedule="dynamic", nogil=True, num_threads=_team(chunks)):
        for row in range(chunk * per, _chunk_end(chunk, per, rows)):
            _normalize_row(&y[row, 0], &x[row, 0], &mean[0], &scale[0], &shift[0], channels,
                           slope)


def _normalized(x, mean, scale, shift, slope):
    """(x - mean) * scale + shift per channel, in x's dtype, the vectors rounded to it, then
    activated (slope)."""
    y = np.empty_like(x)
    mean, scale, shift = (v.astype(x.dtype) for v in (mean, scale, shift))
    if x.dtype == np.float32:
        _normalize[float](x, mean, scale, shift, y, slope)
    else:
        _normalize[double](x, mean, scale, shift, y, slope)
    return y


def batchnorm_forward(x, gamma, beta, eps, slope=1.0):
    """Batch normalization of x (M, C) over its rows: y = (x - mean) / sqrt(var + eps) * gamma
    + beta, with the batch's mean and biased variance (returned as well), both taken in
    float64 in two passes: the mean, then the squared deviations from it; then y for y > 0
    and slope * y elsewhere, as conv2d_forward's slope."""
    x, gamma, beta, eps, slope = _checks.batchnorm_forward(x, gamma, beta, eps, slope)
    mean, var = _moments(x)
    y = _normalized(x, mean, gamma / np.sqrt(var + eps), beta, slope)
    return y, mean.astype(x.dtype), var.astype(x.dtype)


cdef inline void _add_gradient_sums(double* dy_sum, double* product_sum, const real* x,
                                    const real* dy, const real* mean, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    cdef double gradient
    for k in range(count):
        gradient = dy[k]
        dy_sum[k] += gradient
        product_sum[k] += (x[k] - mean[k]) * gradient


cdef void _gradient_sums(const real[:, ::1] x, const real[:, ::1] dy, const real[::1] mean,
                         double[:, ::1] dy_sums, double[:, ::1] product_sums) noexcept:
    """Per chunk of rows, into its row of each (zeros at first): the sum of dy and of
    (x - mean) * dy per column."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1], chunks = dy_sums.shape[0]
    cdef Py_ssize_t per = _rows_per_chunk(channels)
    cdef Py_ssize_t chunk, row
    for chunk in prange(chunks, schedule="dynamic", nogil=True, num_threads=_team(chunks)):
        for row in range(chunk * per, _chunk_end(chunk, per, rows)):
            _add_gradient_sums(&dy_sums[chunk, 0], &product_sums[chunk, 0], &x[row, 0],
                               &dy[row, 0], &mean[0], channels)


cdef void _add_chunks(const double[:, ::1] partial, double[::1] total) noexcept nogil:
    """total = the rows of partial (their first len(total) values) added in order."""
    cdef Py_ssize_t chunk, c
    for c in range(total.shape[0]):
        total[c] = 0
    for chunk in range(partial.shape[0]):
        _accumulate(&total[0], &partial[chunk, 0], total.shape[0])


cdef inline void _normalize_gradient_row(real* dx, const real* x, const real* dy,
                                         const real* mean, const real* tilt, const real* offset,
                                         const real* scale, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(count):
        dx[k] = (dy[k] - ((x[k] - mean[k]) * tilt[k] + offset[k])) * scale[k]


cdef void _normalize_gradient(const real[:, ::1] x, const real[:, ::1] dy, const real[::1] mean,
                              const real[::1] tilt, const real[::1] offset, const real[::1] scale,
                              real[:, ::1] dx) noexcept:
    """dx = (dy - ((x - mean) * tilt + offset)) * scale, row by row, chunks of rows on the threads."""
    cdef Py_ssize_t rows = x.shape[0], channels = x.shape[1]
    cdef Py_ssize_t per = _rows_per_chunk(channels), chunks = (rows + per - 1) // per
    cdef Py_ssize_t chunk, row
    for chunk in prange(chunks, schedule="dynamic", nogil=True, num_threads=_team(chunks)):
        for row in range(chunk * per, _chunk_end(chunk, per, rows)):
            _normalize_gradient_row(&dx[row, 0], &x[row, 0], &dy[row, 0], &mean[0], &tilt[0],
                                    &offset[0], &scale[0], channels)


def batchnorm_backward(x, dy, gamma, mean, var, eps):
    """Gradients through batchnorm_forward: dx, dgamma = sum(dy * x_hat), dbeta = sum(dy),
    where dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat)) and
    x_hat = (x - mean) / sqrt(var + eps), the sums taken in float64."""
    x, dy, gamma, mean, var, eps = _checks.batchnorm_backward(x, dy, gamma, mean, var, eps)
    rows, channels = x.shape
    chunks = (rows + _rows_per_chunk(channels) - 1) // _rows_per_chunk(channels)
    dy_sums, product_sums = _rows_apart(chunks, channels), _rows_apart(chunks, channels)
    if x.dtype == np.float32:
        _gradient_sums[float](x, dy, mean, dy_sums, product_sums)
    else:
        _gradient_sums[double](x, dy, mean, dy_sums, product_sums)
    dbeta, dgamma = np.empty(channels), np.empty(channels)
    _add_chunks(dy_sums, dbeta)
    _add_chunks(product_sums, dgamma)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    dgamma *= inv_std
    # dy - (x - mean) * (inv_std * dgamma / M) - dbeta / M, times gamma * inv_std
    tilt, offset, scale = (v.astype(x.dtype) for v in (inv_std * dgamma / rows, dbeta / rows,
                                                       gamma * inv_std))
    dx = np.empty_like(x)
    if x.dtype == np.float32:
        _normalize_gradient[float](x, dy, mean, tilt, offset, scale, dx)
    else:
        _normalize_gradient[double](x, dy, mean, tilt, offset, scale, dx)
    return dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def batchnorm_inference(x, gamma, beta, mean, var, eps, slope=1.0):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta with the given (running) mean and var,
    then activated (slope, as batchnorm_forward's)."""
    x, gamma, beta, mean, var, eps, slope = _checks.batchnorm_inference(x, gamma, beta, mean,
                                                                        var, eps, slope)
    return _normalized(x, mean, gamma / np.sqrt(var.astype(np.float64) + eps), beta, slope)
