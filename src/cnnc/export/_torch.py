"""A cnnc network as a torch.nn.Sequential of standard modules, and back.

cnnc holds images NHWC and flattens them in that order; torch holds them NCHW. The
weights are transposed to torch's layouts, and the features a Flatten makes are reordered
in the layers that read them, so that the module computes what the network does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from numpy.typing import DTypeLike

from .. import layers as cnnc_layers
from ..activations import LeakyReLU, Linear, ReLU, Sigmoid, Tanh

if TYPE_CHECKING:
    import torch

    from ..network import Network

_NEEDS = "cnnc.export.{} needs PyTorch: pip install 'cnnc[torch]'"


def to_torch(net: Network, input_shape: Sequence[int] | None = None) -> torch.nn.Sequential:
    """A torch.nn.Sequential with the weights of the network `net` (copies, in its dtype),
    taking NCHW input, in eval mode: its output equals net.predict on the NHWC transpose.

    input_shape: one sample's shape, e.g. (28, 28, 1); None takes the one the network last
        saw. It fixes "same" padding and the feature order after a Flatten.

    Raises ImportError without torch, ValueError when no input shape is known or for a
    layer or activation torch has no module for.
    """
    torch = _torch("to_torch")
    nn = torch.nn
    shape = _input_shape(net, input_shape)
    modules, order = [], None          # order: NHWC position of each NCHW-flattened feature
    dtype = torch.float64 if np.dtype(net.dtype) == np.float64 else torch.float32
    with torch.no_grad():
        for layer in net.layers:
            made, order = _module(torch, layer, shape, order, dtype)
            modules += made + _activation(nn, layer)
            shape = layer.output_shape(shape)
    if order is not None:
        raise ValueError("to_torch: a Flatten of images must be followed by a FullyConnected, "
                         "which takes cnnc's NHWC feature order (torch flattens NCHW)")
    return nn.Sequential(*modules).eval()


def _module(torch, layer, shape, order, dtype):
    """The torch modules for one layer, in dtype, and the feature order the next layers read."""
    nn, tensor = torch.nn, _tensor(torch)
    if isinstance(layer, cnnc_layers.Conv):
        kh, kw, c_in, c_out = layer.fshape
        top, bottom, left, right = layer.pads(*shape[:2])
        symmetric = (top, left) == (bottom, right)
        conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=layer.strides,
                         padding=(top, left) if symmetric else 0, dtype=dtype)
        conv.weight.copy_(tensor(layer.params["w"].transpose(3, 2, 0, 1)))
        conv.bias.copy_(tensor(layer.params["b"]))
        return ([conv] if symmetric else [nn.ZeroPad2d((left, right, top, bottom)), conv]), None
    if isinstance(layer, cnnc_layers.AvgPool):
        return [nn.AvgPool2d(layer.pshape, layer.strides)], None
    if isinstance(layer, cnnc_layers.MaxPool):
        return [nn.MaxPool2d(layer.pshape, layer.strides)], None
    if isinstance(layer, cnnc_layers.GlobalAvgPool):
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()], None
    if isinstance(layer, cnnc_layers.Flatten):
        if len(shape) == 3 and shape[:2] != (1, 1):
            h, w, c = shape
            return [nn.Flatten()], np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()
        return [nn.Flatten()], order
    if isinstance(layer, cnnc_layers.Dropout):
        return [nn.Dropout(layer.rate)], order
    if isinstance(layer, cnnc_layers.BatchNorm):
        kind = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        norm = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
        pick = slice(None) if order is None else order
        for name, value in (("weight", layer.params["w"]), ("bias", layer.params["b"]),
                            ("running_mean", layer.running_mean), ("running_var", layer.running_var)):
            getattr(norm, name).copy_(tensor(value[pick]))
        return [norm], order
    if isinstance(layer, cnnc_layers.FullyConnected):
        w = layer.params["w"] if order is None else layer.params["w"][order]
        linear = nn.Linear(*layer.shape, dtype=dtype)
        linear.weight.copy_(tensor(w.T))
        linear.bias.copy_(tensor(layer.params["b"]))
        return [linear], None
    raise ValueError(f"to_torch: {type(layer).__name__} is not one of cnnc's layers")


def _activation(nn, layer):
    activation = layer.activation
    if type(activation) is Linear:
        return []
    if type(activation) is LeakyReLU:
        return [nn.LeakyReLU(activation.slope)]
    known = {ReLU: nn.ReLU, Sigmoid: nn.Sigmoid, Tanh: nn.Tanh}
    if type(activation) not in known:
        raise ValueError(f"to_torch: the activation {activation!r} has no torch module")
    return [known[type(activation)]()]


def from_torch(module: torch.nn.Sequential, input_shape: Sequence[int] | None = None,
               dtype: DTypeLike | None = None) -> Network:
    """The cnnc Network that computes what `module`, a torch.nn.Sequential of the modules
    to_torch makes, computes, with copies of its weights (the way back, to read and inspect
    a model trained in PyTorch). Its loss is SoftmaxCrossEntropy.

    An activation module must follow a Conv2d, Linear or BatchNorm (it becomes that layer's
    activation).
    input_shape: one sample's (H, W, C); needed when a Flatten follows images, to put the
        features back in cnnc's NHWC order (None: unknown until the network sees data).
    dtype: float32 or float64 for the layers (None: float64 for a float64 module, else
        float32).

    Raises ImportError without torch, ValueError for a module cnnc has no layer for.
    """
    torch = _torch("from_torch")
    from ..losses import SoftmaxCrossEntropy
    from ..network import Network

    modules = list(module.children()) if isinstance(module, torch.nn.Sequential) else None
    if not modules:
        raise ValueError(f"from_torch takes a non-empty torch.nn.Sequential, got {type(module).__name__}")
    parameter = next(module.parameters(), None)
    dtype = np.dtype(dtype or (np.float64 if parameter is not None and parameter.dtype == torch.float64
                               else np.float32))
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    built, order, pads, index = [], None, None, 0
    while index < len(modules):
        part = modules[index]
        index += 1
        if isinstance(part, torch.nn.ZeroPad2d):
            left, right, top, bottom = part.padding
            pads = (top, bottom, left, right)
            continue
        if isinstance(part, torch.nn.AdaptiveAvgPool2d):
            if index == len(modules) or not isinstance(modules[index], torch.nn.Flatten):
                raise ValueError("from_torch: an AdaptiveAvgPool2d(1) must be followed by a Flatten "
                                 "(cnnc's GlobalAvgPool gives (N, C))")
            index += 1
        if pads is not None and not isinstance(part, torch.nn.Conv2d):
            raise ValueError("from_torch: a ZeroPad2d must be followed by a Conv2d")
        layer, order = _layer(torch, part, shape, order, pads, dtype)
        pads = None
        built.append(layer)
        if shape is not None:
            shape = layer.output_shape(shape)
        if index < len(modules) and _is_activation(torch, modules[index]):
            if not layer.params:
                raise ValueError(f"from_torch: {modules[index]!r} follows {part!r}; cnnc applies "
                                 "activations in Conv, FullyConnected and BatchNorm only")
            layer.activation = _cnnc_activation(torch, modules[index])
            index += 1
    if pads is not None:
        raise ValueError("from_torch: a ZeroPad2d must be followed by a Conv2d")
    net = Network(built, loss=SoftmaxCrossEntropy())
    net.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    return net


def _layer(torch, part, shape, order, pads, dtype):
    """The cnnc layer for a torch module, and the feature order the next layers read in."""
    nn = torch.nn
    array = _array(dtype)
    if isinstance(part, nn.Conv2d):
        c_out, c_in, kh, kw = part.weight.shape
        if part.groups != 1 or tuple(part.dilation) != (1, 1) or part.padding_mode != "zeros":
            raise ValueError(f"from_torch: {part!r}: cnnc convolutions have no groups, dilation "
                             "or padding modes")
        padding = tuple(part.padding)
        if pads is not None:
            padding = _symmetric_or_same(pads, shape, (kh, kw), tuple(part.stride))
        layer = cnnc_layers.Conv((kh, kw, c_in, c_out), strides=tuple(part.stride), padding=padding,
                                 dtype=dtype)
        layer.params["w"][...] = array(part.weight).transpose(2, 3, 1, 0)
        layer.params["b"][...] = array(part.bias) if part.bias is not None else 0
        return layer, None
    if isinstance(part, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = cnnc_layers.MaxPool if isinstance(part, nn.MaxPool2d) else cnnc_layers.AvgPool
        if _pair(part.padding) != (0, 0) or getattr(part, "ceil_mode", False):
            raise ValueError(f"from_torch: {part!r}: cnnc pools without padding, rounding down")
        stride = part.stride if part.stride is not None else part.kernel_size
        return kind(_pair(part.kernel_size), _pair(stride)), order
    if isinstance(part, nn.AdaptiveAvgPool2d):
        if _pair(part.output_size) != (1, 1):
            raise ValueError(f"from_torch: {part!r}: cnnc averages whole images only (output 1)")
        return cnnc_layers.GlobalAvgPool(), order
    if isinstance(part, nn.Flatten):
        if shape is None:
            raise ValueError("from_torch needs input_shape=(H, W, C) to put the features a "
                             "Flatten makes back in cnnc's NHWC order")
        if len(shape) == 3 and shape[:2] != (1, 1):
            h, w, c = shape
            order = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()
        return cnnc_layers.Flatten(shape), order
    if isinstance(part, nn.Dropout):
        return cnnc_layers.Dropout(part.p), order
    if isinstance(part, (nn.BatchNorm1d, nn.BatchNorm2d)):
        layer = cnnc_layers.BatchNorm(part.num_features, momentum=part.momentum, eps=part.eps,
                                      dtype=dtype)
        back = slice(None) if order is None else np.argsort(order)
        for name, value in (("w", part.weight), ("b", part.bias)):
            layer.params[name][...] = array(value)[back]
        layer.running_mean[...] = array(part.running_mean)[back]
        layer.running_var[...] = array(part.running_var)[back]
        return layer, order
    if isinstance(part, nn.Linear):
        weight = array(part.weight).T
        if order is not None:
            weight = weight[np.argsort(order)]
        layer = cnnc_layers.FullyConnected((part.in_features, part.out_features), dtype=dtype)
        layer.params["w"][...] = weight
        layer.params["b"][...] = array(part.bias) if part.bias is not None else 0
        return layer, None
    raise ValueError(f"from_torch: {part!r} has no cnnc layer")


def _symmetric_or_same(pads, shape, kernel, stride):
    """cnnc's padding for a ZeroPad2d's (top, bottom, left, right) before a convolution."""
    top, bottom, left, right = pads
    if (top, left) == (bottom, right):
        return (top, left)
    probe = cnnc_layers.Conv(kernel + (1, 1), strides=stride, padding="same")
    if shape is not None and probe.pads(*shape[:2]) == pads:
        return "same"
    raise ValueError(f"from_torch: padding {pads} is neither symmetric nor 'same' for this input")


def _is_activation(torch, part):
    nn = torch.nn
    return isinstance(part, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Identity))


def _cnnc_activation(torch, part):
    nn = torch.nn
    if isinstance(part, nn.LeakyReLU):
        return LeakyReLU(part.negative_slope)
    return {nn.ReLU: ReLU, nn.Sigmoid: Sigmoid, nn.Tanh: Tanh, nn.Identity: Linear}[type(part)]()


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _input_shape(net, input_shape):
    shape = input_shape if input_shape is not None else net.input_shape
    if shape is None:
        raise ValueError("to_torch needs the shape of one input sample: pass input_shape, e.g. "
                         "input_shape=(28, 28, 1), or run the network on data first")
    return tuple(int(d) for d in shape)


def _tensor(torch):
    return lambda array: torch.from_numpy(np.ascontiguousarray(array))


def _array(dtype):
    return lambda tensor: tensor.detach().cpu().numpy().astype(dtype)


def _torch(function):
    try:
        import torch
    except ImportError:
        raise ImportError(_NEEDS.format(function)) from None
    return torch
