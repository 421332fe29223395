"""Layers, NHWC throughout.

Every layer follows the course project's protocol:
- `forward(inputs) -> (z, a)`: the pre-activation z and the activation a = f(z);
- `get_grad(inputs, layer_err) -> {name: gradient}` of its parameters, given
  layer_err = dL/dz and the inputs of the last forward;
- `backward(layer_err) -> dL/dinputs`, for the layer below;
- `update(grads, lr)`: one optimizer step on every parameter.
`output_shape(input_shape)` maps a per-sample shape to the next one, or raises a
ValueError that says what was expected.

Each layer also describes itself, for cnnc.saving: `config_fields` names the constructor
arguments that rebuild it, `state_shapes(config)` gives the shapes of the arrays it holds,
`state_dict()` the arrays, and `generators` the random generators it draws from. A new layer
sets these and is given to `saving.register`, in its own file; saving needs no change.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import numpy as np
from numpy.typing import DTypeLike, NDArray

from . import _checks, activations, dtypes, init, kernels, optimizers
from .activations import AbstractActivation, linear
from .optimizers import AdamOptimizer, Optimizer
from .saving import Savable, register

Array = NDArray[np.floating]
Shape = tuple[int, ...]
Initializer = Callable[[Shape], Any]
ActivationLike = Union[AbstractActivation, type, str, None]
OptimizerLike = Union[Optimizer, type, None]


def _batch_shape(input_shape: Shape) -> str:
    """One sample's shape told as a batch's, for messages: "3-D input (N, 28, 28)"."""
    return f"{len(input_shape) + 1}-D input (N{''.join(f', {d}' for d in input_shape)})"


class Layer(Savable):
    """A layer without parameters; subclasses with parameters fill `params`.

    `training` is set by the Network for each pass: True while it trains (Dropout drops,
    BatchNorm uses the batch's statistics), False when it predicts.

    What saving reads: `config_fields`, the constructor arguments that rebuild the layer,
    each kept as an attribute of the same name; `buffers`, the arrays it holds besides
    `params` (BatchNorm's running statistics); `state_shapes`, which a layer holding arrays
    overrides; `generators`, the attributes holding the np.random.Generator objects it draws
    from (Dropout's), whose states are saved so that a loaded layer draws what this one would.
    """

    saved_kind = "layer"
    buffers: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()

    activation: AbstractActivation = linear
    training = False

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: DTypeLike = None) -> Layer:
        """The layer get_config described, in dtype if it has parameters; loading fills its
        arrays after, so it draws nothing from np.random."""
        return cls(**config)

    @classmethod
    def state_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        """The shape of each array state_dict() holds in the layer config describes, found
        without making it, so that a file's arrays are checked before anything is allocated.
        A config the layer does not take is a ValueError or TypeError."""
        return {}

    def state_dict(self) -> dict[str, Array]:
        """Every array the layer holds, by name: params, then buffers (live, not copies)."""
        return {**self.params, **{name: getattr(self, name) for name in self.buffers}}

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        """(z, a) for a batch of inputs (N, ...): the pre-activation z and the activation
        a = f(z) (the same array for a layer without an activation). The layer keeps what
        its backward pass needs."""
        raise NotImplementedError

    def train_forward(self, inputs: Array) -> tuple[Array, Array]:
        """(kept, a) for a batch of inputs (N, ...) in a training step: what it keeps for
        activation.backward, and the activation. forward's (z, a), or (a, a) where the
        activation's slope follows from a alone (fused_slope: the identity, ReLU, a leaky
        ReLU), so that a layer computing a in its kernel stores no z and makes no a in a
        pass of its own."""
        return self.forward(inputs)

    def backward(self, layer_err: Array) -> Array:
        """dL/dinputs of the last forward pass, given layer_err = dL/dz, for the layer below."""
        raise NotImplementedError

    def infer(self, inputs: Array) -> Array:
        """The activation a for a batch of inputs in inference mode, keeping nothing for a
        backward pass: what predict runs (forward's a unless a layer computes it faster)."""
        return self.forward(inputs)[1]

    def fused_inference(self, following: Sequence[Layer]
                        ) -> tuple[Callable[[Array], Array], int] | None:
        """(function, count): a function computing this layer and the first count layers of
        `following` (those after it in the network) in inference mode, faster than each in
        turn (a convolution with the batch normalization after it folded into its filters,
        and the max pool after that computed in the same pass), or None where there is none.
        Made anew for each predict, from the parameters of that moment."""
        return None

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of one sample's output for one sample's input_shape (without N); an
        input the layer cannot take is a ValueError saying what it expected."""
        raise NotImplementedError

    def get_grad(self, inputs: Array, layer_err: Array) -> dict[str, Array]:
        """The gradient of every parameter by name, given the inputs of the last forward
        pass and layer_err = dL/dz ({} for a layer without parameters)."""
        return {}

    def min_training_batch(self, input_shape: Shape) -> int:
        """The fewest samples of one-sample shape input_shape a training batch must hold for
        this layer to train on it (BatchNorm's batch statistics need two values per channel),
        so that fit can refuse batches that would fail before it trains on any."""
        return 1

    def commit_statistics(self) -> None:
        """Fold what the last training pass measured (BatchNorm's batch statistics) into the
        layer's state: the Network does it with the step's updates, so both happen or neither."""

    def prepare_update(self, grads: dict[str, Array]) -> None:
        """Check and allocate what update(grads, lr) needs, changing no parameter."""

    def update(self, grads: dict[str, Array], lr: float) -> None:
        """One optimizer step at learning rate lr on every parameter, from grads (as
        get_grad returns them)."""

    def __repr__(self) -> str:
        return type(self).__name__ + "()"


class ParametricLayer(Layer):
    """A layer with a weight "w" and a bias "b", an activation and its own optimizer.

    w_shape, b_shape: the shapes of "w" and "b".
    activation: an activation, its class or its name ("relu", ...; see activations.get).
    optimizer: an optimizer or its class, made with its defaults (None: AdamOptimizer()).
    weight_init, bias_init: callables shape -> array (None: init.he_normal, init.zeros).
    dtype: float32 or float64 (None: cnnc.get_default_dtype()).

    State: params "w" and "b"; the optimizer keeps its own for each.
    """

    # The initializer arguments from_config sets to init.zeros: the file's arrays replace
    # them, and loading must not draw from np.random.
    initializers: tuple[str, ...] = ()

    def __init__(self, w_shape: Shape, b_shape: Shape, activation: ActivationLike,
                 optimizer: OptimizerLike, weight_init: Initializer | None,
                 bias_init: Initializer | None, dtype: DTypeLike) -> None:
        self.dtype = dtypes.resolve(dtype)
        self.activation = activations.get(activation)
        self.optimizer = AdamOptimizer() if optimizer is None else optimizers.get(optimizer)
        weight_name, bias_name = self.initializers or ("weight_init", "bias_init")
        self.params = {
            "w": self._initial(init.he_normal if weight_init is None else weight_init, w_shape,
                               weight_name),
            "b": self._initial(init.zeros if bias_init is None else bias_init, b_shape, bias_name),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], dtype: DTypeLike = None) -> Layer:
        """The layer config describes, in dtype, its initializers zeros: loading fills its
        arrays after, so it draws nothing from np.random."""
        return cls(**config, **{name: init.zeros for name in cls.initializers}, dtype=dtype)

    def _initial(self, initializer, shape, name):
        """What initializer (the argument called name) gives for shape, in the layer's dtype."""
        if not callable(initializer):
            raise ValueError(f"{name} must be a callable shape -> array such as cnnc.init.he_normal, "
                             f"got {initializer!r}")
        value = np.asarray(initializer(shape))
        if value.shape != shape:
            raise ValueError(f"{name} returned shape {value.shape}, expected {shape}")
        return np.ascontiguousarray(value, dtype=self.dtype)

    def prepare_update(self, grads: dict[str, Array]) -> None:
        for name, grad in grads.items():
            self.optimizer.prepare(grad, key=name)

    def update(self, grads: dict[str, Array], lr: float) -> None:
        for name, grad in grads.items():
            self.optimizer.apply(self.params[name], grad, lr, key=name)


@register
class Conv(ParametricLayer):
    """2-D convolution (cross-correlation, as in PyTorch) of NHWC images, then an activation.

    fshape: the filters' shape (kh, kw, c_in, c_out).
    strides: an int or (sh, sw).
    padding: an int or (ph, pw) of symmetric zero padding, "valid" (none) or "same"
        (output size ceil(input / stride); any odd pixel of padding goes bottom/right).
    activation: applied last; an activation, its class or its name ("relu", ...).
    optimizer: this layer's own optimizer, or its class (None: a fresh AdamOptimizer()).
    filter_init, bias_init: callables shape -> array (None: init.he_normal, init.zeros).
    dtype: float32 or float64 (None: cnnc.get_default_dtype()).

    State: params "w" (fshape) and "b" (c_out,); the shape of the last input, for backward.
    """

    config_fields = ("fshape", "strides", "padding", "activation", "optimizer")
    initializers = ("filter_init", "bias_init")

    def __init__(self, fshape: tuple[int, int, int, int], strides: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, activation: ActivationLike = linear,
                 optimizer: OptimizerLike = None, filter_init: Initializer | None = None,
                 bias_init: Initializer | None = None, dtype: DTypeLike = None) -> None:
        self.fshape = _checks.ints("Conv fshape (kh, kw, c_in, c_out)", fshape, 4)
        self.strides = _checks.ints("strides", strides, 2, repeat=True)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            self.padding = padding
        else:
            self.padding = _checks.ints("padding", padding, 2, minimum=0, repeat=True)
        super().__init__(self.fshape, (self.fshape[3],), activation, optimizer, filter_init,
                         bias_init, dtype)
        self._input_shape = None  # pragma: no mutate: forward sets it before it is read

    @classmethod
    def state_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        """"w" (kh, kw, c_in, c_out) and "b" (c_out,), from config's fshape."""
        fshape = _checks.ints("Conv fshape (kh, kw, c_in, c_out)", config["fshape"], 4)
        return {"w": fshape, "b": (fshape[3],)}

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Zero padding (top, bottom, left, right) for an input of this height and width."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            pads = []
            for size, k, s in zip((height, width), self.fshape[:2], self.strides):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        ph, pw = self.padding
        return (ph, ph, pw, pw)

    def output_shape(self, input_shape: Shape) -> Shape:
        kh, kw, cin, cout = self.fshape
        if len(input_shape) != 3:
            raise ValueError(f"Conv expects images (N, H, W, C), got {_batch_shape(input_shape)}")
        h, w, c = input_shape
        if c != cin:
            raise ValueError(f"Conv with filters {self.fshape} expects {cin} input channels, got {c} "
                             f"(input (N, {h}, {w}, {c}))")
        top, bottom, left, right = self.pads(h, w)
        if h + top + bottom < kh or w + left + right < kw:
            raise ValueError(f"Conv {kh}x{kw} filter does not fit a padded input of "
                             f"{h + top + bottom}x{w + left + right}")
        sh, sw = self.strides
        return ((h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1, cout)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        self._input_shape = inputs.shape
        z = kernels.conv2d_forward(inputs, self.params["w"], self.params["b"], self.strides,
                                   self.pads(*inputs.shape[1:3]))
        return z, self.activation.compute(z)

    def train_forward(self, inputs: Array) -> tuple[Array, Array]:
        if self.activation.fused_slope() is None:
            return self.forward(inputs)
        self._input_shape = inputs.shape
        outputs = self.infer(inputs)
        return outputs, outputs

    def infer(self, inputs: Array) -> Array:
        return self._convolve(inputs, self.params["w"], self.params["b"], self.activation)

    def fused_inference(self, following: Sequence[Layer]
                        ) -> tuple[Callable[[Array], Array], int] | None:
        """following: the layers after this one.

        With a linear activation and a BatchNorm (exactly) next: one convolution whose
        filters and bias have the BatchNorm's running normalization folded in, then the
        BatchNorm's activation (as PyTorch's and ONNX Runtime's inference fusions do). Then,
        where the activation is fused into the kernel (fused_slope) and a MaxPool (exactly)
        comes next whose windows do not overlap down the image, the pooling in the same
        pass (conv2d_maxpool_inference), so that the convolution's output is never stored."""
        w, b, activation, count = self.params["w"], self.params["b"], self.activation, 0
        norm = following[0] if following else None
        if type(norm) is BatchNorm and activation.fused_slope() == 1:
            scale = norm.params["w"] / np.sqrt(norm.running_var + norm.eps)
            w, b = w * scale, (b - norm.running_mean) * scale + norm.params["b"]
            activation, count = norm.activation, 1
        slope = activation.fused_slope()
        pool = following[count] if len(following) > count else None
        if type(pool) is MaxPool and slope is not None and pool.pshape[0] <= pool.strides[0]:
            return (lambda inputs: kernels.conv2d_maxpool_inference(
                inputs, w, b, self.strides, self.pads(*inputs.shape[1:3]), pool.pshape,
                pool.strides, slope)), count + 1
        if count:
            return (lambda inputs: self._convolve(inputs, w, b, activation)), count
        return None

    def _convolve(self, inputs, w, b, activation):
        """activation(the convolution of inputs with w, plus b), fused into the kernel where
        the activation allows."""
        pads = self.pads(*inputs.shape[1:3])
        slope = activation.fused_slope()
        if slope is None:
            return activation.compute(kernels.conv2d_forward(inputs, w, b, self.strides, pads))
        return kernels.conv2d_forward(inputs, w, b, self.strides, pads, slope)

    def get_grad(self, inputs: Array, layer_err: Array) -> dict[str, Array]:
        dw, db = kernels.conv2d_grad_params(inputs, layer_err, self.fshape[:2], self.strides,
                                            self.pads(*inputs.shape[1:3]))
        return {"w": dw, "b": db}

    def backward(self, layer_err: Array) -> Array:
        return kernels.conv2d_grad_input(layer_err, self.params["w"], self._input_shape,
                                         self.strides, self.pads(*self._input_shape[1:3]))

    def __repr__(self) -> str:
        return (f"Conv({self.fshape}, strides={self.strides}, padding={self.padding!r}, "
                f"activation={self.activation!r})")


@register
class MaxPool(Layer):
    """Max pooling over pshape windows moved by strides, without padding.

    pshape: the window, an int or (ph, pw).
    strides: an int or (sh, sw) (None: pshape, windows side by side).

    Windows that would run past the edge are dropped, as in PyTorch. State: the position
    of each maximum in the last forward, where backward sends the gradient.
    """

    config_fields = ("pshape", "strides")

    def __init__(self, pshape: int | tuple[int, int] = 2,
                 strides: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pshape = _checks.ints("pshape", pshape, 2, repeat=True)
        self.strides = self.pshape if strides is None else _checks.ints("strides", strides, 2,
                                                                        repeat=True)
        self._argmax = None  # pragma: no mutate: forward sets it before it is read
        self._input_shape = None  # pragma: no mutate: forward sets it before it is read

    def output_shape(self, input_shape: Shape) -> Shape:
        name = type(self).__name__      # AvgPool's too
        if len(input_shape) != 3:
            raise ValueError(f"{name} expects images (N, H, W, C), got {_batch_shape(input_shape)}")
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pshape, self.strides
        if h < ph or w < pw:
            raise ValueError(f"{name} window {ph}x{pw} does not fit an input of {h}x{w}")
        return ((h - ph) // sh + 1, (w - pw) // sw + 1, c)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        self._input_shape = inputs.shape
        outputs, self._argmax = kernels.maxpool2d_forward(inputs, self.pshape, self.strides)
        return outputs, outputs

    def infer(self, inputs: Array) -> Array:
        return kernels.maxpool2d_inference(inputs, self.pshape, self.strides)

    def backward(self, layer_err: Array) -> Array:
        return kernels.maxpool2d_backward(layer_err, self._argmax, self._input_shape)

    def __repr__(self) -> str:
        return f"MaxPool(pshape={self.pshape}, strides={self.strides})"


POOL = MaxPool


@register
class AvgPool(MaxPool):
    """Average pooling over pshape windows moved by strides, without padding.

    pshape: the window, an int or (ph, pw).
    strides: an int or (sh, sw) (None: pshape, windows side by side).

    Windows that would run past the edge are dropped, as in PyTorch. State: the shape of
    the last input, for backward.
    """

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        self._input_shape = inputs.shape
        outputs = kernels.avgpool2d_forward(inputs, self.pshape, self.strides)
        return outputs, outputs

    def infer(self, inputs: Array) -> Array:
        return kernels.avgpool2d_forward(inputs, self.pshape, self.strides)

    def backward(self, layer_err: Array) -> Array:
        return kernels.avgpool2d_backward(layer_err, self._input_shape, self.pshape, self.strides)

    def __repr__(self) -> str:
        return f"AvgPool(pshape={self.pshape}, strides={self.strides})"


@register
class GlobalAvgPool(Layer):
    """(N, H, W, C) -> (N, C): the mean of each channel over the whole image. No arguments;
    state: the shape of the last input, for backward."""

    def __init__(self) -> None:
        super().__init__()
        self._input_shape = None  # pragma: no mutate: forward sets it before it is read

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError("GlobalAvgPool expects images (N, H, W, C), got "
                             f"{_batch_shape(input_shape)}")
        return (input_shape[2],)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        self._input_shape = inputs.shape
        window = inputs.shape[1:3]
        outputs = kernels.avgpool2d_forward(inputs, window, window).reshape(len(inputs), -1)
        return outputs, outputs

    def backward(self, layer_err: Array) -> Array:
        n, h, w, c = self._input_shape
        return kernels.avgpool2d_backward(layer_err.reshape(n, 1, 1, c), self._input_shape, (h, w), (h, w))

    def __repr__(self) -> str:
        return "GlobalAvgPool()"


@register
class Dropout(Layer):
    """Inverted dropout: in training, each value is zeroed with probability `rate` and the
    others are scaled by 1 / (1 - rate), so that inference needs no change (identity).

    rate: the probability of dropping a value, in [0, 1).
    seed: seeds the layer's own random generator, np.random.default_rng(seed): an int from
        0 to 2**128 - 1, so that a seeded network drops the same values on every run, or
        None for fresh entropy.

    State: the random generator `rng` (saved with the network, so that a loaded one drops
    what this one would have dropped next), and the last training pass's mask, for backward.
    """

    config_fields = ("rate", "seed")
    generators = ("rng",)

    def __init__(self, rate: float, seed: int | None = None) -> None:
        super().__init__()
        self.rate = _checks.number("rate", rate, 0, 1)
        self.seed = _checks.seed("Dropout seed", seed)
        self.rng = np.random.default_rng(self.seed)
        self._mask = None

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        if not self.training or self.rate == 0:
            self._mask = None
            return inputs, inputs
        kept = self.rng.random(inputs.shape, dtype=inputs.dtype) >= self.rate
        self._mask = kept.astype(inputs.dtype)
        self._mask *= inputs.dtype.type(1 / (1 - self.rate))
        outputs = inputs * self._mask
        return outputs, outputs

    def backward(self, layer_err: Array) -> Array:
        return layer_err if self._mask is None else layer_err * self._mask

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"


@register
class Flatten(Layer):
    """(N, *input_shape) -> (N, prod(input_shape)), in C order.

    input_shape: one sample's shape, or None: the first inputs that pass through fix it
        (and it is saved as fixed from then on).
    """

    config_fields = ("input_shape",)

    def __init__(self, input_shape: int | Shape | None = None) -> None:
        super().__init__()
        self.input_shape = self.size = None
        if input_shape is not None:
            self._fix(input_shape)

    def _fix(self, input_shape):
        shape = (input_shape,) if np.ndim(input_shape) == 0 else input_shape
        self.input_shape = _checks.shape("Flatten input_shape", shape)
        self.size = int(np.prod(self.input_shape))

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.input_shape is None:        # not fixed until inputs pass through
            return (int(np.prod(input_shape)),)
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"Flatten expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        return (self.size,)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        if self.input_shape is None:
            self._fix(inputs.shape[1:])
        flat = inputs.reshape(inputs.shape[0], self.size)
        return flat, flat

    def backward(self, layer_err: Array) -> Array:
        return layer_err.reshape((layer_err.shape[0],) + self.input_shape)

    def __repr__(self) -> str:
        return "Flatten()" if self.input_shape is None else f"Flatten({self.input_shape})"


@register
class FullyConnected(ParametricLayer):
    """z = x @ w + b with w of shape (n_in, n_out), then an activation.

    shape: (n_in, n_out). activation, optimizer and dtype as for Conv; weight_init and
    bias_init: callables shape -> array (None: init.he_normal, init.zeros).

    State: params "w" (n_in, n_out) and "b" (n_out,).
    """

    config_fields = ("shape", "activation", "optimizer")
    initializers = ("weight_init", "bias_init")

    def __init__(self, shape: tuple[int, int], activation: ActivationLike = linear,
                 optimizer: OptimizerLike = None, weight_init: Initializer | None = None,
                 bias_init: Initializer | None = None, dtype: DTypeLike = None) -> None:
        self.shape = _checks.ints("FullyConnected shape (n_in, n_out)", shape, 2)
        super().__init__(self.shape, (self.shape[1],), activation, optimizer, weight_init, bias_init,
                         dtype)

    @classmethod
    def state_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        """"w" (n_in, n_out) and "b" (n_out,), from config's shape."""
        n_in, n_out = _checks.ints("FullyConnected shape (n_in, n_out)", config["shape"], 2)
        return {"w": (n_in, n_out), "b": (n_out,)}

    def output_shape(self, input_shape: Shape) -> Shape:
        n_in, n_out = self.shape
        if tuple(input_shape) != (n_in,):
            raise ValueError(f"FullyConnected {self.shape} expects inputs of shape (N, {n_in}), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        return (n_out,)

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        z = kernels.dense_forward(inputs, self.params["w"], self.params["b"])
        return z, self.activation.compute(z)

    def train_forward(self, inputs: Array) -> tuple[Array, Array]:
        if self.activation.fused_slope() is None:
            return self.forward(inputs)
        outputs = self.infer(inputs)
        return outputs, outputs

    def infer(self, inputs: Array) -> Array:
        slope = self.activation.fused_slope()
        if slope is None:
            return self.forward(inputs)[1]
        return kernels.dense_forward(inputs, self.params["w"], self.params["b"], slope)

    def get_grad(self, inputs: Array, layer_err: Array) -> dict[str, Array]:
        return {"w": kernels.matmul(inputs.T, layer_err), "b": layer_err.sum(axis=0)}

    def backward(self, layer_err: Array) -> Array:
        return kernels.matmul(layer_err, self.params["w"].T)

    def __repr__(self) -> str:
        return f"FullyConnected({self.shape}, activation={self.activation!r})"


@register
class BatchNorm(ParametricLayer):
    """Batch normalization of the last axis (channels) of (N, H, W, C) or (N, F) inputs, as
    torch.nn.BatchNorm2d / BatchNorm1d: z = (x - mean) / sqrt(var + eps) * w + b.

    num_features: the number of channels C (or features F).
    momentum: how far the running statistics move towards each batch's, in [0, 1].
    eps: > 0, added to the variance so that a constant channel divides by no zero.
    activation, optimizer, dtype: as for Conv.

    In training, mean and var are the batch's (biased variance), and the running ones move
    towards them by `momentum` (with the unbiased variance, torch's convention); in
    inference, the running ones are used. State: params "w" (scale, starts at 1) and "b"
    (shift, starts at 0); buffers running_mean (starts at 0) and running_var (at 1).
    """

    config_fields = ("num_features", "momentum", "eps", "activation", "optimizer")
    buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 activation: ActivationLike = linear, optimizer: OptimizerLike = None,
                 dtype: DTypeLike = None) -> None:
        self.num_features = _checks.integer("BatchNorm num_features", num_features, 1, 2**31 - 1)
        self.momentum = _checks.number("momentum", momentum, 0, maximum=1)
        self.eps = _checks.epsilon(eps)
        shape = (self.num_features,)
        super().__init__(shape, shape, activation, optimizer, init.ones, init.zeros, dtype)
        self.running_mean = np.zeros(shape, dtype=self.dtype)
        self.running_var = np.ones(shape, dtype=self.dtype)
        self._inputs = self._batch = self._pending = self._input_grad = None

    @classmethod
    def state_shapes(cls, config: dict[str, Any]) -> dict[str, Shape]:
        """Scale, shift and both running statistics, (num_features,) each, from config."""
        shape = (_checks.integer("BatchNorm num_features", config["num_features"], 1, 2**31 - 1),)
        return {"w": shape, "b": shape, "running_mean": shape, "running_var": shape}

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) not in (1, 3) or input_shape[-1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects inputs (N, H, W, "
                             f"{self.num_features}) or (N, {self.num_features}), got "
                             f"(N, {', '.join(map(str, input_shape))})")
        return tuple(input_shape)

    def min_training_batch(self, input_shape: Shape) -> int:
        """2 where input_shape, one sample's, holds one value per channel ((F,), or a 1x1
        image): the variance of one value is no statistic to normalize by. 1 otherwise."""
        return 2 if int(np.prod(input_shape[:-1])) == 1 else 1

    def forward(self, inputs: Array) -> tuple[Array, Array]:
        z = self._normalized(inputs, 1.0)
        return z, self.activation.compute(z)

    def train_forward(self, inputs: Array) -> tuple[Array, Array]:
        slope = self.activation.fused_slope()
        if slope is None:
            return self.forward(inputs)
        outputs = self._normalized(inputs, slope)
        return outputs, outputs

    def infer(self, inputs: Array) -> Array:
        slope = self.activation.fused_slope()
        if slope is None:
            return self.forward(inputs)[1]
        return self._normalized(inputs, slope)

    def _normalized(self, inputs, slope):
        """The inputs normalized (by the batch's statistics in training mode, keeping what
        the backward pass needs; by the running ones otherwise), then activated with slope
        (as conv2d_forward's)."""
        rows = inputs.reshape(-1, self.num_features)
        w, b = self.params["w"], self.params["b"]
        if not self.training:
            return kernels.batchnorm_inference(rows, w, b, self.running_mean, self.running_var,
                                               self.eps, slope).reshape(inputs.shape)
        if len(rows) < 2:
            raise ValueError(f"BatchNorm in training needs more than one value per channel, "
                             f"got inputs of shape {inputs.shape}")
        outputs, mean, var = kernels.batchnorm_forward(rows, w, b, self.eps, slope)
        self._inputs, self._batch, self._input_grad = inputs, (mean, var), None
        self._pending = (mean, var * (len(rows) / (len(rows) - 1)))
        return outputs.reshape(inputs.shape)

    def get_grad(self, inputs: Array, layer_err: Array) -> dict[str, Array]:
        dx, dw, db = kernels.batchnorm_backward(
            inputs.reshape(-1, self.num_features), layer_err.reshape(-1, self.num_features),
            self.params["w"], *self._batch, self.eps)
        self._input_grad = (layer_err, dx.reshape(inputs.shape))
        return {"w": dw, "b": db}

    def backward(self, layer_err: Array) -> Array:
        if self._input_grad is None or self._input_grad[0] is not layer_err:
            self.get_grad(self._inputs, layer_err)
        return self._input_grad[1]

    def commit_statistics(self) -> None:
        if self._pending is None:
            return
        (mean, var), self._pending = self._pending, None
        for running, batch in ((self.running_mean, mean), (self.running_var, var)):
            running *= 1 - self.momentum
            running += self.momentum * batch

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, momentum={self.momentum}, eps={self.eps}, "
                f"activation={self.activation!r})")
