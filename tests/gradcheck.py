"""Central-difference gradients in float64, for checking analytic ones."""
import numpy as np


def numerical_grad(f, x, eps=1e-6):
    """d f(x) / d x for a scalar function f of the array x (perturbed in place, restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        up = f()
        flat_x[i] = original - eps
        down = f()
        flat_x[i] = original
        flat_g[i] = (up - down) / (2 * eps)
    return grad


def assert_grad_close(analytic, numeric, rtol=1e-6, atol=1e-8):
    """Analytic and numerical gradients agree, relative to the gradient's own scale."""
    analytic, numeric = np.asarray(analytic), np.asarray(numeric)
    assert analytic.shape == numeric.shape
    scale = max(np.abs(numeric).max(), 1.0)
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol * scale)
