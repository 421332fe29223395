"""Batch normalization (batchnorm_forward, batchnorm_backward, batchnorm_inference): every
kernel implementation against the reference (tests/reference.py) and finite differences,
and the kernels and the BatchNorm layer against PyTorch where it is installed."""
import numpy as np
import pytest

from cnnc import BatchNorm

from . import reference
from .conftest import DTYPES, assert_close, nhwc_to_torch, torch_to_nhwc
from .gradcheck import assert_grad_close, numerical_grad

# (M, C): rows and channels; the compiled sums over rows go in chunks of 16384 values, or
# 16 rows of more channels, so the larger ones take several chunks, the last one short.
BN_SHAPES = [(m, c) for m in (1, 2, 7, 1000) for c in (1, 3, 16, 35)] + [
    (40, 16), (300, 35), (20001, 1), (3001, 16), (2 * 14 * 14, 64), (50, 2000)]


def bn_inputs(shape, dtype, seed):
    """x far from zero mean (as the accuracy of a one-pass variance would suffer), gamma,
    beta and dy."""
    rng = np.random.default_rng(seed)
    m, c = shape
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 3, c) + rng.uniform(-20, 20, c))
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dy = rng.standard_normal(shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, dy))


def gradient_scales(x, dy, gamma, mean, var, eps):
    """The magnitudes of the terms each gradient sums: with few rows they nearly cancel
    (two rows of one channel give dx = 0 exactly), and rounding in float32 is relative to
    the terms, not to what is left of them."""
    x, dy, gamma, mean, var = (a.astype(np.float64) for a in (x, dy, gamma, mean, var))
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv_std
    return (np.abs(gamma * inv_std).max() * np.abs(dy).max(),
            np.abs(dy * x_hat).sum(axis=0).max(), np.abs(dy).sum(axis=0).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_batchnorm_forward_and_backward_match_the_reference(implementation, shape, dtype):
    x, gamma, beta, dy = bn_inputs(shape, dtype, seed=12)
    before = [a.copy() for a in (x, gamma, beta, dy)]
    y, mean, var = implementation.batchnorm_forward(x, gamma, beta, 1e-5)
    for got, want in zip((y, mean, var), reference.batchnorm_forward(x, gamma, beta, 1e-5)):
        assert_close(got, want, dtype)
    grads = implementation.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    expected = reference.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    for got, want, scale in zip(grads, expected, gradient_scales(x, dy, gamma, mean, var, 1e-5)):
        assert_close(got, want, dtype, scale=scale)
    for after, snapshot in zip((x, gamma, beta, dy), before):
        np.testing.assert_array_equal(after, snapshot)


def test_batchnorm_statistics_are_accurate_far_from_zero(implementation):
    """Two passes: a mean of 1e4 does not swamp a variance of 1e-2, which one pass, E[x^2] -
    E[x]^2, would lose entirely in float32 (here over several chunks of rows)."""
    deviations = np.random.default_rng(15).standard_normal((20000, 2)) * 0.1
    x = (1e4 + deviations).astype(np.float32)
    _, mean, var = implementation.batchnorm_forward(x, np.ones(2, np.float32),
                                                    np.zeros(2, np.float32), 1e-5)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(var, exact.var(axis=0), rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 2), (9, 3)])
def test_batchnorm_backward_is_the_gradient_of_the_forward(implementation, shape):
    x, gamma, beta, dy = bn_inputs(shape, np.float64, seed=12)
    _, mean, var = implementation.batchnorm_forward(x, gamma, beta, 1e-3)
    dx, dgamma, dbeta = implementation.batchnorm_backward(x, dy, gamma, mean, var, 1e-3)

    def loss():
        return np.sum(implementation.batchnorm_forward(x, gamma, beta, 1e-3)[0] * dy)

    for analytic, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        assert_grad_close(analytic, numerical_grad(loss, wrt), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (7, 35), (40, 16), (3001, 16)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_batchnorm_inference_matches_the_reference(implementation, shape, dtype):
    x, gamma, beta, _ = bn_inputs(shape, dtype, seed=13)
    rng = np.random.default_rng(14)
    mean = rng.uniform(-20, 20, shape[1]).astype(dtype)
    var = rng.uniform(0.01, 9, shape[1]).astype(dtype)
    y = implementation.batchnorm_inference(x, gamma, beta, mean, var, 1e-3)
    assert_close(y, reference.batchnorm_inference(x, gamma, beta, mean, var, 1e-3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(7, 3), (40, 16), (3001, 16)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_batchnorm_fuses_the_activation_of_its_slope(implementation, shape, slope, dtype):
    """slope activates each normalized value as it is stored, as conv2d_forward's does: the
    normalized value z for z > 0 (or NaN), slope * z elsewhere (exactly 0 for slope 0),
    with the statistics unchanged; in training and in inference."""
    x, gamma, beta, _ = bn_inputs(shape, dtype, seed=16)
    x[0, 0] = np.nan
    mean, var = x[1:].mean(axis=0), x[1:].var(axis=0) + 1

    def activated(z):
        return np.where((z > 0) | np.isnan(z), z, z * slope if slope else 0).astype(dtype)

    with np.errstate(invalid="ignore"):
        y, batch_mean, batch_var = implementation.batchnorm_forward(x, gamma, beta, 1e-5, slope)
        plain, plain_mean, plain_var = implementation.batchnorm_forward(x, gamma, beta, 1e-5)
        inferred = implementation.batchnorm_inference(x, gamma, beta, mean, var, 1e-5, slope)
        plain_inferred = implementation.batchnorm_inference(x, gamma, beta, mean, var, 1e-5)
    np.testing.assert_array_equal(y, activated(plain))
    np.testing.assert_array_equal(inferred, activated(plain_inferred))
    np.testing.assert_array_equal(batch_mean, plain_mean)
    np.testing.assert_array_equal(batch_var, plain_var)
    if slope == 0:
        assert not np.signbit(inferred[inferred == 0]).any()


# ---------------------------------------------------------------- PyTorch

@pytest.mark.parametrize("shape", [(2, 1), (7, 3), (300, 35)])
def test_batchnorm_kernels_match_torch_in_training_mode(torch, implementation, shape):
    x, gamma, beta, dy = bn_inputs(shape, np.float64, seed=15)
    m = shape[0]
    tx, tgamma, tbeta = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    running_mean = torch.zeros(shape[1], dtype=torch.float64)
    running_var = torch.ones(shape[1], dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, running_mean, running_var, tgamma, tbeta,
                                        training=True, momentum=1.0, eps=1e-5)
    ty.backward(torch.tensor(dy))
    y, mean, var = implementation.batchnorm_forward(x, gamma, beta, 1e-5)
    assert_close(y, ty.detach().numpy(), np.float64)
    assert_close(mean, running_mean.numpy(), np.float64)
    assert_close(var, running_var.numpy() * (m - 1) / m, np.float64)  # torch keeps the unbiased one
    dx, dgamma, dbeta = implementation.batchnorm_backward(x, dy, gamma, mean, var, 1e-5)
    scales = gradient_scales(x, dy, gamma, mean, var, 1e-5)
    for got, want, scale in zip((dx, dgamma, dbeta), (tx.grad, tgamma.grad, tbeta.grad), scales):
        assert_close(got, want.numpy(), np.float64, scale=scale)


def test_batchnorm_inference_kernel_matches_torch(torch, implementation):
    x, gamma, beta, _ = bn_inputs((50, 6), np.float64, seed=16)
    mean, var = np.linspace(-1, 1, 6), np.linspace(0.5, 2, 6)
    ty = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(mean), torch.tensor(var),
                                        torch.tensor(gamma), torch.tensor(beta), training=False,
                                        eps=1e-5)
    assert_close(implementation.batchnorm_inference(x, gamma, beta, mean, var, 1e-5), ty.numpy(),
                 np.float64)


@pytest.mark.parametrize("shape", [(4, 5, 3, 6), (9, 5)], ids=["2d", "1d"])
def test_batchnorm_layer_training_and_statistics_match_torch(torch, shape):
    rng = np.random.default_rng(41)
    layer = BatchNorm(shape[-1], momentum=0.2, eps=1e-4, dtype=np.float64)
    layer.params["w"][...] = rng.uniform(0.5, 2, shape[-1])
    layer.params["b"][...] = rng.normal(size=shape[-1])
    kind = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
    module = kind(shape[-1], eps=1e-4, momentum=0.2).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.params["w"]))
        module.bias.copy_(torch.from_numpy(layer.params["b"]))
    to_torch = nhwc_to_torch if len(shape) == 4 else torch.from_numpy
    from_torch = torch_to_nhwc if len(shape) == 4 else (lambda t: t.detach().numpy())
    layer.training = True
    for _ in range(3):
        x = rng.normal(2.0, 3.0, shape)
        r = rng.normal(size=shape)
        z, _ = layer.forward(x)
        tx = to_torch(x).requires_grad_(True)
        tz = module(tx)
        (tz * to_torch(r)).sum().backward()
        assert_close(z, from_torch(tz), np.float64)
        grads = layer.get_grad(x, r)
        assert_close(layer.backward(r), from_torch(tx.grad), np.float64)
        assert_close(grads["w"], module.weight.grad.numpy(), np.float64)
        assert_close(grads["b"], module.bias.grad.numpy(), np.float64)
        module.weight.grad = module.bias.grad = None
        layer.commit_statistics()
        assert_close(layer.running_mean, module.running_mean.numpy(), np.float64)
        assert_close(layer.running_var, module.running_var.numpy(), np.float64)
    layer.training = False
    module.eval()
    x = rng.normal(size=shape)
    assert_close(layer.forward(x)[0], from_torch(module(to_torch(x))), np.float64)
