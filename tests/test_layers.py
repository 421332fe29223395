"""Conv, MaxPool (POOL), Flatten and FullyConnected: gradients, shapes, arguments, params."""
import itertools
import re
import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc import (POOL, AdamOptimizer, AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected,
                  GlobalAvgPool, MaxPool, SGDOptimizer, leaky_relu, linear, relu, sigmoid, tanh)
from cnnc import Network, SoftmaxCrossEntropy
from cnnc.activations import LeakyReLU, Linear, ReLU, Sigmoid

from .conftest import out_size
from .gradcheck import assert_grad_close, numerical_grad

F64 = np.float64


@pytest.fixture(autouse=True)
def _restore_default_dtype():
    saved = cnnc.get_default_dtype()
    yield
    cnnc.set_default_dtype(saved)


def _normal(seed):
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape)


def _conv64(fshape, strides=1, padding=0, activation=linear, seed=0):
    layer = Conv(fshape, strides=strides, padding=padding, activation=activation,
                 filter_init=_normal(seed), dtype=F64)
    layer.params["b"][...] = np.random.default_rng(seed + 100).standard_normal(fshape[3])
    return layer


def _fc64(shape, activation=linear, seed=0):
    layer = FullyConnected(shape, activation=activation, weight_init=_normal(seed), dtype=F64)
    layer.params["b"][...] = np.random.default_rng(seed + 100).standard_normal(shape[1])
    return layer


def _check_layer_grads(layer, x, seed=0):
    """Gradient check of loss = sum(a * r): input gradient and every parameter gradient."""
    z, a = layer.forward(x)
    r = np.random.default_rng(seed + 1).standard_normal(a.shape)

    def loss():
        return float(np.sum(layer.forward(x)[1] * r))

    num_x = numerical_grad(loss, x)
    num_params = {name: numerical_grad(loss, p) for name, p in layer.params.items()}

    z, a = layer.forward(x)
    layer_err = r * layer.activation.deriv(z)
    dx = layer.backward(layer_err)
    assert dx.shape == x.shape
    assert_grad_close(dx, num_x)
    grads = layer.get_grad(x, layer_err)
    assert set(grads) == set(layer.params)
    for name, num in num_params.items():
        assert grads[name].shape == layer.params[name].shape
        assert_grad_close(grads[name], num)
    return dx, grads


# --------------------------------------------------------------------------- Conv gradients

# (n, h, w, c_in, c_out, kh, kw, strides, padding)
CONV_GRAD_CASES = [
    (1, 7, 5, 1, 2, 3, 3, 1, 0),
    (2, 9, 9, 2, 3, 3, 3, 2, 1),
    (3, 6, 11, 2, 2, 4, 4, 3, (1, 2)),
    (2, 7, 5, 3, 2, 1, 1, 1, 0),
    (1, 7, 5, 3, 2, 1, 1, 2, 0),
    (2, 6, 11, 2, 3, 5, 5, (1, 2), 2),
    (1, 9, 9, 2, 2, 3, 3, (2, 1), (1, 2)),
    (1, 6, 11, 2, 2, 3, 3, 3, (2, 0)),
    (1, 7, 5, 2, 2, 3, 3, 1, "valid"),
    (2, 9, 9, 1, 2, 4, 4, 2, "valid"),     # (9 - 4) // 2 + 1 = 3: the last row is unused
    (2, 7, 5, 2, 2, 3, 3, 1, "same"),
    (2, 6, 7, 2, 2, 4, 4, 1, "same"),      # even kernel: the odd pixel goes bottom/right
    (1, 9, 9, 2, 2, 4, 4, 2, "same"),
    (2, 7, 6, 2, 2, 3, 3, 2, "same"),
    (1, 9, 9, 2, 2, 5, 5, 3, "same"),
    (2, 8, 7, 1, 3, 2, 3, (2, 1), "same"),
    (2, 5, 5, 2, 3, 5, 5, 1, 0),           # 1x1 output
    (1, 3, 3, 1, 1, 5, 5, 1, 1),           # the filter just fits the padded input
    (1, 4, 4, 1, 2, 1, 1, 3, 2),           # padding wider than the filter
]


@pytest.mark.parametrize("case", CONV_GRAD_CASES, ids=str)
def test_conv_gradients_match_central_differences(case):
    n, h, w, cin, cout, kh, kw, strides, padding = case
    layer = _conv64((kh, kw, cin, cout), strides, padding, seed=n + h)
    x = np.random.default_rng(h * w).standard_normal((n, h, w, cin))
    dx, _ = _check_layer_grads(layer, x, seed=h)
    assert dx.dtype == F64


@pytest.mark.parametrize("activation", [relu, leaky_relu, sigmoid, tanh, linear], ids=repr)
def test_conv_gradients_with_activation(activation):
    layer = _conv64((3, 3, 2, 3), strides=(1, 2), padding="same", activation=activation, seed=4)
    x = np.random.default_rng(5).standard_normal((2, 5, 6, 2))
    _check_layer_grads(layer, x, seed=6)


@pytest.mark.parametrize("activation", [relu, leaky_relu, sigmoid, tanh], ids=repr)
def test_conv_forward_returns_z_and_activation_of_z(activation):
    layer = _conv64((3, 3, 2, 3), strides=2, padding=1, activation=activation, seed=1)
    plain = _conv64((3, 3, 2, 3), strides=2, padding=1, seed=1)
    x = np.random.default_rng(2).standard_normal((2, 7, 7, 2))
    z, a = layer.forward(x)
    z_ref, a_ref = plain.forward(x)
    np.testing.assert_array_equal(z_ref, a_ref)        # linear: a is z
    np.testing.assert_allclose(z, z_ref, rtol=1e-15)   # the activation did not alter z
    np.testing.assert_allclose(a, activation.compute(z_ref), rtol=1e-15)
    assert not np.allclose(a, z)


@pytest.mark.parametrize("activation", [relu, leaky_relu, LeakyReLU(1.0), linear, sigmoid,
                                        tanh, LeakyReLU(0.0)], ids=repr)
@pytest.mark.parametrize("kind", ["conv", "dense", "batchnorm"])
def test_train_forward_keeps_what_the_activation_backward_needs(activation, kind):
    """A training step keeps a in place of z only where the activation's slope at a is its
    slope at z (the identity, ReLU, a leaky ReLU with a slope >= 0): its a is forward's,
    and the gradient through the activation is the same, zeros and ties included."""
    rng = np.random.default_rng(3)
    if kind == "conv":
        layer = _conv64((3, 3, 2, 4), strides=1, padding="same", activation=activation, seed=2)
        x = rng.standard_normal((2, 5, 6, 2))
        layer.params["b"][:] = 0
        x[0, :, :, :] = 0                               # outputs exactly 0
    elif kind == "dense":
        layer = FullyConnected((5, 4), activation=activation, dtype=F64)
        x = rng.standard_normal((3, 5))
        x[0] = 0
        layer.params["b"][:] = 0
    else:
        layer = BatchNorm(4, activation=activation, dtype=F64)
        layer.training = True
        x = rng.standard_normal((3, 2, 2, 4))
        x[..., 0] = 1                                   # normalized to exactly 0
    z, a = layer.forward(x)
    kept, outputs = layer.train_forward(x)
    np.testing.assert_allclose(outputs, a, rtol=1e-13, atol=1e-15)
    upstream = rng.standard_normal(a.shape)
    np.testing.assert_allclose(activation.backward(kept, upstream),
                               activation.backward(z, upstream), rtol=1e-13, atol=1e-15)
    keeps_a = activation.fused_slope() is not None
    assert (kept is outputs) == keeps_a


# --------------------------------------------------------------------------- FC gradients


@pytest.mark.parametrize("n, n_in, n_out", [(1, 1, 1), (3, 7, 5), (2, 13, 4), (2, 4, 9)])
def test_fully_connected_gradients_match_central_differences(n, n_in, n_out):
    layer = _fc64((n_in, n_out), seed=n_in)
    x = np.random.default_rng(n_out).standard_normal((n, n_in))
    _check_layer_grads(layer, x, seed=n)


@pytest.mark.parametrize("activation", [relu, leaky_relu, sigmoid, tanh], ids=repr)
def test_fully_connected_gradients_with_activation(activation):
    layer = _fc64((6, 5), activation=activation, seed=2)
    x = np.random.default_rng(3).standard_normal((3, 6))
    z, a = layer.forward(x)
    np.testing.assert_allclose(z, x @ layer.params["w"] + layer.params["b"], rtol=1e-13)
    np.testing.assert_allclose(a, activation.compute(z), rtol=1e-15)
    _check_layer_grads(layer, x, seed=4)


# --------------------------------------------------------------------------- MaxPool


def _distinct(shape, seed):
    """Distinct values (a shuffled 0..size-1, scaled): no ties, so max is differentiable."""
    size = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(size).reshape(shape).astype(F64) * 0.5 - 3.0


# (n, h, w, c, pshape, strides)
POOL_GRAD_CASES = [
    (2, 6, 6, 2, 2, None),
    (1, 7, 7, 2, 2, None),          # does not tile: last row and column dropped
    (2, 7, 5, 1, 3, 2),             # overlapping windows
    (1, 9, 9, 2, 3, 2),
    (2, 6, 11, 2, (2, 3), None),
    (1, 7, 8, 2, (3, 2), (2, 1)),
    (1, 5, 5, 3, 1, None),
    (1, 9, 7, 1, 4, 3),
]


@pytest.mark.parametrize("case", POOL_GRAD_CASES, ids=str)
def test_maxpool_gradient_matches_central_differences(case):
    n, h, w, c, pshape, strides = case
    layer = MaxPool(pshape, strides)
    x = _distinct((n, h, w, c), seed=h + w)
    z, a = layer.forward(x)
    assert z is a or np.array_equal(z, a)
    assert z.shape == (n,) + layer.output_shape((h, w, c))
    dx, grads = _check_layer_grads(layer, x, seed=c)
    assert grads == {} and layer.params == {}
    assert dx.dtype == F64


def test_maxpool_forward_values():
    x = _distinct((2, 7, 5, 3), seed=9)
    z, _ = MaxPool(3, 2).forward(x)
    for i, j in itertools.product(range(3), range(2)):
        np.testing.assert_array_equal(z[:, i, j], x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(1, 2)))


def test_maxpool_non_tiling_drops_last_row_and_column():
    """7x7 input with pool 2: output 3x3; row 6 and column 6 get exactly zero gradient."""
    layer = MaxPool(2)
    x = _distinct((2, 7, 7, 2), seed=3)
    x[:, 6, :, :] += 1000.0  # the largest values sit in the dropped row / column
    x[:, :, 6, :] += 1000.0
    z, _ = layer.forward(x)
    assert z.shape == (2, 3, 3, 2)
    assert z.max() < 1000.0
    dx = layer.backward(np.random.default_rng(0).standard_normal(z.shape))
    assert np.all(dx[:, 6, :, :] == 0.0)
    assert np.all(dx[:, :, 6, :] == 0.0)
    # Each kept window sends its gradient to exactly one of its four inputs.
    assert np.count_nonzero(dx) == z.size


def test_maxpool_overlapping_windows_accumulate():
    """pshape 3, strides 2 on 5x5: the centre belongs to all four windows."""
    layer = MaxPool(pshape=3, strides=2)
    x = _distinct((1, 5, 5, 1), seed=4)
    x[0, 2, 2, 0] = 100.0
    z, _ = layer.forward(x)
    assert z.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(z, np.full((1, 2, 2, 1), 100.0))
    dy = np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 2, 2, 1)
    dx = layer.backward(dy)
    expected = np.zeros((1, 5, 5, 1))
    expected[0, 2, 2, 0] = 15.0
    np.testing.assert_array_equal(dx, expected)


def test_maxpool_ties_first_element_of_window_gets_gradient():
    """All-equal windows: the first element in row-major window order takes it all (PyTorch)."""
    layer = MaxPool(2)
    x = np.zeros((1, 4, 4, 2))
    z, _ = layer.forward(x)
    dy = np.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    dx = layer.backward(dy)
    expected = np.zeros_like(x)
    expected[0, 0::2, 0::2, :] = dy[0]
    np.testing.assert_array_equal(dx, expected)


def test_maxpool_ties_overlapping_windows():
    layer = MaxPool(3, strides=2)
    x = np.full((1, 5, 5, 1), 7.0)
    z, _ = layer.forward(x)
    dx = layer.backward(np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 2, 2, 1))
    expected = np.zeros((5, 5))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1.0, 2.0, 4.0, 8.0
    np.testing.assert_array_equal(dx[0, :, :, 0], expected)


def test_maxpool_partial_tie_prefers_row_major_first():
    """Window [[1, 3], [3, 2]]: (0, 1) precedes (1, 0) in row-major order."""
    layer = MaxPool(2)
    x = np.array([[1.0, 3.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    z, _ = layer.forward(x)
    assert z.item() == 3.0
    dx = layer.backward(np.array([5.0]).reshape(1, 1, 1, 1))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0.0, 5.0], [0.0, 0.0]])


def test_pool_is_maxpool():
    assert POOL is MaxPool
    layer = POOL(pshape=2)
    assert layer.pshape == (2, 2) and layer.strides == (2, 2)


def test_maxpool_keeps_float32():
    x = _distinct((1, 6, 6, 2), seed=0).astype(np.float32)
    layer = MaxPool(2)
    z, _ = layer.forward(x)
    assert z.dtype == np.float32
    assert layer.backward(np.ones_like(z)).dtype == np.float32


# --------------------------------------------------------------------------- Flatten


def test_flatten_is_c_order_and_gradient_checks():
    layer = Flatten((3, 4, 2))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 2))
    z, a = layer.forward(x)
    assert z.shape == (2, 24)
    np.testing.assert_array_equal(z, x.reshape(2, 24))
    assert z[1, (2 * 4 + 3) * 2 + 1] == x[1, 2, 3, 1]
    dx, grads = _check_layer_grads(layer, x)
    assert grads == {}
    np.testing.assert_array_equal(layer.backward(z), x)


# --------------------------------------------------------------------------- output shapes


def _expected_conv_size(size, k, s, p):
    if p == "same":
        return -(-size // s)
    if p == "valid":
        p = 0
    return out_size(size, k, s, p, p)


def test_conv_output_shape_matches_forward_and_floor_rule():
    rng = np.random.default_rng(0)
    checked = 0
    for (h, w), (kh, kw), strides, padding in itertools.product(
        [(5, 6), (7, 9), (8, 8)],
        [(1, 1), (2, 3), (3, 3), (4, 4), (5, 5)],
        [1, 2, 3, (1, 2), (3, 1)],
        [0, 1, (1, 2), "valid", "same"],
    ):
        layer = Conv((kh, kw, 2, 3), strides=strides, padding=padding)
        shape = layer.output_shape((h, w, 2))
        sh, sw = (strides, strides) if isinstance(strides, int) else strides
        if isinstance(padding, str):
            ph = pw = padding
        else:
            ph, pw = (padding, padding) if isinstance(padding, int) else padding
        assert shape == (_expected_conv_size(h, kh, sh, ph), _expected_conv_size(w, kw, sw, pw), 3)
        z, a = layer.forward(rng.standard_normal((2, h, w, 2)).astype(np.float32))
        assert z.shape == a.shape == (2,) + shape
        checked += 1
    assert checked == 3 * 5 * 5 * 5


@pytest.mark.parametrize(
    "fshape, strides, padding, in_shape, expected",
    [
        ((3, 3, 1, 4), 2, 0, (8, 8, 1), (3, 3, 4)),      # (8 - 3) // 2 + 1 = 3, not 4
        ((2, 2, 1, 1), 2, 0, (7, 7, 1), (3, 3, 1)),
        ((3, 3, 1, 1), 3, 1, (10, 10, 1), (4, 4, 1)),    # (10 + 2 - 3) // 3 + 1
        ((4, 4, 2, 5), (1, 2), (1, 2), (6, 11, 2), (5, 6, 5)),
        ((3, 3, 1, 1), 2, "same", (7, 8, 1), (4, 4, 1)),
        ((4, 4, 1, 1), 3, "same", (7, 9, 1), (3, 3, 1)),
        ((5, 5, 1, 1), 1, "valid", (5, 7, 1), (1, 3, 1)),
    ],
)
def test_conv_output_shape_examples(fshape, strides, padding, in_shape, expected):
    layer = Conv(fshape, strides=strides, padding=padding)
    assert layer.output_shape(in_shape) == expected


@pytest.mark.parametrize(
    "k, s, size, pads",
    [(2, 1, 5, (0, 1)), (3, 1, 5, (1, 1)), (4, 1, 6, (1, 2)), (3, 2, 8, (0, 1)),
     (3, 2, 7, (1, 1)), (1, 2, 7, (0, 0)), (1, 3, 8, (0, 0)), (5, 3, 9, (1, 1))],
)
def test_conv_same_padding_extra_pixel_goes_bottom_right(k, s, size, pads):
    layer = Conv((k, k, 1, 1), strides=s, padding="same")
    assert layer.pads(size, size) == pads + pads


def test_conv_same_even_kernel_values():
    """Ones filter 2x2, 'same': the zero pixel of padding is below and to the right."""
    layer = Conv((2, 2, 1, 1), padding="same", filter_init=np.ones, dtype=F64)
    z, _ = layer.forward(np.ones((1, 4, 4, 1)))
    expected = np.full((4, 4), 4.0)
    expected[3, :] = 2.0
    expected[:, 3] = 2.0
    expected[3, 3] = 1.0
    np.testing.assert_array_equal(z[0, :, :, 0], expected)


def test_maxpool_output_shape_matches_forward_and_floor_rule():
    rng = np.random.default_rng(1)
    for (h, w), pshape, strides in itertools.product(
        [(5, 6), (7, 9), (8, 8)], [1, 2, 3, (2, 3)], [None, 1, 2, 3, (1, 2)]
    ):
        layer = MaxPool(pshape, strides)
        ph, pw = (pshape, pshape) if isinstance(pshape, int) else pshape
        if strides is None:
            sh, sw = ph, pw
        else:
            sh, sw = (strides, strides) if isinstance(strides, int) else strides
        shape = layer.output_shape((h, w, 3))
        assert shape == (out_size(h, ph, sh), out_size(w, pw, sw), 3)
        z, _ = layer.forward(rng.standard_normal((2, h, w, 3)))
        assert z.shape == (2,) + shape
    assert MaxPool(2).output_shape((7, 7, 4)) == (3, 3, 4)
    assert MaxPool(3, 2).output_shape((8, 8, 1)) == (3, 3, 1)


def test_flatten_and_fc_output_shapes():
    assert Flatten((3, 4, 5)).output_shape((3, 4, 5)) == (60,)
    assert FullyConnected((60, 7)).output_shape((60,)) == (7,)
    z, _ = FullyConnected((60, 7)).forward(np.ones((3, 60), np.float32))
    assert z.shape == (3, 7)


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(fshape=(3, 3, 1)),
        dict(fshape=(3, 3, 1, 2, 2)),
        dict(fshape=(3, 3, 1, 2.5)),
        dict(fshape=(3, 0, 1, 2)),
        dict(fshape=(3, 3, -1, 2)),
        dict(fshape=(3, 3, 1, 2), padding=-1),
        dict(fshape=(3, 3, 1, 2), padding=(1, -2)),
        dict(fshape=(3, 3, 1, 2), padding=(1, 2, 3)),
        dict(fshape=(3, 3, 1, 2), padding=1.5),
        dict(fshape=(3, 3, 1, 2), padding="full"),
        dict(fshape=(3, 3, 1, 2), padding="SAME"),
        dict(fshape=(3, 3, 1, 2), strides=0),
        dict(fshape=(3, 3, 1, 2), strides=(1, 0)),
        dict(fshape=(3, 3, 1, 2), strides=-2),
        dict(fshape=(3, 3, 1, 2), strides=(1, 2, 3)),
        dict(fshape=(3, 3, 1, 2), strides=1.5),
        dict(fshape=3),
        dict(fshape=None),
        dict(fshape=(3, 3, 1, 2), padding=None),
        dict(fshape=(3, 3, 1, 2), strides=None),
        dict(fshape=(3, 3, 1, 2), strides="2"),
    ],
    ids=str,
)
def test_conv_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        Conv(**kwargs)


@pytest.mark.parametrize("shape", [(10,), (10, 5, 2), (10, 0), (0, 3), (10.5, 3), (-1, 3), 5, None], ids=str)
def test_fully_connected_bad_shape_raises_value_error(shape):
    with pytest.raises(ValueError):
        FullyConnected(shape)


@pytest.mark.parametrize("kwargs", [dict(pshape=0), dict(pshape=(2, 0)), dict(pshape=2, strides=0),
                                    dict(pshape=(1, 2, 3)), dict(pshape=2, strides=-1)], ids=str)
def test_maxpool_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        MaxPool(**kwargs)


@pytest.mark.parametrize("shape", [(6, 0, 2), (6, -1), "abc", 0, (), (2.0, 3), [[1]]], ids=str)
def test_flatten_bad_input_shape_raises_value_error(shape):
    with pytest.raises(ValueError, match=r"^Flatten input_shape must be a shape: a tuple of 1 to 32 ints "
                                         r">= 1 such as \(28, 28, 1\), got "):
        Flatten(shape)


def test_flatten_takes_an_int_shape():
    assert Flatten(784).output_shape((784,)) == (784,)


def test_activation_names_and_classes_are_taken_where_an_activation_is():
    conv = Conv((3, 3, 1, 2), activation="relu")
    fc = FullyConnected((4, 2), activation="Leaky_ReLU")
    assert type(conv.activation) is ReLU and type(fc.activation) is LeakyReLU
    assert fc.activation.slope == 0.01
    assert type(FullyConnected((4, 2), activation=Sigmoid).activation) is Sigmoid
    assert type(Conv((3, 3, 1, 2), activation=None).activation) is Linear
    assert repr(conv) == "Conv((3, 3, 1, 2), strides=(1, 1), padding=(0, 0), activation=ReLU())"


def test_optimizer_classes_are_made_with_their_defaults_one_per_layer():
    a, b = (FullyConnected((4, 2), optimizer=SGDOptimizer) for _ in range(2))
    assert type(a.optimizer) is SGDOptimizer and a.optimizer.momentum == 0.0
    assert a.optimizer is not b.optimizer
    assert type(Conv((3, 3, 1, 2), optimizer=AdamOptimizer).optimizer) is AdamOptimizer


@pytest.mark.parametrize("make", [lambda **kw: Conv((3, 3, 1, 2), **kw),
                                  lambda **kw: FullyConnected((4, 2), **kw)], ids=["Conv", "FullyConnected"])
@pytest.mark.parametrize("kwargs, pattern", [
    (dict(activation="swish"), "unknown activation 'swish'.*'relu', 'leaky_relu'"),
    (dict(activation=np.tanh), "activation must be an activation"),
    (dict(activation=SGDOptimizer), "activation must be an activation"),
    (dict(optimizer="adam"), "optimizer must be an optimizer"),
    (dict(optimizer=relu), "optimizer must be an optimizer"),
    (dict(optimizer=ReLU), "optimizer must be an optimizer"),
], ids=["unknown_name", "function", "class_of_optimizer", "optimizer_name", "activation_as_optimizer",
        "activation_class_as_optimizer"])
def test_what_is_not_an_activation_or_optimizer_is_refused_when_the_layer_is_made(make, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(**kwargs)


def _message(excinfo):
    return str(excinfo.value)


def _has_number(message, number):
    return re.search(rf"(?<![\d.]){number}(?![\d.])", message) is not None


def test_conv_wrong_channels_message_names_expected_and_received():
    layer = Conv((3, 3, 7, 4))
    with pytest.raises(ValueError) as excinfo:
        layer.output_shape((12, 12, 5))
    msg = _message(excinfo)
    assert "channel" in msg
    assert _has_number(msg, 7) and _has_number(msg, 5)


@pytest.mark.parametrize("layer", [Conv((3, 3, 2, 4)), MaxPool(2), AvgPool(2), GlobalAvgPool()], ids=repr)
@pytest.mark.parametrize("in_shape", [(8, 8), (1, 8, 8, 2), (64,)], ids=str)
def test_output_shape_wrong_rank_raises_naming_the_layer_and_the_shape(layer, in_shape):
    with pytest.raises(ValueError) as excinfo:
        layer.output_shape(in_shape)
    shown = ", ".join(map(str, in_shape))
    assert _message(excinfo) == (f"{type(layer).__name__} expects images (N, H, W, C), got "
                                 f"{len(in_shape) + 1}-D input (N, {shown})")


@pytest.mark.parametrize("layer", [MaxPool(5), AvgPool(5), AvgPool((2, 5))], ids=repr)
def test_a_window_larger_than_the_image_names_the_pooling_layer_it_is(layer):
    with pytest.raises(ValueError) as excinfo:
        layer.output_shape((3, 3, 1))
    ph, pw = layer.pshape
    assert _message(excinfo) == f"{type(layer).__name__} window {ph}x{pw} does not fit an input of 3x3"


@pytest.mark.parametrize(
    "layer, in_shape",
    [
        (Conv((5, 5, 1, 2)), (4, 9, 1)),
        (Conv((5, 5, 1, 2)), (9, 4, 1)),
        (Conv((3, 4, 1, 2), padding=(0, 0)), (3, 3, 1)),
        (Conv((5, 5, 1, 2), padding="valid"), (4, 4, 1)),
        (MaxPool(3), (2, 5, 1)),
        (MaxPool((2, 4)), (5, 3, 1)),
    ],
    ids=str,
)
def test_output_shape_too_small_input_raises(layer, in_shape):
    with pytest.raises(ValueError) as excinfo:
        layer.output_shape(in_shape)
    assert "fit" in _message(excinfo)


def test_padding_makes_small_input_fit():
    assert Conv((5, 5, 1, 2), padding=1).output_shape((3, 3, 1)) == (1, 1, 2)
    assert Conv((5, 5, 1, 2), padding="same").output_shape((2, 3, 1)) == (2, 3, 2)


def test_flatten_mismatch_message_names_both_shapes():
    with pytest.raises(ValueError) as excinfo:
        Flatten((4, 4, 2)).output_shape((4, 4, 3))
    msg = _message(excinfo)
    assert "(N, 4, 4, 2)" in msg and "(N, 4, 4, 3)" in msg


@pytest.mark.parametrize("in_shape", [(7,), (4, 5), (1, 20)], ids=str)
def test_fully_connected_mismatch_message_names_expected_and_received(in_shape):
    with pytest.raises(ValueError) as excinfo:
        FullyConnected((20, 3)).output_shape(in_shape)
    msg = _message(excinfo)
    assert "(N, 20)" in msg
    assert f"(N, {', '.join(map(str, in_shape))})" in msg


@pytest.mark.parametrize("layer", [Conv((3, 3, 2, 2)), MaxPool(2)], ids=repr)
def test_forward_rejects_three_dimensional_images(layer):
    with pytest.raises(ValueError):
        layer.forward(np.zeros((1, 6, 6), np.float32))


# --------------------------------------------------------------------------- parameters


def test_default_dtype_is_float32_in_a_fresh_interpreter():
    code = (
        "import numpy as np, cnnc\n"
        "c = cnnc.Conv((3, 3, 2, 4)); f = cnnc.FullyConnected((5, 3))\n"
        "assert all(p.dtype == np.float32 for l in (c, f) for p in l.params.values())\n"
        "x = np.ones((1, 5, 5, 2), np.float32)\n"
        "assert c.forward(x)[0].dtype == np.float32\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_are_w_and_b_in_layer_dtype_bias_zero(dtype):
    conv = Conv((3, 2, 4, 5), dtype=dtype)
    fc = FullyConnected((6, 7), dtype=dtype)
    for layer, w_shape, b_shape in ((conv, (3, 2, 4, 5), (5,)), (fc, (6, 7), (7,))):
        assert set(layer.params) == {"w", "b"}
        assert layer.params["w"].shape == w_shape and layer.params["b"].shape == b_shape
        assert layer.params["w"].dtype == dtype and layer.params["b"].dtype == dtype
        np.testing.assert_array_equal(layer.params["b"], 0.0)
        assert np.std(layer.params["w"]) > 0


def test_set_default_dtype_applies_to_new_layers():
    cnnc.set_default_dtype(np.float64)
    assert Conv((3, 3, 1, 2)).params["w"].dtype == F64
    assert FullyConnected((3, 2)).params["b"].dtype == F64
    assert Conv((3, 3, 1, 2), dtype=np.float32).params["w"].dtype == np.float32


def test_default_filters_are_he_normal_scaled_by_fan_in():
    np.random.seed(0)
    w = Conv((3, 3, 16, 64), dtype=F64).params["w"]
    np.testing.assert_allclose(w.std(), np.sqrt(2.0 / (3 * 3 * 16)), rtol=0.05)
    w = FullyConnected((400, 300), dtype=F64).params["w"]
    np.testing.assert_allclose(w.std(), np.sqrt(2.0 / 400), rtol=0.05)


def test_filter_and_weight_init_are_called_with_shape_and_cast():
    seen = []

    def init(shape):
        seen.append(shape)
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)

    conv = Conv((2, 3, 4, 5), filter_init=init)
    fc = FullyConnected((6, 7), weight_init=init, dtype=F64)
    assert seen == [(2, 3, 4, 5), (6, 7)]
    assert conv.params["w"].dtype == np.float32 and fc.params["w"].dtype == F64
    np.testing.assert_array_equal(conv.params["w"], np.arange(120).reshape(2, 3, 4, 5))
    np.testing.assert_array_equal(fc.params["w"], np.arange(42).reshape(6, 7))
    np.testing.assert_array_equal(conv.params["b"], 0.0)
    lam = FullyConnected((2, 3), weight_init=lambda shp: np.full(shp, 0.25))
    np.testing.assert_array_equal(lam.params["w"], np.float32(0.25))
    assert lam.params["w"].dtype == np.float32


@pytest.mark.parametrize(
    "make",
    [
        lambda: Conv((3, 3, 2, 4), filter_init=lambda s: np.zeros((3, 3, 4, 2))),
        lambda: Conv((3, 3, 2, 4), filter_init=lambda s: np.zeros(3 * 3 * 2 * 4)),
        lambda: FullyConnected((5, 3), weight_init=lambda s: np.zeros((3, 5))),
        lambda: FullyConnected((5, 3), weight_init=lambda s: np.zeros((5, 3, 1))),
    ],
)
def test_initializer_with_wrong_shape_raises(make):
    with pytest.raises(ValueError, match=r"^(filter|weight)_init returned shape \(.*\), expected \("):
        make()


@pytest.mark.parametrize("make, name", [
    (lambda bad: Conv((3, 3, 1, 2), filter_init=bad), "filter_init"),
    (lambda bad: Conv((3, 3, 1, 2), bias_init=bad), "bias_init"),
    (lambda bad: FullyConnected((4, 2), weight_init=bad), "weight_init"),
    (lambda bad: FullyConnected((4, 2), bias_init=bad), "bias_init"),
], ids=["Conv-filter_init", "Conv-bias_init", "FullyConnected-weight_init", "FullyConnected-bias_init"])
@pytest.mark.parametrize("bad", [0, "he_normal", np.zeros((3, 3, 1, 2))], ids=["zero", "name", "array"])
def test_an_initializer_that_is_not_callable_is_refused_by_its_name(make, name, bad):
    with pytest.raises(ValueError, match=f"^{name} must be a callable shape -> array such as "
                                         "cnnc.init.he_normal, got "):
        make(bad)


def test_params_are_live_arrays():
    conv = Conv((3, 3, 2, 4), padding=1, dtype=F64)
    conv.params["w"][...] = 0.0
    conv.params["b"][...] = [1.0, 2.0, 3.0, 4.0]
    z, _ = conv.forward(np.random.default_rng(0).standard_normal((2, 5, 5, 2)))
    np.testing.assert_array_equal(z, np.broadcast_to([1.0, 2.0, 3.0, 4.0], (2, 5, 5, 4)))

    fc = FullyConnected((3, 2), dtype=F64)
    fc.params["w"][...] = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    fc.params["b"][...] = [0.5, -0.5]
    z, _ = fc.forward(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_array_equal(z, [[4.5, 4.5]])


@pytest.mark.parametrize("make", [lambda: Conv((3, 3, 2, 2), dtype=F64, optimizer=cnnc.SGDOptimizer()),
                                  lambda: FullyConnected((4, 3), dtype=F64, optimizer=cnnc.SGDOptimizer())])
def test_update_changes_params_in_place(make):
    layer = make()
    before = {k: v.copy() for k, v in layer.params.items()}
    arrays = dict(layer.params)
    grads = {k: np.ones_like(v) for k, v in layer.params.items()}
    layer.update(grads, 0.5)
    for name in ("w", "b"):
        assert layer.params[name] is arrays[name]
        np.testing.assert_allclose(layer.params[name], before[name] - 0.5, rtol=1e-15)


# --------------------------------------------------------------------------- no input mutation


@pytest.mark.parametrize(
    "layer, shape",
    [
        (Conv((3, 3, 2, 3), padding=1, activation=relu, dtype=F64), (2, 6, 5, 2)),
        (Conv((1, 1, 2, 3), activation=leaky_relu, dtype=F64), (2, 6, 5, 2)),
        (Conv((2, 2, 2, 3), strides=2, padding="same", activation=relu), (1, 7, 7, 2)),
        (MaxPool(2), (2, 6, 6, 2)),
        (MaxPool(3, 2), (1, 7, 7, 3)),
        (Flatten((4, 3, 2)), (2, 4, 3, 2)),
        (FullyConnected((6, 4), activation=relu, dtype=F64), (3, 6)),
        (FullyConnected((6, 4), activation=relu), (3, 6)),
    ],
    ids=repr,
)
def test_forward_and_backward_do_not_modify_their_arguments(layer, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    if getattr(layer, "dtype", None) == np.float32:
        x = x.astype(np.float32)
    x0 = x.copy()
    z, a = layer.forward(x)
    np.testing.assert_array_equal(x, x0)
    z0 = z.copy()
    a0 = a.copy()
    err = np.random.default_rng(1).standard_normal(z.shape).astype(z.dtype)
    err0 = err.copy()
    layer.backward(err)
    layer.get_grad(x, err)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(err, err0)
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(a, a0)


# ============================================================================ Dropout

def test_dropout_is_the_identity_unless_the_network_trains():
    layer = Dropout(0.5, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype(np.float32)
    z, a = layer.forward(x)
    assert a is x and layer.backward(x) is x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_in_training_zeroes_rate_of_the_values_and_scales_the_rest(dtype):
    layer = Dropout(0.25, seed=1)
    layer.training = True
    x = np.ones((200, 50), dtype=dtype)
    _, a = layer.forward(x)
    assert a.dtype == dtype
    kept = a != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(a[kept], 1 / 0.75, rtol=1e-6)
    upstream = np.random.default_rng(2).normal(size=x.shape).astype(dtype)
    np.testing.assert_array_equal(layer.backward(upstream), upstream * (a / x))


def test_dropout_with_a_seed_drops_the_same_values():
    masks = []
    for _ in range(2):
        layer = Dropout(0.5, seed=7)
        layer.training = True
        masks.append(layer.forward(np.ones((8, 8)))[1])
    np.testing.assert_array_equal(*masks)


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan"), "0.5", None])
def test_dropout_rate_must_lie_in_0_to_1(rate):
    with pytest.raises(ValueError, match=r"^rate must be "):
        Dropout(rate)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True, [1, 2], 2**128, np.random.default_rng(0),
                                  np.random.SeedSequence(0)],
                         ids=["negative", "float", "string", "bool", "list", "2**128", "Generator",
                              "SeedSequence"])
def test_dropout_seed_is_none_or_an_int_from_0_to_2_to_the_128_minus_1(seed):
    """np.random.default_rng takes more (sequences, SeedSequences, generators), but the seed is
    saved with the layer as JSON, and NumPy's own message names no argument."""
    with pytest.raises(ValueError, match=r"^Dropout seed must be None or an int from 0 to 2\*\*128 - 1, "
                                         r"got "):
        Dropout(0.5, seed=seed)


def test_dropout_takes_every_seed_default_rng_takes_as_an_int():
    for seed in (0, np.int64(3), 2**128 - 1):
        layer = Dropout(0.5, seed=seed)
        assert layer.seed == seed and type(layer.seed) is int
        assert layer.rng.bit_generator.state == np.random.default_rng(seed).bit_generator.state
    assert Dropout(0.5).seed is None


# ======================================================================= Flatten()

def test_flatten_without_a_shape_takes_the_first_inputs_through_it_and_keeps_it():
    layer = Flatten()
    assert repr(layer) == "Flatten()"
    assert layer.output_shape((3, 4, 2)) == (24,) and layer.output_shape((5, 5)) == (25,)
    assert layer.forward(np.zeros((2, 3, 4, 2)))[1].shape == (2, 24)
    assert repr(layer) == "Flatten((3, 4, 2))"
    with pytest.raises(ValueError, match="Flatten expects inputs of shape \\(N, 3, 4, 2\\)"):
        layer.output_shape((4, 3, 2))


def test_a_refused_input_does_not_fix_the_shape_of_a_flatten():
    net = Network([Flatten(), FullyConnected((12, 2))], loss=SoftmaxCrossEntropy())
    with pytest.raises(ValueError):
        net.predict(np.zeros((2, 3, 5)))
    assert net.predict(np.zeros((2, 3, 4))).shape == (2, 2)


# ========================================================== BatchNorm, AvgPool, GlobalAvgPool

def _batchnorm64(features, activation=linear, seed=0):
    layer = BatchNorm(features, activation=activation, dtype=np.float64)
    rng = np.random.default_rng(seed)
    layer.params["w"][...] = rng.uniform(0.5, 1.5, features)
    layer.params["b"][...] = rng.normal(size=features)
    return layer


@pytest.mark.parametrize("shape", [(3, 4, 5, 2), (2, 3, 1, 3), (7, 4), (2, 1)], ids=str)
@pytest.mark.parametrize("activation", [linear, relu, tanh], ids=repr)
def test_batchnorm_training_gradients_match_central_differences(shape, activation):
    layer = _batchnorm64(shape[-1], activation, seed=len(shape))
    layer.training = True
    x = np.random.default_rng(sum(shape)).normal(2.0, 3.0, shape)
    _check_layer_grads(layer, x, seed=3)


def test_batchnorm_in_training_normalizes_with_the_batch_statistics():
    layer = _batchnorm64(3)
    layer.training = True
    x = np.random.default_rng(1).normal(5.0, 2.0, (4, 6, 6, 3))
    z, _ = layer.forward(x)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(var + 1e-5) * layer.params["w"] + layer.params["b"]
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_move_by_momentum_when_committed():
    layer = _batchnorm64(2)
    layer.training = True
    x = np.random.default_rng(2).normal(3.0, 2.0, (10, 2))
    layer.forward(x)
    np.testing.assert_array_equal(layer.running_mean, [0, 0])     # nothing until committed
    layer.commit_statistics()
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-12)
    layer.commit_statistics()                                     # committed once only
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-12)


def test_batchnorm_in_inference_uses_the_running_statistics():
    layer = _batchnorm64(3, activation=relu)
    layer.running_mean[...] = [1.0, -2.0, 0.5]
    layer.running_var[...] = [4.0, 0.25, 1.0]
    x = np.random.default_rng(3).normal(size=(2, 3, 3, 3))
    z, a = layer.forward(x)
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-5) * layer.params["w"] \
        + layer.params["b"]
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a, np.maximum(z, 0))


def test_batchnorm_refuses_what_it_cannot_normalize():
    layer = BatchNorm(4)
    with pytest.raises(ValueError, match=r"BatchNorm\(4\) expects inputs \(N, H, W, 4\) or \(N, 4\)"):
        layer.output_shape((5, 5, 3))
    layer.training = True
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.zeros((1, 4), np.float32))
    for kwargs, message in [({"momentum": 1.5}, "momentum must be <= 1, got 1.5"),
                            ({"momentum": float("nan")}, "momentum must be a finite number"),
                            ({"eps": 0}, r"eps must be > 0 \(a channel of equal values would divide by 0\)"),
                            ({"eps": -1e-5}, "eps must be >= 0")]:
        with pytest.raises(ValueError, match=f"^{message}"):
            BatchNorm(4, **kwargs)
    assert BatchNorm(4, momentum=1).momentum == 1.0
    with pytest.raises(ValueError, match=r"^momentum must be >= 0, got -0.1"):
        BatchNorm(4, momentum=-0.1)
    with pytest.raises(ValueError, match=r"^BatchNorm num_features must be an int from 1 to 2147483647, got 0$"):
        BatchNorm(0)


@pytest.mark.parametrize("input_shape, needed", [((5,), 2), ((1, 1, 5), 2), ((2, 1, 5), 1), ((1, 2, 5), 1),
                                                 ((3, 3, 5), 1)],
                         ids=str)
def test_batchnorm_trains_on_batches_with_two_values_per_channel(input_shape, needed):
    """A batch of one sample holds one value per channel where a sample is (F,) or a 1x1 image."""
    layer = BatchNorm(5)
    assert layer.min_training_batch(input_shape) == needed
    layer.training = True
    for samples in (needed, needed + 1):
        layer.forward(np.ones((samples, *input_shape), np.float32))
    if needed > 1:
        with pytest.raises(ValueError, match="more than one value per channel"):
            layer.forward(np.ones((1, *input_shape), np.float32))


def test_every_other_layer_trains_on_a_batch_of_one():
    for layer in (Conv((3, 3, 1, 2)), MaxPool(2), AvgPool(2), GlobalAvgPool(), Dropout(0.5), Flatten(),
                  FullyConnected((4, 2))):
        assert layer.min_training_batch((4, 4, 1)) == 1


@pytest.mark.parametrize("case", [((2, 6, 6, 3), 2, None), ((1, 7, 5, 2), 3, 2), ((2, 5, 4, 1), (3, 2), 1)],
                         ids=str)
def test_avgpool_gradient_matches_central_differences(case):
    shape, pshape, strides = case
    layer = AvgPool(pshape, strides)
    x = np.random.default_rng(len(shape)).normal(size=shape)
    _check_layer_grads(layer, x)
    z, _ = layer.forward(x)
    ph, pw = layer.pshape
    np.testing.assert_allclose(z[:, 0, 0], x[:, :ph, :pw].mean(axis=(1, 2)), rtol=1e-12)
    assert z.shape[1:] == layer.output_shape(shape[1:])


def test_global_avgpool_is_the_mean_over_the_image_and_checks_its_gradient():
    layer = GlobalAvgPool()
    x = np.random.default_rng(4).normal(size=(3, 5, 4, 6))
    z, _ = layer.forward(x)
    np.testing.assert_allclose(z, x.mean(axis=(1, 2)), rtol=1e-12)
    assert layer.output_shape((5, 4, 6)) == (6,)
    _check_layer_grads(layer, x)
    with pytest.raises(ValueError, match="GlobalAvgPool expects images"):
        layer.output_shape((5, 6))


@pytest.mark.parametrize("layer, expected", [
    (Conv((3, 3, 1, 8), strides=2, padding="same", activation="leaky_relu"),
     "Conv((3, 3, 1, 8), strides=(2, 2), padding='same', activation=LeakyReLU(slope=0.01))"),
    (MaxPool(2, strides=1), "MaxPool(pshape=(2, 2), strides=(1, 1))"),
    (POOL(3), "MaxPool(pshape=(3, 3), strides=(3, 3))"),
    (Flatten((6, 6, 32)), "Flatten((6, 6, 32))"),
    (FullyConnected((256, 10), activation=tanh), "FullyConnected((256, 10), activation=Tanh())"),
    (GlobalAvgPool(), "GlobalAvgPool()"),
], ids=["Conv", "MaxPool", "POOL", "Flatten", "FullyConnected", "GlobalAvgPool"])
def test_every_layer_reads_as_the_call_that_makes_it(layer, expected):
    assert repr(layer) == expected


def test_a_layer_without_its_own_repr_shows_its_class():
    class Identity(cnnc.layers.Layer):
        def output_shape(self, input_shape):
            return input_shape

    assert repr(Identity()) == "Identity()"


# ============================================================ arguments' names in messages

@pytest.mark.parametrize("make, message", [
    (lambda: Conv((3, 3, 1)), r"^Conv fshape \(kh, kw, c_in, c_out\) must be 4 ints in \[1, 2\*\*31\), got "),
    (lambda: Conv((3, 3, 1, 2), strides=0), r"^strides must be an int or 2 ints in \[1, 2\*\*31\), got "),
    (lambda: Conv((3, 3, 1, 2), padding=-1), r"^padding must be an int or 2 ints in \[0, 2\*\*31\), got "),
    (lambda: MaxPool(0), r"^pshape must be an int or 2 ints in \[1, 2\*\*31\), got "),
    (lambda: MaxPool(2, strides=0), r"^strides must be an int or 2 ints in \[1, 2\*\*31\), got "),
    (lambda: FullyConnected((4,)), r"^FullyConnected shape \(n_in, n_out\) must be 2 ints in \[1, 2\*\*31\), got "),
], ids=["Conv-fshape", "Conv-strides", "Conv-padding", "MaxPool-pshape", "MaxPool-strides", "FullyConnected-shape"])
def test_a_refused_argument_is_named_in_the_message(make, message):
    """The message starts with the argument's own name, so that the caller knows which to fix."""
    with pytest.raises(ValueError, match=message):
        make()


def test_a_parametric_layer_without_initializer_names_calls_them_weight_init_and_bias_init():
    """A subclass that sets no `initializers` (BatchNorm) still names a bad initializer."""
    make = cnnc.layers.ParametricLayer
    with pytest.raises(ValueError, match=r"^weight_init must be a callable"):
        make((2,), (2,), linear, None, 0, None, F64)
    with pytest.raises(ValueError, match=r"^bias_init must be a callable"):
        make((2,), (2,), linear, None, None, 0, F64)


# ======================================================== what saving reads from layers

@pytest.mark.parametrize("cls, config, expected", [
    (Conv, {"fshape": (3, 2, 4, 5)}, {"w": (3, 2, 4, 5), "b": (5,)}),
    (FullyConnected, {"shape": (7, 3)}, {"w": (7, 3), "b": (3,)}),
    (BatchNorm, {"num_features": 1}, dict.fromkeys(["w", "b", "running_mean", "running_var"], (1,))),
    (BatchNorm, {"num_features": 64}, dict.fromkeys(["w", "b", "running_mean", "running_var"], (64,))),
    (BatchNorm, {"num_features": 2**31 - 1},
     dict.fromkeys(["w", "b", "running_mean", "running_var"], (2**31 - 1,))),
    (MaxPool, {"pshape": 2, "strides": None}, {}),
], ids=["Conv", "FullyConnected", "BatchNorm-1", "BatchNorm-64", "BatchNorm-largest", "MaxPool"])
def test_state_shapes_are_those_of_the_arrays_the_layer_holds(cls, config, expected):
    """state_shapes reads the config alone (no arrays are made: 2**31 - 1 features cost nothing)."""
    shapes = cls.state_shapes(config)
    assert shapes == expected and list(shapes) == list(expected)
    assert all(type(s) is tuple and all(type(d) is int for d in s) for s in shapes.values())


@pytest.mark.parametrize("cls, config, message", [
    (Conv, {"fshape": (3, 3, 1)}, r"^Conv fshape \(kh, kw, c_in, c_out\) must be 4 ints in \[1, 2\*\*31\), got "),
    (Conv, {"fshape": (3, 3, 1, 2, 2)}, r"^Conv fshape \(kh, kw, c_in, c_out\) must be 4 ints"),
    (FullyConnected, {"shape": (4,)}, r"^FullyConnected shape \(n_in, n_out\) must be 2 ints in \[1, 2\*\*31\), "),
    (FullyConnected, {"shape": (4, 2, 1)}, r"^FullyConnected shape \(n_in, n_out\) must be 2 ints"),
    (BatchNorm, {"num_features": 0}, r"^BatchNorm num_features must be an int from 1 to 2147483647, got 0$"),
    (BatchNorm, {"num_features": 2**31}, r"^BatchNorm num_features must be an int from 1 to 2147483647, got "),
], ids=["Conv-3", "Conv-5", "FullyConnected-1", "FullyConnected-3", "BatchNorm-0", "BatchNorm-2**31"])
def test_state_shapes_refuse_a_config_the_layer_does_not_take(cls, config, message):
    """A file's config is checked as the constructor checks it, naming the argument."""
    with pytest.raises(ValueError, match=message):
        cls.state_shapes(config)


def test_state_dict_holds_the_params_then_the_buffers_live():
    layer = BatchNorm(3, dtype=F64)
    state = layer.state_dict()
    assert list(state) == ["w", "b", "running_mean", "running_var"]
    assert state["w"] is layer.params["w"] and state["b"] is layer.params["b"]
    assert state["running_mean"] is layer.running_mean and state["running_var"] is layer.running_var
    fc = FullyConnected((4, 2))
    assert list(fc.state_dict()) == ["w", "b"] and fc.state_dict()["w"] is fc.params["w"]


@pytest.mark.parametrize("cls, config", [
    (Conv, {"fshape": (3, 3, 2, 4), "strides": (1, 1), "padding": "same", "activation": relu,
            "optimizer": SGDOptimizer()}),
    (FullyConnected, {"shape": (5, 3), "activation": tanh, "optimizer": SGDOptimizer()}),
], ids=["Conv", "FullyConnected"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_config_rebuilds_the_layer_in_dtype_with_zero_arrays_and_no_draw(cls, config, dtype):
    """Loading fills the arrays after: from_config draws nothing from np.random."""
    cnnc.set_default_dtype(np.float32 if dtype == np.float64 else np.float64)
    np.random.seed(5)
    before = np.random.get_state()
    layer = cls.from_config(dict(config), dtype=dtype)
    after = np.random.get_state()
    assert np.array_equal(after[1], before[1]) and after[2:] == before[2:]
    assert type(layer) is cls and layer.get_config() == config
    assert layer.state_dict().keys() == cls.state_shapes(config).keys()
    for name, shape in cls.state_shapes(config).items():
        assert layer.params[name].shape == shape and layer.params[name].dtype == dtype
        assert not layer.params[name].any()


# ============================================================== defaults and boundaries

def test_maxpool_windows_are_2x2_side_by_side_by_default():
    layer = MaxPool()
    assert layer.pshape == (2, 2) and layer.strides == (2, 2)


@pytest.mark.parametrize("cls", [MaxPool, AvgPool])
def test_a_pooling_window_as_large_as_the_image_fits_it(cls):
    """h == ph and w == pw: one window, not a refusal."""
    layer = cls((2, 3))
    assert layer.output_shape((2, 3, 4)) == (1, 1, 4)
    z, _ = layer.forward(np.arange(24, dtype=F64).reshape(1, 2, 3, 4))
    assert z.shape == (1, 1, 1, 4)


def test_dropout_with_rate_0_passes_the_inputs_through_and_draws_nothing():
    """rate 0 in training is the identity itself, and leaves the generator where it was."""
    layer = Dropout(0.0, seed=3)
    layer.training = True
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    z, a = layer.forward(x)
    assert z is x and a is x and layer.backward(x) is x
    assert layer.rng.bit_generator.state == np.random.default_rng(3).bit_generator.state


def test_dropout_backward_before_any_forward_is_the_identity():
    err = np.ones((2, 3), np.float32)
    assert Dropout(0.5).backward(err) is err


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_keeps_a_value_whose_draw_equals_the_rate(dtype):
    """Values are drawn in the inputs' dtype and kept where draw >= rate (a draw of exactly
    rate is kept), so that a seeded layer drops the same values in any implementation."""
    draws = np.random.default_rng(11).random((6, 7), dtype=dtype)
    rate = float(np.median(draws[0]))
    assert (draws == rate).sum() == 1
    layer = Dropout(rate, seed=11)
    layer.training = True
    _, a = layer.forward(np.ones((6, 7), dtype))
    np.testing.assert_array_equal(a != 0, draws >= rate)


# ======================================================================= BatchNorm state

def test_batchnorm_commit_without_a_training_pass_changes_nothing():
    layer = BatchNorm(2, dtype=F64)
    layer.commit_statistics()
    layer.forward(np.ones((3, 2)))          # inference: measures nothing
    layer.commit_statistics()
    np.testing.assert_array_equal(layer.running_mean, 0.0)
    np.testing.assert_array_equal(layer.running_var, 1.0)


def test_batchnorm_keeps_the_optimizer_it_is_given():
    assert type(BatchNorm(2, optimizer=SGDOptimizer).optimizer) is SGDOptimizer
    assert type(BatchNorm(2).optimizer) is AdamOptimizer


def test_batchnorm_backward_reuses_get_grads_input_gradient_only_for_the_same_error(monkeypatch):
    """get_grad computes dL/dinputs too; backward with that same layer_err takes it without a
    second kernel call, and with another layer_err computes its own."""
    layer = _batchnorm64(3)
    layer.training = True
    x = np.random.default_rng(1).normal(size=(5, 3))
    layer.forward(x)
    calls = []
    kernel = cnnc.layers.kernels.batchnorm_backward
    monkeypatch.setattr(cnnc.layers.kernels, "batchnorm_backward",
                        lambda *args: calls.append(1) or kernel(*args))
    err1, err2 = np.random.default_rng(2).normal(size=(2, 5, 3))
    layer.get_grad(x, err1)
    dx1 = layer.backward(err1)
    assert len(calls) == 1
    dx2 = layer.backward(err2)
    assert len(calls) == 2
    expected = kernel(x, err2, layer.params["w"], *layer._batch, layer.eps)[0]
    np.testing.assert_allclose(dx2, expected, rtol=1e-12)
    assert not np.allclose(dx1, dx2)


# ---------------------------------------------------------------- inference: infer, fusion

class _Doubled(ReLU):
    """A subclass computing something else: never fused as its parent would be."""

    def compute(self, x):
        return 2 * np.maximum(x, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_fuses_only_what_computes_the_same(dtype, monkeypatch):
    """predict runs each Conv with its activation in the kernel, folds a BatchNorm after a
    linear Conv into its filters and runs the rest layer by layer: the same outputs, up to
    rounding, as every layer's forward in inference mode, and the network unchanged."""
    cnnc.set_default_dtype(dtype)
    np.random.seed(0)
    net = Network([Conv((3, 3, 3, 20), padding="same"), BatchNorm(20, activation=relu),
                   Conv((3, 3, 20, 18), activation=leaky_relu), Conv((1, 1, 18, 17), activation=_Doubled()),
                   Conv((5, 5, 17, 16), strides=2, padding=2), BatchNorm(16, activation=sigmoid),
                   Conv((3, 3, 16, 9), activation=LeakyReLU(0)), Conv((3, 3, 9, 8), activation=relu),
                   BatchNorm(8), Flatten(), FullyConnected((8 * 2 * 2, 5))],
                  loss=SoftmaxCrossEntropy())
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if isinstance(layer, BatchNorm):    # statistics and parameters far from 0 and 1
            layer.running_mean[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.num_features)
            layer.params["w"][...] = rng.uniform(0.5, 2, layer.num_features)
            layer.params["b"][...] = rng.standard_normal(layer.num_features)
    x = rng.standard_normal((7, 13, 13, 3)).astype(dtype)
    before = {name: a.copy() for layer in net.layers for name, a in layer.state_dict().items()}
    expected = x
    for layer in net.layers:
        expected = layer.forward(expected)[1]
    calls = []
    for name in ("conv2d_forward", "batchnorm_inference"):
        kernel = getattr(cnnc.kernels, name)
        monkeypatch.setattr(cnnc.kernels, name,
                            lambda *args, kernel=kernel, name=name: calls.append((name, args[5:]))
                            or kernel(*args))
    got = net.predict(x)
    # two BatchNorms folded, one left; the ReLU, leaky ReLU and linear fused, not the rest
    assert calls == [("conv2d_forward", (0.0,)), ("conv2d_forward", (0.01,)),
                     ("conv2d_forward", ()), ("conv2d_forward", ()), ("conv2d_forward", ()),
                     ("conv2d_forward", (0.0,)), ("batchnorm_inference", (1e-05, 1.0))]
    np.testing.assert_allclose(got, expected, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-11)
                               * np.abs(expected).max())
    after = {name: a for layer in net.layers for name, a in layer.state_dict().items()}
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_a_conv_fuses_an_exact_batchnorm_after_it_and_an_exact_max_pool_after_that():
    """A BatchNorm folds after a linear activation only; a MaxPool is pooled in the same pass
    after an activation the kernel computes, where its windows do not overlap down the
    image; a subclass of either, an AvgPool or nothing fuses nothing."""
    conv, bn = Conv((3, 3, 2, 4)), BatchNorm(4)
    assert conv.fused_inference([bn])[1] == 1
    assert conv.fused_inference([bn, MaxPool(2)])[1] == 2
    assert conv.fused_inference([BatchNorm(4, activation=relu), MaxPool(2), bn])[1] == 2
    assert conv.fused_inference([BatchNorm(4, activation=Sigmoid()), MaxPool(2)])[1] == 1
    assert conv.fused_inference([MaxPool(2), bn])[1] == 1
    assert conv.fused_inference([MaxPool((2, 3), strides=(2, 1))])[1] == 1
    assert conv.fused_inference([MaxPool(3, strides=2)]) is None
    assert Conv((3, 3, 2, 4), activation=relu).fused_inference([bn]) is None
    assert Conv((3, 3, 2, 4), activation=relu).fused_inference([MaxPool(2)])[1] == 1
    assert Conv((3, 3, 2, 4), activation=Sigmoid()).fused_inference([MaxPool(2)]) is None
    assert Conv((3, 3, 2, 4), activation=_Doubled()).fused_inference([MaxPool(2)]) is None
    assert conv.fused_inference([AvgPool(2)]) is None
    assert conv.fused_inference([]) is None

    class Renormalized(BatchNorm):
        pass

    class Pooled(MaxPool):
        pass

    assert conv.fused_inference([Renormalized(4)]) is None
    assert conv.fused_inference([Pooled(2)]) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_pools_in_the_convolutions_pass_with_the_same_results(dtype, monkeypatch):
    """Conv - [BatchNorm] - MaxPool runs as one conv2d_maxpool_inference where it fuses, and
    predict gives layer-by-layer inference's outputs (up to the rounding of the folded
    BatchNorm)."""
    cnnc.set_default_dtype(dtype)
    np.random.seed(0)
    net = Network([Conv((3, 3, 3, 12), padding="same", activation=relu), MaxPool(2),
                   Conv((3, 3, 12, 10)), BatchNorm(10, activation=leaky_relu), MaxPool((2, 3)),
                   Conv((2, 2, 10, 9), activation=relu), MaxPool(2, strides=1),
                   Flatten(), FullyConnected((9, 5))],
                  loss=SoftmaxCrossEntropy())
    rng = np.random.default_rng(1)
    bn = net.layers[3]
    bn.running_mean[...] = rng.standard_normal(10)
    bn.running_var[...] = rng.uniform(0.5, 2, 10)
    x = np.round(rng.standard_normal((5, 17, 25, 3)) * 4).astype(dtype) / 4   # ties in windows
    expected = x
    for layer in net.layers:
        expected = layer.infer(expected)
    kernel, calls = cnnc.kernels.conv2d_maxpool_inference, []
    monkeypatch.setattr(cnnc.kernels, "conv2d_maxpool_inference",
                        lambda *args: calls.append(args[5:]) or kernel(*args))
    got = net.predict(x)
    assert calls == [((2, 2), (2, 2), 0.0), ((2, 3), (2, 3), 0.01)]   # not the overlapping one
    np.testing.assert_allclose(got, expected, rtol=0, atol=(1e-4 if dtype == np.float32 else 1e-11)
                               * np.abs(expected).max())