# Work arrays that each Python thread keeps from call to call: the patch matrices of the
# numpy.matmul convolution.

_local = threading.local()


def _scratch(role, rows, columns, dtype):
    """A (rows, columns) work array of this thread, reused from call to call."""
    buffers = _local.__dict__.setdefault("buffers", {})
    size = rows * columns
    buffer = buffers.get((role, dtype))
    if buffer is None or buffer.size < size:
        buffer = buffers[(role, dtype)] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(rows, columns)
