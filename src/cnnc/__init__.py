"""cnnc: a readable convolutional-network library on NumPy, with compiled kernels."""
from __future__ import annotations

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


def backend() -> str:
    """Which kernels run: "compiled" (the Cython extension) or "numpy" (its pure-NumPy twin,
    when the extension is not built). The environment variable CNNC_BACKEND=numpy|compiled
    forces the choice at import."""
    return kernels.BACKEND


def set_num_threads(n: int) -> None:
    """Run cnnc's compiled loops on n threads (an int >= 1) from now on, as
    torch.set_num_threads does; CNNC_NUM_THREADS sets the count at start-up (every core
    the process may use by default). The NumPy backend only records n: its kernels run on
    NumPy's own threads. A bad n is a ValueError. A process made by fork() computes on one
    thread, since OpenMP cannot start threads in it: asking for more there is a
    RuntimeError (workers started by multiprocessing's 'spawn' or 'forkserver' have threads)."""
    kernels.set_num_threads(n)


def get_num_threads() -> int:
    """How many threads cnnc's compiled loops run on."""
    return kernels.get_num_threads()


__all__ = [
    "AbstractActivation", "AdamOptimizer", "AdamWOptimizer", "AvgPool", "BatchNorm", "Conv",
    "Dropout", "Flatten", "FullyConnected", "GlobalAvgPool", "MaxPool", "MeanSquaredError",
    "Network", "POOL", "SGDOptimizer", "SGDoptimizer", "SoftmaxCrossEntropy", "backend",
    "datasets", "export", "get_default_dtype", "get_num_threads", "gradcheck", "init", "leaky_relu",
    "linear", "models", "relu", "schedules", "set_default_dtype", "set_num_threads", "sigmoid", "tanh",
]
