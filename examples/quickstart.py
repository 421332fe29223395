"""Train the seed report's CNN on synthetic seven-segment digits, with nothing but NumPy.

    python examples/quickstart.py

Each 28x28 image is a digit drawn from seven segments, at a random place with a random
stroke width and noise; the network has to read it.
"""
import time

import numpy as np

import cnnc
from cnnc import (POOL, AdamOptimizer, Conv, Flatten, FullyConnected, Network, SoftmaxCrossEntropy,
                  init, leaky_relu, linear, relu)

#            a  b  c  d  e  f  g     (a top, b top-right, c bottom-right, d bottom,
SEGMENTS = [[1, 1, 1, 1, 1, 1, 0],  # e bottom-left, f top-left, g middle)
            [0, 1, 1, 0, 0, 0, 0],
            [1, 1, 0, 1, 1, 0, 1],
            [1, 1, 1, 1, 0, 0, 1],
            [0, 1, 1, 0, 0, 1, 1],
            [1, 0, 1, 1, 0, 1, 1],
            [1, 0, 1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 0, 1, 1]]


def seven_segment_digits(n, rng):
    """n noisy 28x28x1 images of digits, and their labels."""
    labels = rng.integers(0, 10, n)
    images = rng.normal(0.0, 0.2, (n, 28, 28, 1))
    for image, label in zip(images, labels):
        top, left = rng.integers(2, 9), rng.integers(4, 13)
        width, height, stroke = rng.integers(8, 12), rng.integers(14, 18), rng.integers(1, 4)
        mid, bottom, right = top + height // 2, top + height, left + width
        strokes = [(top, top + stroke, left, right), (top, mid, right - stroke, right),
                   (mid, bottom, right - stroke, right), (bottom - stroke, bottom, left, right),
                   (mid, bottom, left, left + stroke), (top, mid, left, left + stroke),
                   (mid, mid + stroke, left, right)]
        for on, (r0, r1, c0, c1) in zip(SEGMENTS[label], strokes):
            if on:
                image[r0:r1, c0:c1, 0] += 1.0
    return images, labels


def main():
    np.random.seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = seven_segment_digits(6000, rng)
    x_test, y_test = seven_segment_digits(2000, rng)

    layers = [
        Conv((3, 3, 1, 16), strides=1, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=init.he_normal),
        Conv((4, 4, 16, 32), strides=2, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=init.he_normal),
        POOL(pshape=2),
        Flatten((6, 6, 32)),
        FullyConnected((6 * 6 * 32, 256), activation=relu, optimizer=AdamOptimizer(),
                       weight_init=init.he_normal),
        FullyConnected((256, 10), activation=linear, optimizer=AdamOptimizer(),
                       weight_init=init.xavier_normal),
    ]
    net = Network(layers, loss=SoftmaxCrossEntropy())

    print(f"cnnc {cnnc.__version__}, {cnnc.backend()} kernels")
    start = time.perf_counter()
    batch_size = 50
    for iteration in range(300):
        batch = rng.integers(0, len(x_train), batch_size)
        loss = net.train_step(x_train[batch], y_train[batch], lr=1e-3)
        if iteration % 25 == 0:
            print(f"Iteration: {iteration}, loss : {loss:.6f}")
    print(f"300 steps of batch {batch_size} in {time.perf_counter() - start:.1f} s")
    accuracy = net.evaluate(x_test, y_test, batch_size=1000)
    print(f"Accuracy over all test set {100 * accuracy:.2f}")


if __name__ == "__main__":
    main()
