"""Learning-rate schedules: callables step -> lr that `Network.fit(lr=...)` calls once per
batch with the 0-based step count, counting on across epochs."""
import math

from . import _checks


def cosine(base, total_steps):
    """base * (1 + cos(pi * min(t, T) / T)) / 2: from base at step 0 down to 0 at step T
    (and 0 after it), as torch's CosineAnnealingLR with eta_min 0 and T_max = T."""
    return Cosine(base, total_steps)


class Cosine:
    """The schedule cosine() makes: a callable step -> lr with a readable repr."""

    def __init__(self, base, total_steps):
        self.base = _checks.number("base", base, 0)
        self.total_steps = _checks.integer("total_steps", total_steps, 1, 2**63 - 1)

    def __call__(self, step):
        progress = min(step, self.total_steps) / self.total_steps
        return self.base * (1 + math.cos(math.pi * progress)) / 2

    def __repr__(self):
        return f"schedules.cosine({self.base}, total_steps={self.total_steps})"
