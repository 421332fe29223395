"""Network: a stack of layers trained step by step, as in the seed report."""
from collections import deque

import numpy as np

from . import dtypes, kernels
from .losses import class_ids


class Network:
    """Layers applied in order, and the loss on the last one's output.

    The network computes in the dtype of its parameters (one for all layers); inputs
    are cast to it.
    """

    def __init__(self, layers, loss):
        self.layers = list(layers)
        self.loss = loss
        self.dtype = _common_dtype(self.layers)
        _check_own_optimizers(self.layers)

    def train_step(self, x, y, lr=1e-3):
        """One forward, backward and optimizer update on a batch; returns the loss before it.

        A non-finite loss or gradient raises FloatingPointError and changes nothing.
        """
        if not np.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a finite number >= 0, got {lr}")
        with kernels.memory_pool():
            loss, grads = self.loss_and_grads(x, y)
            _check_finite(loss, grads, self.layers)
            for layer, layer_grads in zip(self.layers, grads):
                layer.update(layer_grads, lr)
        return loss

    def loss_and_grads(self, x, y):
        """The loss on a batch and, per layer in order, a dict of its parameter gradients."""
        x, y = self._batch(x, y)
        with kernels.memory_pool():
            z_stack = deque()
            activation = x
            for layer in self.layers:
                z, output = layer.forward(activation)
                z_stack.append((activation, z))
                activation = output
            loss = self.loss.compute(activation, y)

            upstream = self.loss.deriv(activation, y)
            grads = deque()
            for depth, layer in reversed(list(enumerate(self.layers))):
                inputs, z = z_stack.pop()
                layer_err = layer.activation.backward(z, upstream)
                grads.appendleft(layer.get_grad(inputs, layer_err))
                if depth > 0:
                    upstream = layer.backward(layer_err)
        return loss, list(grads)

    def predict(self, x, batch_size=1000):
        """The last layer's output for every sample, computed batch_size samples at a time."""
        x = np.asarray(x)
        out_shape = self._check_input(x)
        batch_size = _check_batch_size(batch_size)
        outputs = np.empty((len(x),) + out_shape, dtype=self.dtype)
        with kernels.memory_pool():
            for start in range(0, len(x), batch_size):
                outputs[start : start + batch_size] = self._forward(x[start : start + batch_size])
        return outputs

    def evaluate(self, x, y, batch_size=1000):
        """The fraction of samples whose largest output is their label's class."""
        x = np.asarray(x)
        (classes,) = self._check_input(x, one_d_output=True)
        labels = _check_count(x, y)
        ids = class_ids(labels, classes)
        batch_size = _check_batch_size(batch_size)
        correct = 0
        with kernels.memory_pool():
            for start in range(0, len(x), batch_size):
                batch = self._forward(x[start : start + batch_size])
                correct += int((batch.argmax(axis=1) == ids[start : start + batch_size]).sum())
        return correct / len(x) if len(x) else 0.0

    def _forward(self, x):
        activation = np.ascontiguousarray(x, dtype=self.dtype)
        for layer in self.layers:
            _, activation = layer.forward(activation)
        return activation

    def _batch(self, x, y):
        """A training batch checked and cast: x in the network's dtype, y as given."""
        x = np.asarray(x)
        self._check_input(x, one_d_output=True)
        y = _check_count(x, y)
        if len(x) == 0:
            raise ValueError("the batch is empty")
        return np.ascontiguousarray(x, dtype=self.dtype), y

    def _check_input(self, x, one_d_output=False):
        """Check x against every layer; return the shape of one sample's output."""
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"inputs must be numbers, got dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"inputs must be a batch (N, ...), got shape {x.shape}")
        shape = x.shape[1:]
        for depth, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as error:
                raise ValueError(f"layer {depth} ({type(layer).__name__}): {error}") from None
        if one_d_output and len(shape) != 1:
            raise ValueError(f"the last layer must output (N, classes), it outputs (N, {shape})")
        return tuple(shape)


def _common_dtype(layers):
    found = {np.dtype(layer.dtype) for layer in layers if hasattr(layer, "dtype")}
    if len(found) > 1:
        listing = ", ".join(f"layer {i}: {np.dtype(layer.dtype)}" for i, layer in enumerate(layers)
                            if hasattr(layer, "dtype"))
        raise ValueError(f"all layers of a Network must share one dtype, got {listing}")
    return found.pop() if found else dtypes.get_default_dtype()


def _check_own_optimizers(layers):
    owner = {}
    for depth, layer in enumerate(layers):
        optimizer = getattr(layer, "optimizer", None)
        if optimizer is None:
            continue
        if id(optimizer) in owner:
            raise ValueError(f"layers {owner[id(optimizer)]} and {depth} share one optimizer instance; "
                             "give each layer its own (its state belongs to that layer's parameters)")
        owner[id(optimizer)] = depth


def _check_count(x, y):
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"got {len(x)} samples but labels of shape {y.shape}")
    return y


def _check_batch_size(batch_size):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _check_finite(loss, grads, layers):
    if not np.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss}; no weight or optimizer state was changed")
    for depth, (layer, layer_grads) in enumerate(zip(layers, grads)):
        for name, grad in layer_grads.items():
            if not np.isfinite(grad).all():
                raise FloatingPointError(
                    f"non-finite gradient for {name!r} of layer {depth} ({type(layer).__name__}); "
                    "no weight or optimizer state was changed"
                )
