"""The next network after the course CNN: 3x3 "same" convolutions with batch normalization,
max pooling, dropout and a classifier head, trained on full Fashion-MNIST.

    python examples/fashion_mnist.py [--epochs 3] [--data DIR] [--download]
                                     [--save fashion_cnn.npz] [--plot fashion_mnist.png]

Fashion-MNIST is read from --data, else from cnnc's default place for it or from Debian's
package (apt-get install dataset-fashion-mnist); --download fetches it when it is missing.
The curves are drawn where matplotlib is installed (pip install '.[examples]').
"""
import argparse
import time

import numpy as np

import cnnc
from cnnc import (BatchNorm, Conv, Dropout, Flatten, FullyConnected, MaxPool,
                  Network, SoftmaxCrossEntropy, datasets)
from plotting import pyplot

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


def fashion_cnn():
    """Conv-BN-ReLU twice, pool, dropout; Conv-BN-ReLU, pool, dropout; FC-ReLU, dropout, FC."""
    return Network([
        Conv((3, 3, 1, 32), padding="same"),            # each layer its own Adam (the default)
        BatchNorm(32, activation="relu"),
        Conv((3, 3, 32, 32), padding="same"),
        BatchNorm(32, activation="relu"),
        MaxPool(2),
        Dropout(0.25, seed=1),
        Conv((3, 3, 32, 64), padding="same"),
        BatchNorm(64, activation="relu"),
        MaxPool(2),
        Dropout(0.25, seed=2),
        Flatten(),
        FullyConnected((7 * 7 * 64, 128), activation="relu"),
        Dropout(0.5, seed=3),
        FullyConnected((128, 10)),
    ], loss=SoftmaxCrossEntropy())


def load(root, download):
    """Fashion-MNIST with images scaled to [0, 1] in float32."""
    try:
        (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist(root, download=download)
    except FileNotFoundError as error:
        raise SystemExit(f"{error}\n(or: apt-get install dataset-fashion-mnist)")
    scale = np.float32(1 / 255)
    return (x_train * scale, y_train), (x_test * scale, y_test)


def plot(history, path):
    plt = pyplot()
    if plt is None:
        return
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, history["loss"], "o-", label="training")
    left.plot(epochs, history["val_loss"], "o-", label="test")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    right.plot(epochs, history["accuracy"], "o-", label="training")
    right.plot(epochs, history["val_accuracy"], "o-", label="test")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for axes in (left, right):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"curves drawn in {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", metavar="DIR", help="the directory holding Fashion-MNIST's files")
    parser.add_argument("--download", action="store_true", help="fetch the files when missing")
    parser.add_argument("--save", default="fashion_cnn.npz", metavar="FILE")
    parser.add_argument("--plot", default="fashion_mnist.png", metavar="PNG")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = load(args.data, args.download)
    print(f"cnnc {cnnc.__version__} ({cnnc.backend()} kernels, {cnnc.get_num_threads()} threads): "
          f"Fashion-MNIST, {len(x_train):,} training and {len(x_test):,} test images\n")
    np.random.seed(0)
    net = fashion_cnn()
    net.summary(input_shape=(28, 28, 1))
    start = time.perf_counter()
    history = net.fit(x_train, y_train, epochs=args.epochs, batch_size=64, lr=1e-3, seed=0,
                      validation_data=(x_test, y_test))
    seconds = time.perf_counter() - start
    for epoch in range(args.epochs):
        print(f"epoch {epoch + 1}: loss {history['loss'][epoch]:.4f}, training accuracy "
              f"{100 * history['accuracy'][epoch]:.2f}%, test accuracy "
              f"{100 * history['val_accuracy'][epoch]:.2f}%")
    print(f"{args.epochs} epochs in {seconds:.1f} s ({seconds / max(args.epochs, 1):.1f} s per epoch)\n")

    predicted = net.predict(x_test).argmax(axis=1)
    for index, name in enumerate(CLASSES):
        mine = y_test == index
        print(f"  {name:<12} {100 * np.mean(predicted[mine] == index):6.2f}%")
    net.save(args.save)
    restored = Network.load(args.save)
    same = np.array_equal(restored.predict(x_test[:1000]), net.predict(x_test[:1000]))
    print(f"\nsaved to {args.save} and loaded back: {'the same' if same else 'DIFFERENT'} predictions")
    plot(history, args.plot)


if __name__ == "__main__":
    main()
