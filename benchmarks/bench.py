"""Side-by-side timings: compiled kernels vs NumPy kernels vs PyTorch (when installed).

    python benchmarks/bench.py [--rounds 9] [--markdown]

Contenders take turns in rounds of a few back-to-back calls each, and each row reports
the median of the timed calls, so a noisy machine slows all contenders alike. A ratio
a / b is a's time over b's: "numpy / compiled" is the compiled kernels' speedup,
"compiled / torch" below 1 means cnnc is faster than PyTorch.
"""
import argparse
import contextlib
import importlib
import os
import platform
import time

import numpy as np

import cnnc
from cnnc import export
from cnnc import _numpy_kernels, kernels
from cnnc.models import course_cnn
from common import cpu_name, table

# The compiled build cnnc runs here: the best the CPU runs (cnnc._builds), or CNNC_ISA's.
compiled_kernels = importlib.import_module(kernels.IMPLEMENTATION) if kernels.BACKEND == "compiled" else None

try:
    import torch
except ImportError:
    torch = None

KERNEL_NAMES = [name for name in dir(kernels)
                if not name.startswith("_") and callable(getattr(kernels, name))]


@contextlib.contextmanager
def backend(module):
    """Run cnnc's layers on the kernels of `module` for the duration of the block."""
    saved = {name: getattr(kernels, name) for name in KERNEL_NAMES}
    for name in KERNEL_NAMES:
        setattr(kernels, name, getattr(module, name))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(kernels, name, function)


def medians(contenders, rounds, block=4, untimed=2, pause=0.1):
    """Median seconds of each zero-argument callable.

    Each round runs every contender for a block of back-to-back calls, in an order that
    rotates from round to round. Before a block the machine rests for `pause` seconds
    and the first `untimed` calls of the block are not timed: the thread pools the
    contender before left spinning (OpenBLAS's, OpenMP's) have gone to sleep, and this
    contender's own have woken up. A noisy machine thus slows all contenders alike, and
    each is measured in its steady state, as in a training loop.
    """
    names = list(contenders)
    times = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(pause)
            for call in range(block):
                start = time.perf_counter()
                contenders[name]()
                if call >= untimed:
                    times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def kernel_cases(rng):
    """Each kernel on the course CNN's shapes at batch 50, float32."""
    f32 = np.float32
    x1 = rng.random((50, 28, 28, 1), dtype=f32)
    w1 = rng.standard_normal((3, 3, 1, 16), dtype=f32)
    x2 = rng.random((50, 26, 26, 16), dtype=f32)
    w2 = rng.standard_normal((4, 4, 16, 32), dtype=f32)
    dy2 = rng.standard_normal((50, 12, 12, 32), dtype=f32)
    pool_dy = rng.standard_normal((50, 6, 6, 32), dtype=f32)
    _, argmax = _numpy_kernels.maxpool2d_forward(dy2, (2, 2), (2, 2))
    b16, b32 = np.zeros(16, f32), np.zeros(32, f32)
    shape = (1152, 256)
    adam_state = [rng.standard_normal(shape, dtype=f32), rng.standard_normal(shape, dtype=f32),
                  np.zeros(shape, f32), np.zeros(shape, f32)]
    none = (0, 0, 0, 0)
    return {
        "conv 3x3 1->16 forward": lambda k: k.conv2d_forward(x1, w1, b16, (1, 1), none),
        "conv 3x3 1->16 grad params": lambda k: k.conv2d_grad_params(x1, x2, (3, 3), (1, 1), none),
        "conv 4x4 16->32 s2 forward": lambda k: k.conv2d_forward(x2, w2, b32, (2, 2), none),
        "conv 4x4 16->32 s2 grad input": lambda k: k.conv2d_grad_input(dy2, w2, x2.shape, (2, 2), none),
        "conv 4x4 16->32 s2 grad params": lambda k: k.conv2d_grad_params(x2, dy2, (4, 4), (2, 2), none),
        "max pool 2 forward": lambda k: k.maxpool2d_forward(dy2, (2, 2), (2, 2)),
        "max pool 2 backward": lambda k: k.maxpool2d_backward(pool_dy, argmax, dy2.shape),
        "Adam 1152x256": lambda k: k.adam_update(*adam_state, 1e-3, 0.9, 0.999, 1e-8, 10),
    }


def network_cases(rng):
    """Training steps at batch 50 and 256, and inference over 10,000 images."""
    cases = {}
    for batch in (50, 256):
        x = rng.random((batch, 28, 28, 1), dtype=np.float32)
        y = rng.integers(0, 10, batch)
        net = course_cnn()
        contenders = {
            "compiled": lambda net=net, x=x, y=y: net.train_step(x, y, lr=1e-3),
            "numpy": lambda net=net, x=x, y=y: net.train_step(x, y, lr=1e-3),
        }
        if torch is not None:
            model = export.to_torch(net, (28, 28, 1))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            tx, ty = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)

            def torch_step(model=model, optimizer=optimizer, tx=tx, ty=ty):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(tx), ty)
                loss.backward()
                optimizer.step()
                return loss.item()

            contenders["torch"] = torch_step
        cases[f"train step, batch {batch}"] = contenders

    x = rng.random((10000, 28, 28, 1), dtype=np.float32)
    net = course_cnn()
    contenders = {"compiled": lambda: net.predict(x, batch_size=1000),
                  "numpy": lambda: net.predict(x, batch_size=1000)}
    if torch is not None:
        model = export.to_torch(net, (28, 28, 1))
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

        def torch_predict():
            with torch.no_grad():
                return torch.cat([model(batch) for batch in tx.split(1000)]).numpy()

        contenders["torch"] = torch_predict
    cases["inference, 10,000 images"] = contenders
    return cases


def machine():
    versions = f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch else "")
    threads = f", torch threads {torch.get_num_threads()}" if torch else ""
    return f"{cpu_name()}, {os.cpu_count()} cores{threads}; Python {platform.python_version()}, {versions}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="rounds per case (median reported)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()
    if compiled_kernels is None:
        raise SystemExit("the compiled kernels are not running (not built, or CNNC_BACKEND=numpy): "
                         "pip install . with a C compiler present")
    rng = np.random.default_rng(0)
    np.random.seed(0)
    print(f"cnnc {cnnc.__version__} on {machine()}")
    print(f"compiled kernels: {compiled_kernels.__name__}")
    print(f"float32; medians of {args.rounds} interleaved rounds of 2 timed calls after 2 untimed "
          "ones (inference: a third of the rounds)\n")

    kernel_rows = {}
    for name, call in kernel_cases(rng).items():
        kernel_rows[name] = medians({"compiled": lambda: call(compiled_kernels),
                                     "numpy": lambda: call(_numpy_kernels)}, args.rounds)
    print(table(kernel_rows, ["compiled", "numpy"], [("numpy", "compiled")], args.markdown))
    print()

    network_rows = {}
    for name, contenders in network_cases(rng).items():
        rounds = max(3, args.rounds // 3) if name.startswith("inference") else args.rounds
        wrapped = {}
        for who, run in contenders.items():
            module = {"compiled": compiled_kernels, "numpy": _numpy_kernels}.get(who)
            wrapped[who] = (lambda run=run, module=module: _run_on(module, run)) if module else run
        network_rows[name] = medians(wrapped, rounds)
    columns = ["compiled", "numpy"] + (["torch"] if torch is not None else [])
    ratios = [("numpy", "compiled")] + ([("compiled", "torch")] if torch is not None else [])
    print(table(network_rows, columns, ratios, args.markdown))


def _run_on(module, run):
    with backend(module):
        run()


if __name__ == "__main__":
    main()
