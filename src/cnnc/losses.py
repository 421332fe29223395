"""Losses on the network output: `compute(outputs, labels)` is the mean over the batch,
`deriv(outputs, labels)` its gradient w.r.t. the outputs.

Labels are integer class ids of shape (N,) or targets of shape (N, classes), one-hot
or any distribution over the classes; MeanSquaredError also takes targets of shape (N,)
for a network with one output. A loss's `classification` says whether a Network reports
accuracy for it (a loss that does not say is taken as a classification loss).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .saving import Savable, register

Array = NDArray[np.floating]


def targets(labels: ArrayLike, outputs: Array) -> Array:
    """Labels as an (N, classes) array in the outputs' dtype, after checking them."""
    labels = np.asarray(labels)
    n, classes = outputs.shape
    if labels.shape[:1] != (n,):
        raise ValueError(f"expected labels for {n} samples, got labels of shape {labels.shape}")
    if labels.ndim == 2:
        if labels.shape[1] != classes:
            raise ValueError(
                f"one-hot labels must have {classes} columns (the network has {classes} outputs), "
                f"got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
            raise ValueError(f"labels must be numbers, got dtype {labels.dtype}")
        return labels.astype(outputs.dtype, copy=False)
    ids = class_ids(labels, classes)
    onehot = np.zeros((n, classes), dtype=outputs.dtype)
    onehot[np.arange(n), ids] = 1
    return onehot


def class_ids(labels: ArrayLike, classes: int) -> NDArray[np.integer]:
    """Labels as integer class ids (N,), checked to lie in [0, classes)."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape[1] != classes:
            raise ValueError(f"one-hot labels must have {classes} columns, got shape {labels.shape}")
        return labels.argmax(axis=1)
    if labels.ndim != 1:
        raise ValueError(
            f"labels must be class ids of shape (N,) or one-hot of shape (N, {classes}), "
            f"got shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"class-id labels must be integers, got dtype {labels.dtype} "
            "(use labels.astype(int) or one-hot labels)"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"class ids must lie in [0, {classes}), got values from {labels.min()} to {labels.max()}"
        )
    return labels


def regression_targets(labels: ArrayLike, outputs: Array) -> Array:
    """Targets as an (N, outputs) array in the outputs' dtype: as targets() reads them, and
    (N,) numbers for a network with one output, read as (N, 1) as Keras does."""
    labels = np.asarray(labels)
    n, width = outputs.shape
    if labels.ndim != 1 or (width > 1 and np.issubdtype(labels.dtype, np.integer)):
        return targets(labels, outputs)
    if width > 1:
        raise ValueError(f"targets of shape (N,) fit a network with one output, this one has {width}: "
                         f"pass targets of shape (N, {width}) (or integer class ids)")
    if labels.shape != (n,):
        raise ValueError(f"expected labels for {n} samples, got labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
        raise ValueError(f"labels must be numbers, got dtype {labels.dtype}")
    return labels.reshape(n, 1).astype(outputs.dtype, copy=False)


def _check_outputs(outputs):
    if outputs.ndim != 2:
        raise ValueError(f"the loss expects network outputs of shape (N, classes), got {outputs.shape}")


class Loss(Savable):
    """Base class: compute(outputs, labels) -> float and deriv(outputs, labels) -> gradient.

    For saving, `config_fields` names the constructor arguments (each kept as an attribute
    of the same name); a subclass given to cnnc.saving.register can be saved.
    """

    saved_kind = "loss"
    classification = True

    def compute(self, outputs: Array, labels: ArrayLike) -> float:
        """The loss of the last layer's outputs (N, ...) against labels, a mean over the batch.
        A label the loss cannot take is a ValueError saying what it expected."""
        raise NotImplementedError

    def deriv(self, outputs: Array, labels: ArrayLike) -> Array:
        """d loss / d outputs, of the outputs' shape, for the same outputs and labels as
        compute (the 1/N of the batch mean included)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


@register
class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused: takes logits, cannot overflow. The mean
    over the batch of -sum(targets * log softmax(outputs)). No arguments, no state."""

    classification = True

    def compute(self, outputs: Array, labels: ArrayLike) -> float:
        _check_outputs(outputs)
        t = targets(labels, outputs)
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-(t * log_probs).sum() / outputs.shape[0])

    def deriv(self, outputs: Array, labels: ArrayLike) -> Array:
        _check_outputs(outputs)
        t = targets(labels, outputs)
        shifted = outputs - outputs.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=1, keepdims=True)
        probs *= t.sum(axis=1, keepdims=True)
        return (probs - t) / outputs.dtype.type(outputs.shape[0])

    def probabilities(self, outputs: Array) -> Array:
        """The softmax of the logits: each row sums to 1."""
        _check_outputs(outputs)
        probs = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return probs


@register
class MeanSquaredError(Loss):
    """Mean of (output - target)^2 over all elements, as torch.nn.MSELoss.

    Targets are (N, outputs), (N,) for a network with one output, or integer class ids
    (N,) standing for their one-hot rows. No arguments, no state.
    """

    classification = False

    def compute(self, outputs: Array, labels: ArrayLike) -> float:
        _check_outputs(outputs)
        diff = outputs - regression_targets(labels, outputs)
        return float(np.mean(diff * diff))

    def deriv(self, outputs: Array, labels: ArrayLike) -> Array:
        _check_outputs(outputs)
        diff = outputs - regression_targets(labels, outputs)
        return diff * outputs.dtype.type(2.0 / diff.size)
