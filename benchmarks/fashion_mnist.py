"""The Fashion-MNIST network of examples/fashion_mnist.py, trained by cnnc and by PyTorch
eager on the same data, from the same initial weights, with the same batches, side by side.

    python benchmarks/fashion_mnist.py [--epochs 3] [--data DIR] [--limit N] [--markdown]

Each library trains in a fresh process (cnnc first, then torch), on as many threads as
cnnc's compiled loops use. Prints, per epoch, the training time of each (evaluation not
counted), their ratio and the test accuracy each reached.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))

import cnnc  # noqa: E402
from cnnc import export  # noqa: E402
from common import cpu_name  # noqa: E402
from fashion_mnist import fashion_cnn, load  # noqa: E402

BATCH, LR = 64, 1e-3
WORKER_TIMEOUT = 3600


def batches(count, epoch):
    """The batches of one epoch: both libraries draw the same shuffled order."""
    order = np.random.default_rng(epoch).permutation(count)
    return [order[i:i + BATCH] for i in range(0, count, BATCH)]


def train_cnnc(data, epochs):
    (x, y), (x_test, y_test) = data
    np.random.seed(0)
    net = fashion_cnn()
    for epoch in range(epochs):
        start = time.perf_counter()
        for batch in batches(len(x), epoch):
            net.train_step(x[batch], y[batch], lr=LR)
        seconds = time.perf_counter() - start
        yield seconds, net.evaluate(x_test, y_test)


def train_torch(data, epochs):
    import torch
    torch.set_num_threads(cnnc.get_num_threads())
    torch.manual_seed(0)
    (x, y), (x_test, y_test) = data
    np.random.seed(0)
    model = export.to_torch(fashion_cnn(), (28, 28, 1)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        start = time.perf_counter()
        for batch in batches(len(x), epoch):
            optimizer.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x[batch]).permute(0, 3, 1, 2)),
                           torch.from_numpy(y[batch]))
            loss.backward()
            optimizer.step()
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(torch.from_numpy(x_test[i:i + 1000]).permute(0, 3, 1, 2))
                                for i in range(0, len(x_test), 1000)])
        yield seconds, float((logits.argmax(1).numpy() == y_test).mean())


def worker(library, epochs, data_dir, limit):
    """Train one library; print one JSON line per epoch: seconds and test accuracy."""
    (x, y), test = load(data_dir, download=False)
    data = ((x[:limit], y[:limit]), test)
    for seconds, accuracy in (train_cnnc if library == "cnnc" else train_torch)(data, epochs):
        print(json.dumps({"seconds": seconds, "accuracy": accuracy}), flush=True)


def run_worker(library, args):
    command = [sys.executable, os.path.abspath(__file__), "--worker", library, "--epochs",
               str(args.epochs), "--limit", str(args.limit)] + (["--data", args.data] if args.data else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if done.returncode != 0:
        raise SystemExit(f"the {library} worker failed (exit {done.returncode}):\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", metavar="DIR")
    parser.add_argument("--limit", type=int, default=60000, help="training images used")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", choices=["cnnc", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.epochs, args.data, args.limit)
    print(f"{cpu_name()}, {cnnc.get_num_threads()} threads, cnnc {cnnc.__version__} "
          f"({cnnc.kernels.IMPLEMENTATION}); {args.limit:,} training images, batch {BATCH}, "
          f"Adam {LR}", file=sys.stderr)
    results = {library: run_worker(library, args) for library in ("cnnc", "torch")}
    rows = [["epoch", "cnnc s", "torch s", "cnnc / torch", "cnnc test acc", "torch test acc"]]
    for epoch, (ours, theirs) in enumerate(zip(results["cnnc"], results["torch"]), 1):
        rows.append([str(epoch), f"{ours['seconds']:.1f}", f"{theirs['seconds']:.1f}",
                     f"{ours['seconds'] / theirs['seconds']:.2f}x",
                     f"{100 * ours['accuracy']:.2f}%", f"{100 * theirs['accuracy']:.2f}%"])
    if args.markdown:
        print("\n".join("| " + " | ".join(row) + " |" for row in rows[:1] + [["---"] * 6] + rows[1:]))
    else:
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        print("\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows))


if __name__ == "__main__":
    main()
