"""Network.profile: where a training step spends its time, layer by layer.

A profile times the pass a training step makes (forward through the layers, the loss,
backward in reverse: Network.loss_and_grads' pass, without the optimizer's update), with
time.perf_counter around each layer's forward and each layer's backward, and takes the
median of each over several passes. Beside each time it puts the layer's arithmetic, so
that a slow layer can be told from a busy one:

    FLOPs count the multiply-adds of the matrix products, 2 FLOPs each: a convolution's
    forward is 2*N*OH*OW*kh*kw*C*F, a fully connected layer's 2*N*in*out. Their backward
    is two products of the same size, the input gradient and the weight gradient, so
    twice the forward; the first layer with parameters computes no input gradient (there
    is nothing below it to learn), so its backward is once the forward, and the layers
    below it do no backward at all. Bias adds, activations, pooling, batch normalization,
    dropout, flatten and the loss do a few operations per value, bounded by memory rather
    than arithmetic: they count 0 FLOPs, and the table shows "-" for their GFLOP/s.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import numpy as np

from . import _checks, kernels
from .layers import Conv, FullyConnected, Layer

# Far more passes than a profile needs.
_MAX_REPEATS = 2**31 - 1


@dataclass(frozen=True)
class Row:
    """One line of a Profile: a layer, the loss, or the total.

    name: "depth: Kind" for a layer ("0: Conv"), "loss: Kind" for the loss, "total".
    forward_ms, backward_ms: the median time of the forward and of the backward, in ms.
    forward_flops, backward_flops: the FLOPs of each (see cnnc.profiling).
    forward_gflops, backward_gflops: FLOPs per second, in GFLOP/s (0.0 without FLOPs).
    share: (forward_ms + backward_ms) over the step's, the total row's (1.0 for the total).
    """

    name: str
    forward_ms: float
    backward_ms: float
    forward_flops: int
    backward_flops: int
    forward_gflops: float
    backward_gflops: float
    share: float


@dataclass(frozen=True, eq=False)
class Profile:
    """What Network.profile measured; str(profile) is a table with one line per row and
    a total line.

    rows: one Row per layer in order, then one for the loss.
    total: the sums of the rows' times and FLOPs, and the GFLOP/s those make.
    samples: the batch's size; repeats: the passes each median is taken over.
    backend, threads: the kernels that ran (cnnc.backend()) and their thread count.
    """

    rows: List[Row]
    total: Row
    samples: int
    repeats: int
    backend: str
    threads: int

    def __str__(self):
        header = ("layer", "fwd ms", "bwd ms", "fwd FLOPs", "bwd FLOPs", "fwd GFLOP/s",
                  "bwd GFLOP/s", "share")
        table = [header, *(_cells(row) for row in self.rows), _cells(self.total)]
        widths = [max(len(cells[i]) for cells in table) for i in range(len(header))]
        lines = ["  ".join([cells[0].ljust(widths[0])]      # names to the left, numbers right
                           + [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])
                 for cells in table]
        rule = "-" * len(lines[0])
        title = (f"profile of a training step on {self.samples} samples: median of "
                 f"{self.repeats} passes, {self.backend} kernels")
        if self.backend == "compiled":      # the NumPy kernels run on NumPy's own threads
            title += f" on {self.threads} thread{'s' if self.threads != 1 else ''}"
        return "\n".join([title, lines[0], rule, *lines[1:-1], rule, lines[-1]])


def _cells(row):
    """A row as the table shows it: times in ms, FLOPs with an SI prefix, the share in %."""
    def rate(gflops, flops):
        return f"{gflops:.1f}" if flops else "-"
    return (row.name, f"{row.forward_ms:.3f}", f"{row.backward_ms:.3f}",
            _si(row.forward_flops), _si(row.backward_flops),
            rate(row.forward_gflops, row.forward_flops),
            rate(row.backward_gflops, row.backward_flops), f"{100 * row.share:.1f}%")


def _si(count):
    """A count with an SI prefix and 3 significant digits: 0, 950, 14.5k, 925M, 1.23G."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{prefix}"
    return str(count)


# ---------------------------------------------------------------- FLOPs per layer kind

def _conv_flops(layer: Conv, samples: int, output_shape: tuple) -> int:
    """2*N*OH*OW*kh*kw*C*F: each output value is kh*kw*C multiply-adds."""
    kh, kw, c, f = layer.fshape
    oh, ow, _ = output_shape
    return 2 * samples * oh * ow * kh * kw * c * f


def _fully_connected_flops(layer: FullyConnected, samples: int, output_shape: tuple) -> int:
    """2*N*in*out: each output value is `in` multiply-adds."""
    n_in, n_out = layer.shape
    return 2 * samples * n_in * n_out


# The forward FLOPs of each layer kind that multiplies matrices, from the layer, the batch's
# size and one sample's output shape; its backward makes one product of the same size for
# each gradient it computes. A kind not here (or a subclass of one) counts 0.
FORWARD_FLOPS: Dict[type, Callable[[Layer, int, tuple], int]] = {
    Conv: _conv_flops,
    FullyConnected: _fully_connected_flops,
}


def forward_flops(layer: Layer, samples: int, output_shape: tuple) -> int:
    """The FLOPs of layer's forward on a batch of `samples` with outputs of output_shape."""
    for kind in type(layer).__mro__:
        if kind in FORWARD_FLOPS:
            return FORWARD_FLOPS[kind](layer, samples, output_shape)
    return 0


# ---------------------------------------------------------------- measuring

def profile(net, x, y, repeats: int = 10) -> Profile:
    """Network.profile(x, y, repeats): see its docstring."""
    repeats = _checks.integer("repeats", repeats, 1, _MAX_REPEATS)
    # A copy takes every change a training pass makes: the inputs and masks layers keep
    # for backward, BatchNorm's pending statistics, Dropout's generators, a Flatten()
    # fixing its shape, the network's input_shape.
    net = copy.deepcopy(net)
    x, y = net._batch(x, y)
    first = net._first_with_params()
    with kernels.memory_pool(), net._mode(training=True):
        _timed_pass(net, x, y, first)       # untimed: first calls allocate and start threads
        times = np.array([_timed_pass(net, x, y, first) for _ in range(repeats)])
    forward_ms, backward_ms = (np.median(times, axis=0) * 1e3).T
    flops = _flops(net, len(x), first)
    step_ms = float(forward_ms.sum() + backward_ms.sum())
    names = [f"{depth}: {type(layer).__name__}" for depth, layer in enumerate(net.layers)]
    names.append(f"loss: {type(net.loss).__name__}")
    rows = [_row(name, f_ms, b_ms, f_flops, b_flops, step_ms)
            for name, f_ms, b_ms, (f_flops, b_flops) in zip(names, forward_ms, backward_ms, flops)]
    total = _row("total", float(forward_ms.sum()), float(backward_ms.sum()),
                 sum(f for f, _ in flops), sum(b for _, b in flops), step_ms)
    return Profile(rows, total, len(x), repeats, kernels.BACKEND, kernels.get_num_threads())


def _timed_pass(net, x, y, first):
    """The pass Network.loss_and_grads makes, with the seconds of each layer's forward and
    backward, then the loss's compute and deriv: a list of (forward, backward), one per
    layer and the last for the loss. A layer below `first` does no backward (0.0)."""
    clock = time.perf_counter
    times = []
    stack = []
    activation = x
    for layer in net.layers:
        start = clock()
        kept, output = layer.train_forward(activation)
        times.append([clock() - start, 0.0])
        stack.append((activation, kept))
        activation = output
    start = clock()
    net.loss.compute(activation, y)
    middle = clock()
    upstream = net.loss.deriv(activation, y)
    times.append([middle - start, clock() - middle])

    for depth in range(len(net.layers) - 1, first - 1, -1):
        layer = net.layers[depth]
        inputs, kept = stack[depth]
        start = clock()
        layer_err = layer.activation.backward(kept, upstream)
        layer.get_grad(inputs, layer_err)
        if depth > first:
            upstream = layer.backward(layer_err)
        times[depth][1] = clock() - start
    return times


def _flops(net, samples, first):
    """(forward, backward) FLOPs of each layer, then (0, 0) for the loss: a backward makes
    the weight gradient at `first` and above, and the input gradient above `first`."""
    flops = []
    shape = net.input_shape
    for depth, layer in enumerate(net.layers):
        shape = layer.output_shape(shape)
        forward = forward_flops(layer, samples, shape)
        products = (depth >= first) + (depth > first)
        flops.append((forward, products * forward))
    flops.append((0, 0))
    return flops


def _row(name, forward_ms, backward_ms, forward_flops, backward_flops, step_ms):
    """A Row of Python numbers, its rates and share computed from its times and FLOPs."""
    forward_ms, backward_ms = float(forward_ms), float(backward_ms)
    return Row(name, forward_ms, backward_ms, int(forward_flops), int(backward_flops),
               _gflops(forward_flops, forward_ms), _gflops(backward_flops, backward_ms),
               (forward_ms + backward_ms) / step_ms if step_ms > 0 else 0.0)


def _gflops(flops, ms):
    """FLOPs done in ms milliseconds, in GFLOP/s (0.0 where there are none, or no time)."""
    return flops / (ms * 1e6) if flops and ms > 0 else 0.0
