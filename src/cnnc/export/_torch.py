"""A cnnc network as a torch.nn.Sequential of standard modules, and back.

cnnc holds images NHWC and flattens them in that order; torch holds them NCHW. The
weights are transposed to torch's layouts, and the features a Flatten makes are reordered
in the layers that read them, so that the module computes what the network does.

Both ways convert every attribute or refuse: to_torch carries padding, strides, windows,
rates, BatchNorm's eps and momentum and LeakyReLU's slope; from_torch reads only the
torch.nn classes in _KINDS (by exact type: a subclass may compute something else) and
refuses any attribute value cnnc cannot honour (_LIMITS), or a module where cnnc's layer
would compute something else, naming the module and the attribute.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Sequence

import numpy as np
from numpy.typing import DTypeLike

from .. import layers as cnnc_layers
from ..activations import LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from ._common import class_name, converter, output_shape, sample_shape

if TYPE_CHECKING:
    import torch

    from ..network import Network

_NEEDS = "cnnc.export.{} needs PyTorch: pip install 'cnnc[torch]'"


def to_torch(net: Network, input_shape: Sequence[int] | None = None) -> torch.nn.Sequential:
    """A torch.nn.Sequential with the weights of the network `net` (copies, in its dtype),
    taking NCHW input, in eval mode: its output equals net.predict on the NHWC transpose.

    input_shape: one sample's shape, e.g. (28, 28, 1); None takes the one the network last
        saw. It fixes "same" padding and the feature order after a Flatten.

    Raises ImportError without torch, ValueError for an input_shape that is not a tuple of
    ints, when no input shape is known, for a layer the input does not fit, or for a layer
    or activation torch has no module for.
    """
    torch = _torch("to_torch")
    shape = sample_shape("to_torch", input_shape, net)
    modules, order = [], None          # order: NHWC position of each NCHW-flattened feature
    dtype = torch.float64 if np.dtype(net.dtype) == np.float64 else torch.float32
    with torch.no_grad():
        for depth, layer in enumerate(net.layers):
            convert = converter("to_torch", "convert", _MODULES, depth, layer)
            out_shape = output_shape("to_torch", depth, layer, shape)
            made, order = convert(torch, layer, shape, order, dtype)
            modules += made + _activation(torch.nn, layer)
            shape = out_shape
    if order is not None:
        raise ValueError("to_torch: a Flatten of images must be followed by a FullyConnected, "
                         "which takes cnnc's NHWC feature order (torch flattens NCHW)")
    return torch.nn.Sequential(*modules).eval()


def _conv(torch, layer, shape, order, dtype):
    """A Conv2d, after a ZeroPad2d where the padding is not symmetric ("same")."""
    kh, kw, c_in, c_out = layer.fshape
    top, bottom, left, right = layer.pads(*shape[:2])
    symmetric = (top, left) == (bottom, right)
    conv = torch.nn.Conv2d(c_in, c_out, (kh, kw), stride=layer.strides,
                           padding=(top, left) if symmetric else 0, dtype=dtype)
    conv.weight.copy_(_tensor(torch, layer.params["w"].transpose(3, 2, 0, 1)))
    conv.bias.copy_(_tensor(torch, layer.params["b"]))
    return ([conv] if symmetric else [torch.nn.ZeroPad2d((left, right, top, bottom)), conv]), None


def _max_pool(torch, layer, shape, order, dtype):
    return [torch.nn.MaxPool2d(layer.pshape, layer.strides)], None


def _avg_pool(torch, layer, shape, order, dtype):
    return [torch.nn.AvgPool2d(layer.pshape, layer.strides)], None


def _global_avg_pool(torch, layer, shape, order, dtype):
    return [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()], None


def _flatten(torch, layer, shape, order, dtype):
    return [torch.nn.Flatten()], order if len(shape) != 3 else _nchw_order(shape)


def _dropout(torch, layer, shape, order, dtype):
    return [torch.nn.Dropout(layer.rate)], order


def _batch_norm(torch, layer, shape, order, dtype):
    """BatchNorm2d for images, BatchNorm1d for features, in the order the features come in."""
    kind = torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d
    norm = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
    pick = slice(None) if order is None else order
    for name, value in (("weight", layer.params["w"]), ("bias", layer.params["b"]),
                        ("running_mean", layer.running_mean), ("running_var", layer.running_var)):
        getattr(norm, name).copy_(_tensor(torch, value[pick]))
    return [norm], order


def _fully_connected(torch, layer, shape, order, dtype):
    w = layer.params["w"] if order is None else layer.params["w"][order]
    linear = torch.nn.Linear(*layer.shape, dtype=dtype)
    linear.weight.copy_(_tensor(torch, w.T))
    linear.bias.copy_(_tensor(torch, layer.params["b"]))
    return [linear], None


# The torch modules for each cnnc layer (by exact type), as (torch, layer, one sample's shape
# in, the feature order in, dtype) -> (modules, the feature order the next layers read).
_MODULES = {cnnc_layers.Conv: _conv, cnnc_layers.MaxPool: _max_pool,
            cnnc_layers.AvgPool: _avg_pool, cnnc_layers.GlobalAvgPool: _global_avg_pool,
            cnnc_layers.Flatten: _flatten, cnnc_layers.Dropout: _dropout,
            cnnc_layers.BatchNorm: _batch_norm, cnnc_layers.FullyConnected: _fully_connected}


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
    """The cnnc Network that computes what `module`, a torch.nn.Sequential, computes in eval
    mode, with copies of its weights (the way back, to read and inspect a model trained in
    PyTorch). Its loss is SoftmaxCrossEntropy.

    It reads the modules to_torch makes (Conv2d, ZeroPad2d before a Conv2d, MaxPool2d,
    AvgPool2d, AdaptiveAvgPool2d(1) + Flatten, Flatten, Dropout, BatchNorm1d/2d, Linear) and
    ReLU, LeakyReLU, Sigmoid, Tanh and Identity, by exact type. An activation module must
    follow a Conv2d, Linear or BatchNorm (it becomes that layer's activation). A Conv2d or
    Linear without a bias gets a zero one, a BatchNorm without affine parameters a scale of
    1 and a shift of 0: cnnc's layers always have them, and train them.
    input_shape: one sample's (H, W, C) (or (features,)); needed when a Flatten follows
        images, to put the features back in cnnc's NHWC order, and to check that every
        module fits what it receives (None: unknown until the network sees data).
    dtype: float32 or float64 for the layers (None: float64 for a float64 module, else
        float32).

    Raises ImportError without torch, ValueError for an input_shape or dtype of the wrong
    kind, a module cnnc has no layer for, an attribute value it cannot honour (the message
    names the module and the attribute), or a module where its layer would compute
    something else (a BatchNorm1d after images, a Flatten of images not followed by a
    Linear, ...).
    """
    torch = _torch("from_torch")
    from ..losses import SoftmaxCrossEntropy
    from ..network import Network

    if type(module) is not torch.nn.Sequential or not len(module):
        got = "an empty one" if type(module) is torch.nn.Sequential else type(module).__qualname__
        raise ValueError("from_torch takes a non-empty torch.nn.Sequential (for one module: "
                         f"torch.nn.Sequential(module)), got {got}")
    _refuse_hooks(module)
    shape = sample_shape("from_torch", input_shape)
    reader = _Reader(torch, shape, _dtype(torch, module, dtype))
    for part in module:
        reader.read(part)
    net = Network(reader.finish(), loss=SoftmaxCrossEntropy())
    net.input_shape = shape
    return net


def _dtype(torch, module, dtype):
    """The layers' dtype: dtype if float32 or float64; None: float64 for a module whose
    weights (or, without any, BatchNorm statistics) are float64, else float32."""
    if dtype is None:
        tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
        float64 = tensor is not None and tensor.dtype == torch.float64
        return np.dtype(np.float64 if float64 else np.float32)
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        chosen = None  # pragma: no mutate: refused as any other value
    if chosen not in (np.float32, np.float64):
        raise ValueError(f"from_torch dtype must be float32 or float64 (None: the module's), "
                         f"got {dtype!r}")
    return chosen


class _Reader:
    """from_torch's walk along a Sequential: the layers made so far, and what the next module
    receives (one sample's shape and rank, None where unknown; the NHWC position of each
    feature a Flatten of images made in NCHW order; the padding of ZeroPad2d's waiting for
    their Conv2d; an AdaptiveAvgPool2d waiting for its Flatten)."""

    def __init__(self, torch, shape, dtype):
        self.nn, self.shape, self.dtype = torch.nn, shape, dtype
        self.rank = None if shape is None else len(shape)
        self.layers, self.order, self.pads, self.pooled = [], None, None, None
        self.last = "the input"             # the module read last, as messages show it
        # whether the last layer takes an activation next (no mutate: only its truth is read)
        self.open = False  # pragma: no mutate

    def array(self, tensor):
        """A tensor's values as an array of the layers' dtype (through float64: exactly)."""
        return tensor.detach().cpu().double().numpy().astype(self.dtype)

    def read(self, part):
        """Make the layer for the module `part`, or fold it into the layers around it."""
        kind = _kind(self.nn, part)
        if kind == "Identity":
            return
        if self.pooled is not None:
            if kind != "Flatten":
                raise ValueError(f"from_torch: {self.pooled!r} must be followed by a Flatten "
                                 f"(cnnc's GlobalAvgPool gives (N, C)), not {part!r}")
            self.pooled = None
        elif kind == "ZeroPad2d":
            left, right, top, bottom = part.padding
            self.pads = _added(self.pads, (top, bottom, left, right))
        elif self.pads is not None and kind != "Conv2d":
            raise ValueError(f"from_torch: {part!r} follows a ZeroPad2d; cnnc pads only in a "
                             "convolution: a ZeroPad2d must be followed by a Conv2d")
        elif kind in _ACTIVATIONS:
            if not self.open:
                raise ValueError(f"from_torch: {part!r} follows {self.last}; cnnc applies one "
                                 "activation, in a Conv2d, Linear or BatchNorm")
            self.layers[-1].activation = _ACTIVATIONS[kind](part)
        else:
            self._layer(part, kind)
        self.last = repr(part)
        self.open = kind in _LAYERS and bool(self.layers[-1].params)

    def _layer(self, part, kind):
        """Append the layer for a module that makes one, once it fits what it receives."""
        takes = _TAKES.get(kind)
        if takes is not None and self.rank not in (None, takes):
            raise ValueError(f"from_torch: {part!r} takes {_RANKS[takes]}, but follows "
                             f"{self.last}, which gives {_RANKS.get(self.rank, f'{self.rank + 1}-D inputs')}")
        size = _SIZE.get(kind)
        if size is not None and self.shape is not None and getattr(part, size) != self.shape[-1]:
            raise ValueError(f"from_torch: {part!r}: {size}={getattr(part, size)} but it receives "
                             f"{self.shape[-1]} {'channels' if self.rank == 3 else 'features'}")
        layer = _LAYERS[kind](self, part)
        if self.shape is not None:
            try:
                self.shape = tuple(layer.output_shape(self.shape))
            except ValueError as error:
                raise ValueError(f"from_torch: {part!r} does not fit what it receives: {error}") from None
        self.rank = _GIVES.get(kind, self.rank)
        self.layers.append(layer)

    def finish(self):
        """The layers, once no module waits for one that did not come."""
        if self.pads is not None:
            raise ValueError("from_torch: a ZeroPad2d ends the Sequential; cnnc pads only in a "
                             "convolution: a ZeroPad2d must be followed by a Conv2d")
        if self.pooled is not None:
            raise ValueError(f"from_torch: {self.pooled!r} must be followed by a Flatten "
                             "(cnnc's GlobalAvgPool gives (N, C))")
        if self.order is not None:
            raise ValueError("from_torch: a Flatten of images must be followed by a Linear, "
                             "which reads torch's NCHW feature order (cnnc's Flatten gives NHWC)")
        return self.layers


def _kind(nn, part):
    """The name of the torch.nn class of `part`, once it is one from_torch reads (exactly,
    not a subclass) and every attribute value it has is one cnnc honours."""
    name = type(part).__name__
    if name not in _KINDS or type(part) is not getattr(nn, name):
        raise ValueError(f"from_torch: {part!r} ({class_name(part)}) has no cnnc layer: it reads "
                         f"the torch.nn classes {', '.join(_KINDS)}, exactly (a subclass may "
                         "compute something else)")
    _refuse_hooks(part)
    for attribute, honoured, expected in _LIMITS.get(name, ()):
        if not honoured(part):
            raise ValueError(f"from_torch: {part!r}: {attribute}={getattr(part, attribute)!r} "
                             f"has no cnnc counterpart; cnnc takes {expected}")
    return name


def _refuse_hooks(part):
    if part._forward_hooks or part._forward_pre_hooks:
        raise ValueError(f"from_torch: {part!r} has forward hooks, which may change what it "
                         "computes; cnnc cannot run them")


def _conv_layer(reader, part):
    c_out, c_in, kh, kw = part.weight.shape
    pads, reader.pads = _added(reader.pads, _conv_pads(part)), None
    layer = cnnc_layers.Conv((kh, kw, c_in, c_out), strides=tuple(part.stride),
                             padding=_conv_padding(part, pads, reader.shape), dtype=reader.dtype)
    layer.params["w"][...] = reader.array(part.weight).transpose(2, 3, 1, 0)
    layer.params["b"][...] = 0 if part.bias is None else reader.array(part.bias)
    return layer


def _conv_pads(part):
    """A Conv2d's own zero padding (top, bottom, left, right); torch's "same" puts the odd
    pixel bottom/right (dilation is 1 here)."""
    if part.padding == "valid":
        return (0, 0, 0, 0)
    if part.padding == "same":
        kh, kw = part.kernel_size
        return ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
    ph, pw = part.padding
    return (ph, ph, pw, pw)


def _conv_padding(part, pads, shape):
    """cnnc's padding for a Conv2d padded (top, bottom, left, right): symmetric, or "same"
    where that is what cnnc's "same" pads (at stride 1, for any size: k - 1, the odd pixel
    bottom/right; at a larger stride, for the size of the input_shape given)."""
    top, bottom, left, right = pads
    if (top, left) == (bottom, right):
        return (top, left)
    refused = (f"from_torch: {part!r}: padding (top, bottom, left, right) = {pads}, with any "
               "ZeroPad2d before it,")
    if shape is not None:
        size = shape[:2]
    elif tuple(part.stride) == (1, 1):
        size = part.kernel_size             # at stride 1, "same" pads k - 1 whatever the size
    else:
        raise ValueError(f"{refused} is not symmetric: pass input_shape to compare it with cnnc's 'same'")
    same = cnnc_layers.Conv(tuple(part.kernel_size) + (1, 1), strides=tuple(part.stride),
                            padding="same")
    if same.pads(*size) != pads:
        raise ValueError(f"{refused} is neither symmetric nor cnnc's 'same' (the odd pixel bottom/right)")
    return "same"


def _max_pool_layer(reader, part):
    return cnnc_layers.MaxPool(_pair(part.kernel_size), _pair(part.stride))


def _avg_pool_layer(reader, part):
    return cnnc_layers.AvgPool(_pair(part.kernel_size), _pair(part.stride))


def _global_avg_pool_layer(reader, part):
    reader.pooled = part
    return cnnc_layers.GlobalAvgPool()


def _flatten_layer(reader, part):
    if reader.shape is None and reader.rank != 1:
        raise ValueError(f"from_torch needs input_shape=(H, W, C) to put the features {part!r} "
                         "makes back in cnnc's NHWC order")
    if reader.rank == 3:
        reader.order = _nchw_order(reader.shape)
    return cnnc_layers.Flatten(reader.shape)


def _dropout_layer(reader, part):
    return cnnc_layers.Dropout(part.p)


def _batch_norm_layer(reader, part):
    """A BatchNorm; without affine parameters (or bias), cnnc's start at scale 1, shift 0."""
    layer = cnnc_layers.BatchNorm(part.num_features, momentum=part.momentum, eps=part.eps,
                                  dtype=reader.dtype)
    back = slice(None) if reader.order is None else np.argsort(reader.order)
    for array, tensor in ((layer.params["w"], part.weight), (layer.params["b"], part.bias),
                          (layer.running_mean, part.running_mean),
                          (layer.running_var, part.running_var)):
        if tensor is not None:
            array[...] = reader.array(tensor)[back]
    return layer


def _linear_layer(reader, part):
    weight = reader.array(part.weight).T
    if reader.order is not None:
        weight, reader.order = weight[np.argsort(reader.order)], None
    layer = cnnc_layers.FullyConnected((part.in_features, part.out_features), dtype=reader.dtype)
    layer.params["w"][...] = weight
    layer.params["b"][...] = 0 if part.bias is None else reader.array(part.bias)
    return layer


def _no_padding(part):
    return _pair(part.padding) == (0, 0)


def _whole_windows(part):
    return not part.ceil_mode


def _window_divisor(part):
    return part.divisor_override in (None, int(np.prod(_pair(part.kernel_size))))


_BATCH_NORM_LIMITS = (
    ("track_running_stats", lambda m: m.track_running_stats,
     "True (cnnc's inference uses running statistics, not the batch's)"),
    ("momentum", lambda m: m.momentum is not None and 0 <= m.momentum <= 1,
     "a number in [0, 1] (None, a cumulative average, it has not)"),
    ("eps", lambda m: m.eps > 0, "a number > 0"))


# The attribute values from_torch refuses, per torch.nn class: (attribute, whether a module's
# value is honoured, what cnnc takes). Every other attribute is converted.
_LIMITS = {
    "Conv2d": (("groups", lambda m: m.groups == 1, "1"),
               ("dilation", lambda m: tuple(m.dilation) == (1, 1), "1"),
               ("padding_mode", lambda m: m.padding_mode == "zeros", "'zeros'")),
    "ZeroPad2d": (("padding", lambda m: min(m.padding) >= 0, "values >= 0 (a negative one crops)"),),
    "MaxPool2d": (("padding", _no_padding, "0"),
                  ("dilation", lambda m: _pair(m.dilation) == (1, 1), "1"),
                  ("ceil_mode", _whole_windows, "False"),
                  ("return_indices", lambda m: not m.return_indices, "False")),
    "AvgPool2d": (("padding", _no_padding, "0"), ("ceil_mode", _whole_windows, "False"),
                  ("divisor_override", _window_divisor, "None (or the window's size)")),
    "AdaptiveAvgPool2d": (("output_size", lambda m: _pair(m.output_size) == (1, 1),
                           "1 (cnnc's GlobalAvgPool averages whole images)"),),
    "Flatten": (("start_dim", lambda m: m.start_dim == 1, "1"),
                ("end_dim", lambda m: m.end_dim == -1, "-1")),
    "Dropout": (("p", lambda m: 0 <= m.p < 1, "a rate in [0, 1)"),),
    "BatchNorm1d": _BATCH_NORM_LIMITS,
    "BatchNorm2d": _BATCH_NORM_LIMITS,
    "LeakyReLU": (("negative_slope", lambda m: 0 <= m.negative_slope <= 1, "a slope in [0, 1]"),),
}

# The cnnc layer for each torch.nn class that makes one, as (reader, module) -> layer.
_LAYERS = {"Conv2d": _conv_layer, "MaxPool2d": _max_pool_layer,
           "AvgPool2d": _avg_pool_layer,
           "AdaptiveAvgPool2d": _global_avg_pool_layer, "Flatten": _flatten_layer,
           "Dropout": _dropout_layer, "BatchNorm1d": _batch_norm_layer,
           "BatchNorm2d": _batch_norm_layer, "Linear": _linear_layer}

_ACTIVATIONS = {"ReLU": lambda m: ReLU(), "LeakyReLU": lambda m: LeakyReLU(m.negative_slope),
                "Sigmoid": lambda m: Sigmoid(), "Tanh": lambda m: Tanh()}

_KINDS = (*_LAYERS, "ZeroPad2d", *_ACTIVATIONS, "Identity")

# The rank of one sample each class takes (3: images, 1: features), the rank it gives, and
# the attribute that must match the channels or features it receives.
_TAKES = {"Conv2d": 3, "MaxPool2d": 3, "AvgPool2d": 3, "AdaptiveAvgPool2d": 3, "BatchNorm2d": 3,
          "BatchNorm1d": 1, "Linear": 1}
_GIVES = {"Conv2d": 3, "MaxPool2d": 3, "AvgPool2d": 3, "AdaptiveAvgPool2d": 1, "Flatten": 1,
          "Linear": 1}
_SIZE = {"Conv2d": "in_channels", "BatchNorm1d": "num_features", "BatchNorm2d": "num_features",
         "Linear": "in_features"}
_RANKS = {1: "features (N, F)", 3: "images (N, C, H, W)"}


def _nchw_order(shape):
    """The NHWC position of each feature of (H, W, C) images flattened in NCHW order; None
    for 1x1 images, where the two orders agree."""
    h, w, c = shape
    return None if (h, w) == (1, 1) else np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).ravel()


def _added(pads, more):
    """Two paddings (top, bottom, left, right) one after the other; pads None: none yet."""
    return tuple(more) if pads is None else tuple(a + b for a, b in zip(pads, more))


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _tensor(torch, array):
    return torch.from_numpy(np.ascontiguousarray(array))


def _torch(function):
    try:
        import torch
    except ImportError:
        raise ImportError(_NEEDS.format(function)) from None
    return torch
