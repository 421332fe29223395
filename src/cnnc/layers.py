"""Layers, NHWC throughout.

Every layer follows the seed's protocol:
- `forward(inputs) -> (z, a)`: the pre-activation z and the activation a = f(z);
- `get_grad(inputs, layer_err) -> {name: gradient}` of its parameters, given
  layer_err = dL/dz and the inputs of the last forward;
- `backward(layer_err) -> dL/dinputs`, for the layer below;
- `update(grads, lr)`: one optimizer step on every parameter.
`output_shape(input_shape)` maps a per-sample shape to the next one, or raises a
ValueError that says what was expected.
"""
import numpy as np

from . import _checks, activations, dtypes, init, kernels, optimizers
from .activations import linear
from .optimizers import AdamOptimizer


def _ints(value, count, name, minimum=1, repeat=False):
    """value as a tuple of `count` ints >= minimum; with repeat, one int stands for all."""
    items = (value,) * count if repeat and np.ndim(value) == 0 else value
    try:
        items = tuple(items)
        valid = len(items) == count and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in items)
    except TypeError:
        valid = False
    if not valid:
        kind = "an int or " if repeat else ""
        raise ValueError(f"{name} must be {kind}{count} ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in items)


class Layer:
    """A layer without parameters; subclasses with parameters fill `params`.

    `training` is set by the Network for each pass: True while it trains (Dropout drops,
    BatchNorm uses the batch's statistics), False when it predicts.
    """

    activation = linear
    training = False

    def __init__(self):
        self.params = {}

    def get_grad(self, inputs, layer_err):
        return {}

    def commit_statistics(self):
        """Fold what the last training pass measured (BatchNorm's batch statistics) into the
        layer's state: the Network does it with the step's updates, so both happen or neither."""

    def prepare_update(self, grads):
        """Check and allocate what update(grads, lr) needs, changing no parameter."""

    def update(self, grads, lr):
        pass

    def __repr__(self):
        return type(self).__name__ + "()"


class ParametricLayer(Layer):
    """A layer with a weight "w" and a bias "b", an activation and its own optimizer.

    activation: an activation, its class or its name ("relu", ...; see activations.get);
    optimizer: an optimizer or its class, made with its defaults (None: AdamOptimizer()).
    """

    def __init__(self, w_shape, b_shape, activation, optimizer, weight_init, bias_init, dtype):
        self.dtype = dtypes.resolve(dtype)
        self.activation = activations.get(activation)
        self.optimizer = AdamOptimizer() if optimizer is None else optimizers.get(optimizer)
        self.params = {
            "w": self._initial(weight_init or init.he_normal, w_shape, "weight"),
            "b": self._initial(bias_init or init.zeros, b_shape, "bias"),
        }

    def _initial(self, initializer, shape, what):
        value = np.asarray(initializer(shape))
        if value.shape != shape:
            raise ValueError(f"the {what} initializer returned shape {value.shape}, expected {shape}")
        return np.ascontiguousarray(value, dtype=self.dtype)

    def prepare_update(self, grads):
        for name, grad in grads.items():
            self.optimizer.prepare(grad, key=name)

    def update(self, grads, lr):
        for name, grad in grads.items():
            self.optimizer.apply(self.params[name], grad, lr, key=name)


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
    """

    def __init__(self, fshape, strides=1, padding=0, activation=linear, optimizer=None,
                 filter_init=None, bias_init=None, dtype=None):
        self.fshape = _ints(fshape, 4, "Conv fshape (kh, kw, c_in, c_out)")
        self.strides = _ints(strides, 2, "strides", repeat=True)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            self.padding = padding
        else:
            self.padding = _ints(padding, 2, "padding", minimum=0, repeat=True)
        super().__init__(self.fshape, (self.fshape[3],), activation, optimizer, filter_init,
                         bias_init, dtype)
        self._input_shape = None

    def pads(self, height, width):
        """Zero padding (top, bottom, left, right) for an input of this size."""
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

    def output_shape(self, input_shape):
        kh, kw, cin, cout = self.fshape
        if len(input_shape) != 3:
            raise ValueError(f"Conv expects images (N, H, W, C), got {len(input_shape) + 1}-D input "
                             f"(N, {', '.join(map(str, input_shape))})")
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

    def forward(self, inputs):
        self._input_shape = inputs.shape
        z = kernels.conv2d_forward(inputs, self.params["w"], self.params["b"], self.strides,
                                   self.pads(*inputs.shape[1:3]))
        return z, self.activation.compute(z)

    def get_grad(self, inputs, layer_err):
        dw, db = kernels.conv2d_grad_params(inputs, layer_err, self.fshape[:2], self.strides,
                                            self.pads(*inputs.shape[1:3]))
        return {"w": dw, "b": db}

    def backward(self, layer_err):
        return kernels.conv2d_grad_input(layer_err, self.params["w"], self._input_shape,
                                         self.strides, self.pads(*self._input_shape[1:3]))

    def __repr__(self):
        return (f"Conv({self.fshape}, strides={self.strides}, padding={self.padding!r}, "
                f"activation={self.activation!r})")


class MaxPool(Layer):
    """Max pooling over pshape windows moved by strides (default: pshape, no overlap).

    Windows that would run past the edge are dropped, as in PyTorch; the position of
    each maximum is kept for the backward pass.
    """

    def __init__(self, pshape=2, strides=None):
        super().__init__()
        self.pshape = _ints(pshape, 2, "pshape", repeat=True)
        self.strides = self.pshape if strides is None else _ints(strides, 2, "strides", repeat=True)
        self._argmax = None
        self._input_shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"MaxPool expects images (N, H, W, C), got {len(input_shape) + 1}-D input")
        h, w, c = input_shape
        (ph, pw), (sh, sw) = self.pshape, self.strides
        if h < ph or w < pw:
            raise ValueError(f"MaxPool window {ph}x{pw} does not fit an input of {h}x{w}")
        return ((h - ph) // sh + 1, (w - pw) // sw + 1, c)

    def forward(self, inputs):
        self._input_shape = inputs.shape
        outputs, self._argmax = kernels.maxpool2d_forward(inputs, self.pshape, self.strides)
        return outputs, outputs

    def backward(self, layer_err):
        return kernels.maxpool2d_backward(layer_err, self._argmax, self._input_shape)

    def __repr__(self):
        return f"MaxPool(pshape={self.pshape}, strides={self.strides})"


POOL = MaxPool


class AvgPool(MaxPool):
    """Average pooling over pshape windows moved by strides (default: pshape, no overlap),
    without padding; windows that would run past the edge are dropped, as in PyTorch."""

    def forward(self, inputs):
        self._input_shape = inputs.shape
        outputs = kernels.avgpool2d_forward(inputs, self.pshape, self.strides)
        return outputs, outputs

    def backward(self, layer_err):
        return kernels.avgpool2d_backward(layer_err, self._input_shape, self.pshape, self.strides)

    def __repr__(self):
        return f"AvgPool(pshape={self.pshape}, strides={self.strides})"


class GlobalAvgPool(Layer):
    """(N, H, W, C) -> (N, C): the mean of each channel over the whole image."""

    def __init__(self):
        super().__init__()
        self._input_shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool expects images (N, H, W, C), got {len(input_shape) + 1}-D "
                             "input")
        return (input_shape[2],)

    def forward(self, inputs):
        self._input_shape = inputs.shape
        window = inputs.shape[1:3]
        outputs = kernels.avgpool2d_forward(inputs, window, window).reshape(len(inputs), -1)
        return outputs, outputs

    def backward(self, layer_err):
        n, h, w, c = self._input_shape
        return kernels.avgpool2d_backward(layer_err.reshape(n, 1, 1, c), self._input_shape, (h, w), (h, w))

    def __repr__(self):
        return "GlobalAvgPool()"


class Dropout(Layer):
    """Inverted dropout: in training, each value is zeroed with probability `rate` and the
    others are scaled by 1 / (1 - rate), so that inference needs no change (identity)."""

    def __init__(self, rate, seed=None):
        super().__init__()
        self.rate = _checks.number("rate", rate, 0, 1)
        self.seed = seed
        self._random = np.random.default_rng(seed)
        self._mask = None

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, inputs):
        if not self.training or self.rate == 0:
            self._mask = None
            return inputs, inputs
        kept = self._random.random(inputs.shape, dtype=inputs.dtype) >= self.rate
        self._mask = kept.astype(inputs.dtype)
        self._mask *= inputs.dtype.type(1 / (1 - self.rate))
        outputs = inputs * self._mask
        return outputs, outputs

    def backward(self, layer_err):
        return layer_err if self._mask is None else layer_err * self._mask

    def __repr__(self):
        return f"Dropout({self.rate})"


class Flatten(Layer):
    """(N, *input_shape) -> (N, prod(input_shape)), in C order. Without input_shape, the
    shape of the first inputs that pass through it fixes it."""

    def __init__(self, input_shape=None):
        super().__init__()
        self.input_shape = self.size = None
        if input_shape is not None:
            self._fix(input_shape)

    def _fix(self, input_shape):
        shape = (input_shape,) if np.ndim(input_shape) == 0 else tuple(input_shape)
        self.input_shape = _ints(shape, len(shape), "Flatten input_shape")
        self.size = int(np.prod(self.input_shape))

    def output_shape(self, input_shape):
        if self.input_shape is None:        # not fixed until inputs pass through
            return (int(np.prod(input_shape)),)
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"Flatten expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        return (self.size,)

    def forward(self, inputs):
        if self.input_shape is None:
            self._fix(inputs.shape[1:])
        flat = inputs.reshape(inputs.shape[0], self.size)
        return flat, flat

    def backward(self, layer_err):
        return layer_err.reshape((layer_err.shape[0],) + self.input_shape)

    def __repr__(self):
        return "Flatten()" if self.input_shape is None else f"Flatten({self.input_shape})"


class FullyConnected(ParametricLayer):
    """z = x @ w + b with w of shape (n_in, n_out), then an activation.

    shape: (n_in, n_out). activation, optimizer and dtype as for Conv; weight_init and
    bias_init: callables shape -> array (None: init.he_normal, init.zeros).
    """

    def __init__(self, shape, activation=linear, optimizer=None, weight_init=None, bias_init=None,
                 dtype=None):
        self.shape = _ints(shape, 2, "FullyConnected shape (n_in, n_out)")
        super().__init__(self.shape, (self.shape[1],), activation, optimizer, weight_init, bias_init,
                         dtype)

    def output_shape(self, input_shape):
        n_in, n_out = self.shape
        if tuple(input_shape) != (n_in,):
            raise ValueError(f"FullyConnected {self.shape} expects inputs of shape (N, {n_in}), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        return (n_out,)

    def forward(self, inputs):
        z = kernels.matmul(inputs, self.params["w"])
        z += self.params["b"]
        return z, self.activation.compute(z)

    def get_grad(self, inputs, layer_err):
        return {"w": kernels.matmul(inputs.T, layer_err), "b": layer_err.sum(axis=0)}

    def backward(self, layer_err):
        return kernels.matmul(layer_err, self.params["w"].T)

    def __repr__(self):
        return f"FullyConnected({self.shape}, activation={self.activation!r})"


class BatchNorm(ParametricLayer):
    """Batch normalization of the last axis (channels) of (N, H, W, C) or (N, F) inputs, as
    torch.nn.BatchNorm2d / BatchNorm1d: z = (x - mean) / sqrt(var + eps) * w + b.

    In training, mean and var are the batch's (biased variance), and the running ones move
    towards them by `momentum` (with the unbiased variance, torch's convention); in
    inference, the running ones are used. The scale "w" starts at 1, the shift "b" at 0.
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, activation=linear, optimizer=None,
                 dtype=None):
        (self.num_features,) = _ints((num_features,), 1, "BatchNorm num_features")
        self.momentum = _checks.number("momentum", momentum, 0, 1.0000001)
        self.eps = _checks.number("eps", eps, 0)
        if self.eps == 0:
            raise ValueError("BatchNorm eps must be > 0: a channel of equal values would divide by 0")
        shape = (self.num_features,)
        super().__init__(shape, shape, activation, optimizer, init.ones, init.zeros, dtype)
        self.running_mean = np.zeros(shape, dtype=self.dtype)
        self.running_var = np.ones(shape, dtype=self.dtype)
        self._inputs = self._batch = self._pending = self._input_grad = None

    def output_shape(self, input_shape):
        if len(input_shape) not in (1, 3) or input_shape[-1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects inputs (N, H, W, "
                             f"{self.num_features}) or (N, {self.num_features}), got "
                             f"(N, {', '.join(map(str, input_shape))})")
        return tuple(input_shape)

    def forward(self, inputs):
        rows = inputs.reshape(-1, self.num_features)
        w, b = self.params["w"], self.params["b"]
        if self.training:
            if len(rows) < 2:
                raise ValueError(f"BatchNorm in training needs more than one value per channel, "
                                 f"got inputs of shape {inputs.shape}")
            z, mean, var = kernels.batchnorm_forward(rows, w, b, self.eps)
            self._inputs, self._batch, self._input_grad = inputs, (mean, var), None
            self._pending = (mean, var * (len(rows) / (len(rows) - 1)))
        else:
            z = kernels.batchnorm_inference(rows, w, b, self.running_mean, self.running_var, self.eps)
        z = z.reshape(inputs.shape)
        return z, self.activation.compute(z)

    def get_grad(self, inputs, layer_err):
        dx, dw, db = kernels.batchnorm_backward(
            inputs.reshape(-1, self.num_features), layer_err.reshape(-1, self.num_features),
            self.params["w"], *self._batch, self.eps)
        self._input_grad = (layer_err, dx.reshape(inputs.shape))
        return {"w": dw, "b": db}

    def backward(self, layer_err):
        if self._input_grad is None or self._input_grad[0] is not layer_err:
            self.get_grad(self._inputs, layer_err)
        return self._input_grad[1]

    def commit_statistics(self):
        if self._pending is None:
            return
        (mean, var), self._pending = self._pending, None
        for running, batch in ((self.running_mean, mean), (self.running_var, var)):
            running *= 1 - self.momentum
            running += self.momentum * batch

    def __repr__(self):
        return (f"BatchNorm({self.num_features}, momentum={self.momentum}, eps={self.eps}, "
                f"activation={self.activation!r})")
