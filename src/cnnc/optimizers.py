"""Optimizers keep the course project's protocol: `update(dx, lr)` returns the step, the caller
does `w -= step`.

One optimizer serves all the parameters of a layer: each parameter has its own state,
found by the `key` the layer passes (its name, "w" or "b"). `apply` updates a parameter
in place, which is what layers call.
"""
from __future__ import annotations

from typing import Any, Hashable

import numpy as np
from numpy.typing import NDArray

from . import _checks, kernels
from .saving import Savable, register

Array = NDArray[np.floating]


class Optimizer(Savable):
    """Base class: per-parameter state in `self.state[key]`, a dict holding the update count
    "step" and an array of the parameter's shape for each name in `slots`.

    For saving, `config_fields` names the constructor arguments (each kept as an attribute
    of the same name) and `slots` the state arrays; a subclass given to
    cnnc.saving.register can be saved with its state.
    """

    saved_kind = "optimizer"
    slots: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.state: dict[Hashable, dict[str, Any]] = {}

    def update(self, dx: Array, lr: float, key: Hashable = None) -> Array:
        """The step for gradient dx of parameter `key` at learning rate lr: the caller does
        w -= step. The optimizer's state for `key` advances by one update."""
        raise NotImplementedError

    def apply(self, param: Array, dx: Array, lr: float, key: Hashable = None) -> None:
        """Update param in place from its gradient dx at learning rate lr (with weight decay,
        which needs the weights, where the optimizer has it)."""
        param -= self.update(dx, lr, key)

    def prepare(self, dx: Array, key: Hashable = None) -> None:
        """Make the state of parameter `key` ready for a gradient like dx (checked, allocated),
        so that the next apply only computes: a Network prepares every layer's update
        before it applies any."""

    def _slots(self, key, dx):
        """The state of parameter `key`: its `slots` arrays, made as zeros on its first update."""
        state = self.state.get(key)
        first = self.slots[0]
        if state is None:
            state = self.state[key] = {name: np.zeros_like(dx) for name in self.slots}
            state["step"] = 0
        elif state[first].shape != dx.shape:
            raise ValueError(
                f"{type(self).__name__}: gradient for {key!r} has shape {dx.shape}, but its state "
                f"was made for shape {state[first].shape} (is one optimizer shared by two layers?)"
            )
        return state


def get(value: Optimizer | type) -> Optimizer:
    """The optimizer `value` stands for: an Optimizer as it is, or a subclass of Optimizer
    made with its defaults (optimizer=AdamOptimizer means AdamOptimizer())."""
    if isinstance(value, Optimizer):
        return value
    if isinstance(value, type) and issubclass(value, Optimizer):
        return value()
    raise ValueError("optimizer must be an optimizer such as AdamOptimizer() or "
                     f"SGDOptimizer(momentum=0.9), or one of their classes; got {value!r}")


@register
class SGDOptimizer(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay,
    as torch.optim.SGD: step = lr * (dx + weight_decay * w), or lr * velocity with momentum.

    momentum: a finite number >= 0 (a NaN one would turn every weight into NaN within two
        steps); 0 keeps no state.
    nesterov: True for Nesterov momentum (needs momentum > 0).
    weight_decay: finite, >= 0, added to the gradient as weight_decay * w.

    State per parameter, with momentum: "velocity" and the "step" count.
    """

    config_fields = ("momentum", "nesterov", "weight_decay")
    config_optional = ("weight_decay",)
    slots = ("velocity",)

    def __init__(self, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__()
        momentum = _checks.number("momentum", momentum, 0)
        nesterov = _checks.flag("nesterov", nesterov)
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = _checks.number("weight_decay", weight_decay, 0)

    def prepare(self, dx: Array, key: Hashable = None) -> None:
        if self.momentum != 0:
            self._slots(key, dx)

    def update(self, dx: Array, lr: float = 0.01, key: Hashable = None) -> Array:
        _without_decay(self)
        return self._step(dx, lr, key)

    def apply(self, param: Array, dx: Array, lr: float, key: Hashable = None) -> None:
        if self.weight_decay:
            dx = dx + self.weight_decay * param
        param -= self._step(dx, lr, key)

    def _step(self, dx, lr, key):
        if self.momentum == 0:
            return lr * dx
        state = self._slots(key, dx)
        velocity = state["velocity"]
        if state["step"] == 0:
            velocity[...] = dx
        else:
            velocity *= self.momentum
            velocity += dx
        state["step"] += 1
        direction = dx + self.momentum * velocity if self.nesterov else velocity
        return lr * direction

    def __repr__(self) -> str:
        return (f"SGDOptimizer(momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")


SGDoptimizer = SGDOptimizer


@register
class AdamOptimizer(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction and optional L2 weight decay (added
    to the gradient); matches torch.optim.Adam.

    beta1, beta2: the decay rates of the mean and of the mean square of the gradient,
        finite, in [0, 1).
    eps: finite, >= 0, added to the root mean square so that no step divides by zero.
    weight_decay: finite, >= 0, added to the gradient as weight_decay * w.
    All are checked here, where a bad value is given, not at the first update, which would
    fail far from it.

    State per parameter: "m" and "v", the moving averages, and the "step" count that
    corrects their bias.
    """

    config_fields = ("beta1", "beta2", "eps", "weight_decay")
    config_optional = ("weight_decay",)
    slots = ("m", "v")

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.beta1 = _checks.number("beta1", beta1, 0, 1)
        self.beta2 = _checks.number("beta2", beta2, 0, 1)
        self.eps = _checks.number("eps", eps, 0)
        self.weight_decay = _checks.number("weight_decay", weight_decay, 0)

    def prepare(self, dx: Array, key: Hashable = None) -> None:
        self._slots(key, dx)

    def apply(self, param: Array, dx: Array, lr: float, key: Hashable = None) -> None:
        if self.weight_decay:
            dx = dx + self.weight_decay * param
        self._adam(param, dx, lr, key)

    def _adam(self, param, dx, lr, key):
        state = self._slots(key, dx)
        state["step"] += 1
        kernels.adam_update(
            param, dx, state["m"], state["v"], lr, self.beta1, self.beta2, self.eps, state["step"]
        )

    def update(self, dx: Array, lr: float = 0.001, key: Hashable = None) -> Array:
        _without_decay(self)
        moved = np.zeros_like(dx)
        self._adam(moved, dx, lr, key)
        return -moved

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


@register
class AdamWOptimizer(AdamOptimizer):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): the weights shrink by
    lr * weight_decay before each Adam step; matches torch.optim.AdamW.

    beta1, beta2, eps: as for AdamOptimizer.
    weight_decay: finite, >= 0, the fraction of lr by which each step shrinks the weights.

    State per parameter: as AdamOptimizer's.
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(beta1, beta2, eps, weight_decay)

    def apply(self, param: Array, dx: Array, lr: float, key: Hashable = None) -> None:
        lr = _checks.number("lr", lr, 0)       # before the weights change
        if self.weight_decay:
            param *= 1 - lr * self.weight_decay
        self._adam(param, dx, lr, key)


def _without_decay(optimizer):
    """update(dx, lr) sees the gradient only: weight decay, which needs the weights, is
    applied by apply(param, dx, lr), which the layers call."""
    if optimizer.weight_decay:
        raise ValueError(f"{type(optimizer).__name__} with weight_decay needs the parameter: "
                         "call apply(param, dx, lr, key), which updates it in place")
