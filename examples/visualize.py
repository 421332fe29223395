"""Look inside a trained CNN: its first convolution's filters, what every layer makes of one
digit, and which held-out digits it confuses, drawn as three PNG files.

    python examples/visualize.py [--model cnn.npz] [--epochs 2] [--index 0] [--out DIR]

Without --model, trains cnnc.models.course_cnn() on the digits bundled with cnnc (a few
seconds); with it, draws a network saved by net.save (e.g. examples/mnist_cnn.py --save).
Needs matplotlib (pip install '.[examples]').
"""
import argparse
import os
import time

import numpy as np

import cnnc
from cnnc import Conv, Network, datasets

from plotting import pyplot

FILTERS, FEATURE_MAPS, CONFUSION = "first_conv_filters.png", "feature_maps.png", "confusion_matrix.png"


def layer_outputs(net, x):
    """Every layer's output for the batch x, in order: the loop net.predict runs, with each
    step kept. Layers are in inference mode outside a training pass (Dropout passes values
    through, BatchNorm uses its running statistics), as predict runs them."""
    activation = np.ascontiguousarray(x, dtype=net.dtype)
    outputs = []
    for layer in net.layers:
        _, activation = layer.forward(activation)
        outputs.append(activation)
    return outputs


def draw_filters(plt, conv, depth, path):
    """Every filter of a Conv layer as a small image, one per (output, input) channel pair,
    on one color scale centred on zero: red weights add, blue ones subtract."""
    w = conv.params["w"]
    kh, kw, c_in, c_out = w.shape
    tiles = [(o, i) for o in range(c_out) for i in range(c_in)]
    columns = min(len(tiles), 16)
    rows = -(-len(tiles) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.8 + 1, rows * 0.9 + 0.8),
                                squeeze=False, layout="constrained")
    limit = float(np.abs(w).max()) or 1.0
    for ax in axes.flat:
        ax.axis("off")
    for ax, (o, i) in zip(axes.flat, tiles):
        shown = ax.imshow(w[:, :, i, o], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"{o}" if c_in == 1 else f"{o}/{i}", fontsize=8)
    figure.colorbar(shown, ax=axes, shrink=0.8)
    figure.suptitle(f"layer {depth}: {kh}x{kw} filters of {conv!r}", fontsize=9)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw_feature_maps(plt, net, image, label, path):
    """One digit and every layer's output for it: image outputs as a grid of maps (one per
    channel, one color scale per layer), flat outputs as a strip, the class scores as bars."""
    outputs = layer_outputs(net, image[None])
    rows = [("input", image)] + [(f"layer {depth}: {layer!r}", out[0])
                                 for depth, (layer, out) in enumerate(zip(net.layers, outputs))]
    heights = [_map_rows(out) * 0.9 + 0.5 if out.ndim == 3 else (1.8 if out.size <= 32 else 0.9)
               for _, out in rows]
    figure = plt.figure(figsize=(12, sum(heights)), layout="constrained")
    for sub, (title, out) in zip(figure.subfigures(len(rows), 1, height_ratios=heights), rows):
        shape = "x".join(map(str, out.shape))
        sub.suptitle(f"{title}  ->  {shape}", fontsize=9, x=0.01, ha="left")
        if out.ndim == 3:
            _draw_maps(sub, out)
        elif out.size <= 32:
            _draw_scores(sub, out, label)
        else:
            ax = sub.subplots()
            ax.imshow(out[None, :], aspect="auto", cmap="viridis", interpolation="nearest")
            ax.set_yticks([])
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _map_rows(out, columns=16):
    return -(-out.shape[2] // columns)


def _draw_maps(sub, out, columns=16):
    channels = out.shape[2]
    axes = sub.subplots(_map_rows(out, columns), min(channels, columns), squeeze=False)
    low, high = float(out.min()), float(out.max())
    for ax in axes.flat:
        ax.axis("off")
    for c, ax in zip(range(channels), axes.flat):
        ax.imshow(out[:, :, c], cmap="viridis" if channels > 1 else "gray", vmin=low, vmax=high)


def _draw_scores(sub, scores, label):
    ax = sub.subplots()
    predicted = int(np.argmax(scores))
    colors = ["tab:orange" if k == predicted else "tab:blue" for k in range(len(scores))]
    ax.bar(np.arange(len(scores)), scores, color=colors)
    ax.set_xticks(np.arange(len(scores)))
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(f"predicted {predicted}, true {label}", fontsize=9)


def confusion_matrix(labels, predicted, classes):
    """counts[t, p]: how many digits of class t the network called p."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def draw_confusion(plt, counts, accuracy, path):
    """The confusion matrix with its counts written in: the diagonal is what it gets right."""
    classes = len(counts)
    figure, ax = plt.subplots(figsize=(6.5, 5.5), layout="constrained")
    shown = ax.imshow(counts, cmap="Blues")
    for t in range(classes):
        for p in range(classes):
            if counts[t, p]:
                light = counts[t, p] > counts.max() / 2
                ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=8,
                        color="white" if light else "black")
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted class",
           ylabel="true class")
    ax.set_title(f"{counts.sum():,} held-out digits, accuracy {100 * accuracy:.2f}%")
    figure.colorbar(shown, ax=ax, shrink=0.8)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", metavar="FILE", help="a network saved by net.save "
                        "(default: train cnnc.models.course_cnn() here)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of training without --model")
    parser.add_argument("--index", type=int, default=0,
                        help="which held-out digit to follow through the layers")
    parser.add_argument("--out", default=".", metavar="DIR", help="where to write the PNG files")
    args = parser.parse_args()
    plt = pyplot()
    if plt is None:
        raise SystemExit(1)
    (x_train, y_train), (x_test, y_test) = datasets.mnist_sample()
    scale = np.float32(1 / 255)
    x_train, x_test = x_train * scale, x_test * scale
    if not 0 <= args.index < len(x_test):
        raise SystemExit(f"--index must lie in [0, {len(x_test)}), got {args.index}")

    if args.model:
        net = Network.load(args.model)
        print(f"the network saved in {args.model}")
    else:
        np.random.seed(0)
        net = cnnc.models.course_cnn()
        start = time.perf_counter()
        net.fit(x_train, y_train, epochs=args.epochs, batch_size=50, lr=1e-3, seed=0)
        print(f"cnnc.models.course_cnn() trained for {args.epochs} epochs on the "
              f"{len(x_train):,} digits bundled with cnnc in {time.perf_counter() - start:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    paths = {name: os.path.join(args.out, name) for name in (FILTERS, FEATURE_MAPS, CONFUSION)}
    convs = [(depth, layer) for depth, layer in enumerate(net.layers) if isinstance(layer, Conv)]
    if convs:
        draw_filters(plt, convs[0][1], convs[0][0], paths[FILTERS])
        print(f"first convolution's filters: {paths[FILTERS]}")
    else:
        print("no convolution in this network: no filters to draw")
    draw_feature_maps(plt, net, x_test[args.index], int(y_test[args.index]), paths[FEATURE_MAPS])
    print(f"every layer's output for held-out digit {args.index}: {paths[FEATURE_MAPS]}")
    scores = net.predict(x_test)
    predicted = scores.argmax(axis=1)
    accuracy = float(np.mean(predicted == y_test))
    draw_confusion(plt, confusion_matrix(y_test, predicted, scores.shape[1]), accuracy,
                   paths[CONFUSION])
    print(f"confusion matrix: {paths[CONFUSION]}")
    print(f"held-out accuracy: {100 * accuracy:.2f}% on {len(x_test):,} digits")


if __name__ == "__main__":
    main()
