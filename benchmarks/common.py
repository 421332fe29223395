"""What bench.py and suite.py share: the machine's name, the tables, and a cnnc network
rebuilt in PyTorch. It imports no torch itself, so a cnnc-only process stays free of it."""
import os
import platform

import numpy as np

from cnnc import AvgPool, BatchNorm, Conv, Dropout, Flatten, GlobalAvgPool, MaxPool
from cnnc.activations import LeakyReLU, Linear, ReLU


def cpu_name():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def table(rows, columns, ratios, markdown):
    """Times in ms per column (rows hold seconds), then each ratio (a, b) as time a / time b."""
    header = ["case"] + [f"{c} ms" for c in columns] + [f"{a} / {b}" for a, b in ratios]
    lines = [header]
    for name, result in rows.items():
        times = [f"{1e3 * result[c]:.2f}" for c in columns]
        lines.append([name] + times + [f"{result[a] / result[b]:.2f}x" for a, b in ratios])
    if markdown:
        out = ["| " + " | ".join(line) + " |" for line in lines]
        out.insert(1, "|" + "---|" * len(header))
        return "\n".join(out)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def torch_model(torch, net, input_shape):
    """The cnnc network as a torch.nn.Sequential taking NCHW input, with the same weights.

    Filters go from (kh, kw, c_in, c_out) to (c_out, c_in, kh, kw), FC weights from
    (in, out) to (out, in); the FC after a Flatten also has its inputs reordered,
    because cnnc flattens (H, W, C) and torch (C, H, W).
    """
    nn, shape, modules, flattened = torch.nn, input_shape, [], None
    with torch.no_grad():
        for layer in net.layers:
            if isinstance(layer, Conv):
                kh, kw, c_in, c_out = layer.fshape
                top, bottom, left, right = layer.pads(*shape[:2])
                if (top, left) != (bottom, right):
                    raise SystemExit(f"{layer!r}: asymmetric padding has no nn.Conv2d equivalent")
                module = nn.Conv2d(c_in, c_out, (kh, kw), stride=layer.strides, padding=(top, left))
                filters = layer.params["w"].transpose(3, 2, 0, 1)
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(filters)))
            elif isinstance(layer, AvgPool):
                module = nn.AvgPool2d(layer.pshape, layer.strides)
            elif isinstance(layer, MaxPool):
                module = nn.MaxPool2d(layer.pshape, layer.strides)
            elif isinstance(layer, GlobalAvgPool):
                module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            elif isinstance(layer, Dropout):
                module = nn.Dropout(layer.rate)
            elif isinstance(layer, Flatten):
                module, flattened = nn.Flatten(), tuple(shape)
            elif isinstance(layer, BatchNorm):
                kind = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
                module = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
                module.weight.copy_(torch.from_numpy(layer.params["w"]))
                module.running_mean.copy_(torch.from_numpy(layer.running_mean))
                module.running_var.copy_(torch.from_numpy(layer.running_var))
            else:
                w = layer.params["w"]
                if flattened is not None:
                    order = np.arange(w.shape[0]).reshape(flattened)
                    w = w[order.transpose(np.roll(np.arange(len(flattened)), 1)).ravel()]
                module, flattened = nn.Linear(*layer.shape), None
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            if "b" in layer.params:
                module.bias.copy_(torch.from_numpy(layer.params["b"]))
            modules += [module] + _torch_activation(nn, layer.activation)
            shape = layer.output_shape(shape)
    return nn.Sequential(*modules)


def _torch_activation(nn, activation):
    """The torch modules for a cnnc activation: [] for linear."""
    modules = {Linear: lambda: [], ReLU: lambda: [nn.ReLU()],
               LeakyReLU: lambda: [nn.LeakyReLU(activation.slope)]}
    return modules[type(activation)]()
