"""A Network in one .npz file, without pickle: its architecture as JSON, its weights and
its optimizer state as plain arrays, so that training resumes exactly where it stopped.

Only cnnc's own layers, activations, losses and optimizers can be saved: a file names
them, and loading builds them again; it never runs code from the file.
"""
import json
import math

import numpy as np

from . import activations, init, layers, losses, optimizers
from ._archive import Archive
from ._atomic_file import atomic_write

FORMAT = "cnnc-network"
VERSION = 1
_HEADER = "cnnc_network.json"

_ACTIVATIONS = {cls.__name__: cls for cls in (activations.Linear, activations.ReLU,
                                              activations.LeakyReLU, activations.Sigmoid,
                                              activations.Tanh)}
_LOSSES = {cls.__name__: cls for cls in (losses.SoftmaxCrossEntropy, losses.MeanSquaredError)}
_OPTIMIZERS = {cls.__name__: cls for cls in (optimizers.SGDOptimizer, optimizers.AdamOptimizer,
                                              optimizers.AdamWOptimizer)}
_OPTIMIZER_SLOTS = {"SGDOptimizer": ("velocity",), "AdamOptimizer": ("m", "v"),
                    "AdamWOptimizer": ("m", "v")}
# Arrays a layer holds besides its parameters, saved beside them.
_STATISTICS = {"BatchNorm": ("running_mean", "running_var")}


def save(network, path):
    """Write the network to path, atomically: until the new file is complete, the old one
    (if any) stays as it was."""
    header, arrays = _describe(network)
    arrays[_HEADER] = np.array(json.dumps(header))
    with atomic_write(path) as out:
        np.savez(out, **arrays)


def load(path):
    """The Network saved in path.

    A missing path is a FileNotFoundError. Any other file that is not a complete, consistent
    cnnc network (damaged, crafted, holding pickled objects) is a ValueError naming the
    file and what is wrong, raised before anything larger than the file is allocated.
    """
    from .network import Network

    with Archive(path) as archive:
        if _HEADER not in archive.names():
            raise archive.error(f"not a cnnc network file (it has no {_HEADER})")
        header = _read_header(archive)
        try:
            _check_header(header)
            arrays = _expected_arrays(header)
        except _Malformed as error:
            raise archive.error(f"malformed cnnc network file: {error}") from None
        _check_arrays(archive, arrays)
        try:
            network = Network([_build_layer(spec, header["dtype"]) for spec in header["layers"]],
                              loss=_build(_LOSSES, header["loss"]))
            _check_chain(network, header["input_shape"])
        except (TypeError, ValueError) as error:
            raise archive.error(f"malformed cnnc network file: {error}") from None
        network.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
        _restore(network, header, archive)
    return network


def _describe(network):
    """The JSON header and the arrays that together hold the network."""
    specs, arrays = [], {}
    for depth, layer in enumerate(network.layers):
        spec = _layer_spec(layer, depth)
        for name, value in layer.params.items():
            arrays[f"layer{depth}/{name}"] = value
        for name in _STATISTICS.get(spec["type"], ()):
            arrays[f"layer{depth}/{name}"] = getattr(layer, name)
        optimizer = getattr(layer, "optimizer", None)
        if optimizer is not None:
            spec["optimizer"] = _optimizer_spec(optimizer, depth)
            steps = {}
            for key, state in optimizer.state.items():
                steps[key] = state["step"]
                for slot in _OPTIMIZER_SLOTS[type(optimizer).__name__]:
                    arrays[f"layer{depth}/optimizer/{key}/{slot}"] = state[slot]
            spec["optimizer"]["steps"] = steps
        specs.append(spec)
    loss = type(network.loss).__name__
    if _LOSSES.get(loss) is not type(network.loss):
        raise ValueError(f"cannot save a network with loss {network.loss!r}: cnnc saves "
                         f"its own losses only ({', '.join(_LOSSES)})")
    header = {"format": FORMAT, "version": VERSION, "dtype": np.dtype(network.dtype).name,
              "loss": {"type": loss}, "layers": specs,
              "input_shape": None if network.input_shape is None else list(network.input_shape)}
    return header, arrays


def _layer_spec(layer, depth):
    if type(layer) is layers.Conv:
        spec = {"type": "Conv", "fshape": layer.fshape, "strides": layer.strides,
                "padding": layer.padding}
    elif type(layer) is layers.FullyConnected:
        spec = {"type": "FullyConnected", "shape": layer.shape}
    elif type(layer) is layers.BatchNorm:
        spec = {"type": "BatchNorm", "num_features": layer.num_features, "momentum": layer.momentum,
                "eps": layer.eps}
    elif type(layer) in (layers.MaxPool, layers.AvgPool):
        return {"type": type(layer).__name__, "pshape": layer.pshape, "strides": layer.strides}
    elif type(layer) is layers.Flatten:
        return {"type": "Flatten", "input_shape": layer.input_shape}
    elif type(layer) is layers.Dropout:
        return {"type": "Dropout", "rate": layer.rate, "seed": layer.seed}
    elif type(layer) is layers.GlobalAvgPool:
        return {"type": "GlobalAvgPool"}
    else:
        raise ValueError(f"cannot save layer {depth} ({type(layer).__name__}): cnnc saves its own "
                         f"layers only ({', '.join(_LAYER_FIELDS)})")
    activation = type(layer.activation).__name__
    if _ACTIVATIONS.get(activation) is not type(layer.activation):
        raise ValueError(f"cannot save layer {depth}: activation {layer.activation!r} is not one "
                         f"of cnnc's ({', '.join(_ACTIVATIONS)})")
    spec["activation"] = {"type": activation}
    if isinstance(layer.activation, activations.LeakyReLU):
        spec["activation"]["slope"] = layer.activation.slope
    return spec


def _optimizer_spec(optimizer, depth):
    kind = type(optimizer).__name__
    if _OPTIMIZERS.get(kind) is not type(optimizer):
        raise ValueError(f"cannot save layer {depth}: optimizer {optimizer!r} is not one of "
                         f"cnnc's ({', '.join(_OPTIMIZERS)})")
    if kind == "SGDOptimizer":
        return {"type": kind, "momentum": optimizer.momentum, "nesterov": optimizer.nesterov,
                "weight_decay": optimizer.weight_decay}
    return {"type": kind, "beta1": optimizer.beta1, "beta2": optimizer.beta2, "eps": optimizer.eps,
            "weight_decay": optimizer.weight_decay}


# Sizes a header may declare: NumPy's limit for dimensions, a C int for the rest.
_MAX_DIMS, _LARGEST, _MAX_STEP = 32, 2**31 - 1, 2**63 - 1
MAX_HEADER_BYTES = 1 << 22


class _Malformed(Exception):
    """A header value of the wrong type, range or shape (the message says which)."""


def _read_header(archive):
    text = archive.read_small(_HEADER, MAX_HEADER_BYTES)
    if text.dtype.kind != "U" or text.shape != ():
        raise archive.error(f"its {_HEADER} is {text.shape} {text.dtype}, not text")
    try:
        header = json.loads(str(text[()]), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise archive.error(f"its {_HEADER} is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise archive.error("not a cnnc network file")
    version = header.get("version")
    if type(version) is not int or version != VERSION:
        raise archive.error(f"written in cnnc network format version {version!r}; this cnnc "
                            f"reads version {VERSION}")
    return header


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number cnnc writes")


def _check_header(header):
    _fields(header, "the header", ("format", "version", "dtype", "loss", "layers", "input_shape"))
    if header["dtype"] not in ("float32", "float64"):
        raise _Malformed(f"dtype must be \"float32\" or \"float64\", got {header['dtype']!r}")
    _kind_of(header["loss"], "the header", "loss", _LOSSES)
    _fields(header["loss"], "the loss", ("type",))
    if header["input_shape"] is not None:
        _ints(header["input_shape"], "input_shape", minimum=1)
    if not isinstance(header["layers"], list):
        raise _Malformed(f"layers must be a list, got {_kind(header['layers'])}")
    for depth, spec in enumerate(header["layers"]):
        _check_layer(spec, f"layer {depth}")


_LAYER_FIELDS = {"Conv": ("fshape", "strides", "padding", "activation", "optimizer"),
                 "FullyConnected": ("shape", "activation", "optimizer"),
                 "BatchNorm": ("num_features", "momentum", "eps", "activation", "optimizer"),
                 "MaxPool": ("pshape", "strides"), "AvgPool": ("pshape", "strides"),
                 "GlobalAvgPool": (), "Flatten": ("input_shape",), "Dropout": ("rate", "seed")}
# Each optimizer's fields; weight_decay is optional, as files from before it have none.
_OPTIMIZER_FIELDS = {"AdamOptimizer": ("beta1", "beta2", "eps", "weight_decay"),
                     "AdamWOptimizer": ("beta1", "beta2", "eps", "weight_decay"),
                     "SGDOptimizer": ("momentum", "nesterov", "weight_decay")}


def _check_layer(spec, where):
    kind = _kind_of(spec, where, "layer", _LAYER_FIELDS)
    _fields(spec, where, ("type",) + _LAYER_FIELDS[kind])
    if kind == "Conv":
        _ints(spec["fshape"], f"{where} fshape", count=4, minimum=1)
        _ints(spec["strides"], f"{where} strides", count=2, minimum=1)
        if spec["padding"] not in ("valid", "same"):
            _ints(spec["padding"], f"{where} padding", count=2, minimum=0)
    elif kind == "FullyConnected":
        _ints(spec["shape"], f"{where} shape", count=2, minimum=1)
    elif kind == "BatchNorm":
        _integer(spec["num_features"], f"{where} num_features", 1, _LARGEST)
        _real(spec["momentum"], f"{where} momentum")
        _real(spec["eps"], f"{where} eps")
    elif kind in ("MaxPool", "AvgPool"):
        _ints(spec["pshape"], f"{where} pshape", count=2, minimum=1)
        _ints(spec["strides"], f"{where} strides", count=2, minimum=1)
    elif kind == "Flatten":
        if spec["input_shape"] is not None:
            _ints(spec["input_shape"], f"{where} input_shape", minimum=1)
    elif kind == "Dropout":
        _real(spec["rate"], f"{where} rate")
        if spec["seed"] is not None:
            _integer(spec["seed"], f"{where} seed", 0, _MAX_STEP)
    if "activation" in spec:
        activation = spec["activation"]
        name = _kind_of(activation, where, "activation", _ACTIVATIONS)
        _fields(activation, f"{where} activation", ("type", "slope") if name == "LeakyReLU" else ("type",))
        if name == "LeakyReLU":
            _real(activation["slope"], f"{where} activation slope")
    if "optimizer" in spec:
        _check_optimizer(spec["optimizer"], where)


def _check_optimizer(spec, layer):
    kind = _kind_of(spec, layer, "optimizer", _OPTIMIZER_FIELDS)
    where = f"{layer} optimizer"
    _fields(spec, where, ("type", "steps") + _OPTIMIZER_FIELDS[kind][:-1], optional=("weight_decay",))
    for name in _OPTIMIZER_FIELDS[kind]:
        if name not in spec:
            continue
        if name == "nesterov":
            if not isinstance(spec[name], bool):
                raise _Malformed(f"{where} nesterov must be true or false, got {spec[name]!r}")
        else:
            _real(spec[name], f"{where} {name}")
    _fields(spec["steps"], f"{where} steps", (), optional=("w", "b"))
    for key, step in spec["steps"].items():
        _integer(step, f"{where} step count of {key!r}", 1, _MAX_STEP)


def _kind_of(spec, where, what, known):
    """The type the spec names, one of the known ones."""
    if not isinstance(spec, dict):
        raise _Malformed(f"{where}: the {what} must be an object, got {_kind(spec)}")
    if spec.get("type") not in known:
        raise _Malformed(f"{where}: unknown {what} {spec.get('type')!r} (known: {', '.join(known)})")
    return spec["type"]


def _fields(spec, where, required, optional=()):
    if not isinstance(spec, dict):
        raise _Malformed(f"{where} must be an object, got {_kind(spec)}")
    missing = [name for name in required if name not in spec]
    unknown = sorted(set(spec) - set(required) - set(optional))
    if missing:
        raise _Malformed(f"{where} has no {', '.join(missing)}")
    if unknown:
        raise _Malformed(f"{where} has unknown fields {unknown}")


def _ints(value, where, count=None, minimum=1):
    if not isinstance(value, list) or not 1 <= len(value) <= _MAX_DIMS or (count and len(value) != count):
        expected = f"{count} ints" if count else f"a list of 1 to {_MAX_DIMS} ints"
        raise _Malformed(f"{where} must be {expected}, got {value!r}")
    for item in value:
        _integer(item, where, minimum, _LARGEST)


def _integer(value, where, minimum, maximum):
    if type(value) is not int or not minimum <= value <= maximum:
        raise _Malformed(f"{where} must be ints from {minimum} to {maximum}, got {value!r}")


def _real(value, where):
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Malformed(f"{where} must be a finite number, got {value!r}")


def _kind(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _expected_arrays(header):
    """The name, shape and dtype of every array the header's architecture needs."""
    arrays = {}
    for depth, spec in enumerate(header["layers"]):
        if spec["type"] == "Conv":
            shapes = {"w": tuple(spec["fshape"]), "b": (spec["fshape"][3],)}
        elif spec["type"] == "FullyConnected":
            shapes = {"w": tuple(spec["shape"]), "b": (spec["shape"][1],)}
        elif spec["type"] == "BatchNorm":
            shapes = {"w": (spec["num_features"],), "b": (spec["num_features"],)}
        else:
            continue
        for name, shape in shapes.items():
            arrays[f"layer{depth}/{name}"] = shape
        for name in _STATISTICS.get(spec["type"], ()):
            arrays[f"layer{depth}/{name}"] = shapes["w"]
        optimizer = spec["optimizer"]
        for key in optimizer["steps"]:
            for slot in _OPTIMIZER_SLOTS[optimizer["type"]]:
                arrays[f"layer{depth}/optimizer/{key}/{slot}"] = shapes[key]
    dtype = np.dtype(header["dtype"])
    return {name: (shape, dtype) for name, shape in arrays.items()}


def _check_arrays(archive, expected):
    """Every array the architecture needs is in the archive, with its shape and dtype, and no other."""
    present = archive.names() - {_HEADER}
    missing = sorted(set(expected) - present)
    if missing:
        raise archive.error(f"the file has no array {missing[0]!r}")
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise archive.error(f"unexpected arrays {unexpected} in a cnnc network file")
    for name, (shape, dtype) in expected.items():
        found = archive.describe(name)
        if found != (shape, dtype):
            raise archive.error(f"array {name!r} is {found[0]} {found[1]}, the network needs "
                                f"{shape} {dtype}")


def _check_chain(network, input_shape):
    """Each layer takes what the one before gives, from the saved input shape."""
    if input_shape is None:
        return
    shape = tuple(input_shape)
    for depth, layer in enumerate(network.layers):
        try:
            shape = layer.output_shape(shape)
        except ValueError as error:
            raise ValueError(f"layer {depth} does not take the saved input shape: {error}") from None


def _build(known, spec):
    """An instance of the class the spec names, with the spec's other entries as arguments."""
    arguments = {name: value for name, value in spec.items() if name not in ("type", "steps")}
    return known[spec["type"]](**arguments)


def _build_layer(spec, dtype):
    kind = spec["type"]
    if kind in ("MaxPool", "AvgPool"):
        return getattr(layers, kind)(spec["pshape"], spec["strides"])
    if kind == "Flatten":
        return layers.Flatten(spec["input_shape"])
    if kind == "Dropout":
        return layers.Dropout(spec["rate"], spec["seed"])
    if kind == "GlobalAvgPool":
        return layers.GlobalAvgPool()
    activation = _build(_ACTIVATIONS, spec["activation"])
    optimizer = _build(_OPTIMIZERS, spec["optimizer"])
    if kind == "BatchNorm":
        return layers.BatchNorm(spec["num_features"], spec["momentum"], spec["eps"], activation,
                                optimizer, dtype)
    common = dict(activation=activation, optimizer=optimizer, bias_init=init.zeros, dtype=dtype)
    if kind == "Conv":   # zeros, not random filters: loading must not draw from np.random
        padding = spec["padding"] if isinstance(spec["padding"], str) else tuple(spec["padding"])
        return layers.Conv(spec["fshape"], spec["strides"], padding, filter_init=init.zeros, **common)
    return layers.FullyConnected(spec["shape"], weight_init=init.zeros, **common)


def _restore(network, header, archive):
    """Read the saved weights and optimizer state into the freshly built network."""
    for depth, (layer, spec) in enumerate(zip(network.layers, header["layers"])):
        for name, param in layer.params.items():
            archive.read_into(f"layer{depth}/{name}", param)
        for name in _STATISTICS.get(spec["type"], ()):
            archive.read_into(f"layer{depth}/{name}", getattr(layer, name))
        if not layer.params:
            continue
        optimizer = layer.optimizer
        for key, step in spec["optimizer"]["steps"].items():
            state = {}
            for slot in _OPTIMIZER_SLOTS[type(optimizer).__name__]:
                state[slot] = np.empty_like(layer.params[key])
                archive.read_into(f"layer{depth}/optimizer/{key}/{slot}", state[slot])
            state["step"] = step
            optimizer.state[key] = state
