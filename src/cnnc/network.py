"""Network: a stack of layers trained step by step, as in the course project."""
from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections import deque
from typing import Callable, Dict, List, Protocol, Sequence, TextIO, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from . import _checks, _interrupts, dtypes, kernels, profiling, saving
from .activations import AbstractActivation
from .layers import Layer
from .losses import class_ids


class Loss(Protocol):
    """What a Network needs of its loss (SoftmaxCrossEntropy and MeanSquaredError have it)."""

    def compute(self, outputs: NDArray, labels: NDArray) -> float:
        """The mean loss of a batch of outputs (N, ...) against its labels."""

    def deriv(self, outputs: NDArray, labels: NDArray) -> NDArray:
        """d loss / d outputs, of the outputs' shape."""


# lr for fit: a number, or a schedule step -> lr (see cnnc.schedules)
LearningRate = Union[float, Callable[[int], float]]
# one dict per layer, parameter name ("w", "b") -> its gradient; {} for a layer without
Gradients = List[Dict[str, NDArray]]


# Inference takes a batch a few samples at a time, each chunk's largest activation within
# about this many bytes: the layers then work in the cores' caches, and predict's memory
# peaks at a chunk's activations, not the whole batch's. A chunk holds at least
# _INFERENCE_CHUNK_SAMPLES, so that a fully connected layer's weights serve enough rows
# each time they are read (VGG-style inference took 10% longer in chunks of 32), and the
# layers after the images have shrunk take larger chunks (fewer calls, each weight read
# for more rows).
_INFERENCE_CHUNK_BYTES = 4 << 20
_INFERENCE_CHUNK_SAMPLES = 128


class Network:
    """Layers applied in order, and the loss on the last one's output.

    layers: the layers, first to last (Conv, MaxPool, Flatten, FullyConnected, ...); each
        parametric layer must have its own optimizer instance.
    loss: the loss on the last layer's output, such as SoftmaxCrossEntropy(); a class
        (loss=SoftmaxCrossEntropy) is made with its defaults.

    State: `layers` (the list, in order), `loss`, `dtype` (the dtype of the layers'
    parameters: one for all of them, else ValueError; inputs are cast to it) and
    `input_shape` (one sample's shape, once the network has seen data; None before).
    The weights live in each layer's `params` and the optimizer state in each layer's
    optimizer: train_step and fit change both, and BatchNorm's running statistics;
    predict, predict_proba and evaluate change nothing but `input_shape`; profile changes
    nothing.
    Invalid layers or loss raise ValueError here, not at the first step.
    """

    def __init__(self, layers: Sequence[Layer], loss: Loss | type[Loss]) -> None:
        self.layers = _check_layers(layers)
        self.loss = _check_loss(loss)
        self.dtype = _common_dtype(self.layers)
        _check_own_optimizers(self.layers)
        self.input_shape: tuple[int, ...] | None = None     # one sample's shape, once seen

    def __repr__(self):
        """The layers one per line when there are several, as torch.nn.Sequential shows them."""
        layers = [repr(layer) for layer in self.layers]
        if len(layers) > 1:
            listing = "\n" + "".join(f"    {layer},\n" for layer in layers)
        else:
            listing = "".join(layers)
        return f"Network([{listing}], loss={self.loss!r})"

    def train_step(self, x: ArrayLike, y: ArrayLike, lr: float = 1e-3) -> float:
        """One forward, backward and optimizer update on a batch; returns the loss before it.

        x: a batch of inputs (N, ...), such as images (N, H, W, C).
        y: their labels: class ids (N,) or one-hot rows (N, classes) for
            SoftmaxCrossEntropy; targets (N, outputs) for MeanSquaredError.
        lr: the learning rate, a number >= 0 (for a schedule, use fit).

        The step is whole or not at all: a non-finite loss or gradient raises
        FloatingPointError and changes nothing, and an interrupt (Ctrl-C) or an error
        leaves every parameter and optimizer state as it was before the step or after it.
        """
        return self._train_batch(x, y, _check_lr(lr))[0]

    def _train_batch(self, x, y, lr):
        """train_step, also returning the network's outputs on the batch (before the update)."""
        with kernels.memory_pool():
            loss, grads, outputs = self._loss_grads_outputs(x, y)
            _check_finite(loss, grads, self.layers)
            self._update(grads, lr)
        return loss, outputs

    def _update(self, grads, lr):
        """Update every layer or none: first each optimizer readies its state (what can fail),
        then the updates run with Ctrl-C held back until the last one is done."""
        optimizers = [layer.optimizer for layer in self.layers if hasattr(layer, "optimizer")]
        states = [dict(optimizer.state) for optimizer in optimizers]
        try:
            for layer, layer_grads in zip(self.layers, grads):
                layer.prepare_update(layer_grads)
        except BaseException:
            for optimizer, state in zip(optimizers, states):
                optimizer.state = state
            raise
        with _interrupts.deferred():
            for layer, layer_grads in zip(self.layers, grads):
                layer.update(layer_grads, lr)
                layer.commit_statistics()

    def loss_and_grads(self, x: ArrayLike, y: ArrayLike) -> tuple[float, Gradients]:
        """The loss on a batch and, per layer in order, a dict of its parameter gradients
        ({} for a layer without parameters), x and y as for train_step. No weight changes;
        it is a pass in training mode, so BatchNorm's running statistics take in this batch."""
        loss, grads, _ = self._loss_grads_outputs(x, y)
        for layer in self.layers:
            layer.commit_statistics()
        return loss, grads

    @contextlib.contextmanager
    def _mode(self, training):
        """Run the block with every layer in training mode (Dropout drops, BatchNorm uses
        the batch's statistics) or in inference mode, then back in inference mode."""
        for layer in self.layers:
            layer.training = training
        try:
            yield
        finally:
            for layer in self.layers:
                layer.training = False

    def _loss_grads_outputs(self, x, y):
        x, y = self._batch(x, y)
        with kernels.memory_pool(), self._mode(training=True):
            kept_stack = deque()
            activation = x
            for layer in self.layers:
                kept, output = layer.train_forward(activation)
                kept_stack.append((activation, kept))
                activation = output
            loss = self.loss.compute(activation, y)

            upstream = self.loss.deriv(activation, y)
            grads = deque()
            first = self._first_with_params()
            for depth, layer in reversed(list(enumerate(self.layers))):
                inputs, kept = kept_stack.pop()
                if depth < first:           # no parameters here or below: nothing to learn
                    grads.appendleft({})
                    continue
                layer_err = layer.activation.backward(kept, upstream)
                grads.appendleft(layer.get_grad(inputs, layer_err))
                if depth > first:
                    upstream = layer.backward(layer_err)
        return loss, list(grads), activation

    def _first_with_params(self):
        """The index of the first layer with parameters (the gradient stops there)."""
        return next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))

    def fit(self, x: ArrayLike, y: ArrayLike, epochs: int = 1, batch_size: int = 50,
            lr: LearningRate = 1e-3, shuffle: bool = True, seed: int | None = None,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None,
            progress: bool = True) -> dict[str, list[float]]:
        """Train for `epochs` passes over (x, y), batch_size samples per step.

        x, y: all the training samples and their labels, as for train_step.
        epochs: how many passes over the samples (0: none).
        batch_size: samples per step; the last batch of an epoch may be smaller.
        lr: a number, or a schedule: a callable step -> lr (see cnnc.schedules), called
            once per batch with the 0-based step count of this call, counting on across epochs.
        shuffle: visit the samples in a new random order every epoch (False: as given).
        seed: makes the shuffling repeatable: an int >= 0 (None: fresh randomness).
        validation_data: (x_val, y_val), a tuple or list, scored after every epoch (None: no
            validation); x_val's samples of a shape every layer takes, that of x's where a
            Flatten() takes the shape it first sees.
        progress: show a progress bar on stderr with the running loss, accuracy and speed.

        Returns the history: per epoch, the mean training "loss" and "accuracy" over the
        epoch's steps (each taken before that step's update) and, given validation_data,
        "val_loss" and "val_accuracy" after the epoch. Accuracy is for classification
        losses (SoftmaxCrossEntropy); a MeanSquaredError network reports its loss only.
        Everything that can be checked is checked before the first step, so that a mistake
        costs no epoch: the arguments, the shapes of x and x_val through every layer, the
        labels of both, and batches a layer cannot train on (a BatchNorm of (N, F) inputs
        needs two samples in every batch, the last one of an epoch too). A bad argument or
        label is a ValueError, and a step fails as train_step does.
        """
        schedule = lr if callable(lr) else _constant(_check_lr(lr))
        batch_size = _check_batch_size(batch_size)
        epochs = _checks.integer("epochs", epochs, 0, _MAX_COUNT)
        shuffle = _checks.flag("shuffle", shuffle)
        seed = _checks.seed("seed", seed)
        progress = _checks.flag("progress", progress)
        x = np.asarray(x)
        (width,) = self._check_input(x, one_d_output=True)
        ids = self._check_labels(_check_count(x, y), width)
        if len(x) == 0:
            raise ValueError("fit needs at least one sample")
        if validation_data is not None:
            x_val, y_val = self._validation_set(validation_data, x.shape[1:], width)
        self._check_batches(x.shape[1:], len(x), batch_size)
        rng = np.random.default_rng(seed)
        names = ("loss", "accuracy") if self._classifies else ("loss",)
        history: dict[str, list[float]] = {name: [] for name in names}
        if validation_data is not None:
            history.update({f"val_{name}": [] for name in names})
        y = np.asarray(y)
        for epoch in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            with tqdm(total=len(x), unit="sample", desc=f"epoch {epoch + 1}/{epochs}",
                      disable=not progress, file=sys.stderr) as bar:
                scores = self._train_epoch(x, y, ids, order, batch_size, schedule,
                                           epoch * -(-len(x) // batch_size), bar)
                for name, value in zip(names, scores):
                    history[name].append(value)
                if validation_data is not None:
                    scores = self._loss_and_accuracy(x_val, y_val, 1000, with_accuracy=self._classifies)
                    for name, value in zip(names, scores):
                        history[f"val_{name}"].append(value)
                    bar.set_postfix({name: f"{values[-1]:.4f}" for name, values in history.items()})
        return history

    def _validation_set(self, validation_data, sample_shape, width):
        """validation_data as arrays (x_val, y_val), checked as fit's x and y are: samples every
        layer takes, also once training has fixed a Flatten() to the training samples' shape,
        at least one, and labels the loss takes. A refusal starts with "validation_data: "."""
        x_val, y_val = _checks.pair("validation_data", validation_data, "(x_val, y_val)")
        x_val = np.asarray(x_val)
        try:
            self._check_input(x_val, one_d_output=True)
            fixed = self._fixed_at_first_use(sample_shape)
            if self._fixed_at_first_use(x_val.shape[1:]) != fixed:
                depth = next(iter(fixed))
                raise ValueError(
                    f"x_val holds samples of shape {x_val.shape[1:]}, but the training x holds "
                    f"samples of shape {sample_shape}: layer {depth} "
                    f"({type(self.layers[depth]).__name__}) takes the shape it first sees, "
                    "the training samples', and then no other")
            if len(x_val) == 0:
                raise ValueError(f"x_val has no sample (shape {x_val.shape}): pass at least one, or "
                                 "validation_data=None")
            self._check_labels(_check_count(x_val, y_val), width)
        except ValueError as error:
            raise ValueError(f"validation_data: {error}") from None
        finally:
            self.input_shape = sample_shape     # what _check_input(x_val) noted was not the input
        return x_val, y_val

    def _fixed_at_first_use(self, sample_shape):
        """The input shape, by depth, that each layer fixing its input shape at first use (a
        Flatten() given none) receives from samples of sample_shape, which the layers take."""
        shapes, shape = {}, sample_shape
        for depth, layer in enumerate(self.layers):
            if getattr(layer, "input_shape", ()) is None:      # a layer's shape yet to be fixed
                shapes[depth] = shape
            shape = layer.output_shape(shape)
        return shapes

    def _check_batches(self, sample_shape, count, batch_size):
        """Refuse, before any step, batches some layer cannot train on: fit's hold batch_size
        samples, the last of each epoch what is left of count (layer.min_training_batch)."""
        smallest = min(count, count % batch_size or batch_size)
        shape = sample_shape
        for depth, layer in enumerate(self.layers):
            needed = layer.min_training_batch(shape)
            if smallest < needed:
                raise ValueError(_too_small(f"layer {depth} ({type(layer).__name__})", needed,
                                            count, batch_size))
            shape = layer.output_shape(shape)

    def _train_epoch(self, x, y, ids, order, batch_size, schedule, first_step, bar):
        """One pass over the samples in this order, its steps counted from first_step; the
        mean loss of its steps and, given class ids, their accuracy (else None)."""
        total_loss, correct, seen = 0.0, 0, 0
        for step, start in enumerate(range(0, len(order), batch_size), first_step):
            batch = order[start : start + batch_size]
            loss, outputs = self._train_batch(x[batch], y[batch], _scheduled(schedule, step))
            total_loss += loss * len(batch)
            seen += len(batch)
            shown = {"loss": f"{total_loss / seen:.4f}"}
            if ids is not None:
                correct += int((outputs.argmax(axis=1) == ids[batch]).sum())
                shown["accuracy"] = f"{correct / seen:.4f}"
            bar.update(len(batch))
            bar.set_postfix(shown, refresh=False)
        return total_loss / seen, (correct / seen if ids is not None else None)

    @property
    def _classifies(self):
        """Whether fit and evaluate report accuracy: as the loss's `classification` says
        (SoftmaxCrossEntropy: yes, MeanSquaredError: no; a loss that does not say: yes)."""
        return getattr(self.loss, "classification", True)

    def _check_labels(self, labels, width):
        """Labels checked before any step: for a classifier, the class ids (N,) its accuracy
        needs; for other losses None, once the loss has taken them (against zero outputs)."""
        if self._classifies:
            return class_ids(labels, width)
        self.loss.compute(np.zeros((len(labels), width), self.dtype), labels)
        return None

    def summary(self, input_shape: Sequence[int] | None = None, file: TextIO | None = None) -> None:
        """Write a table of each layer's output shape and parameter count, and the total.

        input_shape: the shape of one sample, e.g. (28, 28, 1); None takes the one the
            network last saw, or the one its first layer fixes (Flatten, FullyConnected).
        file: a text stream to write the table to (None: sys.stdout, looked up at each
            call). Pass io.StringIO() to get the table as a string without printing it.

        Returns None, as pandas' DataFrame.info and Keras's model.summary do, so that a
        REPL shows the table once. Raises ValueError when no input shape is known, or
        when a layer refuses the shape it receives.
        """
        shape = self._summary_input_shape(input_shape)
        rows = [("layer", "output shape", "parameters")]
        total = 0
        for depth, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as error:
                raise ValueError(f"layer {depth} ({type(layer).__name__}): {error}") from None
            count = sum(int(p.size) for p in layer.params.values())
            total += count
            rows.append((f"{depth}: {layer!r}", str((None,) + tuple(shape)), f"{count:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines += ["-" * len(lines[0]), f"total parameters: {total:,} ({np.dtype(self.dtype).name})"]
        (sys.stdout if file is None else file).write("\n".join(lines) + "\n")

    def _summary_input_shape(self, input_shape):
        """The shape summary starts from: input_shape, else the last one the network saw, else
        the one its first layer fixes (a Flatten given its shape, a FullyConnected)."""
        if input_shape is not None:
            return _checks.shape("input_shape", input_shape)
        if self.input_shape is not None:
            return self.input_shape
        first = self.layers[0]
        if getattr(first, "input_shape", None) is not None:     # Flatten((6, 6, 32))
            return first.input_shape
        if hasattr(first, "shape"):                             # FullyConnected
            return (first.shape[0],)
        raise ValueError("summary needs the shape of one input sample, and this network has seen "
                         "none yet: pass input_shape=(H, W, C), such as input_shape=(28, 28, 1), "
                         "or run the network on data first (predict, fit or train_step)")

    def profile(self, x: ArrayLike, y: ArrayLike, repeats: int = 10) -> profiling.Profile:
        """Where a training step on (x, y) spends its time, layer by layer: a table.

        x, y: a batch and its labels, as for train_step; the profile times steps on it.
        repeats: how many passes each time is the median of, an int >= 1 (one more pass
            runs first, untimed, so that first-call costs are not measured).

        Each pass is the one train_step makes, without the optimizer's update: every
        layer's forward in training mode, the loss, every layer's backward. Each row of
        the result has a layer's forward and backward time (ms, the median of `repeats`,
        time.perf_counter around each), its FLOPs and GFLOP/s, and its share of the step;
        a last row is the loss's compute and deriv. FLOPs count the multiply-adds of the
        matrix products, 2 each: a Conv's forward is 2*N*OH*OW*kh*kw*C*F and a
        FullyConnected's 2*N*in*out; their backward is the input gradient and the weight
        gradient, twice the forward, but once the forward for the first layer with
        parameters, which computes no input gradient, and nothing below it. Pooling,
        activations, BatchNorm, Dropout, Flatten and the loss count 0 FLOPs (they are
        bounded by memory, not arithmetic). GFLOP/s set against the machine's peak tell a
        layer that computes slowly from one that has much to compute.

        The passes run on a copy of the network, which is left exactly as it was: weights,
        optimizer states, BatchNorm's running statistics, Dropout's random generators,
        `input_shape`; a train_step after a profile computes what it would have without.
        The copy costs the memory of the network's parameters and optimizer states once
        more. Bad arguments raise as train_step's do; a bad repeats is a ValueError.

        Returns a cnnc.profiling.Profile: `rows` (name, forward_ms, backward_ms,
        forward_flops, backward_flops, forward_gflops, backward_gflops, share), `total`,
        and str(profile) the table, as print(net.profile(x, y)) shows it.
        """
        return profiling.profile(self, x, y, repeats)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture, weights and optimizer state to one .npz file at path (no
        pickle), atomically; Network.load(path) resumes training exactly where it stopped."""
        saving.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Network:
        """The network saved at path by save(), ready to predict or to train on; a file that
        is not such a network raises ValueError, a missing one FileNotFoundError."""
        return saving.load(path, cls)

    def predict(self, x: ArrayLike, batch_size: int = 1000) -> NDArray[np.floating]:
        """The last layer's output for every sample of x (N, ...), in inference mode: an
        array (N, ...) in the network's dtype, logits for a linear last layer.

        batch_size: samples per forward pass; bounds the memory, not the result.
        Inputs the layers cannot take raise ValueError saying what was expected.
        """
        x = np.asarray(x)
        out_shape = self._check_input(x)
        batch_size = _check_batch_size(batch_size)
        outputs = np.empty((len(x),) + out_shape, dtype=self.dtype)
        with kernels.memory_pool():
            for start in range(0, len(x), batch_size):
                outputs[start : start + batch_size] = self._forward(x[start : start + batch_size])
        return outputs

    def predict_proba(self, x: ArrayLike, batch_size: int = 1000) -> NDArray[np.floating]:
        """Class probabilities (N, classes) for every sample: the softmax of predict's logits,
        x and batch_size as for predict. Only for a SoftmaxCrossEntropy network (ValueError
        otherwise)."""
        probabilities = getattr(self.loss, "probabilities", None)
        if probabilities is None:
            raise ValueError(f"predict_proba needs a network with a SoftmaxCrossEntropy loss; "
                             f"this one has {self.loss!r}, whose outputs are not logits")
        return probabilities(self.predict(x, batch_size))

    def evaluate(self, x: ArrayLike, y: ArrayLike, batch_size: int = 1000) -> float:
        """What fits the loss, over (x, y): for a classification loss (SoftmaxCrossEntropy) the
        accuracy, the fraction of samples whose largest output is their label's class; for
        MeanSquaredError the mean squared error (the mean loss over all samples).

        x, y as for train_step; batch_size as for predict. Runs in inference mode.
        """
        classifies = self._classifies
        loss, accuracy = self._loss_and_accuracy(x, y, batch_size, with_loss=not classifies,
                                                 with_accuracy=classifies)
        return accuracy if classifies else loss

    def _loss_and_accuracy(self, x, y, batch_size, with_loss=True, with_accuracy=True):
        """The mean loss and the accuracy over (x, y), batch_size samples at a time (None for
        either one not asked for)."""
        x = np.asarray(x)
        (classes,) = self._check_input(x, one_d_output=True)
        labels = _check_count(x, y)
        if len(x) == 0:
            raise ValueError(f"evaluate needs at least one sample, got x of shape {x.shape}")
        ids = class_ids(labels, classes) if with_accuracy else None
        batch_size = _check_batch_size(batch_size)
        correct, total_loss = 0, 0.0
        with kernels.memory_pool():
            for start in range(0, len(x), batch_size):
                part = slice(start, start + batch_size)
                outputs = self._forward(x[part])
                if with_accuracy:
                    correct += int((outputs.argmax(axis=1) == ids[part]).sum())
                if with_loss:
                    total_loss += self.loss.compute(outputs, labels[part]) * len(outputs)
        count = len(x)
        return (total_loss / count if with_loss else None), (correct / count if with_accuracy else None)

    def _forward(self, x):
        """The network's output for x in inference mode, in steps (a layer, or several that
        one of them fuses: Layer.fused_inference), each over chunks of the batch."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        for steps, chunk in self._inference_stages(x.shape[1:], x.itemsize):
            x = _in_chunks(steps, x, chunk)
        return x

    def _inference_stages(self, shape, itemsize):
        """The inference steps for samples of shape, as stages (steps, chunk): a step's
        chunk holds _INFERENCE_CHUNK_SAMPLES times the largest power of two that keeps its
        input and output within _INFERENCE_CHUNK_BYTES, and steps of equal chunks run one
        chunk at a time through all of them (the compiled kernels compute every sample
        alike either way; NumPy's BLAS may round another number of rows otherwise)."""
        stages = []
        depth = 0
        while depth < len(self.layers):
            layer = self.layers[depth]
            fused = layer.fused_inference(self.layers[depth + 1:])
            step, count = (layer.infer, 0) if fused is None else fused
            largest = int(np.prod(shape))
            for covered in self.layers[depth : depth + 1 + count]:
                shape = covered.output_shape(shape)
            largest = max(largest, int(np.prod(shape)), 1)
            chunk = _INFERENCE_CHUNK_SAMPLES
            while 2 * chunk * largest * itemsize <= _INFERENCE_CHUNK_BYTES:
                chunk *= 2
            if stages and stages[-1][1] == chunk:
                stages[-1][0].append(step)
            else:
                stages.append(([step], chunk))
            depth += 1 + count
        return stages

    def _batch(self, x, y):
        """A training batch checked and cast: x in the network's dtype, y as given."""
        x = np.asarray(x)
        self._check_input(x, one_d_output=True)
        y = _check_count(x, y)
        if len(x) == 0:
            raise ValueError("the batch is empty")
        return np.ascontiguousarray(x, dtype=self.dtype), y

    def _check_input(self, x, one_d_output=False):
        """Check x against every layer; return the shape of one sample's output.

        A refusal names the layer and, for one sample instead of a batch, NCHW images or
        images without their channel axis, says what to write instead."""
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"inputs must be numbers, got dtype {x.dtype}")
        depth, result = self._trace(x.shape[1:]) if x.ndim >= 2 else (0, None)
        if depth < len(self.layers):
            raise ValueError(self._refusal(x.shape, depth, result))
        if one_d_output and len(result) != 1:
            raise ValueError(f"the last layer must output (N, classes), it outputs (N, {result})")
        self.input_shape = tuple(x.shape[1:])
        return tuple(result)

    def _trace(self, shape):
        """Follow one sample's shape through the layers: (len(layers), the output shape) if
        every layer takes it, else (depth, error) of the first that refuses it."""
        for depth, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as error:
                return depth, error
        return len(self.layers), shape

    def _refusal(self, shape, depth, error):
        """Why inputs of this shape are refused by layer `depth` with error (None: they are not
        a batch) and, when they read as a common mistake that gets further, what to write."""
        where = "" if error is None else f"layer {depth} ({type(self.layers[depth]).__name__}): "
        if self._trace(shape)[0] > depth:
            kind = "image" if len(shape) == 3 else "sample"
            return (f"{where}inputs of shape {shape} look like one {kind}, not a batch "
                    f"(N, {', '.join(map(str, shape))}): pass x[None] (or x[np.newaxis]), a batch of one")
        if error is None:
            return f"inputs must be a batch (N, ...), got shape {shape}"
        message = f"{where}{error}"
        if len(shape) == 4 and self._trace(shape[2:] + shape[1:2])[0] > depth:
            message += ("; cnnc images are NHWC (N, H, W, C) and these look like NCHW (N, C, H, W): "
                        "pass x.transpose(0, 2, 3, 1)")
        elif len(shape) == 3 and self._trace(shape[1:] + (1,))[0] > depth:
            message += "; for images of one channel, pass x[..., None] (or x[..., np.newaxis])"
        return message


def _check_layers(layers):
    """layers as a list of at least one layer; a class in it (Conv for Conv(...)) or anything
    else is refused here, with what to write, rather than at the first forward pass."""
    try:
        layers = list(layers)
    except TypeError:
        raise ValueError(f"layers must be a list of layers, got {layers!r}") from None
    if not layers:
        raise ValueError("a Network needs at least one layer")
    for depth, layer in enumerate(layers):
        if isinstance(layer, type) and issubclass(layer, Layer):
            raise ValueError(f"layer {depth} is the class {layer.__name__}, not a layer: "
                             f"write {_call(layer)}")
        if not isinstance(layer, Layer):
            raise ValueError(f"layer {depth} is {layer!r}, not a layer such as Conv(...), MaxPool(...), "
                             "Flatten(...) or FullyConnected(...)")
    return layers


def _call(cls):
    """How a call of cls reads: its required arguments, then "..." if it takes more."""
    parameters = inspect.signature(cls).parameters.values()
    required = [p.name for p in parameters
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    more = ["..."] if len(required) < len(parameters) else []
    return f"{cls.__name__}({', '.join(required + more)})"


def _check_loss(loss):
    """The loss, made with its defaults if given as a class (loss=SoftmaxCrossEntropy); anything
    without compute and deriv, or an activation, is refused."""
    kind = loss if isinstance(loss, type) else type(loss)
    if (not (callable(getattr(loss, "compute", None)) and callable(getattr(loss, "deriv", None)))
            or issubclass(kind, AbstractActivation)):
        raise ValueError("loss must be a loss such as SoftmaxCrossEntropy() or MeanSquaredError() "
                         "(an object with compute(outputs, labels) and deriv(outputs, labels)), "
                         f"got {loss!r}")
    return loss() if isinstance(loss, type) else loss


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


def _in_chunks(steps, x, chunk):
    """Each step in turn on x, chunk samples at a time; the outputs in one array."""
    if len(x) <= chunk:
        for step in steps:
            x = step(x)
        return x
    outputs = None
    for start in range(0, len(x), chunk):
        activation = x[start : start + chunk]
        for step in steps:
            activation = step(activation)
        if outputs is None:
            outputs = np.empty((len(x),) + activation.shape[1:], dtype=activation.dtype)
        outputs[start : start + chunk] = activation
    return outputs


def _check_count(x, y):
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"got {len(x)} samples but labels of shape {y.shape}")
    return y


def _check_lr(lr):
    if callable(lr):
        raise ValueError("train_step takes lr as a number; a schedule (a callable step -> lr) "
                         "is for fit, which counts the steps")
    return _checks.number("lr", lr, 0)


def _constant(lr):
    return lambda step: lr


def _scheduled(schedule, step):
    """The schedule's lr for this step, checked as a given lr would be."""
    try:
        return _checks.number("lr", schedule(step), 0)
    except ValueError as error:
        raise ValueError(f"the lr schedule at step {step}: {error}") from None


# Far more samples in a batch, or epochs, than a run takes.
_MAX_COUNT = 2**31 - 1


def _check_batch_size(batch_size):
    return _checks.integer("batch_size", batch_size, 1, _MAX_COUNT)


def _too_small(layer, needed, count, batch_size):
    """Why fit's batches are too small for the layer (which needs `needed` samples in each),
    and what to pass instead."""
    needs = f"{layer} trains on batches of at least {needed} samples"
    if count < needed:
        return f"{needs}, but fit got {_samples(count)}: pass at least {needed}"
    if batch_size < needed:
        return f"{needs}, but batch_size is {batch_size}: pass batch_size={needed} or more"
    left = count % batch_size
    sizes = sorted(range(needed, count + 1), key=lambda size: (abs(size - batch_size), -size))
    fitting = next(size for size in sizes if count % size == 0 or count % size >= needed)
    return (f"{needs}, but {count} samples in batches of {batch_size} leave {_samples(left)} "
            f"for the last batch of every epoch: pass a batch_size that leaves more or none "
            f"(batch_size={fitting} does), or drop {_samples(left)} (x[:{count - left}], "
            f"y[:{count - left}])")


def _samples(count):
    return f"{count} sample" if count == 1 else f"{count} samples"


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
