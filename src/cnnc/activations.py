"""Activation functions: `compute(z)` gives the activation, `deriv(z)` its elementwise slope.

Neither ever writes into its argument: the network keeps every z for the backward pass.
"""
import numpy as np

from . import kernels


class AbstractActivation:
    """An elementwise function a = f(z) with its derivative f'(z)."""

    def compute(self, x):
        raise NotImplementedError

    def deriv(self, x):
        raise NotImplementedError

    def backward(self, x, upstream):
        """The gradient w.r.t. z, given the gradient w.r.t. f(z): upstream * f'(z)."""
        return upstream * self.deriv(x)

    def __repr__(self):
        return type(self).__name__ + "()"


class Linear(AbstractActivation):
    """The identity: f(z) = z."""

    def compute(self, x):
        return x

    def deriv(self, x):
        return np.ones_like(x)

    def backward(self, x, upstream):
        return upstream


class ReLU(AbstractActivation):
    """max(z, 0); the slope at 0 is taken as 0, as in PyTorch."""

    def compute(self, x):
        return np.maximum(x, 0)

    def deriv(self, x):
        return (x > 0).astype(x.dtype)

    def backward(self, x, upstream):
        return kernels.leaky_relu_backward(x, upstream, 0.0)


class LeakyReLU(AbstractActivation):
    """z for z > 0, slope * z otherwise (slope 0.01 by default, as in PyTorch)."""

    def __init__(self, slope=0.01):
        if not 0 <= slope <= 1:
            raise ValueError(f"LeakyReLU slope must lie in [0, 1], got {slope}")
        self.slope = slope

    def compute(self, x):
        return kernels.leaky_relu(x, self.slope)

    def deriv(self, x):
        slope = x.dtype.type(self.slope)
        out = (x > 0).astype(x.dtype)
        out *= 1 - slope
        out += slope
        return out

    def backward(self, x, upstream):
        return kernels.leaky_relu_backward(x, upstream, self.slope)

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"


class Sigmoid(AbstractActivation):
    """1 / (1 + exp(-z)), evaluated so that no exponential can overflow."""

    def compute(self, x):
        return np.exp(np.minimum(x, 0)) / (1 + np.exp(-np.abs(x)))

    def deriv(self, x):
        s = self.compute(x)
        return s * (1 - s)


class Tanh(AbstractActivation):
    """The hyperbolic tangent."""

    def compute(self, x):
        return np.tanh(x)

    def deriv(self, x):
        t = np.tanh(x)
        return 1 - t * t


linear = Linear()
relu = ReLU()
leaky_relu = LeakyReLU()
sigmoid = Sigmoid()
tanh = Tanh()

_BY_NAME = {"linear": Linear, "relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def get(value):
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
