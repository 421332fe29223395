import copy
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cnnc
from cnnc import (POOL, AdamOptimizer, BatchNorm, Conv, Flatten, FullyConnected, GlobalAvgPool,
                  MaxPool, MeanSquaredError, Network, SGDoptimizer, SGDOptimizer,
                  SoftmaxCrossEntropy, init, leaky_relu, linear, relu, sigmoid, tanh)
from cnnc.models import course_cnn

from .conftest import (DTYPES, assert_close, filters_from_torch, filters_to_torch,
                       nhwc_to_torch)
from .gradcheck import assert_grad_close, numerical_grad


def bars(n, size=12, seed=0):
    """Noisy images of a bar in one of four orientations; the orientation is the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.normal(0, 0.3, (n, size, size, 1))
    for image, label in zip(images, labels):
        offset = rng.integers(2, size - 2)
        line = np.arange(size)
        rows, cols = [(np.full(size, offset), line), (line, np.full(size, offset)),
                      (line, line), (line, size - 1 - line)][label]
        image[rows, cols, 0] += 1.0
    return images, labels


def small_cnn(dtype=None, optimizer=AdamOptimizer):
    return Network([
        Conv((3, 3, 1, 8), padding=1, activation=relu, optimizer=optimizer(), dtype=dtype),
        MaxPool(2),
        Flatten((6, 6, 8)),
        FullyConnected((288, 4), optimizer=optimizer(), weight_init=init.xavier_normal, dtype=dtype),
    ], loss=SoftmaxCrossEntropy())


def state_of(net):
    """Every weight and optimizer state array of a network, copied."""
    return copy.deepcopy([(layer.params, getattr(layer, "optimizer", None) and layer.optimizer.state)
                          for layer in net.layers])


def assert_same_state(a, b):
    for (params_a, opt_a), (params_b, opt_b) in zip(a, b):
        for name in params_a:
            np.testing.assert_array_equal(params_a[name], params_b[name])
        assert (opt_a is None) == (opt_b is None)
        if opt_a is not None:
            assert opt_a.keys() == opt_b.keys()
            for key in opt_a:
                for slot in opt_a[key]:
                    np.testing.assert_array_equal(opt_a[key][slot], opt_b[key][slot])


def test_cnn_learns_oriented_bars():
    np.random.seed(0)
    x, y = bars(1200)
    x_test, y_test = bars(400, seed=1)
    net = small_cnn()
    for step in range(150):
        batch = slice((step * 32) % 1184, (step * 32) % 1184 + 32)
        net.train_step(x[batch], y[batch], lr=3e-3)
    assert net.evaluate(x_test, y_test) > 0.95


def test_mlp_with_sgd_momentum_learns_xor():
    np.random.seed(1)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (512, 2))
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(int)
    net = Network([
        FullyConnected((2, 32), activation=tanh, optimizer=SGDOptimizer(momentum=0.9)),
        FullyConnected((32, 2), optimizer=SGDOptimizer(momentum=0.9), weight_init=init.xavier_normal),
    ], loss=SoftmaxCrossEntropy())
    for _ in range(400):
        net.train_step(x, y, lr=0.1)
    assert net.evaluate(x, y) > 0.95


def test_mean_squared_error_regression_converges():
    np.random.seed(2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(256, 3))
    target = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    net = Network([FullyConnected((3, 1), dtype=np.float64)], loss=MeanSquaredError())
    for _ in range(500):
        loss = net.train_step(x, target, lr=0.05)
    assert loss < 1e-6
    np.testing.assert_allclose(net.layers[0].params["w"].ravel(), [1.0, -2.0, 0.5], atol=1e-3)


def linear_data(n=200, outputs=1, seed=2):
    """x (n, 3) and float targets of a linear map: (n,) for one output, else (n, outputs)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ rng.normal(size=(3, outputs)) + 0.3
    return x, (y[:, 0] if outputs == 1 else y)


def test_mean_squared_error_takes_float_targets_of_shape_n_and_evaluates_to_the_mse():
    np.random.seed(2)
    x, y = linear_data()
    net = Network([FullyConnected((3, 1), dtype=np.float64)], loss=MeanSquaredError())
    twin = copy.deepcopy(net)
    assert net.train_step(x, y, lr=0.05) == twin.train_step(x, y[:, None], lr=0.05)
    expected = np.mean((net.predict(x)[:, 0] - y) ** 2)
    assert net.evaluate(x, y, batch_size=7) == pytest.approx(expected, rel=1e-12)
    assert net.evaluate(x, y[:, None]) == pytest.approx(expected, rel=1e-12)
    for _ in range(300):
        net.train_step(x, y, lr=0.05)
    assert net.evaluate(x, y) < 1e-6


def test_mean_squared_error_with_several_outputs_evaluates_to_the_mse_over_all_of_them():
    np.random.seed(3)
    x, y = linear_data(outputs=2)
    net = Network([FullyConnected((3, 8), activation="tanh", dtype=np.float64),
                   FullyConnected((8, 2), dtype=np.float64)], loss=MeanSquaredError())
    expected = np.mean((net.predict(x) - y) ** 2)
    assert net.evaluate(x, y, batch_size=64) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match=r"one output, this one has 2: pass targets of shape \(N, 2\)"):
        net.evaluate(x, y[:, 0])


def test_fit_on_mean_squared_error_reports_the_loss_only(capsys):
    np.random.seed(4)
    x, y = linear_data(seed=4)
    x_val, y_val = linear_data(50, seed=5)
    net = Network([FullyConnected((3, 1), dtype=np.float64)], loss=MeanSquaredError())
    history = net.fit(x, y, epochs=3, batch_size=20, lr=0.05, seed=0, validation_data=(x_val, y_val))
    assert set(history) == {"loss", "val_loss"} and all(len(v) == 3 for v in history.values())
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] == pytest.approx(net.evaluate(x_val, y_val), rel=1e-12)
    err = capsys.readouterr().err
    assert "loss=" in err and "val_loss=" in err and "accuracy" not in err


def test_fit_checks_regression_targets_before_the_first_step():
    np.random.seed(5)
    x, y = linear_data(outputs=2)
    net = Network([FullyConnected((3, 2))], loss=MeanSquaredError())
    before = state_of(net)
    with pytest.raises(ValueError, match="one output, this one has 2"):
        net.fit(x, y[:, 0], progress=False)
    with pytest.raises(ValueError, match="one output, this one has 2"):
        net.fit(x, y, validation_data=(x[:10], y[:10, 0]), progress=False)
    assert_same_state(state_of(net), before)


def test_a_loss_that_does_not_say_is_taken_as_a_classification_loss():
    class Halved:
        def compute(self, outputs, labels):
            return SoftmaxCrossEntropy().compute(outputs, labels) / 2

        def deriv(self, outputs, labels):
            return SoftmaxCrossEntropy().deriv(outputs, labels) / 2

    np.random.seed(6)
    x, y = bars(20)
    net = small_cnn()
    reference = net.evaluate(x, y)
    net.loss = Halved()
    assert net.evaluate(x, y) == reference
    assert set(net.fit(x, y, progress=False)) == {"loss", "accuracy"}


def test_whole_network_gradients_match_finite_differences():
    np.random.seed(3)
    rng = np.random.default_rng(3)
    net = Network([
        Conv((3, 3, 2, 3), strides=2, padding=1, activation=leaky_relu, dtype=np.float64),
        Conv((2, 2, 3, 4), activation=tanh, dtype=np.float64),
        MaxPool(2, strides=1),
        Flatten((2, 2, 4)),
        FullyConnected((16, 5), activation=sigmoid, dtype=np.float64),
        FullyConnected((5, 3), dtype=np.float64),
    ], loss=SoftmaxCrossEntropy())
    x = rng.normal(size=(3, 7, 7, 2))
    y = np.array([0, 2, 1])
    _, grads = net.loss_and_grads(x, y)
    assert [sorted(g) for g in grads] == [["b", "w"], ["b", "w"], [], [], ["b", "w"], ["b", "w"]]
    for layer, layer_grads in zip(net.layers, grads):
        for name, grad in layer_grads.items():
            numeric = numerical_grad(lambda: net.loss_and_grads(x, y)[0], layer.params[name])
            assert_grad_close(grad, numeric)


def test_the_backward_pass_stops_at_the_first_layer_with_parameters(monkeypatch):
    """Below it nothing is learned: its input gradient (an MLP's first product with its
    weights' transpose, as large as the forward one) is never computed."""
    np.random.seed(6)
    rng = np.random.default_rng(6)
    net = Network([MaxPool(2), Flatten((2, 2, 1)), FullyConnected((4, 3), activation=tanh,
                                                                  dtype=np.float64),
                   FullyConnected((3, 2), dtype=np.float64)], loss=SoftmaxCrossEntropy())
    called = []
    for layer in net.layers:
        monkeypatch.setattr(layer, "backward", lambda err, layer=layer, inner=layer.backward:
                            called.append(type(layer).__name__) or inner(err))
    x, y = rng.normal(size=(5, 4, 4, 1)), np.array([0, 1, 1, 0, 1])
    _, grads = net.loss_and_grads(x, y)
    assert called == ["FullyConnected"]          # the last layer's, for the one before it
    assert [sorted(g) for g in grads] == [[], [], ["b", "w"], ["b", "w"]]
    for layer, layer_grads in zip(net.layers, grads):
        for name, grad in layer_grads.items():
            numeric = numerical_grad(lambda: net.loss_and_grads(x, y)[0], layer.params[name])
            assert_grad_close(grad, numeric)


def test_train_step_returns_the_loss_before_its_update():
    np.random.seed(4)
    x, y = bars(16)
    net = small_cnn()
    before, _ = net.loss_and_grads(x, y)
    assert net.train_step(x, y, lr=1e-2) == before
    assert net.loss_and_grads(x, y)[0] < before


def test_float32_and_float64_agree():
    np.random.seed(5)
    x, y = bars(32)
    net32, net64 = small_cnn(np.float32), small_cnn(np.float64)
    for layer32, layer64 in zip(net32.layers, net64.layers):
        for name in layer32.params:
            layer64.params[name][...] = layer32.params[name]
    for _ in range(5):
        loss32, loss64 = net32.train_step(x, y, 1e-3), net64.train_step(x, y, 1e-3)
        assert loss32 == pytest.approx(loss64, rel=1e-5)
    assert net32.predict(x).dtype == np.float32
    np.testing.assert_allclose(net32.predict(x), net64.predict(x), rtol=1e-4, atol=1e-5)


def test_predict_in_batches_equals_one_batch():
    np.random.seed(6)
    x, y = bars(23)
    net = small_cnn(np.float64)
    whole = net.predict(x, batch_size=1000)
    assert whole.shape == (23, 4)
    np.testing.assert_allclose(net.predict(x, batch_size=5), whole, rtol=1e-12)
    ids = whole.argmax(axis=1)
    assert net.evaluate(x, y, batch_size=4) == pytest.approx(np.mean(ids == y))
    assert net.evaluate(x, np.eye(4)[y], batch_size=7) == net.evaluate(x, y)


def test_integer_and_one_hot_labels_train_identically():
    np.random.seed(7)
    x, y = bars(16)
    a = small_cnn(np.float64)
    b = copy.deepcopy(a)
    for _ in range(3):
        assert a.train_step(x, y) == pytest.approx(b.train_step(x, np.eye(4)[y]), rel=1e-12)


def test_inputs_are_cast_to_the_network_dtype():
    np.random.seed(8)
    x, y = bars(8)
    net = small_cnn(np.float32)
    images = np.clip(x * 100 + 100, 0, 255).astype(np.uint8)
    assert net.predict(images).dtype == np.float32
    assert np.isfinite(net.train_step(images / 255.0, y))
    assert net.predict(x.astype(np.float64)).dtype == np.float32


def test_the_report_code_runs_as_typed():
    """The report's own code blocks, as a user types them."""
    np.random.seed(9)
    x = np.random.rand(50, 28, 28, 1)
    y = np.random.randint(0, 10, 50)
    mlp = [
        Flatten((28, 28, 1)),
        FullyConnected((28 * 28, 100), activation=sigmoid, optimizer=SGDoptimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (28 * 28))),
        FullyConnected((100, 50), activation=sigmoid, optimizer=SGDoptimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (100.))),
        FullyConnected((50, 10), activation=linear, optimizer=SGDoptimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(1.0 / (50.))),
    ]
    cnn = [
        Conv((3, 3, 1, 16), strides=1, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=lambda shp: np.random.normal(size=shp) * np.sqrt(2.0 / (28 * 28))),
        Conv((4, 4, 16, 32), strides=2, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=lambda shp: np.random.normal(size=shp) * np.sqrt(2.0 / (16 * 26 * 26))),
        POOL(pshape=2),
        Flatten((6, 6, 32)),
        FullyConnected((6 * 6 * 32, 256), activation=relu, optimizer=AdamOptimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(2.0 / (6 * 6 * 32))),
        FullyConnected((256, 10), activation=linear, optimizer=AdamOptimizer(),
                       weight_init=lambda shp: np.random.normal(size=shp) * np.sqrt(2.0 / (256.))),
    ]
    for layers in (mlp, cnn):
        net = Network(layers, loss=SoftmaxCrossEntropy())
        losses = [net.train_step(x, y, lr=0.01) for _ in range(3)]
        assert all(np.isfinite(losses))
        assert net.predict(x).shape == (50, 10)


class TestBadInput:
    def setup_method(self):
        np.random.seed(10)
        self.net = Network([
            Conv((3, 3, 1, 16), activation=relu),
            POOL(2),
            Flatten((13, 13, 16)),
            FullyConnected((13 * 13 * 16, 10)),
        ], loss=SoftmaxCrossEntropy())
        self.x = np.random.rand(4, 28, 28, 1)
        self.y = np.array([1, 2, 3, 4])

    def test_images_without_channel_axis_are_refused(self):
        with pytest.raises(ValueError, match=r"layer 0 \(Conv\).*\(N, H, W, C\).*3-D"):
            self.net.train_step(self.x[..., 0], self.y)

    @pytest.mark.parametrize("call", ["predict", "train_step", "evaluate", "fit", "loss_and_grads"])
    def test_one_image_instead_of_a_batch_says_to_add_the_batch_axis(self, call):
        image = self.x[0]
        args = (image,) if call == "predict" else (image, self.y[:1])
        kwargs = {"progress": False} if call == "fit" else {}
        message = ("layer 0 (Conv): inputs of shape (28, 28, 1) look like one image, not a batch "
                   "(N, 28, 28, 1): pass x[None] (or x[np.newaxis]), a batch of one")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            getattr(self.net, call)(*args, **kwargs)
        assert self.net.predict(image[None]).shape == (1, 10)

    def test_one_sample_of_an_mlp_says_to_add_the_batch_axis(self):
        mlp = Network([FullyConnected((784, 10))], loss=SoftmaxCrossEntropy())
        with pytest.raises(ValueError, match=re.escape("inputs of shape (784,) look like one sample, not "
                                                       "a batch (N, 784): pass x[None]")):
            mlp.predict(self.x[0].ravel())
        with pytest.raises(ValueError, match=r"^inputs must be a batch \(N, ...\), got shape \(\)$"):
            mlp.predict(np.float32(1))

    @pytest.mark.parametrize("size", [28, 32])
    def test_nchw_images_say_to_transpose(self, size):
        nchw = np.zeros((2, 1, size, size))
        with pytest.raises(ValueError, match=r"^layer 0 \(Conv\): .*expects 1 input channels, got "
                                             rf"{size}.*NHWC.*NCHW.*: pass x\.transpose\(0, 2, 3, 1\)$"):
            self.net.predict(nchw)
        mlp = Network([Flatten((28, 28, 1)), FullyConnected((784, 2))], loss=SoftmaxCrossEntropy())
        with pytest.raises(ValueError, match=r"^layer 0 \(Flatten\).*x\.transpose\(0, 2, 3, 1\)$"):
            mlp.predict(np.zeros((2, 1, 28, 28)))

    def test_images_without_channel_axis_say_to_add_it(self):
        with pytest.raises(ValueError, match=r"^layer 0 \(Conv\): Conv expects images \(N, H, W, C\), got "
                                             r"3-D input \(N, 28, 28\); .*pass x\[\.\.\., None\] "
                                             r"\(or x\[\.\.\., np\.newaxis\]\)$"):
            self.net.predict(self.x[..., 0])

    def test_no_hint_where_no_reading_of_the_input_fits_better(self):
        rgb = Network([Conv((3, 3, 3, 4)), Flatten((30, 30, 4))], loss=SoftmaxCrossEntropy())
        with pytest.raises(ValueError) as excinfo:
            rgb.predict(np.zeros((2, 32, 32)))        # one channel added would still not be 3
        assert "None]" not in str(excinfo.value) and "transpose" not in str(excinfo.value)
        with pytest.raises(ValueError) as excinfo:
            self.net.predict(np.zeros((2, 30, 30, 1)))
        assert str(excinfo.value) == ("layer 2 (Flatten): Flatten expects inputs of shape "
                                      "(N, 13, 13, 16), got (N, 14, 14, 16)")

    def test_wrong_channel_count_names_expected_and_received(self):
        with pytest.raises(ValueError, match=r"layer 0 \(Conv\).*expects 1 input channels, got 3"):
            self.net.predict(np.zeros((2, 28, 28, 3)))

    def test_wrong_image_size_is_caught_at_flatten(self):
        with pytest.raises(ValueError, match=r"layer 2 \(Flatten\).*\(N, 13, 13, 16\).*\(N, 14, 14, 16\)"):
            self.net.evaluate(np.zeros((2, 30, 30, 1)), [0, 1])

    def test_image_too_small_for_the_filter(self):
        with pytest.raises(ValueError, match="does not fit"):
            self.net.predict(np.zeros((1, 2, 2, 1)))

    def test_labels_out_of_range(self):
        with pytest.raises(ValueError, match=r"\[0, 10\).*10"):
            self.net.train_step(self.x, np.array([0, 1, 2, 10]))
        with pytest.raises(ValueError, match=r"\[0, 10\)"):
            self.net.evaluate(self.x, np.array([-1, 1, 2, 3]))

    def test_wrong_label_count(self):
        with pytest.raises(ValueError, match="4 samples.*labels of shape \\(3,\\)"):
            self.net.train_step(self.x, self.y[:3])
        with pytest.raises(ValueError, match="4 samples"):
            self.net.evaluate(self.x, self.y[:3])

    def test_one_hot_labels_with_wrong_width(self):
        with pytest.raises(ValueError, match="10 columns"):
            self.net.train_step(self.x, np.eye(5)[self.y])

    def test_empty_batch(self):
        with pytest.raises(ValueError, match="empty"):
            self.net.train_step(self.x[:0], self.y[:0])

    def test_non_numeric_input(self):
        with pytest.raises(ValueError, match="numbers"):
            self.net.predict(np.array([["a"]]))

    @pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1e-3, "0.001", None, True, 10**400])
    def test_a_bad_learning_rate_is_refused_before_anything_changes(self, lr):
        before = state_of(self.net)
        with pytest.raises(ValueError, match="lr must be"):
            self.net.train_step(self.x, self.y, lr=lr)
        assert_same_state(state_of(self.net), before)

    @pytest.mark.parametrize("batch_size", [0, None, 2.0, "10", True])
    def test_bad_batch_size(self, batch_size):
        with pytest.raises(ValueError, match="^batch_size must be an int from 1 to"):
            self.net.predict(self.x, batch_size=batch_size)
        with pytest.raises(ValueError, match="^batch_size must be an int from 1 to"):
            self.net.evaluate(self.x, self.y, batch_size=batch_size)

    def test_evaluate_on_no_sample_is_refused(self):
        with pytest.raises(ValueError, match=r"^evaluate needs at least one sample, got x of shape "
                                             r"\(0, 28, 28, 1\)$"):
            self.net.evaluate(self.x[:0], self.y[:0])

    def test_non_finite_loss_changes_nothing(self):
        self.net.train_step(self.x, self.y)
        before = state_of(self.net)
        x = self.x.copy()
        x[0, 5, 5, 0] = np.nan
        with pytest.raises(FloatingPointError, match="loss"):
            self.net.train_step(x, self.y)
        assert_same_state(state_of(self.net), before)

    def test_non_finite_gradient_changes_nothing(self, monkeypatch):
        self.net.train_step(self.x, self.y)
        before = state_of(self.net)
        layer = self.net.layers[3]
        real_get_grad = layer.get_grad

        def poisoned(inputs, layer_err):
            grads = real_get_grad(inputs, layer_err)
            grads["b"][0] = np.inf
            return grads

        monkeypatch.setattr(layer, "get_grad", poisoned)
        with pytest.raises(FloatingPointError, match=r"'b' of layer 3 \(FullyConnected\)"):
            self.net.train_step(self.x, self.y)
        assert_same_state(state_of(self.net), before)


def test_layers_of_different_dtypes_are_refused():
    with pytest.raises(ValueError, match="one dtype.*float32.*float64"):
        Network([Flatten((4,)), FullyConnected((4, 3)), FullyConnected((3, 2), dtype=np.float64)],
                loss=SoftmaxCrossEntropy())


def test_one_optimizer_shared_by_two_layers_is_refused():
    shared = AdamOptimizer()
    with pytest.raises(ValueError, match="layers 0 and 1 share one optimizer"):
        Network([FullyConnected((4, 3), optimizer=shared), FullyConnected((3, 2), optimizer=shared)],
                loss=SoftmaxCrossEntropy())


def test_loss_and_optimizer_classes_are_made_with_their_defaults():
    net = Network([FullyConnected((4, 3), activation="relu", optimizer=SGDOptimizer),
                   FullyConnected((3, 2), activation=cnnc.activations.Tanh, optimizer=AdamOptimizer)],
                  loss=SoftmaxCrossEntropy)
    assert type(net.loss) is SoftmaxCrossEntropy
    assert [type(layer.optimizer) for layer in net.layers] == [SGDOptimizer, AdamOptimizer]
    assert np.isfinite(net.train_step(np.ones((2, 4)), [0, 1]))
    assert type(Network([FullyConnected((4, 1))], loss=MeanSquaredError).loss) is MeanSquaredError


@pytest.mark.parametrize("layer, fix", [(Conv, "Conv(fshape, ...)"), (Flatten, "Flatten(...)"),
                                        (FullyConnected, "FullyConnected(shape, ...)"), (POOL, "MaxPool(...)")])
def test_a_layer_class_in_the_list_is_refused_with_the_fix(layer, fix):
    message = f"layer 1 is the class {layer.__name__}, not a layer: write {fix}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Network([Flatten((4,)), layer, FullyConnected((4, 2))], loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("layers, message", [
    ([], "^a Network needs at least one layer$"),
    ([FullyConnected((4, 2)), relu], r"^layer 1 is ReLU\(\), not a layer such as Conv\(...\)"),
    ([np.tanh], "^layer 0 is <ufunc 'tanh'>, not a layer"),
    (FullyConnected((4, 2)), "^layers must be a list of layers, got FullyConnected"),
    (None, "^layers must be a list of layers, got None"),
], ids=["empty", "activation", "function", "one_layer_not_in_a_list", "none"])
def test_what_is_not_a_list_of_layers_is_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        Network(layers, loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", None, relu, cnnc.activations.ReLU, Conv,
                                  lambda outputs, labels: 0.0, AdamOptimizer()],
                         ids=["name", "none", "activation", "activation_class", "layer_class",
                              "function", "optimizer"])
def test_what_is_not_a_loss_is_refused(loss):
    with pytest.raises(ValueError, match=r"^loss must be a loss such as SoftmaxCrossEntropy\(\) or "
                                         r"MeanSquaredError\(\) \(an object with compute"):
        Network([FullyConnected((4, 2))], loss=loss)


def test_repr_shows_the_layers_one_per_line_and_the_loss():
    net = Network([Conv((3, 3, 1, 8), padding=1, activation="relu"), MaxPool(2), Flatten((6, 6, 8)),
                   FullyConnected((288, 4))], loss=SoftmaxCrossEntropy)
    assert repr(net) == """Network([
    Conv((3, 3, 1, 8), strides=(1, 1), padding=(1, 1), activation=ReLU()),
    MaxPool(pshape=(2, 2), strides=(2, 2)),
    Flatten((6, 6, 8)),
    FullyConnected((288, 4), activation=Linear()),
], loss=SoftmaxCrossEntropy())"""
    one = Network([FullyConnected((3, 1))], loss=MeanSquaredError())
    assert repr(one) == "Network([FullyConnected((3, 1), activation=Linear())], loss=MeanSquaredError())"


def test_network_without_parameters_uses_the_default_dtype():
    net = Network([Flatten((2, 2, 1))], loss=SoftmaxCrossEntropy())
    assert net.dtype == cnnc.get_default_dtype()
    assert net.predict(np.ones((3, 2, 2, 1))).shape == (3, 4)


# ============================================================================ fit, summary

@pytest.mark.slow
def test_fit_on_the_bundled_mnist_sample_beats_90_percent_on_its_held_out_part():
    (x_train, y_train), (x_test, y_test) = cnnc.datasets.mnist_sample()
    np.random.seed(0)
    net = course_cnn()
    history = net.fit(x_train / 255.0, y_train, epochs=3, batch_size=50, lr=1e-3, seed=0,
                      validation_data=(x_test / 255.0, y_test), progress=False)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 3 for values in history.values())
    assert history["loss"][2] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.90            # 240 steps of batch 50
    assert history["val_accuracy"][-1] == net.evaluate(x_test / 255.0, y_test)


def test_fit_history_is_the_mean_of_its_steps():
    x, y = bars(40)
    a, b = small_cnn(np.float64), small_cnn(np.float64)
    for layer_a, layer_b in zip(a.layers, b.layers):
        for name in layer_a.params:
            layer_b.params[name][...] = layer_a.params[name]
    history = a.fit(x, y, epochs=1, batch_size=16, shuffle=False, progress=False)
    losses, correct = [], 0
    for start in range(0, 40, 16):
        logits = b.predict(x[start:start + 16])
        correct += int((logits.argmax(axis=1) == y[start:start + 16]).sum())
        losses.append(b.train_step(x[start:start + 16], y[start:start + 16]) * len(logits))
    assert history["loss"][0] == pytest.approx(sum(losses) / 40, rel=1e-12)
    assert history["accuracy"][0] == correct / 40
    assert_same_state(state_of(a), state_of(b))


def test_fit_with_a_seed_is_reproducible_and_shuffles():
    x, y = bars(64)
    runs = []
    for shuffle, seed in ((True, 3), (True, 3), (True, 4), (False, 3)):
        np.random.seed(0)
        net = small_cnn(np.float64)
        net.fit(x, y, epochs=2, batch_size=10, shuffle=shuffle, seed=seed, progress=False)
        runs.append(net.layers[0].params["w"].copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2]) and not np.array_equal(runs[0], runs[3])


def test_fit_shows_a_progress_bar_with_loss_accuracy_and_speed(capsys):
    x, y = bars(30)
    small_cnn().fit(x, y, epochs=2, batch_size=10, validation_data=(x[:10], y[:10]))
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "sample/s" in err
    assert all(f"{name}=" in err for name in ("loss", "accuracy", "val_loss", "val_accuracy"))
    small_cnn().fit(x, y, epochs=1, batch_size=10, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": -1}, "^epochs must be an int from 0 to"), ({"epochs": 1.5}, "^epochs must be an int"),
    ({"epochs": None}, "^epochs must be an int"), ({"epochs": True}, "^epochs must be an int"),
    ({"batch_size": 0}, "^batch_size must be an int from 1 to"), ({"batch_size": None}, "^batch_size"),
    ({"shuffle": "no"}, "^shuffle must be True or False, got 'no'$"),
    ({"shuffle": 0}, "^shuffle must be True or False"),
    ({"progress": None}, "^progress must be True or False"),
    ({"seed": -1}, r"^seed must be None or an int from 0 to 2\*\*128 - 1, got -1$"),
    ({"seed": 1.5}, "^seed must be None or an int"),
    ({"lr": float("nan")}, "lr"),
    ({"validation_data": (np.zeros((2, 5, 5, 1)), [0, 1])}, r"^validation_data: layer 2 \(Flatten\)"),
    ({"validation_data": (np.zeros((2, 12, 12, 1)), [0, 4])},
     r"^validation_data: class ids must lie in \[0, 4\)"),
    ({"validation_data": (np.zeros((2, 12, 12, 1)), [0, 1, 2])},
     r"^validation_data: got 2 samples but labels of shape \(3,\)$"),
    ({"validation_data": (np.zeros((0, 12, 12, 1)), [])},
     r"^validation_data: x_val has no sample \(shape \(0, 12, 12, 1\)\): pass at least one, or "
     "validation_data=None$"),
    ({"validation_data": np.zeros((2, 12, 12, 1))},
     r"^validation_data must be a pair \(x_val, y_val\), as a tuple or list, got an array of shape "
     r"\(2, 12, 12, 1\)$"),
    ({"validation_data": [np.zeros((2, 12, 12, 1))]}, r"^validation_data must be a pair \(x_val, y_val\)"),
    ({"validation_data": (np.zeros((2, 12, 12, 1)), [0, 1], None)}, "^validation_data must be a pair"),
    ({"validation_data": {"x": np.zeros((2, 12, 12, 1)), "y": [0, 1]}}, "^validation_data must be a pair"),
], ids=lambda value: str(value)[:40])
def test_fit_refuses_bad_arguments_before_the_first_step(kwargs, message):
    x, y = bars(8)
    net = small_cnn()
    before = state_of(net)
    with pytest.raises(ValueError, match=message):
        net.fit(x, y, **{"progress": False, **kwargs})
    assert_same_state(state_of(net), before)


def test_fit_refuses_validation_samples_of_another_shape_before_the_first_step():
    """A Flatten() takes any shape until training fixes it to x's: validation samples that
    would pass before are refused at once, not after an epoch."""
    x, y = bars(20)
    net = Network([Flatten(), FullyConnected((144, 4))], loss=SoftmaxCrossEntropy())
    before = state_of(net)
    for x_val in (x.reshape(20, 144), x.reshape(20, 6, 24, 1)):
        assert net._trace(x_val.shape[1:])[0] == len(net.layers)     # each one the layers take
        with pytest.raises(ValueError, match=re.escape(
                f"validation_data: x_val holds samples of shape {x_val.shape[1:]}, but the training x "
                "holds samples of shape (12, 12, 1): layer 0 (Flatten) takes the shape it first "
                "sees, the training samples', and then no other")):
            net.fit(x, y, validation_data=(x_val, y), progress=False)
        assert_same_state(state_of(net), before)
        assert net.layers[0].input_shape is None and net.input_shape == (12, 12, 1)


def test_fit_validates_an_all_convolutional_network_on_images_of_another_size():
    """Without a Flatten() to fix, validation images may be larger than the training ones,
    as predict takes them."""
    x, y = bars(20)
    net = Network([Conv((3, 3, 1, 4), activation=relu), GlobalAvgPool(), FullyConnected((4, 4))],
                  loss=SoftmaxCrossEntropy())
    x_val = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    history = net.fit(x, y, epochs=1, batch_size=5, validation_data=(x_val, y), progress=False)
    assert np.isfinite(history["val_loss"][0])


def dense_batchnorm_network():
    return Network([Flatten(), FullyConnected((144, 6)), BatchNorm(6, activation=relu),
                    FullyConnected((6, 4))], loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("count, batch_size, message", [
    (10, 3, "but 10 samples in batches of 3 leave 1 sample for the last batch of every epoch: pass a "
            "batch_size that leaves more or none (batch_size=4 does), or drop 1 sample (x[:9], y[:9])"),
    (21, 10, "but 21 samples in batches of 10 leave 1 sample for the last batch of every epoch: pass a "
             "batch_size that leaves more or none (batch_size=11 does), or drop 1 sample (x[:20], y[:20])"),
    (10, 1, "but batch_size is 1: pass batch_size=2 or more"),
    (1, 50, "but fit got 1 sample: pass at least 2"),
])
def test_fit_refuses_a_batch_of_one_for_a_dense_batchnorm_before_the_first_step(count, batch_size, message):
    x, y = bars(count)
    net = dense_batchnorm_network()
    before = state_of(net)
    with pytest.raises(ValueError, match="^" + re.escape(
            f"layer 2 (BatchNorm) trains on batches of at least 2 samples, {message}") + "$"):
        net.fit(x, y, epochs=2, batch_size=batch_size, progress=False)
    assert_same_state(state_of(net), before)
    assert np.all(net.layers[2].running_var == 1)


def test_fit_takes_every_batch_a_batchnorm_can_train_on():
    x, y = bars(10)
    history = dense_batchnorm_network().fit(x, y, batch_size=4, progress=False)   # 4, 4 and 2
    assert len(history["loss"]) == 1
    conv = Network([Conv((3, 3, 1, 2)), BatchNorm(2), Flatten(), FullyConnected((200, 4))],
                   loss=SoftmaxCrossEntropy())
    conv.fit(x, y, batch_size=3, progress=False)        # a last image of 10x10 values per channel


def test_fit_with_zero_epochs_changes_nothing():
    x, y = bars(8)
    net = small_cnn()
    before = state_of(net)
    assert net.fit(x, y, epochs=0, progress=False) == {"loss": [], "accuracy": []}
    assert_same_state(state_of(net), before)


def test_summary_prints_output_shapes_and_parameter_counts_once(capsys):
    np.random.seed(0)
    net = course_cnn()
    assert net.summary(input_shape=(28, 28, 1)) is None      # a REPL shows only the print
    table = capsys.readouterr().out
    assert table.count("total parameters") == 1
    lines = table.splitlines()
    for shape, count in [("(None, 26, 26, 16)", "160"), ("(None, 12, 12, 32)", "8,224"),
                         ("(None, 6, 6, 32)", "0"), ("(None, 1152)", "0"),
                         ("(None, 256)", "295,168"), ("(None, 10)", "2,570")]:
        assert any(shape in line and line.rstrip().endswith(" " + count) for line in lines), shape
    assert "total parameters: 306,122 (float32)" in table


SUMMARY_WITHOUT_A_SHAPE = ("summary needs the shape of one input sample, and this network has "
                           "seen none yet: pass input_shape=(H, W, C), such as input_shape=(28, 28, 1), "
                           "or run the network on data first (predict, fit or train_step)")


def test_summary_before_any_data_says_to_pass_input_shape_or_run_the_network(capsys):
    for net in (Network([Flatten(), FullyConnected((16, 3))], loss=SoftmaxCrossEntropy()),
                Network([Conv((3, 3, 1, 2)), GlobalAvgPool()], loss=MeanSquaredError())):
        with pytest.raises(ValueError, match=f"^{re.escape(SUMMARY_WITHOUT_A_SHAPE)}$"):
            net.summary()
    net.summary(input_shape=(4, 4, 1))
    assert "(None, 2, 2, 2)" in capsys.readouterr().out
    for shape in (5, "28", (28, 0, 1), (28.0, 28, 1), ()):
        with pytest.raises(ValueError, match=r"^input_shape must be a shape: a tuple of 1 to 32 ints >= 1 "
                                             r"such as \(28, 28, 1\), got "):
            net.summary(input_shape=shape)


def test_summary_knows_the_input_shape_once_the_network_has_seen_data(capsys):
    net = small_cnn()
    with pytest.raises(ValueError, match="input_shape"):
        net.summary()
    net.predict(bars(2)[0])
    net.summary()
    assert "(None, 4)" in capsys.readouterr().out
    mlp = Network([Flatten((4, 4, 1)), FullyConnected((16, 3))], loss=SoftmaxCrossEntropy())
    text = io.StringIO()
    mlp.summary(file=text)
    assert "(None, 16)" in text.getvalue() and capsys.readouterr().out == ""


# ======================================================== interrupted and failed steps

def interruptible_network():
    """Adam and SGD with momentum, with updates large enough for interrupts to land in them."""
    np.random.seed(3)
    return Network([
        Conv((3, 3, 1, 4), padding=1, activation=relu, optimizer=AdamOptimizer()),
        Flatten((8, 8, 4)),
        FullyConnected((256, 384), activation=relu, optimizer=SGDOptimizer(momentum=0.9)),
        FullyConnected((384, 384), activation=relu, optimizer=AdamOptimizer()),
        FullyConnected((384, 4), optimizer=AdamOptimizer()),
    ], loss=SoftmaxCrossEntropy())


def steps_taken(net):
    """The step count every optimizer state agrees on; fails if they disagree."""
    counts = {state.get("step", 0) if state else 0
              for layer in net.layers if layer.params
              for state in [layer.optimizer.state.get(name) for name in layer.params]}
    assert len(counts) == 1, f"optimizer step counts disagree across layers: {counts}"
    return counts.pop()


def interrupt_fits_at_random_moments(trials, seed=0):
    """Interrupt fit with SIGINT at random moments; check each time that the network is
    exactly as after some whole number of steps. Prints the step counts interrupted at."""
    x, y = bars(64, size=8)
    reference = interruptible_network()
    after = [state_of(reference)]
    for start in range(0, 2 * len(x), 8):
        reference.train_step(x[start % 64:start % 64 + 8], y[start % 64:start % 64 + 8], lr=1e-3)
        after.append(state_of(reference))
    started = time.perf_counter()
    interruptible_network().fit(x, y, epochs=2, batch_size=8, shuffle=False, progress=False)
    duration = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    landed = []
    for _ in range(trials):
        net = interruptible_network()
        timer = threading.Timer(rng.uniform(0, duration), os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            try:
                net.fit(x, y, epochs=2, batch_size=8, shuffle=False, progress=False)
            finally:
                timer.cancel()
                timer.join()
                time.sleep(0.001)           # a signal sent just now is handled here
        except KeyboardInterrupt:
            pass
        steps = steps_taken(net)
        assert_same_state(state_of(net), after[steps])
        landed.append(steps)
    print(" ".join(map(str, landed)))


@pytest.mark.slow
def test_an_interrupt_leaves_the_network_before_or_after_a_whole_step():
    """Ctrl-C at 40 random moments of fit, each in a fresh process state (a subprocess, so a
    stray SIGINT cannot reach the test runner)."""
    script = "from tests.test_network import interrupt_fits_at_random_moments as run; run(40)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    landed = [int(steps) for steps in done.stdout.split()]
    assert len(landed) == 40 and len(set(landed)) >= 6, landed


def test_an_error_while_the_update_is_prepared_changes_nothing(monkeypatch):
    x, y = bars(8, size=8)
    net, fresh = interruptible_network(), interruptible_network()
    before = state_of(net)
    real_zeros_like, calls = np.zeros_like, []

    def zeros_like_failing_at_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise MemoryError("no memory for the optimizer state")
        return real_zeros_like(*args, **kwargs)

    monkeypatch.setattr(np, "zeros_like", zeros_like_failing_at_the_fifth)
    with pytest.raises(MemoryError):
        net.train_step(x, y)
    monkeypatch.setattr(np, "zeros_like", real_zeros_like)
    assert steps_taken(net) == 0
    assert all(layer.optimizer.state == {} for layer in net.layers if layer.params)
    assert_same_state(state_of(net), before)
    assert net.train_step(x, y) == fresh.train_step(x, y)
    assert_same_state(state_of(net), state_of(fresh))


# ================================================ training and inference modes, predict_proba

def test_dropout_drops_while_training_and_never_while_predicting():
    np.random.seed(0)
    x, y = bars(16, size=8)
    net = Network([Flatten((8, 8, 1)), cnnc.Dropout(0.5, seed=0), FullyConnected((64, 4))],
                  loss=SoftmaxCrossEntropy())
    first = net.predict(x)
    np.testing.assert_array_equal(net.predict(x), first)      # inference: deterministic
    losses = {net.loss_and_grads(x, y)[0] for _ in range(3)}
    assert len(losses) == 3                                    # training: a new mask each pass
    assert all(layer.training is False for layer in net.layers)
    np.testing.assert_array_equal(net.predict(x), first)


def test_predict_proba_is_the_softmax_of_predict():
    x, _ = bars(10)
    net = small_cnn(dtype=np.float64)
    logits = net.predict(x)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = net.predict_proba(x, batch_size=3)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-12)


def test_predict_proba_needs_a_softmax_network():
    net = Network([Flatten((2,)), FullyConnected((2, 3))], loss=MeanSquaredError())
    with pytest.raises(ValueError, match="predict_proba needs a network with a SoftmaxCrossEntropy"):
        net.predict_proba(np.zeros((1, 2)))


# ============================================================ the course CNN and PyTorch

def course_cnn_with_biases(dtype, rng):
    """course_cnn with weights of He scale and nonzero biases drawn from rng, so that every
    bias and its gradient take part."""
    net = course_cnn(dtype=dtype)
    for layer in net.layers:
        if layer.params:
            w, b = layer.params["w"], layer.params["b"]
            w[...] = rng.normal(size=w.shape) * np.sqrt(2.0 / np.prod(w.shape[:-1]))
            b[...] = rng.normal(size=b.shape) * 0.1
    return net


def torch_course_cnn(torch, net):
    """The course CNN written out in torch, with the weights of net (a course_cnn)."""
    F = torch.nn.functional

    class CourseCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            conv1, conv2, _, _, fc1, fc2 = net.layers
            self.conv1 = torch.nn.Parameter(filters_to_torch(conv1.params["w"]).clone())
            self.b1 = torch.nn.Parameter(torch.from_numpy(conv1.params["b"].copy()))
            self.conv2 = torch.nn.Parameter(filters_to_torch(conv2.params["w"]).clone())
            self.b2 = torch.nn.Parameter(torch.from_numpy(conv2.params["b"].copy()))
            # torch.nn.Linear keeps (out, in); cnnc keeps (in, out): use x @ w directly
            self.fc1 = torch.nn.Parameter(torch.from_numpy(fc1.params["w"].copy()))
            self.fb1 = torch.nn.Parameter(torch.from_numpy(fc1.params["b"].copy()))
            self.fc2 = torch.nn.Parameter(torch.from_numpy(fc2.params["w"].copy()))
            self.fb2 = torch.nn.Parameter(torch.from_numpy(fc2.params["b"].copy()))

        def forward(self, x_nchw):
            h = F.leaky_relu(F.conv2d(x_nchw, self.conv1, self.b1, stride=1), 0.01)
            h = F.leaky_relu(F.conv2d(h, self.conv2, self.b2, stride=2), 0.01)
            h = F.max_pool2d(h, 2)
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # cnnc flattens NHWC in C order
            h = F.relu(h @ self.fc1 + self.fb1)
            return h @ self.fc2 + self.fb2

        def as_cnnc(self, grads=False):
            """Per cnnc layer, its {"w", "b"} (or their gradients) in cnnc layout ({} for
            MaxPool and Flatten)."""
            def value(p):
                return (p.grad if grads else p).detach().numpy()
            return [{"w": filters_from_torch(self.conv1.grad if grads else self.conv1),
                     "b": value(self.b1)},
                    {"w": filters_from_torch(self.conv2.grad if grads else self.conv2),
                     "b": value(self.b2)},
                    {}, {},
                    {"w": value(self.fc1), "b": value(self.fb1)},
                    {"w": value(self.fc2), "b": value(self.fb2)}]

    return CourseCNN()


def course_batch(dtype, rng):
    x = rng.uniform(0.0, 1.0, size=(8, 28, 28, 1)).astype(dtype)
    y = rng.integers(0, 10, size=8)
    return x, y


@pytest.mark.parametrize("label_kind", ["ids", "onehot"])
def test_course_cnn_loss_and_grads_match_torch_float64(torch, label_kind):
    rng = np.random.default_rng(41)
    net = course_cnn_with_biases(np.float64, rng)
    x, y = course_batch(np.float64, rng)
    labels = y if label_kind == "ids" else np.eye(10)[y]
    model = torch_course_cnn(torch, net)
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]

    loss, grads = net.loss_and_grads(x, labels)
    t_loss = torch.nn.functional.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y))
    t_loss.backward()

    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    assert len(grads) == len(net.layers) == 6
    assert grads[2] == {} and grads[3] == {}
    for depth, (ours, theirs) in enumerate(zip(grads, model.as_cnnc(grads=True))):
        assert set(ours) == set(theirs), depth
        for name in theirs:
            assert ours[name].shape == net.layers[depth].params[name].shape
            assert np.abs(theirs[name]).max() > 0, (depth, name)  # a real gradient
            assert_close(ours[name], theirs[name], np.float64, 1e-9)
    for layer, saved in zip(net.layers, before):  # loss_and_grads changes no weight
        for name, value in saved.items():
            np.testing.assert_array_equal(layer.params[name], value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_course_cnn_five_adam_steps_match_torch(torch, dtype):
    rng = np.random.default_rng(42)
    net = course_cnn_with_biases(dtype, rng)
    model = torch_course_cnn(torch, net)
    topt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    for _ in range(5):
        x, y = course_batch(dtype, rng)
        loss = net.train_step(x, y, lr=1e-3)
        topt.zero_grad()
        t_loss = torch.nn.functional.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y))
        t_loss.backward()
        topt.step()
        np.testing.assert_allclose(loss, t_loss.item(), rtol=rtol)
    for depth, (layer, theirs, first) in enumerate(zip(net.layers, model.as_cnnc(), start)):
        assert set(layer.params) == set(theirs)
        for name, value in theirs.items():
            ours = layer.params[name]
            assert ours.dtype == np.dtype(dtype)
            assert not np.array_equal(ours, first[name]), (depth, name)  # it did train
            if dtype == np.float64:
                np.testing.assert_allclose(ours, value, rtol=1e-9, atol=1e-12,
                                           err_msg=f"layer {depth} {name}")
                continue
            # float32: Adam's first step is lr * g / (|g| + eps) whatever the size of g, so
            # where a gradient came out ~1e-8 (float32 rounding noise of a sum that nearly
            # cancels; typical entries are ~1e-3) both libraries move by a noise-driven
            # amount; torch float32 is no closer to a float64 run there than cnnc is.
            # So: almost every weight within rtol 1e-4, and every one within 2% of the
            # largest distance Adam can travel in 5 steps (5 * lr).
            loose = ~np.isclose(ours, value, rtol=1e-4, atol=1e-6)
            assert loose.mean() < 1e-4, (depth, name, int(loose.sum()), loose.size)
            np.testing.assert_allclose(ours, value, rtol=1e-4, atol=0.02 * 5 * 1e-3,
                                       err_msg=f"layer {depth} {name}")


def test_conv_batchnorm_network_takes_torchs_adam_steps(torch):
    """Conv -> BatchNorm(relu) -> GlobalAvgPool -> FC with Adam, float64: three training
    steps give torch's weights and running statistics, then the same inference output."""
    rng = np.random.default_rng(43)
    np.random.seed(43)
    net = Network([Conv((3, 3, 2, 4), padding="same", dtype=np.float64),
                   BatchNorm(4, activation=relu, dtype=np.float64), GlobalAvgPool(),
                   FullyConnected((4, 3), dtype=np.float64)], loss=SoftmaxCrossEntropy())
    conv, norm, _, fc = net.layers
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[0].weight.copy_(filters_to_torch(conv.params["w"]))
        model[0].bias.copy_(torch.from_numpy(conv.params["b"]))
        model[5].weight.copy_(torch.from_numpy(fc.params["w"].T.copy()))
        model[5].bias.copy_(torch.from_numpy(fc.params["b"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        x, y = rng.normal(size=(6, 5, 5, 2)), rng.integers(0, 3, 6)
        net.train_step(x, y, lr=1e-2)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    assert_close(conv.params["w"], filters_from_torch(model[0].weight.detach()), np.float64, 1e-9)
    assert_close(norm.params["w"], model[1].weight.detach().numpy(), np.float64, 1e-9)
    assert_close(norm.running_var, model[1].running_var.numpy(), np.float64, 1e-9)
    assert_close(fc.params["w"], model[5].weight.detach().numpy().T, np.float64, 1e-9)
    model.eval()
    x = rng.normal(size=(4, 5, 5, 2))
    assert_close(net.predict(x), model(nhwc_to_torch(x)).detach().numpy(), np.float64, 1e-9)


def test_predict_runs_a_batch_in_chunks_that_give_the_same_bits(monkeypatch):
    """Inference takes a batch a chunk of samples at a time, each step's input and output
    within about _INFERENCE_CHUNK_BYTES (a power of two times _INFERENCE_CHUNK_SAMPLES), so
    that memory peaks at a chunk's activations; steps after the images have shrunk take
    larger chunks. The compiled kernels compute every sample alike whatever the chunk, so
    the outputs do not change by one bit; NumPy's BLAS may round another number of rows
    otherwise."""
    from cnnc import network as network_module
    np.random.seed(0)
    net = Network([Conv((3, 3, 3, 16), padding=1, activation=relu), MaxPool(2), Flatten(),
                   FullyConnected((16 * 4 * 4, 5), activation=relu), FullyConnected((5, 3))],
                  loss=SoftmaxCrossEntropy())
    x = np.random.default_rng(0).standard_normal((37, 8, 8, 3)).astype(np.float32)
    whole = net.predict(x)
    calls = []
    for name in ("conv2d_maxpool_inference", "dense_forward"):
        kernel = getattr(cnnc.kernels, name)
        monkeypatch.setattr(cnnc.kernels, name, lambda *args, kernel=kernel, name=name:
                            calls.append((name, args[1].shape[-1], len(args[0])))
                            or kernel(*args))
    # the convolution and pooling step, the Flatten and the first FullyConnected have 256
    # float32 values a sample at most, 4 samples a chunk; the last layer's 5 let all 37 in
    monkeypatch.setattr(network_module, "_INFERENCE_CHUNK_BYTES", 4 * 256 * 4)
    monkeypatch.setattr(network_module, "_INFERENCE_CHUNK_SAMPLES", 1)
    chunked = net.predict(x)
    chunk_calls = [("conv2d_maxpool_inference", 16, 4), ("dense_forward", 5, 4)]
    assert calls == chunk_calls * 9 + [("conv2d_maxpool_inference", 16, 1),
                                       ("dense_forward", 5, 1), ("dense_forward", 3, 37)]
    if cnnc.backend() == "compiled":
        np.testing.assert_array_equal(chunked, whole)
    else:
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
