"""Networks saved in cnnc network format version 1, kept as files so that every later cnnc
is checked to load them: every layer kind, every optimizer with state after a few steps,
BatchNorm running statistics, float32 and float64, a Flatten() whose shape was never fixed.

`python -m tests.data.format1_networks` wrote the format1_*.npz files beside this one with
the cnnc that wrote version 1; run by a later cnnc it would write that cnnc's format, so it
is kept as the record of how the files were made, not to be run again.
"""
import os

import numpy as np

from cnnc import (AdamOptimizer, AdamWOptimizer, AvgPool, BatchNorm, Conv, Dropout, Flatten,
                  FullyConnected, GlobalAvgPool, MaxPool, MeanSquaredError, Network, SGDOptimizer,
                  SoftmaxCrossEntropy, leaky_relu, relu, sigmoid, tanh)
from cnnc.activations import LeakyReLU


def every_layer():
    """float32; every layer kind but GlobalAvgPool, every optimizer, Flatten() fixed by training."""
    return Network([
        Conv((3, 3, 1, 3), padding="same", activation=leaky_relu,
             optimizer=AdamOptimizer(0.8, 0.99, 1e-6), dtype=np.float32),
        BatchNorm(3, momentum=0.3, activation=relu, optimizer=SGDOptimizer(0.9, True, 1e-3),
                  dtype=np.float32),
        MaxPool(2, strides=1),
        Conv((2, 2, 3, 4), strides=(2, 1), padding=(1, 0), activation=LeakyReLU(0.2),
             optimizer=AdamWOptimizer(weight_decay=0.05), dtype=np.float32),
        AvgPool(2),
        Dropout(0.25, seed=5),
        Flatten(),
        FullyConnected((24, 8), activation=sigmoid, optimizer=SGDOptimizer(), dtype=np.float32),
        FullyConnected((8, 6), activation=tanh, optimizer=AdamOptimizer(weight_decay=1e-2),
                       dtype=np.float32),
        FullyConnected((6, 4), activation=relu, optimizer=SGDOptimizer(momentum=0.5), dtype=np.float32),
    ], loss=SoftmaxCrossEntropy())


def float64():
    """float64; GlobalAvgPool, BatchNorm on (N, F), a Flatten with its shape, MeanSquaredError."""
    return Network([
        Conv((3, 3, 1, 4), padding=1, optimizer=SGDOptimizer(momentum=0.5), dtype=np.float64),
        GlobalAvgPool(),
        BatchNorm(4, activation=tanh, dtype=np.float64),
        Flatten((4,)),
        FullyConnected((4, 4), optimizer=AdamWOptimizer(), dtype=np.float64),
    ], loss=MeanSquaredError())


def never_trained():
    """A Flatten() whose shape nothing fixed, and no optimizer state."""
    return Network([Flatten(), FullyConnected((64, 4), activation=leaky_relu)], loss=MeanSquaredError())


BUILDERS = {"every_layer": every_layer, "float64": float64, "never_trained": never_trained}


def images(n, seed=0):
    """(n, 8, 8, 1) noisy images and their labels in [0, 4)."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 8, 8, 1)), rng.integers(0, 4, n)


def write(directory):
    x, y = images(30)
    for name, build in BUILDERS.items():
        np.random.seed(3)
        net = build()
        if name != "never_trained":
            for start in range(0, 30, 10):
                net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
        net.save(os.path.join(directory, f"format1_{name}.npz"))


if __name__ == "__main__":
    write(os.path.dirname(os.path.abspath(__file__)))
