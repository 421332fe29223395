"""The floating-point dtype new layers are created in."""
import numpy as np

_SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64))
_default = np.dtype(np.float32)


def resolve(dtype):
    """Return dtype as an np.dtype, or the default when it is None; only float32/float64."""
    if dtype is None:
        return _default
    dt = np.dtype(dtype)
    if dt not in _SUPPORTED:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def set_default_dtype(dtype):
    """Make layers created from now on without an explicit dtype use this one."""
    global _default
    _default = resolve(dtype)


def get_default_dtype():
    """The dtype layers are created in when none is given."""
    return _default
