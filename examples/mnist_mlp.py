"""The course report's MLP experiments on real MNIST digits: sigmoid + SGD, ReLU + SGD,
ReLU + Adam, with the report's layers, its learning rate (0.01) and its batches of 50.

    python examples/mnist_mlp.py [--iterations 100] [--data DIR]

The report ran 100 iterations and measured 10.46%, 46.58% and 88.68% on the MNIST test
set; its Adam was not Adam (it multiplied by the learning rate twice). cnnc's is.
"""
import argparse

import numpy as np

import cnnc
from cnnc import (AdamOptimizer, Flatten, FullyConnected, Network, SGDoptimizer, SoftmaxCrossEntropy,
                  linear, relu, sigmoid)

import mnist_data


def report_mlp(activation, optimizer):
    """The report's simple MLP, as its code blocks write it."""
    return [
        Flatten((28, 28, 1)),
        FullyConnected((28*28, 100), activation=activation, optimizer=optimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (28*28))),
        FullyConnected((100, 50), activation=activation, optimizer=optimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (100.))),
        FullyConnected((50, 10), activation=linear, optimizer=optimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (50.))),
    ]


def train(layers, x_train, y_train, iterations, lr=0.01, batch_size=50, log_every=10):
    """The report's loop: random batches of 50, one train_step each, its log line.
    Returns the network and the loss of every step."""
    net = Network(layers, loss=SoftmaxCrossEntropy())
    losses = []
    for iteration in range(iterations):
        batch = np.random.choice(len(x_train), batch_size)
        losses.append(net.train_step(x_train[batch], y_train[batch], lr=lr))
        if iteration % log_every == 0:
            print(f"Iteration: {iteration}, loss : {losses[-1]:.6f}")
    return net, losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="training steps (the report's: 100)")
    mnist_data.add_data_option(parser)
    args = parser.parse_args()
    ((x_train, y_train), (x_test, y_test)), source = mnist_data.load(args.data)
    print(f"cnnc {cnnc.__version__} ({cnnc.backend()} kernels) on {source}\n")

    results = []
    for name, activation, optimizer, reported in [("sigmoid + SGD", sigmoid, SGDoptimizer, 10.46),
                                                  ("ReLU + SGD", relu, SGDoptimizer, 46.58),
                                                  ("ReLU + Adam", relu, AdamOptimizer, 88.68)]:
        print(f"## {name}")
        np.random.seed(0)
        net, _ = train(report_mlp(activation, optimizer), x_train, y_train, args.iterations)
        accuracy = 100 * net.evaluate(x_test, y_test)
        print(f"Accuracy over all test set {accuracy:.2f}\n")
        results.append((name, reported, accuracy))

    print(f"{'experiment':<16}{'course report':>12}{'cnnc':>8}")
    for name, reported, accuracy in results:
        print(f"{name:<16}{reported:>11.2f}%{accuracy:>7.2f}%")


if __name__ == "__main__":
    main()
