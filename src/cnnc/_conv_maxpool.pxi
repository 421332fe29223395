# A convolution and the max pool after it, in one pass, for inference: each pooled output
# row is made from the convolution rows under its windows, computed one at a time into a
# row of scratch that stays in the core's cache and pooled from there. The convolution's
# whole output, the largest array of a typical network, is never written to memory nor
# read back, and no pass of its own does the pooling. Every convolution value is the
# direct loops' (the same sums in the same order) and the windows are taken in the order
# maxpool2d_inference takes them, so the result is theirs to the bit.

cdef int _direct_forward_maxpool(const real[:, :, :, ::1] x, const real[:, ::1] w2,
                                 const real[::1] b, real[:, :, :, ::1] y, Py_ssize_t kh,
                                 Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t top,
                                 Py_ssize_t left, real slope, Py_ssize_t ph, Py_ssize_t pw,
                                 Py_ssize_t psh, Py_ssize_t psw) noexcept:
    """y (N, POH, POW, F) = the ph x pw window maxima (psh, psw apart) of the activation
    (slope) of the convolution of x with w2 (patch, padded F) plus b (padded F): pooled
    row by pooled row, rows handed out to the threads as they come free. Returns how many
    rows found no memory for their scratch."""
    cdef Py_ssize_t height = x.shape[1], width = x.shape[2], channels = x.shape[3]
    cdef Py_ssize_t poh = y.shape[1], pow_ = y.shape[2], f = y.shape[3]
    cdef Py_ssize_t ow = (pow_ - 1) * psw + pw      # the convolution columns the windows cover
    cdef Py_ssize_t w_stride = w2.shape[1], count = x.shape[0] * poh
    cdef Py_ssize_t slab_width = (ow - 1) * sw + kw
    cdef Py_ssize_t lanes = cnnc_lanes_f if real is float else cnnc_lanes_d
    cdef Py_ssize_t row, n, i, r, h0, r0, r1
    cdef int failed = 0
    cdef real* slab
    cdef real* conv_row
    cdef real* out
    cdef int team = _team_for(count, count * ph * ow * kh * kw * channels * w_stride,
                              _MULTIPLY_ADDS_PER_THREAD)
    with nogil, parallel(num_threads=team):
        slab = <real*>malloc(kh * slab_width * channels * sizeof(real))
        conv_row = <real*>malloc(ow * f * sizeof(real))
        for row in prange(count, schedule="dynamic", chunksize=2):
            if slab == NULL or conv_row == NULL:
                failed += 1
            else:
                n = row // poh
                i = row - n * poh
                out = &y[n, i, 0, 0]
                for r in range(ph):
                    h0 = (i * psh + r) * sh - top
                    r0 = _clip(-h0, 0, kh)
                    r1 = _clip(height - h0, 0, kh)
                    _fill_slab(&x[n, 0, 0, 0], slab + r0 * slab_width * channels, height, width,
                               channels, h0 + r0, r1 - r0, left, slab_width)
                    _direct_forward_row(slab, &w2[0, 0], &b[0], conv_row, f, channels, kw, sw,
                                        r0, r1, slab_width, ow, f, w_stride, lanes, slope)
                    _pool_window_row(out, conv_row, r == 0, pow_, pw, psw * f, f)
        free(slab)
        free(conv_row)
    return failed


def conv2d_maxpool_inference(x, w, b, stride, padding, pool_size, pool_stride, slope=1.0):
    """maxpool2d_inference(conv2d_forward(x, w, b, stride, padding, slope), pool_size,
    pool_stride): a convolution and the max pool after it, in inference, without storing
    the convolution's output (on the direct loops, and on Winograd's where the windows are
    2x2 and side by side, within its tiles; the other paths run the two kernels)."""
    x, w, b, stride, padding, pool_size, pool_stride, slope, conv_hw, (oh, ow) = (
        _checks.conv2d_maxpool_inference(x, w, b, stride, padding, pool_size, pool_stride, slope))
    kh, kw, c, f = w.shape
    direct = _pass_path(_conv_path, _direct_serves("forward", (kh, kw), stride, padding, c, f,
                                                   x.dtype)) == "direct"
    winograd = direct and _winograd_takes(w, stride, conv_hw[1])
    windows_in_tiles = pool_size == (2, 2) and pool_stride == (2, 2)
    if not direct or (winograd and not windows_in_tiles):
        return maxpool2d_inference(conv2d_forward(x, w, b, stride, padding, slope), pool_size,
                                   pool_stride)
    y = np.empty((x.shape[0], oh, ow, f), dtype=x.dtype)
    if y.size == 0:
        return y
    if winograd:
        _winograd_pass(x, w, b, y, padding, conv_hw, slope, pooled=True)
        return y
    width = _padded_filters(f, x.dtype)
    w2, b = _padded(w.reshape(kh * kw * c, f), width), _padded(b[None], width)[0]
    geometry = (kh, kw, *stride, padding[0], padding[2], slope, *pool_size, *pool_stride)
    if x.dtype == np.float32:
        failed = _direct_forward_maxpool[float](x, w2, b, y, *geometry)
    else:
        failed = _direct_forward_maxpool[double](x, w2, b, y, *geometry)
    if failed:
        raise MemoryError("no memory for a convolution's rows of input")
    return y
