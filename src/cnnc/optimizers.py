"""Optimizers keep the seed's protocol: `update(dx, lr)` returns the step, the caller
does `w -= step`.

One optimizer serves all the parameters of a layer: each parameter has its own state,
found by the `key` the layer passes (its name, "w" or "b"). `apply` updates a parameter
in place, which is what layers call.
"""
import numpy as np

from . import _checks, kernels


class Optimizer:
    """Base class: per-parameter state in `self.state[key]`."""

    def __init__(self):
        self.state = {}

    def update(self, dx, lr, key=None):
        """The step for gradient dx of parameter `key`: the caller does w -= step."""
        raise NotImplementedError

    def apply(self, param, dx, lr, key=None):
        """Update param in place from its gradient dx."""
        param -= self.update(dx, lr, key)

    def prepare(self, dx, key=None):
        """Make the state of parameter `key` ready for a gradient like dx (checked, allocated),
        so that the next apply only computes: a Network prepares every layer's update
        before it applies any."""

    def _slots(self, key, dx, names):
        """The state arrays of parameter `key`, made as zeros on its first update."""
        state = self.state.get(key)
        if state is None:
            state = self.state[key] = {name: np.zeros_like(dx) for name in names}
            state["step"] = 0
        elif state[names[0]].shape != dx.shape:
            raise ValueError(
                f"{type(self).__name__}: gradient for {key!r} has shape {dx.shape}, but its state "
                f"was made for shape {state[names[0]].shape} (is one optimizer shared by two layers?)"
            )
        return state


def get(value):
    """The optimizer `value` stands for: an Optimizer as it is, or a subclass of Optimizer
    made with its defaults (optimizer=AdamOptimizer means AdamOptimizer())."""
    if isinstance(value, Optimizer):
        return value
    if isinstance(value, type) and issubclass(value, Optimizer):
        return value()
    raise ValueError("optimizer must be an optimizer such as AdamOptimizer() or "
                     f"SGDOptimizer(momentum=0.9), or one of their classes; got {value!r}")


class SGDOptimizer(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as torch.optim.SGD."""

    def __init__(self, momentum=0.0, nesterov=False):
        """momentum: a finite number >= 0 (a NaN one would turn every weight into NaN within
        two steps); nesterov: True or False."""
        super().__init__()
        momentum = _checks.number("momentum", momentum, 0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def prepare(self, dx, key=None):
        if self.momentum != 0:
            self._slots(key, dx, ("velocity",))

    def update(self, dx, lr=0.01, key=None):
        if self.momentum == 0:
            return lr * dx
        state = self._slots(key, dx, ("velocity",))
        velocity = state["velocity"]
        if state["step"] == 0:
            velocity[...] = dx
        else:
            velocity *= self.momentum
            velocity += dx
        state["step"] += 1
        direction = dx + self.momentum * velocity if self.nesterov else velocity
        return lr * direction

    def __repr__(self):
        return f"SGDOptimizer(momentum={self.momentum}, nesterov={self.nesterov})"


SGDoptimizer = SGDOptimizer


class AdamOptimizer(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias correction; matches torch.optim.Adam."""

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8):
        """beta1, beta2: finite, in [0, 1); eps: finite, >= 0. Checked here, where a bad value
        is given, not at the first update, which would fail far from it."""
        super().__init__()
        self.beta1 = _checks.number("beta1", beta1, 0, 1)
        self.beta2 = _checks.number("beta2", beta2, 0, 1)
        self.eps = _checks.number("eps", eps, 0)

    def prepare(self, dx, key=None):
        self._slots(key, dx, ("m", "v"))

    def apply(self, param, dx, lr, key=None):
        state = self._slots(key, dx, ("m", "v"))
        state["step"] += 1
        kernels.adam_update(
            param, dx, state["m"], state["v"], lr, self.beta1, self.beta2, self.eps, state["step"]
        )

    def update(self, dx, lr=0.001, key=None):
        moved = np.zeros_like(dx)
        self.apply(moved, dx, lr, key)
        return -moved

    def __repr__(self):
        return f"AdamOptimizer(beta1={self.beta1}, beta2={self.beta2}, eps={self.eps})"
