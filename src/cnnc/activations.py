"""Activation functions: `compute(z)` gives the activation, `deriv(z)` its elementwise slope.

Neither ever writes into its argument: the network keeps every z for the backward pass.
"""
import numpy as np


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
        return np.where(x > 0, upstream, 0).astype(upstream.dtype, copy=False)


class LeakyReLU(AbstractActivation):
    """z for z > 0, slope * z otherwise (slope 0.01 by default, as in PyTorch)."""

    def __init__(self, slope=0.01):
        self.slope = slope

    def compute(self, x):
        return np.where(x > 0, x, x * x.dtype.type(self.slope))

    def deriv(self, x):
        return np.where(x > 0, x.dtype.type(1), x.dtype.type(self.slope))

    def __repr__(self):
        return f"LeakyReLU(slope={self.slope})"


class Sigmoid(AbstractActivation):
    """1 / (1 + exp(-z)), evaluated so that no exponential can overflow."""

    def compute(self, x):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))

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
