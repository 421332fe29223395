"""cnnc: a readable convolutional-network library on NumPy, with compiled kernels."""
from . import datasets, export, init, kernels, models, schedules
from .activations import AbstractActivation, leaky_relu, linear, relu, sigmoid, tanh
from .dtypes import get_default_dtype, set_default_dtype
from .gradient_check import gradcheck
from .layers import (POOL, AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected,
                     GlobalAvgPool, MaxPool)
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .network import Network
from .optimizers import AdamOptimizer, AdamWOptimizer, SGDoptimizer, SGDOptimizer

__version__ = "0.1.0"


def backend():
    """Which kernels run: "compiled" (the Cython extension) or "numpy"."""
    return kernels.BACKEND


def set_num_threads(n):
    """Run cnnc's compiled loops on n threads from now on, as torch.set_num_threads does;
    CNNC_NUM_THREADS sets the count at start-up (every core the process may use by default)."""
    kernels.set_num_threads(n)


def get_num_threads():
    """How many threads cnnc's compiled loops run on."""
    return kernels.get_num_threads()


__all__ = [
    "AbstractActivation", "AdamOptimizer", "AdamWOptimizer", "AvgPool", "BatchNorm", "Conv",
    "Dropout", "Flatten", "FullyConnected", "GlobalAvgPool", "MaxPool", "MeanSquaredError",
    "Network", "POOL", "SGDOptimizer", "SGDoptimizer", "SoftmaxCrossEntropy", "backend",
    "datasets", "export", "get_default_dtype", "get_num_threads", "gradcheck", "init", "leaky_relu",
    "linear", "models", "relu", "schedules", "set_default_dtype", "set_num_threads", "sigmoid", "tanh",
]
