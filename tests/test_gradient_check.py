"""cnnc.gradcheck: passes on correct networks, fails on a broken backward and names the layer
and parameter, leaves the network it checks as it was."""
import numpy as np
import pytest

import cnnc
from cnnc import (AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected, GlobalAvgPool,
                  MaxPool, MeanSquaredError, Network, SGDOptimizer, SoftmaxCrossEntropy,
                  leaky_relu, linear, relu, sigmoid, tanh)


def _normal(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape) * scale


def _conv(fshape, seed, **options):
    """A Conv with random filters and random nonzero biases (zero biases put blank inputs on
    the ReLU kink)."""
    return Conv(fshape, filter_init=_normal(seed, 0.5), bias_init=_normal(seed + 1, 0.1), **options)


def _fc(shape, seed, **options):
    return FullyConnected(shape, weight_init=_normal(seed, 0.3), bias_init=_normal(seed + 1, 0.1),
                          **options)


def conv_pool_dense(dtype=np.float64):
    return Network([
        _conv((3, 3, 2, 4), 0, activation=leaky_relu, dtype=dtype),
        MaxPool(2),
        Flatten(),
        _fc((36, 8), 2, activation=relu, dtype=dtype),
        _fc((8, 3), 4, dtype=dtype),
    ], loss=SoftmaxCrossEntropy())


def batchnorm_avgpool():
    return Network([
        _conv((3, 3, 2, 4), 0, padding="same"),
        BatchNorm(4, activation=relu),
        AvgPool(2),
        Flatten(),
        _fc((64, 6), 2),
        BatchNorm(6, activation=tanh),
        _fc((6, 3), 4),
    ], loss=SoftmaxCrossEntropy())


def dropout_global_pool():
    return Network([
        _conv((3, 3, 2, 5), 0, strides=2, activation=sigmoid),
        GlobalAvgPool(),
        Dropout(0.5, seed=1),
        _fc((5, 3), 2),
    ], loss=SoftmaxCrossEntropy())


def mse_regression():
    return Network([
        Flatten(),
        _fc((128, 7), 0, activation=tanh),
        _fc((7, 2), 2, activation=sigmoid),
    ], loss=MeanSquaredError())


def _batch(seed=0, n=3, classes=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 2)), rng.integers(0, classes, n)


@pytest.fixture(autouse=True)
def _float64_by_default():
    saved = cnnc.get_default_dtype()
    cnnc.set_default_dtype(np.float64)
    yield
    cnnc.set_default_dtype(saved)


@pytest.mark.parametrize("make", [conv_pool_dense, batchnorm_avgpool, dropout_global_pool])
def test_passes_on_correct_networks_checking_every_element(make):
    net = make()
    x, y = _batch()
    result = cnnc.gradcheck(net, x, y, samples_per_param=None)
    assert result.passed, result
    assert result.max_rel_error < 1e-5
    assert [p.checked for p in result.params] == [p.size for p in result.params]
    parametric = [(i, name) for i, layer in enumerate(net.layers) for name in layer.params]
    assert [(p.layer, p.param) for p in result.params] == parametric


def test_passes_with_a_regression_loss_and_one_output_targets():
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 2))
    targets = np.random.default_rng(1).random((4, 2))
    result = cnnc.gradcheck(mse_regression(), x, targets, samples_per_param=None)
    assert result.passed, result


def test_the_course_cnn_after_a_step_passes_on_digits_in_well_under_a_second():
    np.random.seed(0)
    net = cnnc.models.course_cnn(dtype=np.float32)
    (x, y), _ = cnnc.datasets.mnist_sample()
    x, y = x[:4] / np.float32(255), y[:4]
    net.train_step(x, y)                 # biases move off 0: blank pixels leave the kinks
    result = cnnc.gradcheck(net, x, y, samples_per_param=8)
    assert result.passed, result
    text = str(result)
    assert text.startswith("gradcheck passed: worst relative error")
    assert "4: FullyConnected  w      1152x256   8/294912" in text
    assert text.count(" ok") == 8


class ScaledFullyConnected(FullyConnected):
    """A FullyConnected whose weight gradient is 1% too large: a bug gradcheck must find."""

    def get_grad(self, inputs, layer_err):
        grads = super().get_grad(inputs, layer_err)
        grads["w"] = grads["w"] * 1.01
        return grads


class ScaledBackwardConv(Conv):
    """A Conv passing down an input gradient 1% too large: the layers below get it wrong."""

    def backward(self, layer_err):
        return super().backward(layer_err) * 1.01


def test_a_weight_gradient_off_by_one_percent_fails_and_is_named():
    net = conv_pool_dense()
    broken = ScaledFullyConnected((36, 8), activation=relu, weight_init=_normal(2, 0.3),
                                  bias_init=_normal(3, 0.1))
    net.layers[3] = broken
    x, y = _batch()
    result = cnnc.gradcheck(net, x, y)
    assert not result.passed
    assert [(p.layer, p.param) for p in result.failures] == [(3, "w")]
    worst = result.worst
    assert (worst.layer, worst.kind, worst.param) == (3, "ScaledFullyConnected", "w")
    assert worst.layer_repr == repr(broken) and len(worst.index) == 2
    assert worst.analytic == pytest.approx(1.01 * worst.numeric, rel=1e-6)
    assert worst.rel_error > 5e-3 and not worst.kink
    text = str(result)
    assert text.startswith("gradcheck FAILED")
    assert "worst: layer 3 (ScaledFullyConnected) 'w'" in text
    assert [line.split()[-1] for line in text.splitlines() if line.startswith("3: ")] == ["FAIL", "ok"]


def test_a_wrong_input_gradient_shows_in_the_layers_below_it():
    net = Network([
        _conv((3, 3, 2, 4), 0, activation=tanh),
        ScaledBackwardConv((3, 3, 4, 3), filter_init=_normal(2, 0.5), activation=tanh),
        Flatten(),
        _fc((48, 3), 4),
    ], loss=SoftmaxCrossEntropy())
    result = cnnc.gradcheck(net, *_batch())
    assert {(p.layer, p.param) for p in result.failures} == {(0, "w"), (0, "b")}
    assert result.worst.layer == 0


def _snapshot(net):
    """Everything of net that a check could change, copied."""
    state = {"global": np.random.get_state()[1].copy(), "input_shape": net.input_shape}
    for i, layer in enumerate(net.layers):
        for name, value in vars(layer).items():
            if isinstance(value, np.ndarray):
                state[i, name] = (value, value.copy())
            elif isinstance(value, np.random.Generator):
                state[i, name] = repr(value.bit_generator.state)
        for name, param in layer.params.items():
            state[i, "param", name] = (param, param.copy())
        optimizer = getattr(layer, "optimizer", None)
        for key, slots in (optimizer.state.items() if optimizer is not None else ()):
            for name, value in slots.items():
                copied = value.copy() if isinstance(value, np.ndarray) else value
                state[i, "optimizer", key, name] = (value, copied)
    return state


def _same(before, after):
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, tuple) and isinstance(value[0], np.ndarray):
            live, copied = value
            assert after[key][0] is live, key           # the same array object, not replaced
            assert live.dtype == copied.dtype and np.array_equal(live, copied), key
        elif isinstance(value, tuple):                  # an optimizer's step count
            assert value[1] == after[key][0], key
        elif key == "global":
            assert np.array_equal(value, after[key])
        else:
            assert value == after[key], key


def test_a_float32_network_is_checked_in_float64_and_left_exactly_as_it_was():
    net = Network([
        _conv((3, 3, 2, 4), 0, dtype=np.float32, optimizer=SGDOptimizer(momentum=0.9)),
        BatchNorm(4, activation=leaky_relu, dtype=np.float32),
        MaxPool(2),
        Flatten(),
        Dropout(0.3, seed=5),
        _fc((36, 3), 2, dtype=np.float32),
    ], loss=SoftmaxCrossEntropy())
    x, y = _batch(n=4)
    net.train_step(x, y)                    # optimizer state and running statistics to keep
    np.random.seed(7)
    before = _snapshot(net)
    result = cnnc.gradcheck(net, x, y, samples_per_param=6)
    assert result.passed, result
    # Float64 differences are exact to ~1e-8; in float32 they would be off by ~1e-2.
    assert result.max_rel_error < 1e-5
    _same(before, _snapshot(net))
    assert net.dtype == np.float32 and all(not layer.training for layer in net.layers)


def test_dropout_draws_one_mask_for_every_evaluation():
    net = dropout_global_pool()
    x, y = _batch()
    first = cnnc.gradcheck(net, x, y)
    assert first.passed, first
    assert first.params[-1].kinks == 0      # a new mask per evaluation would look like kinks
    again = cnnc.gradcheck(net, x, y)
    assert np.array_equal(first.params[0].numeric, again.params[0].numeric)


def test_samples_are_bounded_seeded_and_all_when_none():
    net = conv_pool_dense()
    x, y = _batch()
    sampled = cnnc.gradcheck(net, x, y, samples_per_param=5, seed=3)
    assert [p.checked for p in sampled.params] == [5, 4, 5, 5, 5, 3]
    assert all(len(np.unique(p.indices, axis=0)) == p.checked for p in sampled.params)
    same = cnnc.gradcheck(net, x, y, samples_per_param=5, seed=3)
    other = cnnc.gradcheck(net, x, y, samples_per_param=5, seed=4)
    assert np.array_equal(sampled.params[0].indices, same.params[0].indices)
    assert not np.array_equal(sampled.params[0].indices, other.params[0].indices)
    w = sampled.params[0]
    assert w.indices.shape == (5, 4) and w.analytic.shape == w.numeric.shape == (5,)


def test_a_relu_input_on_its_kink_is_marked_and_judged_by_the_one_sided_slopes():
    net = Network([FullyConnected((3, 4), activation=relu, weight_init=_normal(0)),
                   _fc((4, 2), 2)], loss=SoftmaxCrossEntropy())
    x = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.3]])     # the first sample puts z = b = 0
    result = cnnc.gradcheck(net, x, [0, 1], samples_per_param=None)
    bias = result.params[1]
    assert bias.kinks == 4 and bias.passed, result
    assert result.passed


def test_nested_kinks_of_a_fresh_course_cnn_fail_and_say_why():
    np.random.seed(0)
    net = cnnc.models.course_cnn(dtype=np.float32)
    (x, y), _ = cnnc.datasets.mnist_sample()
    result = cnnc.gradcheck(net, x[:2] / np.float32(255), y[:2], samples_per_param=3)
    assert not result.passed and result.worst.kink
    assert (result.worst.layer, result.worst.param) == (0, "b")
    assert "every failing element sits at a kink" in str(result)


@pytest.mark.parametrize("x, y", [
    (np.zeros((2, 8, 8)), [0, 1]),              # images without their channel axis
    (np.zeros((2, 2, 8, 8)), [0, 1]),           # NCHW
    (np.zeros((2, 8, 8, 2)), [0, 1, 2]),        # more labels than samples
    (np.zeros((2, 8, 8, 2)), [0, 7]),           # a class the network does not have
])
def test_bad_inputs_raise_what_loss_and_grads_raises(x, y):
    net = conv_pool_dense()
    with pytest.raises(ValueError) as expected:
        conv_pool_dense().loss_and_grads(x, y)
    with pytest.raises(ValueError) as raised:
        cnnc.gradcheck(net, x, y)
    assert str(raised.value) == str(expected.value)


class NoBiasGradient(FullyConnected):
    def get_grad(self, inputs, layer_err):
        return {"w": super().get_grad(inputs, layer_err)["w"]}


def test_a_missing_gradient_is_an_error_naming_the_layer():
    net = Network([NoBiasGradient((4, 2))], loss=SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match=r"layer 0 \(NoBiasGradient\) has a parameter 'b'"):
        cnnc.gradcheck(net, np.ones((2, 4)), [0, 1])


@pytest.mark.parametrize("options, message", [
    ({"eps": 0}, "eps must be a finite number > 0"),
    ({"rtol": 0}, "rtol must be a finite number > 0"),
    ({"atol": -1}, "atol must be a finite number >= 0"),
    ({"samples_per_param": 0}, "samples_per_param must be a positive int or None"),
])
def test_arguments_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        cnnc.gradcheck(conv_pool_dense(), *_batch(), **options)


def test_only_networks_are_checked():
    with pytest.raises(ValueError, match="gradcheck checks a cnnc Network, got FullyConnected"):
        cnnc.gradcheck(FullyConnected((2, 2)), np.ones((1, 2)), [0])


def test_a_network_without_parameters_passes_trivially():
    result = cnnc.gradcheck(Network([Flatten()], loss=MeanSquaredError()), np.ones((2, 2, 2, 1)),
                            np.zeros((2, 4)))
    assert result.passed and result.params == () and result.worst is None
    assert result.max_rel_error == 0.0
    assert str(result).startswith("gradcheck passed")
