"""Activation functions: `compute(z)` gives the activation, `deriv(z)` its elementwise slope.

Neither ever writes into its argument: the network keeps every z for the backward pass.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from . import kernels
from .saving import Savable, register

Array = NDArray[np.floating]


class AbstractActivation(Savable):
    """An elementwise function a = f(z) with its derivative f'(z).

    A subclass implements compute and deriv (and backward, where fusing the product is
    faster). For saving, `config_fields` names its constructor arguments, each kept as an
    attribute of the same name; a subclass given to cnnc.saving.register can be saved.
    """

    saved_kind = "activation"

    def compute(self, x: Array) -> Array:
        """f(x) elementwise, as a new array: x (the pre-activation z) is never written to."""
        raise NotImplementedError

    def deriv(self, x: Array) -> Array:
        """f'(x) elementwise, the slope at each pre-activation value x."""
        raise NotImplementedError

    def backward(self, x: Array, upstream: Array) -> Array:
        """The gradient w.r.t. z, given x = z and upstream, the gradient w.r.t. f(z):
        upstream * f'(x)."""
        return upstream * self.deriv(x)

    def fused_slope(self) -> float | None:
        """s where f(z) is z for z > 0 and s * z elsewhere (1: the identity, 0: ReLU's
        max(z, 0)), so that a kernel applies f as it stores its output (conv2d_forward's
        slope); None for any other f, a subclass's included, which then runs on its own.
        With s >= 0, f keeps z's sign, so backward gives the same given f(z) for z
        (Layer.train_forward keeps only f(z))."""
        return None

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


@register
class Linear(AbstractActivation):
    """The identity: f(z) = z. No arguments, no state."""

    def compute(self, x: Array) -> Array:
        return x

    def deriv(self, x: Array) -> Array:
        return np.ones_like(x)

    def backward(self, x: Array, upstream: Array) -> Array:
        return upstream

    def fused_slope(self) -> float | None:
        return 1.0 if type(self) is Linear else None


@register
class ReLU(AbstractActivation):
    """max(z, 0); the slope at 0 is taken as 0, as in PyTorch. No arguments, no state."""

    def compute(self, x: Array) -> Array:
        return np.maximum(x, 0)

    def deriv(self, x: Array) -> Array:
        return (x > 0).astype(x.dtype)

    def backward(self, x: Array, upstream: Array) -> Array:
        return kernels.leaky_relu_backward(x, upstream, 0.0)

    def fused_slope(self) -> float | None:
        return 0.0 if type(self) is ReLU else None


@register
class LeakyReLU(AbstractActivation):
    """z for z > 0, slope * z otherwise.

    slope: the slope for z <= 0, in [0, 1] (0.01 by default, as in PyTorch). No state.
    """

    config_fields = ("slope",)

    def __init__(self, slope: float = 0.01) -> None:
        if isinstance(slope, bool) or not 0 <= slope <= 1:
            raise ValueError(f"LeakyReLU slope must lie in [0, 1], got {slope}")
        self.slope = slope

    def compute(self, x: Array) -> Array:
        return kernels.leaky_relu(x, self.slope)

    def deriv(self, x: Array) -> Array:
        slope = x.dtype.type(self.slope)
        out = (x > 0).astype(x.dtype)
        out *= 1 - slope
        out += slope
        return out

    def backward(self, x: Array, upstream: Array) -> Array:
        return kernels.leaky_relu_backward(x, upstream, self.slope)

    def fused_slope(self) -> float | None:
        """The slope, but for slope 0 (ReLU's fusion gives max(z, 0) where leaky_relu keeps
        an infinite z)."""
        return float(self.slope) if type(self) is LeakyReLU and self.slope > 0 else None

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


@register
class Sigmoid(AbstractActivation):
    """1 / (1 + exp(-z)), evaluated so that no exponential can overflow. No arguments, no state."""

    def compute(self, x: Array) -> Array:
        return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))

    def deriv(self, x: Array) -> Array:
        s = self.compute(x)
        return s * (1 - s)


@register
class Tanh(AbstractActivation):
    """The hyperbolic tangent. No arguments, no state."""

    def compute(self, x: Array) -> Array:
        return np.tanh(x)

    def deriv(self, x: Array) -> Array:
        t = np.tanh(x)
        return 1 - t * t


linear = Linear()
relu = ReLU()
leaky_relu = LeakyReLU()
sigmoid = Sigmoid()
tanh = Tanh()

_BY_NAME = {"linear": Linear, "relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def get(value: AbstractActivation | type | str | None) -> AbstractActivation:
    """The activation `value` stands for, as Keras's activations.get: an AbstractActivation
    as it is, a subclass of it made with its defaults, or a name in any case ("relu",
    "leaky_relu", "sigmoid", "tanh", "linear"); None is linear."""
    if value is None:
        value = "linear"
    if isinstance(value, AbstractActivation):
        return value
    if isinstance(value, type) and issubclass(value, AbstractActivation):
        return value()
    known = ", ".join(map(repr, _BY_NAME))
    if isinstance(value, str):
        if value.lower() not in _BY_NAME:
            raise ValueError(f"unknown activation {value!r}; the known names are {known}")
        return _BY_NAME[value.lower()]()
    raise ValueError(f"activation must be an activation such as relu or LeakyReLU(0.2), a "
                     f"subclass of AbstractActivation or one of the names {known}; got {value!r}")
