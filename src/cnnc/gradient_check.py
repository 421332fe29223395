"""cnnc.gradcheck: a network's backward pass checked against finite differences of its loss.

For every parameter p of every layer, the gradient the network computes (analytic, from
`net.loss_and_grads`) is compared with the central difference of the loss

    numeric = (loss(p + eps) - loss(p - eps)) / (2 eps)

on a sample of p's elements, in float64 on a copy of the network, so that the user's
network is left exactly as it was.
"""
import copy
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import kernels
from .network import Network


@dataclass(frozen=True)
class ElementCheck:
    """One checked element of one parameter.

    layer: the layer's index in net.layers; kind: its class name; layer_repr: its repr.
    param: the parameter's name ("w", "b"); index: the element's index in it.
    analytic: the gradient the network computed; numeric: the central difference.
    abs_error: |analytic - numeric| (at a kink: the distance from analytic to the
        interval between the one-sided differences).
    rel_error: abs_error / (|numeric| + atol / rtol), which is <= rtol exactly when
        |analytic - numeric| <= atol + rtol * |numeric|: the element passes then. (At a
        kink, the one-sided difference nearest to analytic stands for numeric.)
    kink: the loss is not differentiable here at the scale of eps (the one-sided
        differences disagree), e.g. a ReLU input or a max-pool tie within eps of the kink.
    """

    layer: int
    kind: str
    layer_repr: str
    param: str
    index: tuple
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    kink: bool

    def __str__(self):
        where = f"layer {self.layer} ({self.kind}) {self.param!r}{list(self.index)}"
        kink = " (at a kink)" if self.kink else ""
        return (f"{where}: analytic {self.analytic:.6e}, numeric {self.numeric:.6e}, "
                f"relative error {self.rel_error:.2e}{kink}")


@dataclass(frozen=True, eq=False)
class ParamCheck:
    """What the check found for one parameter of one layer.

    layer, kind, layer_repr, param: as in ElementCheck. shape: the parameter's shape.
    size: its number of elements; checked: how many of them were compared.
    indices: (checked, ndim) the compared elements' indices; analytic, numeric, rel_error,
        at_kink: (checked,) their two gradients, their relative errors, whether each sits
        at a kink. kinks: how many of them do.
    max_abs_error, max_rel_error: the largest errors among them; worst: the element with
        the largest relative error. passed: every compared element is within tolerance.
    """

    layer: int
    kind: str
    layer_repr: str
    param: str
    shape: tuple
    size: int
    checked: int
    indices: np.ndarray
    analytic: np.ndarray
    numeric: np.ndarray
    rel_error: np.ndarray
    at_kink: np.ndarray
    kinks: int
    max_abs_error: float
    max_rel_error: float
    worst: ElementCheck
    passed: bool


@dataclass(frozen=True, eq=False)
class GradcheckResult:
    """The outcome of cnnc.gradcheck; str(result) is a table with one row per parameter.

    passed: every checked element of every parameter is within tolerance.
    params: one ParamCheck per parameter, in layer order.
    worst: the element with the largest relative error over all parameters (None for a
        network without parameters).
    loss: the loss at the unperturbed parameters (float64).
    eps, atol, rtol: the step and tolerances the check used.
    """

    passed: bool
    params: tuple
    worst: Optional[ElementCheck]
    loss: float
    eps: float
    atol: float
    rtol: float

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over every checked element (0 without parameters)."""
        return self.worst.rel_error if self.worst is not None else 0.0

    @property
    def max_abs_error(self) -> float:
        """The largest absolute error over every checked element."""
        return max((p.max_abs_error for p in self.params), default=0.0)

    @property
    def failures(self) -> list:
        """The ParamChecks that failed."""
        return [p for p in self.params if not p.passed]

    def __str__(self):
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"gradcheck {verdict}: worst relative error {self.max_rel_error:.2e} "
                 f"(rtol {self.rtol:g}), loss {self.loss:.6g}, eps {self.eps:g}, atol {self.atol:g}"]
        if self.worst is not None:
            lines.append(f"worst: {self.worst}")
        rows = [("layer", "param", "shape", "checked", "kinks", "max abs err", "max rel err", "")]
        for p in self.params:
            rows.append((f"{p.layer}: {p.kind}", p.param, "x".join(map(str, p.shape)),
                         f"{p.checked}/{p.size}", str(p.kinks), f"{p.max_abs_error:.2e}",
                         f"{p.max_rel_error:.2e}", "ok" if p.passed else "FAIL"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        lines.append("relative error = |analytic - numeric| / (|numeric| + atol/rtol); "
                     "an element passes when it is <= rtol")
        if self.failures and all(p.at_kink[p.rel_error > self.rtol].all() for p in self.failures):
            lines.append("every failing element sits at a kink (a ReLU input or a max-pool tie within "
                         "eps of it),\nwhere the loss has no gradient: nonzero biases or other "
                         "inputs avoid them (see help(cnnc.gradcheck))")
        return "\n".join(lines)


def gradcheck(net: Network, x, y, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              samples_per_param: Optional[int] = 32, seed: Optional[int] = 0) -> GradcheckResult:
    """Check the gradients net.loss_and_grads(x, y) returns against finite differences.

    Each sampled element p of each parameter gets the central difference
    (loss(p + eps) - loss(p - eps)) / (2 eps) and passes when
    |analytic - numeric| <= atol + rtol * |numeric|, torch.autograd.gradcheck's test with
    its defaults. Everything runs in float64 on a deep copy of net (a float32 network is
    cast), so the network given is left as it was: parameters, optimizer state, BatchNorm
    running statistics, Dropout random state, the global NumPy random state.

    The pass is the training pass loss_and_grads runs: BatchNorm uses the batch's
    statistics, and Dropout drops. Every evaluation of the loss starts each random
    generator of the copy's layers (and NumPy's global one) from the state it had before
    the analytic pass, so Dropout draws the same mask every time and the differences
    measure the same function the gradient was taken of.

    Kinks: ReLU and leaky ReLU at 0 and ties in max pooling make the loss
    non-differentiable there. An element whose input to such a kink lies within eps of it
    (common with exactly-zero inputs: blank image borders with zero biases put a conv's
    output exactly at 0) has one-sided differences that disagree; such an element is
    marked as a kink and passes when its analytic value lies between the two one-sided
    differences (each side's slope is a valid choice there). Kinks whose one-sided slopes
    cancel can still fail; a different seed, other inputs or nonzero biases avoid them.

    net: the Network to check.
    x, y: a batch and its labels, as loss_and_grads takes them; a wrong shape raises the
        same ValueError loss_and_grads raises. A few samples suffice, and keep it fast.
    eps: the step of the central difference; 1e-6 balances truncation and rounding error
        in float64.
    atol, rtol: the absolute and relative tolerance of the comparison (rtol > 0).
    samples_per_param: how many elements of each parameter to check, drawn at random
        without replacement (None: every element). Bounded samples keep large layers
        fast: each element costs two forward passes from its layer up.
    seed: seeds the choice of elements, so that a check can be repeated exactly.

    Returns a GradcheckResult: result.passed, result.worst (layer, parameter, element,
    analytic and numeric value), one ParamCheck per parameter in result.params, and a
    readable table as str(result).
    """
    if not isinstance(net, Network):
        raise ValueError(f"gradcheck checks a cnnc Network, got {type(net).__name__}")
    eps = _positive("eps", eps)
    rtol = _positive("rtol", rtol)
    atol = _positive("atol", atol, allow_zero=True)
    if samples_per_param is not None and (int(samples_per_param) != samples_per_param
                                          or samples_per_param < 1):
        raise ValueError(f"samples_per_param must be a positive int or None, got {samples_per_param!r}")
    global_state = np.random.get_state()
    try:
        return _check(_float64_copy(net), x, y, eps, atol, rtol, samples_per_param,
                      np.random.default_rng(seed), global_state)
    finally:
        np.random.set_state(global_state)


def _check(twin, x, y, eps, atol, rtol, samples, rng, global_state):
    generators = [_generator_states(layer) for layer in twin.layers]
    _, grads = twin.loss_and_grads(x, y)         # validates x and y as the user's call would
    x = np.ascontiguousarray(x, dtype=np.float64)

    def outputs_from(start, inputs):
        """The outputs of the layers from `start` up, run on inputs with their randomness
        replayed from the analytic pass."""
        np.random.set_state(global_state)
        outputs = [inputs]
        for layer, states in zip(twin.layers[start:], generators[start:]):
            for generator, state in states:
                generator.bit_generator.state = state
            outputs.append(layer.forward(outputs[-1])[1])
        return outputs

    for layer in twin.layers:
        layer.training = True
    checks = []
    with kernels.memory_pool():
        inputs = outputs_from(0, x)     # each layer's input: a perturbed layer starts there
        loss = twin.loss.compute(inputs[-1], y)
        for depth, layer in enumerate(twin.layers):
            for name, param in layer.params.items():
                analytic = _analytic(grads[depth], depth, layer, name, param)
                indices = _sample(param.size, samples, rng)
                checks.append(_check_param(
                    depth, layer, name, param, analytic, indices,
                    lambda: twin.loss.compute(outputs_from(depth, inputs[depth])[-1], y), loss,
                    eps, atol, rtol))
    worst = max((c.worst for c in checks), key=lambda e: e.rel_error, default=None)
    return GradcheckResult(passed=all(c.passed for c in checks), params=tuple(checks),
                           worst=worst, loss=float(loss), eps=eps, atol=atol, rtol=rtol)


def _check_param(depth, layer, name, param, analytic, indices, loss, base, eps, atol, rtol):
    """Compare analytic with central differences at the flat indices of param."""
    count = len(indices)
    numeric, left, right = np.empty(count), np.empty(count), np.empty(count)
    for i, flat in enumerate(indices):
        where = np.unravel_index(flat, param.shape)
        original = param[where]
        param[where] = original + eps
        up = loss()
        param[where] = original - eps
        down = loss()
        param[where] = original
        numeric[i] = (up - down) / (2 * eps)
        right[i], left[i] = (up - base) / eps, (base - down) / eps
    values = analytic.reshape(-1)[indices]
    # At a smooth point the sides differ by about eps * |second derivative|, far below the
    # tolerance; a larger gap means the step crossed a kink.
    kinks = np.abs(right - left) > atol + rtol * np.abs(numeric)
    nearest = np.where(kinks, np.clip(values, np.minimum(left, right), np.maximum(left, right)),
                       numeric)
    abs_error = np.abs(values - nearest)
    scale = np.abs(nearest) + atol / rtol
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_error = np.where(abs_error == 0, 0.0, abs_error / scale)
    worst = int(np.argmax(rel_error)) if count else None
    kind, text = type(layer).__name__, repr(layer)
    element = None
    if worst is not None:
        element = ElementCheck(
            layer=depth, kind=kind, layer_repr=text, param=name,
            index=tuple(int(i) for i in np.unravel_index(indices[worst], param.shape)),
            analytic=float(values[worst]), numeric=float(numeric[worst]),
            abs_error=float(abs_error[worst]), rel_error=float(rel_error[worst]),
            kink=bool(kinks[worst]))
    return ParamCheck(
        layer=depth, kind=kind, layer_repr=text, param=name, shape=tuple(param.shape),
        size=int(param.size), checked=count,
        indices=np.array(np.unravel_index(indices, param.shape)).T.reshape(count, param.ndim),
        analytic=values, numeric=numeric, rel_error=rel_error, at_kink=kinks, kinks=int(kinks.sum()),
        max_abs_error=float(abs_error.max(initial=0.0)),
        max_rel_error=float(rel_error.max(initial=0.0)), worst=element,
        passed=bool((rel_error <= rtol).all()))


def _analytic(layer_grads, depth, layer, name, param):
    """The gradient loss_and_grads gave for this parameter, as float64, checked for shape."""
    if name not in layer_grads:
        raise ValueError(f"layer {depth} ({type(layer).__name__}) has a parameter {name!r} "
                         f"but loss_and_grads gives no gradient for it")
    grad = np.asarray(layer_grads[name], dtype=np.float64)
    if grad.shape != param.shape:
        raise ValueError(f"layer {depth} ({type(layer).__name__}): the gradient of {name!r} has "
                         f"shape {grad.shape}, the parameter {param.shape}")
    return grad


def _sample(size, samples, rng):
    """Flat indices to check: all of them, or `samples` drawn without replacement."""
    if samples is None or samples >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, int(samples), replace=False))


def _float64_copy(net):
    """A deep copy of net computing in float64: every float32 array a layer holds (its
    parameters, BatchNorm's running statistics) cast, and the dtypes set to match."""
    twin = copy.deepcopy(net)
    for layer in twin.layers:
        for name, param in layer.params.items():
            layer.params[name] = np.ascontiguousarray(param, dtype=np.float64)
        for name, value in list(vars(layer).items()):
            if isinstance(value, np.ndarray) and value.dtype == np.float32:
                setattr(layer, name, value.astype(np.float64))
        if hasattr(layer, "dtype"):
            layer.dtype = np.dtype(np.float64)
    twin.dtype = np.dtype(np.float64)
    return twin


def _generator_states(layer):
    """The random generators a layer holds (Dropout's) with their current states."""
    return [(value, value.bit_generator.state) for value in vars(layer).values()
            if isinstance(value, np.random.Generator)]


def _positive(name, value, allow_zero=False):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}")
    return value
