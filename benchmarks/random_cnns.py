"""Randomly drawn, plausible CNNs: cnnc's training step against PyTorch eager's on each.

    python benchmarks/random_cnns.py [--count 20] [--seed 0] [--rounds 5] [--threads T] [--markdown]

The other benchmarks time networks chosen by hand, and a kernel can be fast on those and
slow on a shape nobody picked. This script draws networks as a user might write them:
filters 1x1 to 7x7 (now and then not square), strides 1 and 2, "same", "valid" or
symmetric padding, 3 to 128 channels (odd counts too), max or average pooling,
BatchNorm, rarely Dropout, ReLU or leaky ReLU, then Flatten, maybe a hidden
FullyConnected layer, and 10 classes; 16 to 64 pixels a side, 1 or 3 channels, batches
of 16 to 256. A network whose training step would take more than MAX_TRAIN_FLOPS (or
hold more than MAX_ACTIVATION_BYTES of activations, or MAX_PARAMETERS) is redrawn. Net i
of seed S is drawn from np.random.default_rng([S, i]), the same whatever --count.

Each network keeps cnnc's defaults (he_normal filters, a fresh Adam per layer) and is
copied into PyTorch with cnnc.export.to_torch; both must give the same logits, and the
same first loss where no Dropout makes them differ. Then cnnc's net.train_step on the
NHWC float32 batch takes turns (bench.py's medians) with PyTorch's eager step
(zero_grad, forward, cross entropy, backward, Adam) in two layouts, each with its batch
already in that layout: NCHW contiguous, and channels_last (model and batch). The faster
layout is PyTorch's time; a ratio cnnc / torch best below 1 means cnnc is faster.

A description reads "HxWxC bN:" and the layers in order: "conv{kh}x{kw}-{c_out}" with
"/2" for stride 2, its padding ("same", "valid", "p{ph},{pw}"), "bn" for a BatchNorm
after it, and its activation ("relu", or "lrelu", leaky); "max{k}" or "avg{k}" pooling
("/{s}" when the stride is not the window); "drop{rate}"; "fc{n}" after the Flatten.
"""
import argparse
import math
import os
import platform
import sys
import time
import traceback

import numpy as np
import torch

import cnnc
from cnnc import (AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected, MaxPool, Network,
                  SoftmaxCrossEntropy, export, leaky_relu, linear, relu)
from bench import medians
from common import cpu_name, table

MAX_TRAIN_FLOPS = 3e9               # per training step, as train_cost estimates it
MAX_ACTIVATION_BYTES = 256 * 2**20  # every layer's output for one batch, float32
MAX_PARAMETERS = 4_000_000
LR = 1e-3
CHECK_IMAGES = 8
KERNELS, KERNEL_ODDS = (1, 2, 3, 4, 5, 6, 7), (0.15, 0.05, 0.35, 0.05, 0.2, 0.05, 0.15)
ROUND_CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128)
ROUND_BATCHES = (16, 32, 64, 128, 256)
DROPOUT_RATES = (0.1, 0.2, 0.25, 0.3, 0.5)
ACTIVATIONS = {"relu": relu, "lrelu": leaky_relu}
LAYOUTS = ("torch NCHW", "torch channels_last")


class Mismatch(Exception):
    """cnnc and its PyTorch copy compute different numbers."""


def random_cnn(rng):
    """A plausible random CNN drawn from rng: (cnnc.Network, one input's shape (H, W, C),
    batch size, description), redrawn until its training step is within the bounds."""
    while True:
        net, shape, batch, description = _draw(rng)
        flops, activation_bytes, parameters = train_cost(net, shape, batch)
        if (flops <= MAX_TRAIN_FLOPS and activation_bytes <= MAX_ACTIVATION_BYTES
                and parameters <= MAX_PARAMETERS):
            return net, shape, batch, description


def _draw(rng):
    """One draw of random_cnn, its cost unchecked."""
    height = int(rng.integers(16, 65))
    width = height if rng.random() < 0.8 else int(rng.integers(16, 65))
    input_shape = shape = (height, width, int(rng.choice((1, 3))))
    batch = int(rng.choice(ROUND_BATCHES)) if rng.random() < 0.6 else int(rng.integers(16, 257))
    layers, words = [], []
    for _ in range(int(rng.integers(1, 6))):
        block, block_words = _conv_block(rng, shape)
        for layer in block:
            shape = layer.output_shape(shape)
        layers += block
        words += block_words
    layers.append(Flatten())
    features = math.prod(shape)
    if rng.random() < 0.1:
        rate = float(rng.choice(DROPOUT_RATES))
        layers.append(Dropout(rate))
        words.append(f"drop{rate}")
    if rng.random() < 0.4:
        units, name = int(rng.integers(16, 257)), str(rng.choice(list(ACTIVATIONS)))
        if rng.random() < 0.15:
            layers += [FullyConnected((features, units)), BatchNorm(units, activation=ACTIVATIONS[name])]
            words.append(f"fc{units} bn {name}")
        else:
            layers.append(FullyConnected((features, units), activation=ACTIVATIONS[name]))
            words.append(f"fc{units} {name}")
        features = units
    layers.append(FullyConnected((features, 10), activation=linear))
    words.append("fc10")
    description = f"{'x'.join(map(str, input_shape))} b{batch}: {', '.join(words)}"
    return Network(layers, loss=SoftmaxCrossEntropy()), input_shape, batch, description


def _conv_block(rng, shape):
    """(layers, descriptions): a Conv, maybe a BatchNorm, maybe pooling, rarely Dropout, for
    an input of one sample's shape (H, W, C)."""
    height, width, c_in = shape
    kh = int(rng.choice(KERNELS, p=KERNEL_ODDS))
    kw = kh if rng.random() < 0.9 else int(rng.choice(KERNELS, p=KERNEL_ODDS))
    stride = 2 if min(height, width) >= 4 and rng.random() < 0.3 else 1
    draw = rng.random()
    if draw < 0.45 or (draw < 0.85 and (kh > height or kw > width)):
        padding, padding_word = "same", "same"
    elif draw < 0.85:
        padding, padding_word = "valid", "valid"
    else:
        padding, padding_word = (kh // 2, kw // 2), f"p{kh // 2},{kw // 2}"
    c_out = int(rng.choice(ROUND_CHANNELS)) if rng.random() < 0.5 else int(rng.integers(3, 129))
    name = str(rng.choice(list(ACTIVATIONS)))
    batch_norm = rng.random() < 0.3
    conv = Conv((kh, kw, c_in, c_out), strides=stride, padding=padding,
                activation=linear if batch_norm else ACTIVATIONS[name])
    layers = [conv] + ([BatchNorm(c_out, activation=ACTIVATIONS[name])] if batch_norm else [])
    words = [f"conv{kh}x{kw}-{c_out}{'/2' if stride == 2 else ''} {padding_word}"
             f"{' bn' if batch_norm else ''} {name}"]
    height, width, _ = conv.output_shape(shape)
    window = int(rng.choice((2, 3), p=(0.7, 0.3)))
    if window <= min(height, width) and rng.random() < 0.3:
        pool_stride = 2 if window == 3 and rng.random() < 0.5 else window
        kind, word = (MaxPool, "max") if rng.random() < 0.7 else (AvgPool, "avg")
        layers.append(kind(window, pool_stride))
        words.append(f"{word}{window}" + (f"/{pool_stride}" if pool_stride != window else ""))
    if rng.random() < 0.03:
        rate = float(rng.choice(DROPOUT_RATES))
        layers.append(Dropout(rate))
        words.append(f"drop{rate}")
    return layers, words


def train_cost(net, shape, batch):
    """Estimated FLOPs of one training step (forward, input and weight gradients of every
    Conv and FullyConnected: 3 products of 2 FLOPs per multiply-add), the bytes of every
    layer's float32 output for the batch, and the parameter count."""
    multiply_adds = elements = 0
    for layer in net.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, Conv):
            kh, kw, c_in, _ = layer.fshape
            multiply_adds += math.prod(out) * kh * kw * c_in
        elif isinstance(layer, FullyConnected):
            multiply_adds += math.prod(layer.shape)
        elements += math.prod(out)
        shape = out
    parameters = sum(p.size for layer in net.layers for p in layer.params.values())
    return 6 * batch * multiply_adds, 4 * batch * elements, parameters


def training_steps(net, shape, batch, rng):
    """The three timed calls, by column name, after checking that PyTorch's copies compute
    cnnc's logits and (without Dropout) its first loss; raises Mismatch otherwise."""
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, batch)
    nhwc, labels = torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y)
    inputs = {"torch NCHW": nhwc.contiguous(), "torch channels_last": nhwc}
    models = {"torch NCHW": export.to_torch(net, shape),
              "torch channels_last": export.to_torch(net, shape).to(memory_format=torch.channels_last)}
    expected = net.predict(x[:CHECK_IMAGES])
    scale = max(1.0, float(np.abs(expected).max()))
    with torch.no_grad():
        for layout, model in models.items():
            difference = float(np.abs(model(inputs[layout][:CHECK_IMAGES]).numpy() - expected).max())
            if not difference <= 1e-4 * scale:
                raise Mismatch(f"{layout} logits differ from cnnc's by up to {difference:.2e} "
                               f"(largest logit {scale:.2e})")

    def torch_step(model, optimizer, inputs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    steps = {"cnnc": lambda: net.train_step(x, y, lr=LR)}
    for layout, model in models.items():
        optimizer = torch.optim.Adam(model.train().parameters(), lr=LR)
        steps[layout] = lambda m=model, o=optimizer, i=inputs[layout]: torch_step(m, o, i)
    first = {name: step() for name, step in steps.items()}
    has_dropout = any(isinstance(layer, Dropout) for layer in net.layers)
    for layout in LAYOUTS:
        tolerance = 1e-4 * max(1.0, first["cnnc"])
        if not has_dropout and not abs(first[layout] - first["cnnc"]) <= tolerance:
            raise Mismatch(f"first training loss: cnnc {first['cnnc']:.6f}, "
                           f"{layout} {first[layout]:.6f}")
    return steps


def run(seed, count, rounds):
    """Table rows for the nets that ran, and (description, error) for those that failed."""
    rows, failures = {}, []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        np.random.seed([seed, index])           # cnnc draws initial weights from np.random
        net, shape, batch, description = random_cnn(rng)
        name = f"#{index} {description}"
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            times = medians(training_steps(net, shape, batch, rng), rounds)
        except Exception as error:                  # reported with the net, the run goes on
            traceback.print_exc()
            failures.append((name, f"{type(error).__name__}: {error}"))
            continue
        faster = min(LAYOUTS, key=times.get)
        rows[name] = {**times, "torch best": times[faster],
                      "faster layout": faster.removeprefix("torch "),
                      "GFLOP": f"{train_cost(net, shape, batch)[0] / 1e9:.2f}"}
    return rows, failures


def summary(rows, failures, threads, seconds):
    """Count, worst and geometric-mean ratio, machine and threads, in a few lines."""
    ratios = {name: row["cnnc"] / row["torch best"] for name, row in rows.items()}
    lines = [f"{len(rows)} nets timed, {len(failures)} failed"]
    if ratios:
        worst = max(ratios, key=ratios.get)
        mean = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
        channels_last = sum(row["faster layout"] == "channels_last" for row in rows.values())
        faster = sum(ratio < 1 for ratio in ratios.values())
        lines[0] += (f"; cnnc / torch best: worst {ratios[worst]:.2f}x ({worst.split()[0]}), "
                     f"geometric mean {mean:.2f}x, cnnc faster on {faster}; "
                     f"torch faster in channels_last on {channels_last}")
    lines.append(f"{cpu_name()}, {threads} threads each; {seconds:.0f} s in all")
    lines += [f"FAILED {name}\n    {error}" for name, error in failures]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="networks to draw")
    parser.add_argument("--seed", type=int, default=0, help="net i is drawn from [seed, i]")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per net (median reported)")
    parser.add_argument("--threads", type=int, help="threads for both (default: cnnc's count)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    if cnnc.backend() != "compiled":
        raise SystemExit("cnnc's compiled kernels are not running "
                         "(not built, or CNNC_BACKEND=numpy)")
    if args.threads:
        cnnc.set_num_threads(args.threads)
    threads = cnnc.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    print(f"{cpu_name()}, {os.cpu_count()} cores; cnnc {cnnc.__version__} "
          f"({cnnc.kernels.IMPLEMENTATION}), PyTorch {torch.__version__}, {threads} threads each; "
          f"Python {platform.python_version()}, NumPy {np.__version__}\n"
          f"{args.count} nets of seed {args.seed}; float32, Adam; median of {args.rounds} "
          "interleaved rounds of 2 timed steps after 2 untimed ones\n")
    rows, failures = run(args.seed, args.count, args.rounds)
    print(table(rows, ["cnnc", *LAYOUTS], [("cnnc", "torch best")], args.markdown,
                texts=("faster layout", "GFLOP")))
    print()
    print(summary(rows, failures, threads, time.perf_counter() - start))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
