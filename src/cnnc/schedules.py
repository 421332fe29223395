"""Learning-rate schedules: callables step -> lr that `Network.fit(lr=...)` calls once per
batch with the 0-based step count, counting on across epochs."""
from __future__ import annotations

import math

from . import _checks


def cosine(base: float, total_steps: int) -> Cosine:
    """The schedule t -> base * (1 + cos(pi * min(t, T) / T)) / 2 with T = total_steps: from
    the learning rate base (>= 0) at step 0 down to 0 at step T (and 0 after it), as torch's
    CosineAnnealingLR with eta_min 0 and T_max = T. total_steps is an int >= 1, usually
    epochs * batches per epoch; a bad argument is a ValueError."""
    return Cosine(base, total_steps)


class Cosine:
    """The schedule cosine() makes: a callable step -> lr with a readable repr.

    base, total_steps: as for cosine(), kept as the attributes of those names.
    """

    def __init__(self, base: float, total_steps: int) -> None:
        self.base = _checks.number("base", base, 0)
        self.total_steps = _checks.integer("total_steps", total_steps, 1, 2**63 - 1)

    def __call__(self, step: int) -> float:
        """The learning rate at this 0-based step."""
        progress = min(step, self.total_steps) / self.total_steps
        return self.base * (1 + math.cos(math.pi * progress)) / 2

    def __repr__(self):
        return f"schedules.cosine({self.base}, total_steps={self.total_steps})"
