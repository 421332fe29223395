"""Weight initializers: each takes a shape and returns a float64 array of that shape.

Fan-in and fan-out come from the shape itself: (n_in, n_out) for a fully connected
weight, (kh, kw, c_in, c_out) for a filter, where fan_in = kh*kw*c_in and
fan_out = kh*kw*c_out (as PyTorch counts them). Random draws use NumPy's global
generator, so `np.random.seed` makes them repeatable.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import NDArray


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape; ValueError for an empty shape."""
    shape = tuple(shape)
    if len(shape) == 0:
        raise ValueError("a weight shape needs at least one dimension")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2]))
    return receptive * shape[-2], receptive * shape[-1]


def lecun_normal(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape` from N(0, 1/fan_in): keeps the variance of linear and
    tanh/sigmoid layers."""
    fan_in, _ = fans(shape)
    return np.random.normal(size=shape) * np.sqrt(1.0 / fan_in)


def xavier_normal(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape` from N(0, 2/(fan_in + fan_out)), Glorot and Bengio (2010)."""
    fan_in, fan_out = fans(shape)
    return np.random.normal(size=shape) * np.sqrt(2.0 / (fan_in + fan_out))


def xavier_uniform(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape` from U(-a, a) with a = sqrt(6/(fan_in + fan_out)), Glorot and
    Bengio (2010)."""
    fan_in, fan_out = fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return np.random.uniform(-limit, limit, size=shape)


def he_normal(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape` from N(0, 2/fan_in), He et al. (2015): keeps the variance of ReLU layers."""
    fan_in, _ = fans(shape)
    return np.random.normal(size=shape) * np.sqrt(2.0 / fan_in)


def he_uniform(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape` from U(-a, a) with a = sqrt(6/fan_in), He et al. (2015)."""
    fan_in, _ = fans(shape)
    limit = np.sqrt(6.0 / fan_in)
    return np.random.uniform(-limit, limit, size=shape)


def zeros(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape`, all zeros: the bias default."""
    return np.zeros(shape)


def ones(shape: Sequence[int]) -> NDArray[np.float64]:
    """An array of `shape`, all ones: BatchNorm's scale starts there (the identity)."""
    return np.ones(shape)
