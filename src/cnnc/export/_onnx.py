"""A cnnc network as an ONNX model, in inference form, built with the onnx.helper API.

Inside the graph, images are NCHW (what ONNX's Conv and pooling take): the input is
transposed once, before the first layer that needs it, and back to NHWC before a Flatten
(cnnc flattens (H, W, C) in C order) or at the output.

Every attribute is written, also those only training uses: BatchNormalization's momentum
(ONNX's is the weight of the running statistics, 1 - cnnc's) and Dropout's ratio.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from .._atomic_file import atomic_write
from ..activations import LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from ..layers import (AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected, GlobalAvgPool,
                      MaxPool)
from ._common import converter, output_shape, sample_shape

if TYPE_CHECKING:
    from ..network import Network

FilePath = Union[str, os.PathLike]

OPSET = 17
IR_VERSION = 8      # opset 17's IR version (onnx 1.12): ONNX Runtime 1.13 and later load it

TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def to_onnx(net: Network, path: FilePath, input_shape: Sequence[int] | None = None) -> FilePath:
    """Write the network `net` to the file `path` as an ONNX model, atomically; return path.

    The model's input "input" is float32 (N, *input_shape), NHWC images as cnnc holds them,
    with a dynamic batch N; its output "output" is what net.predict gives. input_shape is
    one sample's shape, e.g. (28, 28, 1); None takes the one the network last saw. The
    weights are stored as float32, what ONNX Runtime runs on the CPU, also for a float64
    network.

    Raises ImportError without the onnx package, ValueError for an input_shape that is not a
    tuple of ints, when no input shape is known, for a layer the input does not fit, or for
    a layer or activation ONNX export does not cover.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("cnnc.export.to_onnx needs the onnx package: "
                          "pip install 'cnnc[onnx]'") from None
    from .. import __version__

    shape = sample_shape("to_onnx", input_shape, net)
    graph = _Graph(onnx)
    tensor, out_shape = graph.layers(net.layers, "input", shape)
    graph.output(tensor)
    model = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, "cnnc", [_value_info(onnx, "input", shape)],
                               [_value_info(onnx, "output", out_shape)], graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="cnnc", producer_version=__version__)
    onnx.checker.check_model(model)
    with atomic_write(path) as out:
        out.write(model.SerializeToString())
    return path


def _value_info(onnx, name, shape):
    """A float32 tensor (N, *shape) with a dynamic batch N."""
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", *shape])


class _Graph:
    """The nodes and weights of the graph being built, and whether images are NCHW."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.nodes, self.initializers = [], []
        self.nchw = False
        self.prefix = ""  # pragma: no mutate: layers() sets it before any name

    def add(self, op, inputs, **attributes):
        """A node of op on the named inputs; returns the name of its output."""
        name = f"{self.prefix}{op}_{len(self.nodes)}"
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def weight(self, name, array):
        """A float32 initializer (a scalar stays one: Dropout's ratio); returns its name."""
        name = self.prefix + name
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.array(array, dtype=np.float32), name))
        return name

    def layout(self, tensor, nchw):
        """The tensor with images in NCHW (nchw) or NHWC order, transposed if need be."""
        if self.nchw == nchw:
            return tensor
        self.nchw = nchw
        return self.add("Transpose", [tensor], perm=TO_NCHW if nchw else TO_NHWC)

    def layers(self, layers, tensor, shape):
        """Every layer and activation after `tensor`, one sample of `shape` (NHWC);
        returns the last output and its per-sample shape (NHWC)."""
        for depth, layer in enumerate(layers):
            self.prefix = f"layer{depth}."
            convert = converter("to_onnx", "export", _LAYERS, depth, layer)
            activation = _ACTIVATIONS.get(type(layer.activation))
            if activation is None:
                raise ValueError(f"to_onnx cannot export the activation {layer.activation!r} of "
                                 f"layer {depth}, {layer!r}: it exports the activations "
                                 f"{', '.join(kind.__name__ for kind in _ACTIVATIONS)}")
            out_shape = output_shape("to_onnx", depth, layer, shape)
            tensor = activation(self, layer.activation, convert(self, layer, tensor, shape))
            shape = out_shape
        return tensor, shape

    def output(self, tensor):
        """Make the last tensor the graph's output "output", images back in NHWC."""
        self.prefix = ""
        self.layout(tensor, False)
        self.nodes[-1].output[0] = "output"     # every layer adds a node: the last makes tensor


def _conv(graph, layer, tensor, shape):
    top, bottom, left, right = layer.pads(*shape[:2])
    return graph.add("Conv", [graph.layout(tensor, True),
                              graph.weight("w", layer.params["w"].transpose(3, 2, 0, 1)),
                              graph.weight("b", layer.params["b"])],
                     kernel_shape=list(layer.fshape[:2]), strides=list(layer.strides),
                     pads=[top, left, bottom, right])


def _max_pool(graph, layer, tensor, shape):
    return graph.add("MaxPool", [graph.layout(tensor, True)], kernel_shape=list(layer.pshape),
                     strides=list(layer.strides))


def _avg_pool(graph, layer, tensor, shape):
    return graph.add("AveragePool", [graph.layout(tensor, True)], kernel_shape=list(layer.pshape),
                     strides=list(layer.strides))


def _global_avg_pool(graph, layer, tensor, shape):
    pooled = graph.add("GlobalAveragePool", [graph.layout(tensor, True)])
    graph.nchw = False
    return graph.add("Flatten", [pooled], axis=1)


def _flatten(graph, layer, tensor, shape):
    return graph.add("Flatten", [graph.layout(tensor, False)], axis=1)


def _fully_connected(graph, layer, tensor, shape):
    return graph.add("Gemm", [tensor, graph.weight("w", layer.params["w"]),
                              graph.weight("b", layer.params["b"])])


def _batch_norm(graph, layer, tensor, shape):
    if len(shape) == 3:
        tensor = graph.layout(tensor, True)
    return graph.add("BatchNormalization", [
        tensor, graph.weight("w", layer.params["w"]), graph.weight("b", layer.params["b"]),
        graph.weight("running_mean", layer.running_mean),
        graph.weight("running_var", layer.running_var)], epsilon=float(layer.eps),
        momentum=1 - float(layer.momentum))


def _dropout(graph, layer, tensor, shape):
    """The identity in inference; the rate is kept for a runtime that trains."""
    return graph.add("Dropout", [tensor, graph.weight("ratio", np.array(layer.rate))])


_LAYERS = {Conv: _conv, MaxPool: _max_pool, AvgPool: _avg_pool,
           GlobalAvgPool: _global_avg_pool, Flatten: _flatten, FullyConnected: _fully_connected,
           BatchNorm: _batch_norm, Dropout: _dropout}

_ACTIVATIONS = {
    Linear: lambda graph, activation, tensor: tensor,
    ReLU: lambda graph, activation, tensor: graph.add("Relu", [tensor]),
    LeakyReLU: lambda graph, activation, tensor: graph.add("LeakyRelu", [tensor],
                                                           alpha=float(activation.slope)),
    Sigmoid: lambda graph, activation, tensor: graph.add("Sigmoid", [tensor]),
    Tanh: lambda graph, activation, tensor: graph.add("Tanh", [tensor]),
}
