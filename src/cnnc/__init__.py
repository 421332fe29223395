"""cnnc: a readable convolutional-network library on NumPy, with compiled kernels."""
from . import datasets, init, kernels
from .activations import AbstractActivation, leaky_relu, linear, relu, sigmoid, tanh
from .dtypes import get_default_dtype, set_default_dtype
from .layers import POOL, Conv, Flatten, FullyConnected, MaxPool
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .network import Network
from .optimizers import AdamOptimizer, SGDoptimizer, SGDOptimizer

__version__ = "0.1.0"


def backend():
    """Which kernels run: "compiled" (the Cython extension) or "numpy"."""
    return kernels.BACKEND


__all__ = [
    "AbstractActivation", "AdamOptimizer", "Conv", "Flatten", "FullyConnected", "MaxPool",
    "MeanSquaredError", "Network", "POOL", "SGDOptimizer", "SGDoptimizer", "SoftmaxCrossEntropy",
    "backend", "datasets", "get_default_dtype", "init", "leaky_relu", "linear", "relu", "set_default_dtype",
    "sigmoid", "tanh",
]
