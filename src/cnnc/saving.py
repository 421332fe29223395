"""A Network in one .npz file, without pickle: its architecture as JSON, its weights and
its optimizer state as plain arrays, so that training resumes exactly where it stopped.

Only cnnc's own layers, activations, losses and optimizers can be saved: a file names
them, and loading builds them again; it never runs code from the file.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from . import activations, init, layers, losses, optimizers

FORMAT = "cnnc-network"
VERSION = 1
_HEADER = "cnnc_network.json"

_ACTIVATIONS = {cls.__name__: cls for cls in (activations.Linear, activations.ReLU,
                                              activations.LeakyReLU, activations.Sigmoid,
                                              activations.Tanh)}
_LOSSES = {cls.__name__: cls for cls in (losses.SoftmaxCrossEntropy, losses.MeanSquaredError)}
_OPTIMIZERS = {"SGDOptimizer": optimizers.SGDOptimizer, "AdamOptimizer": optimizers.AdamOptimizer}
_OPTIMIZER_SLOTS = {"SGDOptimizer": ("velocity",), "AdamOptimizer": ("m", "v")}


def save(network, path):
    """Write the network to path, atomically: until the new file is complete, the old one
    (if any) stays as it was."""
    header, arrays = _describe(network)
    arrays[_HEADER] = np.array(json.dumps(header))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, partial = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                       suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def load(path):
    """The Network saved in path. A file that is not a cnnc network, or that holds pickled
    objects, is refused with ValueError."""
    from .network import Network

    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a cnnc network file (not an .npz archive)")
    with np.load(path, allow_pickle=False) as npz:
        if _HEADER not in npz.files:
            raise ValueError(f"{path} is not a cnnc network file (it has no {_HEADER})")
        try:
            arrays = {name: npz[name] for name in npz.files}
        except ValueError as error:     # object arrays: only pickle could read them
            raise ValueError(f"{path} holds pickled objects, which cnnc never loads "
                             f"(unpickling can run code): {error}") from None
    header = _read_header(arrays.pop(_HEADER), path)
    try:
        network = Network([_build_layer(spec, header["dtype"]) for spec in header["layers"]],
                          loss=_build(_LOSSES, header["loss"], "loss"))
        network.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
        _restore(network, header, arrays)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: malformed cnnc network file ({type(error).__name__}: {error})") from None
    if arrays:
        raise ValueError(f"{path}: unexpected arrays {sorted(arrays)} in a cnnc network file")
    return network


def _describe(network):
    """The JSON header and the arrays that together hold the network."""
    specs, arrays = [], {}
    for depth, layer in enumerate(network.layers):
        spec = _layer_spec(layer, depth)
        for name, value in layer.params.items():
            arrays[f"layer{depth}/{name}"] = value
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
    elif type(layer) is layers.MaxPool:
        return {"type": "MaxPool", "pshape": layer.pshape, "strides": layer.strides}
    elif type(layer) is layers.Flatten:
        return {"type": "Flatten", "input_shape": layer.input_shape}
    else:
        raise ValueError(f"cannot save layer {depth} ({type(layer).__name__}): cnnc saves its own "
                         "layers only (Conv, MaxPool, Flatten, FullyConnected)")
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
    if kind == "AdamOptimizer":
        return {"type": kind, "beta1": optimizer.beta1, "beta2": optimizer.beta2, "eps": optimizer.eps}
    return {"type": kind, "momentum": optimizer.momentum, "nesterov": optimizer.nesterov}


def _read_header(array, path):
    try:
        header = json.loads(str(array[()]))
    except (ValueError, TypeError):
        raise ValueError(f"{path}: its {_HEADER} is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cnnc network file")
    if header.get("version") != VERSION:
        raise ValueError(f"{path} was written in cnnc network format version "
                         f"{header.get('version')}; this cnnc reads version {VERSION}")
    return header


def _build(known, spec, what):
    """An instance of the class the spec names, with the spec's other entries as arguments."""
    arguments = {name: value for name, value in spec.items() if name not in ("type", "steps")}
    if spec["type"] not in known:
        raise ValueError(f"unknown {what} {spec['type']!r} (known: {', '.join(known)})")
    return known[spec["type"]](**arguments)


def _build_layer(spec, dtype):
    kind = spec["type"]
    if kind == "MaxPool":
        return layers.MaxPool(spec["pshape"], spec["strides"])
    if kind == "Flatten":
        return layers.Flatten(spec["input_shape"])
    common = dict(activation=_build(_ACTIVATIONS, spec["activation"], "activation"),
                  optimizer=_build(_OPTIMIZERS, spec["optimizer"], "optimizer"),
                  bias_init=init.zeros, dtype=dtype)
    if kind == "Conv":   # zeros, not random filters: loading must not draw from np.random
        padding = spec["padding"] if isinstance(spec["padding"], str) else tuple(spec["padding"])
        return layers.Conv(spec["fshape"], spec["strides"], padding, filter_init=init.zeros, **common)
    if kind == "FullyConnected":
        return layers.FullyConnected(spec["shape"], weight_init=init.zeros, **common)
    raise ValueError(f"unknown layer {kind!r} (known: Conv, MaxPool, Flatten, FullyConnected)")


def _restore(network, header, arrays):
    """Copy the saved weights and optimizer state into the freshly built network, checking
    every array against what the architecture expects."""
    for depth, (layer, spec) in enumerate(zip(network.layers, header["layers"])):
        for name, param in layer.params.items():
            param[...] = _take(arrays, f"layer{depth}/{name}", param.shape, param.dtype)
        optimizer = getattr(layer, "optimizer", None)
        if optimizer is None:
            continue
        for key, step in spec["optimizer"]["steps"].items():
            param = layer.params[key]
            state = {slot: _take(arrays, f"layer{depth}/optimizer/{key}/{slot}", param.shape,
                                 param.dtype).copy()
                     for slot in _OPTIMIZER_SLOTS[type(optimizer).__name__]}
            state["step"] = int(step)
            optimizer.state[key] = state


def _take(arrays, name, shape, dtype):
    if name not in arrays:
        raise ValueError(f"the file has no array {name!r}")
    value = arrays.pop(name)
    if value.shape != shape or value.dtype != dtype:
        raise ValueError(f"array {name!r} is {value.shape} {value.dtype}, the network needs "
                         f"{shape} {np.dtype(dtype)}")
    return value
