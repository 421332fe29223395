"""Activations: derivatives, no mutation of inputs, dtypes, kinks, saturation, subclasses;
and against PyTorch where it is installed."""
import warnings

import numpy as np
import pytest

import cnnc
from cnnc import activations, leaky_relu, linear, relu, sigmoid, tanh
from cnnc.activations import AbstractActivation, LeakyReLU, Linear, ReLU, Sigmoid, Tanh

from .conftest import DTYPES
from .gradcheck import assert_grad_close, numerical_grad

INSTANCES = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "linear": linear,
    "ReLU()": ReLU(),
    "LeakyReLU()": LeakyReLU(),
    "LeakyReLU(0.2)": LeakyReLU(slope=0.2),
    "Sigmoid()": Sigmoid(),
    "Tanh()": Tanh(),
    "Linear()": Linear(),
}
ALL = pytest.mark.parametrize("act", list(INSTANCES.values()), ids=list(INSTANCES))


def away_from_kinks(shape, seed=0):
    """float64 values in [-3, 3] with |x| >= 0.1, so a 1e-6 step never crosses 0."""
    rng = np.random.default_rng(seed)
    magnitude = rng.uniform(0.1, 3.0, size=shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return magnitude * sign


def mixed_input(dtype):
    """Negatives, zero and positives (a ReLU that writes into its input changes this)."""
    x = np.array([[-2.5, -1.0, -1e-3, 0.0], [1e-3, 0.5, 3.0, -7.0]], dtype=dtype)
    return x


def test_public_instances_are_the_documented_classes():
    assert isinstance(relu, ReLU)
    assert isinstance(leaky_relu, LeakyReLU)
    assert isinstance(sigmoid, Sigmoid)
    assert isinstance(tanh, Tanh)
    assert isinstance(linear, Linear)
    for act in (relu, leaky_relu, sigmoid, tanh, linear):
        assert isinstance(act, AbstractActivation)
    assert cnnc.AbstractActivation is AbstractActivation


@ALL
def test_deriv_matches_central_difference(act):
    x = away_from_kinks((4, 5))
    numeric = numerical_grad(lambda: float(np.sum(act.compute(x))), x)
    analytic = act.deriv(x)
    assert analytic.shape == x.shape
    assert_grad_close(analytic, numeric)


@ALL
def test_backward_matches_central_difference(act):
    x = away_from_kinks((3, 2, 4), seed=1)
    upstream = np.random.default_rng(2).normal(size=x.shape)
    numeric = numerical_grad(lambda: float(np.sum(upstream * act.compute(x))), x)
    analytic = act.backward(x, upstream)
    assert analytic.shape == x.shape
    assert_grad_close(analytic, numeric)


@ALL
def test_backward_is_upstream_times_deriv(act):
    x = mixed_input(np.float64)
    upstream = np.random.default_rng(3).normal(size=x.shape)
    np.testing.assert_allclose(act.backward(x, upstream), upstream * act.deriv(x), rtol=1e-15, atol=0)


@ALL
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compute_deriv_backward_never_modify_input(act, dtype):
    x = mixed_input(dtype)
    upstream = np.linspace(-1, 1, x.size, dtype=dtype).reshape(x.shape)
    x_copy, upstream_copy = x.copy(), upstream.copy()

    act.compute(x)
    np.testing.assert_array_equal(x, x_copy)
    act.deriv(x)
    np.testing.assert_array_equal(x, x_copy)
    act.backward(x, upstream)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(upstream, upstream_copy)


def test_relu_compute_keeps_stored_z_for_backward():
    # The course project's ReLU zeroed the negatives of z in place, so the backward pass saw max(z, 0).
    z = np.array([-2.0, -0.5, 1.5])
    a = relu.compute(z)
    np.testing.assert_array_equal(a, [0.0, 0.0, 1.5])
    np.testing.assert_array_equal(z, [-2.0, -0.5, 1.5])
    np.testing.assert_allclose(leaky_relu.compute(z), [-0.02, -0.005, 1.5], rtol=1e-15)
    np.testing.assert_array_equal(z, [-2.0, -0.5, 1.5])


@ALL
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_equals_input_dtype(act, dtype):
    x = mixed_input(dtype)
    upstream = np.ones_like(x)
    assert act.compute(x).dtype == dtype
    assert act.deriv(x).dtype == dtype
    assert act.backward(x, upstream).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_at_zero(dtype):
    x = np.zeros(3, dtype=dtype)
    np.testing.assert_array_equal(relu.compute(x), 0)
    np.testing.assert_array_equal(relu.deriv(x), 0)  # PyTorch convention
    np.testing.assert_array_equal(relu.backward(x, np.full(3, 5.0, dtype=dtype)), 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_at_zero(dtype):
    x = np.zeros(3, dtype=dtype)
    np.testing.assert_array_equal(leaky_relu.compute(x), 0)
    np.testing.assert_array_equal(leaky_relu.deriv(x), dtype(0.01))
    np.testing.assert_array_equal(leaky_relu.backward(x, np.full(3, 2.0, dtype=dtype)), dtype(0.01) * dtype(2.0))


def test_relu_values_and_slopes():
    x = np.array([-3.0, -1e-9, 1e-9, 4.0])
    np.testing.assert_array_equal(relu.compute(x), [0.0, 0.0, 1e-9, 4.0])
    np.testing.assert_array_equal(relu.deriv(x), [0.0, 0.0, 1.0, 1.0])


def test_leaky_relu_slope_is_exactly_0_01():
    assert leaky_relu.slope == 0.01
    x = np.array([-100.0, -3.0, -1e-9, 1e-9, 4.0])
    np.testing.assert_array_equal(leaky_relu.deriv(x), [0.01, 0.01, 0.01, 1.0, 1.0])
    np.testing.assert_allclose(leaky_relu.compute(x), [-1.0, -0.03, -1e-11, 1e-9, 4.0], rtol=1e-15)
    assert LeakyReLU().slope == 0.01


def test_leaky_relu_custom_slope():
    act = LeakyReLU(slope=0.2)
    assert act.slope == 0.2
    x = np.array([-5.0, -1.0, 0.0, 2.0])
    np.testing.assert_allclose(act.compute(x), [-1.0, -0.2, 0.0, 2.0], rtol=1e-15)
    np.testing.assert_array_equal(act.deriv(x), [0.2, 0.2, 0.2, 1.0])
    np.testing.assert_allclose(act.backward(x, np.full(4, 3.0)), [0.6, 0.6, 0.6, 3.0], rtol=1e-15)
    # the module instance is unaffected
    assert leaky_relu.slope == 0.01
    assert "0.2" in repr(act)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extreme_inputs_are_finite_without_warnings(dtype):
    x = np.array([-1e30, -1000.0, 1000.0, 1e30], dtype=dtype)
    upstream = np.ones_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = sigmoid.compute(x)
        d = sigmoid.deriv(x)
        b = sigmoid.backward(x, upstream)
    for arr in (s, d, b):
        assert np.all(np.isfinite(arr))
        assert arr.dtype == dtype
    np.testing.assert_array_equal(s, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(d, 0.0)
    np.testing.assert_array_equal(b, 0.0)


def test_sigmoid_values():
    x = np.array([-2.0, 0.0, 0.5, 30.0, -30.0])
    np.testing.assert_allclose(sigmoid.compute(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert sigmoid.compute(np.array([0.0]))[0] == 0.5
    assert sigmoid.deriv(np.array([0.0]))[0] == 0.25


def test_tanh_and_linear_values():
    x = np.array([-2.0, 0.0, 0.5, 1000.0])
    np.testing.assert_allclose(tanh.compute(x), np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(tanh.deriv(x), 1 - np.tanh(x) ** 2, rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(linear.compute(x), x)
    np.testing.assert_array_equal(linear.deriv(x), np.ones_like(x))


class Square(AbstractActivation):
    """A user-defined activation with only compute and deriv."""

    def compute(self, x):
        return x * x

    def deriv(self, x):
        return 2 * x


def test_user_subclass_with_only_compute_and_deriv_works_through_backward():
    act = Square()
    x = away_from_kinks((3, 4), seed=5)
    upstream = np.random.default_rng(6).normal(size=x.shape)
    x_copy = x.copy()
    out = act.backward(x, upstream)
    np.testing.assert_allclose(out, upstream * 2 * x_copy, rtol=1e-15)
    numeric = numerical_grad(lambda: float(np.sum(upstream * act.compute(x))), x)
    assert_grad_close(out, numeric)
    np.testing.assert_array_equal(x, x_copy)
    assert repr(act) == "Square()"


def test_abstract_activation_methods_are_not_implemented():
    act = AbstractActivation()
    x = np.zeros(2)
    with pytest.raises(NotImplementedError):
        act.compute(x)
    with pytest.raises(NotImplementedError):
        act.deriv(x)


# ======================================================= names and classes for activations

@pytest.mark.parametrize("name, cls", [("relu", ReLU), ("leaky_relu", LeakyReLU), ("sigmoid", Sigmoid),
                                       ("tanh", Tanh), ("linear", Linear), ("ReLU", ReLU),
                                       ("Leaky_ReLU", LeakyReLU), ("TANH", Tanh)])
def test_get_takes_a_name_in_any_case(name, cls):
    act = activations.get(name)
    assert type(act) is cls
    assert act is not activations.get(name)     # a fresh one each time: no state shared by layers


def test_get_takes_an_instance_as_it_is_and_a_class_with_its_defaults():
    custom = LeakyReLU(0.2)
    assert activations.get(custom) is custom
    made = activations.get(LeakyReLU)
    assert type(made) is LeakyReLU and made.slope == 0.01
    assert type(activations.get(Square)) is Square
    assert type(activations.get(None)) is Linear


def test_get_refuses_an_unknown_name_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown activation 'relu6'.*'linear', 'relu', 'leaky_relu', "
                                         "'sigmoid', 'tanh'$"):
        activations.get("relu6")


@pytest.mark.parametrize("value", [np.tanh, lambda x: x, 1, object, cnnc.AdamOptimizer, cnnc.AdamOptimizer()],
                         ids=["numpy_function", "lambda", "int", "object", "optimizer_class", "optimizer"])
def test_get_refuses_what_is_not_an_activation(value):
    with pytest.raises(ValueError, match="activation must be an activation.*AbstractActivation.*'relu'"):
        activations.get(value)


# ---------------------------------------------------------------- PyTorch

def torch_twins(torch):
    """Each activation with the torch function computing it."""
    return {"relu": (relu, torch.nn.functional.relu),
            "leaky_relu": (leaky_relu, lambda t: torch.nn.functional.leaky_relu(t, negative_slope=0.01)),
            "sigmoid": (sigmoid, torch.sigmoid),
            "tanh": (tanh, torch.tanh)}


def _activation_inputs(dtype, rng):
    special = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 50.0, -50.0,
               100.0, -100.0, 1000.0, -1000.0]
    z = np.concatenate([special, rng.normal(scale=3.0, size=60)]).astype(dtype)
    return z.reshape(2, 37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_compute_backward_deriv_match_torch(torch, name, dtype):
    ours, theirs = torch_twins(torch)[name]
    rng = np.random.default_rng(3)
    z = _activation_inputs(dtype, rng)
    z_before = z.copy()
    upstream = rng.normal(size=z.shape).astype(dtype)
    rtol = 1e-13 if dtype == np.float64 else 1e-6

    tz = torch.from_numpy(z.copy()).requires_grad_(True)
    ta = theirs(tz)
    ta.backward(torch.from_numpy(upstream))
    tz1 = torch.from_numpy(z.copy()).requires_grad_(True)
    theirs(tz1).backward(torch.ones_like(tz1))

    a = ours.compute(z)
    dz = ours.backward(z, upstream)
    d = ours.deriv(z)
    np.testing.assert_array_equal(z, z_before)  # never written into
    # f'(z) = s(1 - s) or 1 - t^2 cancels where |f| nears 1: there both libraries are
    # only good to a few ulps of 1, so the floor is absolute, in ulps of the upstream scale
    eps = np.finfo(dtype).eps
    checks = (
        (a, ta.detach().numpy(), np.finfo(dtype).tiny),
        (dz, tz.grad.numpy(), 4 * eps * float(np.abs(upstream).max())),
        (d, tz1.grad.numpy(), 4 * eps),
    )
    for got, want, atol in checks:
        assert got.shape == want.shape
        assert got.dtype == np.dtype(dtype)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_edge_values_exact(torch, dtype):
    z = np.array([0.0, -1000.0, 1000.0, 2.0, -2.0], dtype=dtype)
    one = np.ones_like(z)
    # slope at exactly 0: relu 0 and leaky relu 0.01, as torch's backward
    twins = torch_twins(torch)
    for ours, theirs in (twins["relu"], twins["leaky_relu"]):
        tz = torch.from_numpy(z.copy()).requires_grad_(True)
        theirs(tz).backward(torch.ones_like(tz))
        np.testing.assert_array_equal(ours.deriv(z), tz.grad.numpy())
        np.testing.assert_array_equal(ours.backward(z, one), tz.grad.numpy())
        np.testing.assert_array_equal(ours.compute(z), theirs(torch.from_numpy(z)).numpy())
    assert relu.deriv(z)[0] == 0
    assert leaky_relu.deriv(z)[0] == np.dtype(dtype).type(0.01)
    with np.errstate(over="raise"):  # exp must not overflow at -1000
        s = sigmoid.compute(z)
        ds = sigmoid.deriv(z)
    assert s[1] == 0 and s[2] == 1 and s[0] == 0.5
    assert ds[0] == 0.25 and ds[1] == 0 and ds[2] == 0
    np.testing.assert_array_equal(s[:3], torch.sigmoid(torch.from_numpy(z)).numpy()[:3])


def test_the_fused_slope_is_given_exactly_where_f_is_z_or_slope_times_z():
    """A kernel applies f as it stores its output only for these; a subclass (which may
    compute anything) and LeakyReLU(0) (whose leaky_relu keeps an infinite z, where the
    fusion gives ReLU's 0) run their own compute."""
    class Doubled(ReLU):
        def compute(self, x):
            return 2 * np.maximum(x, 0)

    assert linear.fused_slope() == 1.0 and relu.fused_slope() == 0.0
    assert LeakyReLU(0.2).fused_slope() == 0.2 and LeakyReLU(0).fused_slope() is None
    for activation in (sigmoid, tanh, Doubled(), AbstractActivation()):
        assert activation.fused_slope() is None
    z = np.array([-np.inf, -2.0, -0.0, 0.0, 3.0, np.inf, np.nan])
    for activation in (linear, relu, LeakyReLU(0.2)):
        s = activation.fused_slope()
        fused = np.where((z > 0) | np.isnan(z), z, z * s if s else 0.0)
        np.testing.assert_array_equal(fused, activation.compute(z))
