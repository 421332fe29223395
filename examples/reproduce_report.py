"""Rerun every experiment of the course report on cnnc, with the report's own layer code,
and print the report's accuracy beside cnnc's.

    python examples/reproduce_report.py [--data DIR] [--plot reproduce_report.png]

Same protocol as the report: its layers and initializers exactly as written there (fan-in
from the image size included), random batches of 50, learning rate 0.01 (its script sets
it once for every experiment) and its number of iterations. What differs is cnnc: Adam is
Adam, ReLU leaves its input alone, and max pooling routes its gradient right. The report
measured on the 10,000 MNIST test digits; without the MNIST files this runs on the
bundled sample and tests on its 1,000 held-out digits. The loss curves go to a PNG when
matplotlib is installed (pip install '.[examples]').
"""
import argparse

import numpy as np

import cnnc
from cnnc import AdamOptimizer, SGDoptimizer, leaky_relu, relu, sigmoid
from cnnc.models import course_cnn

import mnist_data
from mnist_mlp import report_mlp, train
from plotting import pyplot


def report_cnn(pooling, fc_activation=relu):
    """The course CNN (sections 4-6) with the report's initializers: the fan-in of the
    convolutions taken from the image size, as its code blocks write them."""
    side = 6 if pooling else 12

    def normal(fan_in):
        return lambda shp: np.random.normal(size=shp) * np.sqrt(2.0 / fan_in)

    inits = (normal(28 * 28), normal(16 * 26 * 26), normal(side * side * 32), normal(256.))
    return course_cnn(pooling, dense_activation=fc_activation, inits=inits).layers


# (section of the report, experiment, layers, iterations, the report's accuracy or None)
EXPERIMENTS = [
    ("2", "MLP, sigmoid + SGD", lambda: report_mlp(sigmoid, SGDoptimizer), 100, 10.46),
    ("2", "MLP, ReLU + SGD", lambda: report_mlp(relu, SGDoptimizer), 100, 46.58),
    ("3", "MLP, ReLU + Adam", lambda: report_mlp(relu, AdamOptimizer), 100, 88.68),
    ("4", "CNN, FC with leaky ReLU (1 step*)", lambda: report_cnn(False, leaky_relu), 1, 13.58),
    ("5", "CNN without pooling", lambda: report_cnn(False), 100, 43.57),
    ("5", "CNN with pooling", lambda: report_cnn(True), 100, 18.71),
    ("5", "CNN without pooling", lambda: report_cnn(False), 2000, 89.81),
    ("6", "CNN with pooling (1 step*)", lambda: report_cnn(True), 1, 10.40),
    ("-", "CNN with pooling", lambda: report_cnn(True), 2000, None),
]


def plot(curves, path):
    """Loss curves, smoothed over 10 steps, MLPs and CNNs side by side."""
    plt = pyplot()
    if plt is None:
        return
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, losses in curves:
        if len(losses) < 10:
            continue
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        axes[0 if label.startswith("MLP") else 1].plot(np.arange(9, len(losses)), smooth, label=label)
    for axis, title in zip(axes, ("MLPs", "CNNs")):
        axis.set(title=f"{title}: training loss (mean of 10 steps)", xlabel="iteration",
                 ylabel="softmax cross-entropy")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    print(f"\nloss curves: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default="reproduce_report.png", metavar="PNG")
    parser.add_argument("--max-iterations", type=int, metavar="N",
                        help="cap every experiment at N iterations: a quick check, not the "
                             "report's protocol")
    mnist_data.add_data_option(parser)
    args = parser.parse_args()
    ((x_train, y_train), (x_test, y_test)), source = mnist_data.load(args.data)
    print(f"cnnc {cnnc.__version__} ({cnnc.backend()} kernels) on {source}\n")

    rows, curves = [], []
    for section, name, layers, iterations, reported in EXPERIMENTS:
        iterations = min(iterations, args.max_iterations or iterations)
        label = f"{name}, {iterations} it."
        print(f"## {label}")
        np.random.seed(0)
        net, losses = train(layers(), x_train, y_train, iterations, lr=0.01,
                            log_every=10 if iterations <= 100 else 100)
        accuracy = 100 * net.evaluate(x_test, y_test)
        print(f"Accuracy over all test set {accuracy:.2f}\n")
        rows.append((section, name, iterations, reported, accuracy))
        curves.append((label, losses))

    print("| section | experiment | iterations | course report | cnnc |")
    print("|---|---|---|---|---|")
    for section, name, iterations, reported, accuracy in rows:
        theirs = f"{reported:.2f}%" if reported is not None else "-"
        print(f"| {section} | {name} | {iterations} | {theirs} | {accuracy:.2f}% |")
    print("\n* The report's log for these runs ends at iteration 0: one step, read as such.")
    plot(curves, args.plot)


if __name__ == "__main__":
    main()
