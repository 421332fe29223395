"""cnnc (compiled kernels) against PyTorch eager and ONNX Runtime on the CPU, on several
architectures, measured against the machine's own matrix-product peak.

    python benchmarks/suite.py [--rounds 5] [--calls K] [--only vgg,mlp] [--markdown]

Fresh processes taking turns: each round, for every (architecture, case), one worker
process per library (the order reverses from round to round) builds its network, makes
untimed calls, then prints the median of K timed ones; the driver reports the median over
rounds. No library inherits another's thread pools or warm caches, and a noisy machine
slows all alike. PyTorch runs in two layouts, contiguous NCHW and channels_last (model and
batch), each given its batch already in its layout; "torch best" is the faster of the two.
ONNX Runtime (inference only) runs the model cnnc.export.to_onnx writes, on the NHWC
batches cnnc takes. A ratio cnnc / X below 1 means cnnc is faster.

Beside the times the report gives:
- the peak: the float32 2048x2048 product rate of NumPy's BLAS (on cnnc's thread count)
  and of torch.mm, measured in this process before and after the rounds, the larger of
  the two medians;
- each case's effective GFLOP/s per library, its FLOPs counted as net.profile counts
  them (cnnc.profiling), and that rate as a fraction of the peak;
- from net.profile in a worker, the forward and backward GFLOP/s of every 3x3 Conv with
  at least 32 channels in and out, the convolutions the engine work is judged by;
- the rise in peak resident memory of the VGG-style net's inference (2,000 images in
  batches of 500) for cnnc, torch (channels_last) and ONNX Runtime, each in a fresh worker.
"""
import argparse
import ctypes
import glob
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

import cnnc
from cnnc import export
from cnnc import (AdamOptimizer, Conv, Flatten, FullyConnected, MaxPool, Network, SGDOptimizer,
                  SoftmaxCrossEntropy, linear, relu)
from cnnc.models import course_cnn
from cnnc.profiling import forward_flops
from common import cpu_name, table

TORCH_LAYOUTS = ("torch NCHW", "torch channels_last")
LIBRARIES = ("cnnc", *TORCH_LAYOUTS, "onnxruntime")
CASES = {"train": "train step", "infer": "inference, 2,000 images"}
UNTIMED_CALLS = 3
DEFAULT_CALLS = {"train": 20, "infer": 3}
INFERENCE_IMAGES, INFERENCE_BATCH = 2000, 1000
MEMORY_ARCH, MEMORY_IMAGES, MEMORY_BATCH = "vgg", 2000, 500
MEMORY_LIBRARIES = ("cnnc", "torch channels_last", "onnxruntime")
PEAK_SIDE, PEAK_CALLS = 2048, 5     # square float32 products, timed calls per measurement
WIDE_CHANNELS = 32                  # a "wide" 3x3 Conv has at least this many in and out
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


def has_onnxruntime():
    """Whether ONNX Runtime and the onnx package that to_onnx writes with are installed."""
    return all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime"))


def torch_layout(torch, net, arch, x, layout):
    """net's torch copy and the NHWC images x as tensors, both in `layout`: contiguous NCHW
    (a copy of x), or channels_last (x itself, seen in NCHW order)."""
    model = export.to_torch(net, arch.input_shape)
    images = torch.from_numpy(x).permute(0, 3, 1, 2)
    if layout == "torch NCHW":
        return model, images.contiguous()
    return model.to(memory_format=torch.channels_last), images


def onnx_session(net, arch):
    """ONNX Runtime on the model to_onnx writes for net (float32 NHWC input "input"): the
    CPU provider, cnnc's thread count within operators, one thread between them, sequential
    execution, every graph optimization."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cnnc.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as directory:
        path = export.to_onnx(net, os.path.join(directory, "net.onnx"), arch.input_shape)
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def check_torch(torch, arch):
    """Abort unless cnnc's network and its torch copy have the same parameter count and
    logits; return the count and the largest logit difference."""
    net = cnnc_network(arch)
    model = export.to_torch(net, arch.input_shape)
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


def check_onnx(arch):
    """The largest difference between cnnc's logits and ONNX Runtime's on its exported model,
    or the ValueError to_onnx refuses the network with; abort when they differ by more than
    1e-4."""
    net = cnnc_network(arch)
    try:
        session = onnx_session(net, arch)
    except ValueError as error:
        return error
    x, _ = data(arch, 8)
    difference = float(np.abs(net.predict(x) - session.run(["output"], {"input": x})[0]).max())
    if not difference <= 1e-4:
        raise SystemExit(f"{arch.name}: cnnc and ONNX Runtime logits differ by up to "
                         f"{difference:.2e}, more than 1e-4")
    return difference


def training_step(library, arch):
    """The zero-argument training step a worker times, on arch.batch images."""
    net = cnnc_network(arch)
    x, y = data(arch, arch.batch)
    if library == "cnnc":
        return lambda: net.train_step(x, y, lr=arch.lr)
    torch = load_torch()
    model, images = torch_layout(torch, net, arch, x, library)
    labels = torch.from_numpy(y)
    optimizer, loss_fn = torch_optimizer(torch, arch, model.train()), torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def inference(library, arch, images, batch):
    """The zero-argument call that computes the logits of `images` (NHWC float32), `batch`
    at a time; what it needs beforehand (a model, the images in its layout) is made here."""
    net = cnnc_network(arch)
    if library == "cnnc":
        return lambda: net.predict(images, batch_size=batch)
    if library == "onnxruntime":
        session = onnx_session(net, arch)
        return lambda: np.concatenate([session.run(["output"], {"input": images[i:i + batch]})[0]
                                       for i in range(0, len(images), batch)])
    torch = load_torch()
    model, tensor = torch_layout(torch, net, arch, images, library)

    def predict():
        with torch.no_grad():
            return torch.cat([model(part) for part in tensor.split(batch)]).numpy()
    return predict


def median_seconds(call, calls):
    """The median time of `calls` calls, after UNTIMED_CALLS untimed ones."""
    for _ in range(UNTIMED_CALLS):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def is_wide_3x3(layer):
    """A Conv with a 3x3 filter and at least WIDE_CHANNELS channels in and out."""
    return (isinstance(layer, Conv) and tuple(layer.fshape[:2]) == (3, 3)
            and min(layer.fshape[2:]) >= WIDE_CHANNELS)


def profile_figures(arch):
    """net.profile of a training step on arch.batch images: the step's FLOPs, and for each
    wide 3x3 Conv its name and forward and backward GFLOP/s."""
    net = cnnc_network(arch)
    profile = net.profile(*data(arch, arch.batch))
    convs = [[f"{row.name} {'x'.join(map(str, layer.fshape[:2]))} "
              f"{layer.fshape[2]}->{layer.fshape[3]}", row.forward_gflops, row.backward_gflops]
             for layer, row in zip(net.layers, profile.rows) if is_wide_3x3(layer)]
    return {"flops": profile.total.forward_flops + profile.total.backward_flops, "convs": convs}


def status_kib(field):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def memory_rise(library, arch):
    """MiB by which inference on MEMORY_IMAGES images, MEMORY_BATCH at a time, raises the
    process's peak resident memory above what it holds with the images and model made:
    the peak is reset first (/proc/self/clear_refs), so setting up counts for nothing."""
    images, _ = data(arch, MEMORY_IMAGES)
    call = inference(library, arch, images, MEMORY_BATCH)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status_kib("VmHWM")
    call()
    return (status_kib("VmHWM") - before) / 1024


def worker(library, arch_key, case, calls):
    """One measurement, printed as JSON on the last line: the median seconds of a call
    (train, infer), net.profile's figures (profile) or the rise in peak memory (memory)."""
    arch = ARCHITECTURES[arch_key]
    if case == "profile":
        result = profile_figures(arch)
    elif case == "memory":
        result = memory_rise(library, arch)
    elif case == "train":
        result = median_seconds(training_step(library, arch), calls)
    else:
        images, _ = data(arch, INFERENCE_IMAGES)
        result = median_seconds(inference(library, arch, images, INFERENCE_BATCH), calls)
    print(json.dumps(result))


def run_worker(library, arch_key, case, calls):
    """What a fresh worker process reports; abort loudly if it fails or hangs."""
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
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(libraries, rounds, calls):
    """Median seconds over rounds for each (architecture, case) and each of its libraries
    (`libraries` maps the pair to them), the libraries taking turns."""
    times = {pair: {lib: [] for lib in libs} for pair, libs in libraries.items()}
    for round_ in range(rounds):
        print(f"round {round_ + 1}/{rounds} ...", file=sys.stderr, flush=True)
        for (arch_key, case), per_library in times.items():
            order = list(per_library) if round_ % 2 == 0 else list(per_library)[::-1]
            for library in order:
                seconds = run_worker(library, arch_key, case, calls or DEFAULT_CALLS[case])
                per_library[library].append(seconds)
    return {pair: {lib: statistics.median(t) for lib, t in per.items()}
            for pair, per in times.items()}


def set_numpy_blas_threads(count):
    """Set the thread count of the OpenBLAS NumPy's wheel ships (found as cnnc's _blas.pxi
    finds it); False when there is none."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    for path in glob.glob(os.path.join(root, "numpy.libs", "*openblas*")):
        library = ctypes.CDLL(path)
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_"):
            if hasattr(library, name):
                getattr(library, name)(count)
                return True
    return False


def product_rates(torch):
    """GFLOP/s of PEAK_CALLS float32 PEAK_SIDE^2 products (after one untimed) per contender:
    NumPy's BLAS and, when installed, torch.mm."""
    rng = np.random.default_rng(2)
    a, b = (rng.random((PEAK_SIDE, PEAK_SIDE), dtype=np.float32) for _ in range(2))
    contenders = {"NumPy sgemm": lambda: a @ b}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        contenders["torch.mm"] = lambda: torch.mm(ta, tb)
    flops = 2 * PEAK_SIDE ** 3
    rates = {}
    for name, call in contenders.items():
        call()
        rates[name] = []
        for _ in range(PEAK_CALLS):
            start = time.perf_counter()
            call()
            rates[name].append(flops / (time.perf_counter() - start) / 1e9)
    return rates


def case_flops(arch, case):
    """FLOPs of one timed call as net.profile counts them (cnnc.profiling's docstring): the
    forward of each layer on INFERENCE_IMAGES images (infer); for a training step on
    arch.batch images, also the backward: twice the forward above the first layer with
    parameters, once at it, nothing below it."""
    net = cnnc_network(arch)
    samples = arch.batch if case == "train" else INFERENCE_IMAGES
    first = next(depth for depth, layer in enumerate(net.layers) if layer.params)
    shape, total = arch.input_shape, 0
    for depth, layer in enumerate(net.layers):
        shape = layer.output_shape(shape)
        products = 1 + ((depth >= first) + (depth > first) if case == "train" else 0)
        total += products * forward_flops(layer, samples, shape)
    return total


def rate(flops, seconds, peak):
    """flops done in seconds, in GFLOP/s, and that as a fraction of peak (GFLOP/s)."""
    gflops = flops / seconds / 1e9
    return f"{gflops:.1f} ({gflops / peak:.0%})"


def header(torch, rounds, calls, blas_threads_set):
    """Machine, versions, threads and method, for the top of the report."""
    torch_version = f"PyTorch {torch.__version__}" if torch else "PyTorch not installed"
    if has_onnxruntime():
        import onnxruntime
        ort_version = f"ONNX Runtime {onnxruntime.__version__}"
    else:
        ort_version = "ONNX Runtime not installed"
    threads = cnnc.get_num_threads()
    blas = (f"NumPy's OpenBLAS set to {threads} for the peak" if blas_threads_set
            else "NumPy's BLAS on its own thread count")
    calls = calls or " / ".join(f"{DEFAULT_CALLS[c]} ({c})" for c in CASES)
    return (f"{cpu_name()}, {os.cpu_count()} cores\n"
            f"cnnc {cnnc.__version__} ({cnnc.kernels.IMPLEMENTATION}), {threads} threads "
            f"(torch and ONNX Runtime set to the same; {blas})\n"
            f"Python {platform.python_version()}, NumPy {np.__version__}, {torch_version}, "
            f"{ort_version}\n"
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


def checked_libraries(arch_keys, torch, onnx):
    """The libraries each (architecture, case) is timed on, once each network's copies are
    checked against cnnc (printing what was checked, and why ONNX Runtime skips a network)."""
    libraries = {}
    for key in arch_keys:
        arch, checks, exported = ARCHITECTURES[key], [], False
        if torch is not None:
            count, difference = check_torch(torch, arch)
            checks.append(f"{count:,} parameters in cnnc and torch, logits within {difference:.1e}")
        if onnx:
            outcome = check_onnx(arch)
            exported = not isinstance(outcome, ValueError)
            checks.append(f"ONNX Runtime logits within {outcome:.1e}" if exported
                          else f"ONNX Runtime skipped, to_onnx refuses: {outcome}")
        if checks:
            print(f"checked {arch.name}: {'; '.join(checks)}")
        libraries[key, "train"] = ("cnnc", *(TORCH_LAYOUTS if torch is not None else ()))
        libraries[key, "infer"] = libraries[key, "train"] + (("onnxruntime",) if exported else ())
    return libraries


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of worker processes (median reported)")
    parser.add_argument("--calls", type=int,
                        help="timed calls per worker (default 20 per train step, 3 per inference)")
    parser.add_argument("--only", action="append", help="architectures, repeatable or "
                        f"comma-separated: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "ARCH", "CASE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        library, arch_key, case = args.worker
        return worker(library, arch_key, case, args.calls or DEFAULT_CALLS.get(case))
    if cnnc.backend() != "compiled":
        raise SystemExit("cnnc's compiled kernels are not running "
                         "(not built, or CNNC_BACKEND=numpy)")
    arch_keys, torch, onnx = selected(args.only), load_torch(), has_onnxruntime()
    blas_threads_set = set_numpy_blas_threads(cnnc.get_num_threads())
    print(header(torch, args.rounds, args.calls, blas_threads_set))
    if torch is None:
        print("torch is missing (pip install torch): no torch columns")
    if not onnx:
        print("onnxruntime or onnx is missing (pip install onnx onnxruntime): "
              "no onnxruntime column")
    libraries = checked_libraries(arch_keys, torch, onnx)

    print("measuring the peak ...", file=sys.stderr, flush=True)
    rates = product_rates(torch)
    print("profiling ...", file=sys.stderr, flush=True)
    profiles = {key: run_worker("cnnc", key, "profile", 1) for key in arch_keys}
    for key, figures in profiles.items():        # the effective rates count as net.profile
        ours = case_flops(ARCHITECTURES[key], "train")
        if figures["flops"] != ours:
            raise SystemExit(f"{ARCHITECTURES[key].name}: net.profile counts {figures['flops']:,} "
                             f"FLOPs per training step, case_flops {ours:,}")
    times = measure(libraries, args.rounds, args.calls)
    memory = {}
    if MEMORY_ARCH in arch_keys and os.path.exists("/proc/self/clear_refs"):
        print("measuring memory ...", file=sys.stderr, flush=True)
        memory = {lib: run_worker(lib, MEMORY_ARCH, "memory", 1)
                  for lib in MEMORY_LIBRARIES if lib in libraries[MEMORY_ARCH, "infer"]}
    for name, after in product_rates(torch).items():
        rates[name] += after
    print()
    report(rates, times, profiles, memory, args.markdown)


def report(rates, times, profiles, memory, markdown):
    """Print the peak, the times, the effective rates, the wide convolutions and the memory
    tables from what main measured."""
    peaks = {name: statistics.median(r) for name, r in rates.items()}
    peak = max(peaks.values())
    print(f"peak: float32 {PEAK_SIDE}x{PEAK_SIDE} products, GFLOP/s (median of {PEAK_CALLS} "
          f"before and {PEAK_CALLS} after the rounds); the larger is the peak, {peak:.1f} GFLOP/s")
    print(table({name: {"before": f"{statistics.median(r[:PEAK_CALLS]):.1f}",
                        "after": f"{statistics.median(r[PEAK_CALLS:]):.1f}",
                        "median": f"{peaks[name]:.1f}"} for name, r in rates.items()},
                [], [], markdown, texts=("before", "after", "median")))

    rows = {}
    for (arch_key, case), row in times.items():
        measured = [layout for layout in TORCH_LAYOUTS if layout in row]
        if measured:
            faster = min(measured, key=row.get)
            row = {**row, "torch best": row[faster], "faster layout": faster.removeprefix("torch ")}
        rows[f"{ARCHITECTURES[arch_key].name}, {CASES[case]}"] = row
    columns = [lib for lib in LIBRARIES if any(lib in row for row in rows.values())]
    ratios = [(a, b) for a, b in (("cnnc", "torch best"), ("cnnc", "onnxruntime"))
              if any(b in row for row in rows.values())]
    print()
    won = ("faster layout",) if any("torch best" in row for row in rows.values()) else ()
    print(table(rows, columns, ratios, markdown, texts=won))
    for a, b in ratios:
        quotients = [row[a] / row[b] for row in rows.values() if b in row]
        mean = np.exp(np.mean(np.log(quotients)))
        print(f"geometric mean of {a} / {b}: {mean:.2f}x over {len(quotients)} cases")

    print(f"\neffective GFLOP/s (fraction of the {peak:.1f} GFLOP/s peak); FLOPs per call as "
          "net.profile counts them")
    effective = {}
    for (arch_key, case), row in times.items():
        flops = case_flops(ARCHITECTURES[arch_key], case)
        effective[f"{ARCHITECTURES[arch_key].name}, {CASES[case]}"] = {
            "GFLOP": f"{flops / 1e9:.3f}",
            **{lib: rate(flops, seconds, peak) for lib, seconds in row.items()}}
    print(table(effective, [], [], markdown, texts=("GFLOP", *columns)))

    convs = {f"{ARCHITECTURES[key].name}, {name}": {
        "fwd GFLOP/s": f"{forward:.1f}", "fwd of peak": f"{forward / peak:.0%}",
        "bwd GFLOP/s": f"{backward:.1f}", "bwd of peak": f"{backward / peak:.0%}"}
        for key, figures in profiles.items() for name, forward, backward in figures["convs"]}
    print(f"\nnet.profile of a training step, 3x3 Conv layers with >= {WIDE_CHANNELS} channels "
          "in and out")
    if convs:
        print(table(convs, [], [], markdown,
                    texts=("fwd GFLOP/s", "fwd of peak", "bwd GFLOP/s", "bwd of peak")))
    else:
        print("(none in the networks measured)")

    if memory:
        print(f"\npeak memory of inference, {ARCHITECTURES[MEMORY_ARCH].name}: {MEMORY_IMAGES:,} "
              f"images in batches of {MEMORY_BATCH}, rise of peak RSS above the input's, "
              "one fresh worker each")
        print(table({lib: {"MiB": f"{mib:.1f}"} for lib, mib in memory.items()}, [], [],
                    markdown, texts=("MiB",)))


if __name__ == "__main__":
    main()
