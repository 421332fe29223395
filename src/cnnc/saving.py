"""A Network in one .npz file, without pickle: its architecture as JSON, its weights and
its optimizer state as plain arrays, so that training resumes exactly where it stopped.

Saving knows no layer, activation, loss or optimizer by name: each class describes itself,
and this module walks the descriptions.

- `config_fields`: the constructor arguments that rebuild an object, each kept as an
  attribute of the same name; `get_config()` gives their values and the classmethod
  `from_config(config)` (a layer's also takes the network's dtype) builds the object again;
  `Savable`, the base of the four kinds, gives both.
  A JSON object among the values describes an object in turn ({"type": name, ...its config}).
  `config_optional` names the fields a file from an older cnnc may lack (their defaults apply).
- A layer's `state_dict()` holds its live arrays (parameters, and `buffers` such as
  BatchNorm's running statistics), and its classmethod `state_shapes(config)` their shapes,
  so that a file's arrays are checked against its architecture before anything is built.
- An optimizer keeps `state[key]`, per parameter: a "step" count and the arrays `slots`
  names (Adam's "m" and "v"), each of the parameter's shape.
- A layer's `generators` names the attributes holding the np.random.Generator objects it
  draws from (Dropout's): each one's bit generator state is saved, so that a loaded layer
  draws exactly what the saved one would have drawn next.

A file can name only classes given to `register`, as cnnc's own are: loading builds them
with the arguments the file holds, and never imports or runs anything the file names.

The file is format version 2: {"format": "cnnc-network", "version": 2, "dtype", "loss",
"layers": [{"type": "Conv", "fshape": [...], ..., "activation": {"type": "ReLU"},
"optimizer": {"type": "AdamOptimizer", ..., "steps": {"w": 3, "b": 3}}}, ...,
{"type": "Dropout", "rate": 0.5, "seed": 7, "generators": {"rng": {"bit_generator": "PCG64",
"state": {"state": ..., "inc": ...}, "has_uint32": 0, "uinteger": 0}}}], "input_shape"},
and arrays "layer{i}/{name}" for layer i's state, "layer{i}/{field}/{key}/{slot}" for its
optimizer's. A generator's state is NumPy's `bit_generator.state`, whose 128-bit integers
JSON holds exactly. Version 1, written before generators were saved, is version 2 without
"generators": its layers draw from their seeds again, as they did when it was current.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import numpy as np

from . import _checks
from ._archive import Archive
from ._atomic_file import atomic_write

FORMAT = "cnnc-network"
VERSION = 2
# The bit generators whose state a file may hold, by the name NumPy's state gives them.
_BIT_GENERATORS = {"PCG64": np.random.PCG64}
_HEADER = "cnnc_network.json"

# What each kind of object is called in messages, by the `saved_kind` of its base class.
_KINDS = ("layer", "activation", "loss", "optimizer")
_REGISTRY: dict[str, dict[str, type]] = {kind: {} for kind in _KINDS}


class Savable:
    """What saving reads of an object: `saved_kind`, set by each base class ("layer",
    "activation", "loss" or "optimizer"), and `config_fields`, the constructor arguments
    that rebuild it, each kept as an attribute of the same name. `config_optional` names
    the fields that files from older cnnc lack (their defaults apply)."""

    saved_kind = ""
    config_fields: tuple[str, ...] = ()
    config_optional: tuple[str, ...] = ()

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this object, by name."""
        return {name: getattr(self, name) for name in self.config_fields}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """The object get_config described (an optimizer with fresh state): config holds its
        constructor arguments."""
        return cls(**config)


def register(cls: type) -> type:
    """Let saved networks hold instances of cls, a subclass of Layer, AbstractActivation,
    Loss or Optimizer; a file names it by cls.__name__. Usable as a class decorator.

    A name stands for one class only: registering another class under a taken name is a
    ValueError, so that no file can mean two things.
    """
    kind = getattr(cls, "saved_kind", None)
    if kind not in _REGISTRY:
        raise ValueError(f"cannot register {cls!r}: only layers, activations, losses and "
                         "optimizers are saved")
    for known in _REGISTRY.values():
        taken = known.get(cls.__name__)
        if taken is not None and taken is not cls:
            raise ValueError(f"cannot register {cls.__module__}.{cls.__qualname__}: the name "
                             f"{cls.__name__!r} is {taken.__module__}.{taken.__qualname__}")
    _REGISTRY[kind][cls.__name__] = cls
    return cls


def save(network, path: str | os.PathLike) -> None:
    """Write the network to path, atomically: until the new file is complete, the old one
    (if any) stays as it was."""
    header, arrays = _describe_network(network)
    arrays[_HEADER] = np.array(json.dumps(header))
    with atomic_write(path) as out:
        np.savez(out, **arrays)


def load(path: str | os.PathLike, network_class: Callable):
    """The network saved in path, made as network_class(layers, loss=loss).

    A missing path is a FileNotFoundError. Any other file that is not a complete, consistent
    cnnc network (damaged, crafted, holding pickled objects) is a ValueError naming the
    file and what is wrong, raised before anything larger than the file is allocated.
    """
    with Archive(path) as archive:
        if _HEADER not in archive.names():
            raise archive.error(f"not a cnnc network file (it has no {_HEADER})")
        header = _read_header(archive)
        try:
            _check_header(header)
            arrays = _expected_arrays(header)
        except (_Malformed, TypeError, ValueError) as error:
            raise archive.error(f"malformed cnnc network file: {error}") from None
        _check_arrays(archive, arrays)
        dtype = header["dtype"]
        try:
            layers = [_build(spec, "layer", dtype) for spec in header["layers"]]
            for depth, (layer, spec) in enumerate(zip(layers, header["layers"])):
                _check_built(layer, spec, f"layer {depth}", arrays, f"layer{depth}/")
            network = network_class(layers, loss=_build(header["loss"], "loss"))
            _check_chain(network, header["input_shape"])
        except (_Malformed, TypeError, ValueError) as error:
            raise archive.error(f"malformed cnnc network file: {error}") from None
        network.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
        for depth, (layer, spec) in enumerate(zip(network.layers, header["layers"])):
            _restore(layer, spec, archive, f"layer{depth}/")
    return network


# ============================================================================ writing

def _describe_network(network):
    """The JSON header and the arrays that together hold the network."""
    specs, arrays = [], {}
    for depth, layer in enumerate(network.layers):
        where, prefix = f"layer {depth}", f"layer{depth}/"
        spec = _describe(layer, "layer", where, arrays, prefix)
        for name, value in layer.state_dict().items():
            arrays[prefix + name] = value
        if type(layer).generators:
            spec["generators"] = {name: _generator_state(getattr(layer, name, None), where, name)
                                  for name in type(layer).generators}
        specs.append(spec)
    header = {"format": FORMAT, "version": VERSION, "dtype": np.dtype(network.dtype).name,
              "loss": _describe(network.loss, "loss", "the network", arrays, ""),
              "layers": specs,
              "input_shape": None if network.input_shape is None else list(network.input_shape)}
    return header, arrays


def _describe(obj, role, where, arrays, prefix):
    """{"type": its class name, **its config}, with an optimizer's step counts; the arrays of
    an optimizer's state go into arrays, under prefix."""
    cls = type(obj)
    kind = getattr(cls, "saved_kind", None)
    if _REGISTRY.get(kind, {}).get(cls.__name__) is not cls:
        raise ValueError(f"cannot save {where}: {role} {cls.__qualname__} is not a class saving "
                         "knows (cnnc's own, or one given to cnnc.saving.register)")
    spec = {"type": cls.__name__}
    for field, value in obj.get_config().items():
        spec[field] = _json(value, field, where, arrays, f"{prefix}{field}/")
    if kind == "optimizer":
        spec["steps"] = {}
        for key, state in obj.state.items():
            spec["steps"][key] = int(state["step"])
            for slot in cls.slots:
                arrays[f"{prefix}{key}/{slot}"] = state[slot]
    return spec


def _generator_state(generator, where, name):
    """The state of the generator a layer draws from, as NumPy gives it (JSON already)."""
    kind = type(getattr(generator, "bit_generator", None))
    if not isinstance(generator, np.random.Generator) or kind not in _BIT_GENERATORS.values():
        raise ValueError(f"cannot save {where}: its {name} must be a np.random.Generator over "
                         f"{' or '.join(_BIT_GENERATORS)}, got {generator!r}")
    return generator.bit_generator.state


def _json(value, field, where, arrays, prefix):
    """value as JSON: numbers, strings, booleans, None, lists, and described objects."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"cannot save {where}: its {field} {value} is not a finite number")
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_json(item, field, where, arrays, prefix) for item in value]
    if hasattr(value, "get_config"):
        return _describe(value, field, where, arrays, prefix)
    raise ValueError(f"cannot save {where}: its {field} {value!r} is not a number, string, list "
                     "or an object saving knows")


# ============================================================================ reading

# An optimizer's step count, a count of updates, is bounded as an int64.
_MAX_STEP = 2**63 - 1
# How deep objects and lists may nest in a config: far more than any class needs, and far
# less than would exhaust Python's stack in the checks and builds that walk them.
_MAX_NESTING = 16
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
    if type(version) is not int or not 1 <= version <= VERSION:
        raise archive.error(f"written in cnnc network format version {version!r}; this cnnc "
                            f"reads versions 1 to {VERSION}")
    return header


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number cnnc writes")


def _check_header(header):
    _fields(header, "the header", ("format", "version", "dtype", "loss", "layers", "input_shape"))
    if header["dtype"] not in ("float32", "float64"):
        raise _Malformed(f"dtype must be \"float32\" or \"float64\", got {header['dtype']!r}")
    _check_object(header["loss"], "the header", "loss", "loss")
    if header["input_shape"] is not None:
        _checks.shape("input_shape", header["input_shape"])
    if not isinstance(header["layers"], list):
        raise _Malformed(f"layers must be a list, got {_kind(header['layers'])}")
    for depth, spec in enumerate(header["layers"]):
        where = f"layer {depth}"
        # version 1 saved no generator: its layers draw from their seeds
        generators = _class_of(spec, where, "layer", "layer").generators if header["version"] > 1 else ()
        _check_object(spec, where, "layer", "layer", saved_state=("generators",) if generators else ())
        if generators:
            _fields(spec["generators"], f"{where} generators", generators)
            for name in generators:
                _check_generator_state(spec["generators"][name], f"{where} generator {name}")


def _check_generator_state(state, where):
    """state is NumPy's bit_generator.state of a bit generator a file may hold: its name, and
    exactly the fields NumPy gives, each an int in the range the bit generator keeps it in
    (PCG64: a 128-bit state and an odd 128-bit increment; one 32-bit value kept or not)."""
    _fields(state, where, ("bit_generator", "state", "has_uint32", "uinteger"))
    if not isinstance(state["bit_generator"], str) or state["bit_generator"] not in _BIT_GENERATORS:
        raise _Malformed(f"{where}: unknown bit generator {state['bit_generator']!r} (known: "
                         f"{', '.join(_BIT_GENERATORS)})")
    _fields(state["state"], f"{where} state", ("state", "inc"))
    _checks.integer(f"{where} state", state["state"]["state"], 0, 2**128 - 1)
    if _checks.integer(f"{where} inc", state["state"]["inc"], 1, 2**128 - 1) % 2 == 0:
        raise _Malformed(f"{where} inc must be odd, as PCG64 keeps it, got {state['state']['inc']}")
    _checks.integer(f"{where} has_uint32", state["has_uint32"], 0, 1)
    _checks.integer(f"{where} uinteger", state["uinteger"], 0, 2**32 - 1)


def _class_of(spec, where, role, kind):
    """The registered class the spec names: of that kind, or when kind is None, of any kind
    but a layer (an argument of a layer is never a layer, whose arrays only a layer list holds)."""
    if not isinstance(spec, dict):
        raise _Malformed(f"{where}: the {role} must be an object, got {_kind(spec)}")
    name = spec.get("type")
    known = _REGISTRY[kind] if kind else {n: c for k in _KINDS if k != "layer"
                                          for n, c in _REGISTRY[k].items()}
    if not isinstance(name, str) or name not in known:
        raise _Malformed(f"{where}: unknown {role} {name!r} (known: {', '.join(known)})")
    return known[name]


def _check_object(spec, where, role, kind=None, depth=0, saved_state=()):
    """The spec names a registered class and gives exactly its config fields, each a JSON value
    saving reads (finite numbers; objects describing objects in turn), and the fields of its
    saved state: an optimizer's "steps", and the `saved_state` fields given."""
    if depth > _MAX_NESTING:
        raise _Malformed(f"{where} nests objects and lists more than {_MAX_NESTING} deep")
    cls = _class_of(spec, where, role, kind)
    place = where if role == "layer" else f"{where} {role}"
    optional = tuple(cls.config_optional)
    required = tuple(name for name in cls.config_fields if name not in optional)
    state = ("steps",) if cls.saved_kind == "optimizer" else saved_state
    _fields(spec, place, ("type",) + required + state, optional)
    for field in cls.config_fields:
        if field in spec:
            _check_value(spec[field], place, field, depth + 1)
    return cls


def _check_value(value, where, field, depth):
    if depth > _MAX_NESTING:
        raise _Malformed(f"{where} nests objects and lists more than {_MAX_NESTING} deep")
    if isinstance(value, dict):
        _check_object(value, where, field, None, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, where, field, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _Malformed(f"{where} {field} must be a finite number, got {value!r}")


def _fields(spec, where, required, optional=()):
    if not isinstance(spec, dict):
        raise _Malformed(f"{where} must be an object, got {_kind(spec)}")
    missing = [name for name in required if name not in spec]
    unknown = sorted(set(spec) - set(required) - set(optional))
    if missing:
        raise _Malformed(f"{where} has no {', '.join(missing)}")
    if unknown:
        raise _Malformed(f"{where} has unknown fields {unknown}")


def _kind(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _optimizers(spec, cls):
    """(field, spec) of each optimizer among a layer's config values."""
    return [(field, spec[field]) for field in cls.config_fields
            if isinstance(spec.get(field), dict)
            and _class_of(spec[field], "", field, None).saved_kind == "optimizer"]


def _expected_arrays(header):
    """The name, shape and dtype of every array the header's architecture needs, from each
    layer's state_shapes: nothing is built yet, so nothing is allocated."""
    dtype, arrays = np.dtype(header["dtype"]), {}
    for depth, spec in enumerate(header["layers"]):
        cls, where, prefix = _class_of(spec, "", "layer", "layer"), f"layer {depth}", f"layer{depth}/"
        config = {field: spec[field] for field in cls.config_fields if field in spec}
        shapes = {name: tuple(shape) for name, shape in cls.state_shapes(config).items()}
        for name, shape in shapes.items():
            arrays[prefix + name] = shape
        params = [name for name in shapes if name not in cls.buffers]
        for field, optimizer in _optimizers(spec, cls):
            slots = _class_of(optimizer, "", field, "optimizer").slots
            _fields(optimizer["steps"], f"{where} {field} steps", (), optional=params)
            for key, step in optimizer["steps"].items():
                _checks.integer(f"{where} {field} step count of {key!r}", step, 1, _MAX_STEP)
                for slot in slots:
                    arrays[f"{prefix}{field}/{key}/{slot}"] = shapes[key]
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


def _build(spec, kind, dtype=None):
    """The object the spec describes, built by its class's from_config."""
    cls = _class_of(spec, "", kind, kind)
    config = {field: _built(spec[field]) for field in cls.config_fields if field in spec}
    return cls.from_config(config, dtype) if kind == "layer" else cls.from_config(config)


def _built(value):
    if isinstance(value, dict):
        return _build(value, None)
    if isinstance(value, list):
        return [_built(item) for item in value]
    return value


def _check_built(layer, spec, where, arrays, prefix):
    """The layer built holds the arrays its state_shapes promised (a class whose two disagree
    would otherwise read a file into arrays of other shapes)."""
    promised = {name[len(prefix):]: shape for name, (shape, _) in arrays.items()
                if name.startswith(prefix) and "/" not in name[len(prefix):]}
    held = {name: value.shape for name, value in layer.state_dict().items()}
    if held != promised:
        raise _Malformed(f"{where} ({type(layer).__name__}) holds arrays {held}, but its "
                         f"state_shapes gives {promised}")


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


def _restore(layer, spec, archive, prefix):
    """Read the saved arrays, step counts and generator states into the freshly built layer
    and its optimizers."""
    for name, value in layer.state_dict().items():
        archive.read_into(prefix + name, value)
    for name, state in spec.get("generators", {}).items():
        bit_generator = _BIT_GENERATORS[state["bit_generator"]]()
        bit_generator.state = state
        setattr(layer, name, np.random.Generator(bit_generator))
    for field, described in _optimizers(spec, type(layer)):
        optimizer = getattr(layer, field)
        for key, step in described["steps"].items():
            state: dict[str, Any] = {}
            for slot in type(optimizer).slots:
                state[slot] = np.empty_like(layer.params[key])
                archive.read_into(f"{prefix}{field}/{key}/{slot}", state[slot])
            state["step"] = step
            optimizer.state[key] = state
