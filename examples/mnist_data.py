"""The digits the examples train on: full MNIST when its files are found, else the 5,000
real MNIST digits bundled with cnnc."""
import os

import numpy as np

from cnnc import datasets


def add_data_option(parser):
    parser.add_argument("--data", metavar="DIR",
                        help="a directory holding the four MNIST files (default: $CNNC_DATA/mnist "
                             "or ~/.cache/cnnc/mnist; without them, the bundled sample)")


def load(data_dir=None):
    """((x_train, y_train), (x_test, y_test)) with images scaled to [0, 1] in float32, and
    a sentence saying which data it is."""
    try:
        if data_dir is None:
            (x_train, y_train), (x_test, y_test) = datasets.mnist()
            where = datasets.default_root(datasets.MNIST)
        else:
            where = data_dir if _has_mnist(data_dir) else os.path.join(data_dir, "mnist")
            (x_train, y_train), (x_test, y_test) = datasets.mnist(where)
        source = f"full MNIST from {where}"
    except FileNotFoundError as error:
        if data_dir is not None:
            raise SystemExit(f"--data {data_dir}: {error}")
        (x_train, y_train), (x_test, y_test) = datasets.mnist_sample()
        source = "the MNIST sample bundled with cnnc (no MNIST files found; see --data)"
    source += f": {len(x_train):,} training and {len(x_test):,} test digits"
    return ((_scaled(x_train), y_train), (_scaled(x_test), y_test)), source


def _has_mnist(directory):
    return any(name.startswith("train-images-idx3-ubyte") for name in os.listdir(directory)) \
        if os.path.isdir(directory) else False


def _scaled(images):
    return images.astype(np.float32) / np.float32(255)
