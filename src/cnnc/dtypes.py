"""The floating-point dtype new layers are created in."""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

_SUPPORTED = (np.dtype(np.float32), np.dtype(np.float64))
_default = np.dtype(np.float32)


def resolve(dtype: DTypeLike | None) -> np.dtype:
    """dtype as an np.dtype, or the default when it is None; anything but float32 or
    float64 is a ValueError."""
    if dtype is None:
        return _default
    dt = np.dtype(dtype)
    if dt not in _SUPPORTED:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def set_default_dtype(dtype: DTypeLike) -> None:
    """Make layers created from now on without an explicit dtype use dtype: np.float32
    (cnnc's default) or np.float64 (for exact gradient checks); anything else is a
    ValueError. Layers that exist keep theirs."""
    global _default
    _default = resolve(dtype)


def get_default_dtype() -> np.dtype:
    """The dtype layers are created in when none is given."""
    return _default
