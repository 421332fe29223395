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

from . import activations, dtypes, init, kernels, optimizers
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
    """A layer without parameters; subclasses with parameters fill `params`."""

    activation = linear

    def __init__(self):
        self.params = {}

    def get_grad(self, inputs, layer_err):
        return {}

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
    """2-D convolution (cross-correlation, as in PyTorch) with filters (kh, kw, c_in, c_out).

    padding: an int or (ph, pw) of symmetric zero padding, "valid" (none) or "same"
    (output size ceil(input / stride); any odd pixel of padding goes bottom/right).
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


class Flatten(Layer):
    """(N, *input_shape) -> (N, prod(input_shape)), in C order."""

    def __init__(self, input_shape):
        super().__init__()
        shape = (input_shape,) if np.ndim(input_shape) == 0 else tuple(input_shape)
        self.input_shape = _ints(shape, len(shape), "Flatten input_shape")
        self.size = int(np.prod(self.input_shape))

    def output_shape(self, input_shape):
        if tuple(input_shape) != self.input_shape:
            raise ValueError(f"Flatten expects inputs of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got (N, {', '.join(map(str, input_shape))})")
        return (self.size,)

    def forward(self, inputs):
        flat = inputs.reshape(inputs.shape[0], self.size)
        return flat, flat

    def backward(self, layer_err):
        return layer_err.reshape((layer_err.shape[0],) + self.input_shape)

    def __repr__(self):
        return f"Flatten({self.input_shape})"


class FullyConnected(ParametricLayer):
    """z = x @ w + b with w of shape (n_in, n_out)."""

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
