"""cnnc (compiled kernels) against PyTorch eager on the CPU, on several architectures.

    python benchmarks/suite.py [--rounds 5] [--calls K] [--only vgg,mlp] [--markdown]

Fresh processes taking turns: each round, for every (architecture, case), one worker
process per library (which goes first alternates by round) builds its network, makes
untimed calls, then prints the median of K timed ones; the driver reports the median over
rounds. No library inherits the other's thread pools or warm caches, and a noisy machine
slows both alike. A ratio cnnc / torch below 1 means cnnc is faster than PyTorch.
"""
import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

import cnnc
from cnnc import export
from cnnc import (AdamOptimizer, Conv, Flatten, FullyConnected, MaxPool, Network, SGDOptimizer,
                  SoftmaxCrossEntropy, linear, relu)
from cnnc.models import course_cnn
from common import cpu_name, table

LIBRARIES = ("cnnc", "torch")
CASES = {"train": "train step", "infer": "inference, 2,000 images"}
UNTIMED_CALLS = 3
DEFAULT_CALLS = {"train": 20, "infer": 3}
INFERENCE_IMAGES, INFERENCE_BATCH = 2000, 1000
WORKER_TIMEOUT = 600    # seconds; a hung worker fails the run loudly
PAUSE = 0.5             # seconds of rest before each worker, so the machine settles


@dataclass
class Architecture:
    """A network both libraries build: layers as ("conv", fshape, stride, padding,
    activation), ("pool", size), ("flatten",) or ("fc", (n_in, n_out), activation), or
    the Network that `build` returns (its layers each with their own Adam)."""
    name: str
    input_shape: tuple
    batch: int
    optimizer: str      # "adam", or "sgd" with momentum 0.9
    lr: float
    layers: list = None
    build: object = None


ARCHITECTURES = {
    "course": Architecture("course CNN", (28, 28, 1), 50, "adam", 1e-3, build=course_cnn),
    "lenet5": Architecture("LeNet-5", (28, 28, 1), 64, "sgd", 0.01, [
        ("conv", (5, 5, 1, 6), 1, 2, relu), ("pool", 2), ("conv", (5, 5, 6, 16), 1, 0, relu),
        ("pool", 2), ("flatten",), ("fc", (400, 120), relu), ("fc", (120, 84), relu),
        ("fc", (84, 10), linear)]),
    "vgg": Architecture("VGG-style", (32, 32, 3), 64, "adam", 1e-3, [
        ("conv", (3, 3, 3, 32), 1, "same", relu), ("conv", (3, 3, 32, 32), 1, "same", relu),
        ("pool", 2), ("conv", (3, 3, 32, 64), 1, "same", relu), ("pool", 2), ("flatten",),
        ("fc", (4096, 128), relu), ("fc", (128, 10), linear)]),
    "strided": Architecture("5x5/1x1 stride 2", (32, 32, 3), 64, "adam", 1e-3, [
        ("conv", (5, 5, 3, 32), 2, 2, relu), ("conv", (1, 1, 32, 64), 1, 0, relu),
        ("conv", (5, 5, 64, 64), 2, 2, relu), ("conv", (1, 1, 64, 32), 1, 0, relu),
        ("flatten",), ("fc", (2048, 10), linear)]),
    "mlp": Architecture("MLP", (28, 28, 1), 128, "adam", 1e-3, [
        ("flatten",), ("fc", (784, 512), relu), ("fc", (512, 256), relu),
        ("fc", (256, 10), linear)]),
}


def cnnc_network(arch):
    """The architecture as a cnnc Network, its weights drawn from a fixed seed."""
    np.random.seed(0)
    if arch.build is not None:
        return arch.build()
    shape, layers = arch.input_shape, []
    for kind, *args in arch.layers:
        optimizer = AdamOptimizer() if arch.optimizer == "adam" else SGDOptimizer(momentum=0.9)
        if kind == "conv":
            layer = Conv(args[0], strides=args[1], padding=args[2], activation=args[3],
                         optimizer=optimizer)
        elif kind == "pool":
            layer = MaxPool(args[0])
        elif kind == "flatten":
            layer = Flatten(shape)
        else:
            layer = FullyConnected(args[0], activation=args[1], optimizer=optimizer)
        layers.append(layer)
        shape = layer.output_shape(shape)
    return Network(layers, loss=SoftmaxCrossEntropy())


def torch_optimizer(torch, arch, model):
    """torch's counterpart of the optimizer cnnc_network gives each layer."""
    if arch.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=arch.lr)
    return torch.optim.SGD(model.parameters(), lr=arch.lr, momentum=0.9)


def data(arch, count):
    """Random NHWC float32 images and int64 labels, as a cnnc user holds them."""
    rng = np.random.default_rng(1)
    return (rng.random((count,) + arch.input_shape, dtype=np.float32),
            rng.integers(0, 10, count, dtype=np.int64))


def load_torch():
    """torch on as many threads as cnnc's compiled loops, or None when not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch
    torch.set_num_threads(cnnc.get_num_threads())
    return torch


def check_pair(torch, arch):
    """Abort unless cnnc's network and its torch copy have the same parameter count and
    logits; return the count and the largest logit difference."""
    net = cnnc_network(arch)
    model = export.to_torch(net, arch.input_shape).eval()
    ours = sum(p.size for layer in net.layers for p in layer.params.values())
    theirs = sum(p.numel() for p in model.parameters())
    if ours != theirs:
        raise SystemExit(f"{arch.name}: cnnc has {ours:,} parameters, torch {theirs:,}")
    x, _ = data(arch, 8)
    with torch.no_grad():
        expected = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    difference = float(np.abs(net.predict(x) - expected).max())
    if not difference <= 1e-4:
        raise SystemExit(f"{arch.name}: cnnc and torch logits differ by up to {difference:.2e}, "
                         "more than 1e-4: the two networks are not the same")
    return ours, difference


def cnnc_call(arch, case):
    """The zero-argument call a cnnc worker times."""
    net = cnnc_network(arch)
    x, y = data(arch, arch.batch if case == "train" else INFERENCE_IMAGES)
    if case == "train":
        return lambda: net.train_step(x, y, lr=arch.lr)
    return lambda: net.predict(x, batch_size=INFERENCE_BATCH)


def torch_call(arch, case):
    """The zero-argument call a torch worker times; it converts the NHWC array itself."""
    torch = load_torch()
    model = export.to_torch(cnnc_network(arch), arch.input_shape).to(
        memory_format=torch.channels_last)
    x, y = data(arch, arch.batch if case == "train" else INFERENCE_IMAGES)
    if case == "train":
        optimizer, loss_fn = torch_optimizer(torch, arch, model), torch.nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            loss = loss_fn(model(torch.from_numpy(x).permute(0, 3, 1, 2)), torch.from_numpy(y))
            loss.backward()
            optimizer.step()
            return loss.item()
        return step
    model.eval()

    def predict():
        with torch.no_grad():
            return torch.cat([model(torch.from_numpy(x[i:i + INFERENCE_BATCH]).permute(0, 3, 1, 2))
                              for i in range(0, len(x), INFERENCE_BATCH)]).numpy()
    return predict


def worker(library, arch_key, case, calls):
    """Time one library on one case; print the median in seconds as the last line."""
    call = (cnnc_call if library == "cnnc" else torch_call)(ARCHITECTURES[arch_key], case)
    for _ in range(UNTIMED_CALLS):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    print(f"{statistics.median(times):.7f}")


def run_worker(library, arch_key, case, calls):
    """Seconds reported by a fresh worker process; abort loudly if it fails or hangs."""
    name = f"worker {library} {arch_key} {case}"
    command = [sys.executable, os.path.abspath(__file__), "--worker", library, arch_key, case,
               "--calls", str(calls)]
    time.sleep(PAUSE)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{name} hung: killed after {WORKER_TIMEOUT} s") from None
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(arch_keys, libraries, rounds, calls):
    """Median seconds over rounds, a row per (architecture, case) and a column per library,
    the libraries taking turns."""
    times = {(a, c): {lib: [] for lib in libraries} for a in arch_keys for c in CASES}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds} ...", file=sys.stderr, flush=True)
        order = libraries if round_ % 2 == 0 else libraries[::-1]
        for (arch_key, case), per_library in times.items():
            for library in order:
                seconds = run_worker(library, arch_key, case, calls or DEFAULT_CALLS[case])
                per_library[library].append(seconds)
    return {f"{ARCHITECTURES[a].name}, {CASES[c]}": {lib: statistics.median(t) for lib, t in per.items()}
            for (a, c), per in times.items()}


def header(torch, rounds, calls):
    """Machine, versions, threads and method, for the top of the report."""
    torch_version = f"PyTorch {torch.__version__}" if torch else "PyTorch not installed"
    calls = calls or " / ".join(f"{DEFAULT_CALLS[c]} ({c})" for c in CASES)
    return (f"{cpu_name()}, {os.cpu_count()} cores\n"
            f"cnnc {cnnc.__version__} ({cnnc.kernels.IMPLEMENTATION}), "
            f"{cnnc.get_num_threads()} threads (torch set to the same); "
            f"Python {platform.python_version()}, NumPy {np.__version__}, {torch_version}\n"
            f"float32; median over {rounds} rounds of fresh worker processes taking turns, "
            f"each the median of {calls} timed calls after {UNTIMED_CALLS} untimed ones")


def selected(only):
    """Architecture keys from repeated or comma-separated --only values (default: all)."""
    keys = [key.strip() for value in only or ARCHITECTURES for key in value.split(",")]
    unknown = [key for key in keys if key not in ARCHITECTURES]
    if unknown:
        raise SystemExit(f"unknown architecture {', '.join(unknown)}; "
                         f"choose from {', '.join(ARCHITECTURES)}")
    return list(dict.fromkeys(keys))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of worker processes (median reported)")
    parser.add_argument("--calls", type=int,
                        help="timed calls per worker (default 20 per train step, 3 per inference)")
    parser.add_argument("--only", action="append", help="architectures, repeatable or "
                        f"comma-separated: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "ARCH", "CASE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        library, arch_key, case = args.worker
        return worker(library, arch_key, case, args.calls or DEFAULT_CALLS[case])
    if cnnc.backend() != "compiled":
        raise SystemExit("cnnc's compiled kernels are not running "
                         "(not built, or CNNC_BACKEND=numpy)")
    arch_keys, torch = selected(args.only), load_torch()
    print(header(torch, args.rounds, args.calls))
    if torch is None:
        print("torch is missing (pip install torch): timing cnnc alone")
    else:
        for key in arch_keys:
            count, difference = check_pair(torch, ARCHITECTURES[key])
            print(f"checked {ARCHITECTURES[key].name}: {count:,} parameters in both, "
                  f"logits within {difference:.1e}")
    print()
    libraries = LIBRARIES if torch else LIBRARIES[:1]
    rows = measure(arch_keys, libraries, args.rounds, args.calls)
    ratios = [("cnnc", "torch")] if torch else []
    print(table(rows, list(libraries), ratios, args.markdown))
    if torch:
        mean = np.exp(np.mean([np.log(row["cnnc"] / row["torch"]) for row in rows.values()]))
        print(f"\ngeometric mean of cnnc / torch: {mean:.2f}x")


if __name__ == "__main__":
    main()
