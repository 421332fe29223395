"""What the export functions share: the checks of one input sample's shape and of each
layer's output shape for it, and the names their errors show."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .. import _checks

if TYPE_CHECKING:
    from ..layers import Layer
    from ..network import Network


def sample_shape(function: str, input_shape: Sequence[int] | None,
                 net: Network | None = None) -> tuple[int, ...] | None:
    """input_shape, one sample's shape, as a tuple of ints; None takes the one `net` last saw
    (None without a net). A shape that is not one (_checks.shape) is a ValueError naming
    input_shape, and so is no shape at all when a net was given."""
    if input_shape is None:
        if net is not None and net.input_shape is None:
            raise ValueError(f"{function} needs the shape of one input sample: pass input_shape, "
                             "e.g. input_shape=(28, 28, 1), or run the network on data first")
        return None if net is None else tuple(net.input_shape)
    return _checks.shape(f"{function} input_shape", input_shape)


def output_shape(function: str, depth: int, layer: Layer, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample out of layer number `depth`, given one of `shape`; an input
    the layer cannot take is a ValueError naming the layer."""
    try:
        return tuple(layer.output_shape(shape))
    except ValueError as error:
        raise ValueError(f"{function}: layer {depth} ({type(layer).__name__}): {error}") from None


def converter(function: str, verb: str, table: dict, depth: int, layer: Layer):
    """The converter `table` holds for layer number `depth`, found by its exact type (a subclass
    may compute something else); a layer it has none for is a ValueError naming it."""
    convert = table.get(type(layer))
    if convert is None:
        raise ValueError(f"{function} cannot {verb} layer {depth}, {layer!r} ({class_name(layer)}): "
                         f"it {verb}s the layers {', '.join(kind.__name__ for kind in table)}, "
                         "exactly (a subclass may compute something else)")
    return convert


def class_name(thing: object) -> str:
    """The full name of thing's class, for messages: a subclass's repr may show its base's."""
    return f"{type(thing).__module__}.{type(thing).__qualname__}"
