"""cnnc.export.to_onnx: the ONNX model, run by ONNX Runtime, gives what net.predict gives."""
import contextlib
import errno
import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc import (AbstractActivation, AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected,
                  GlobalAvgPool, MaxPool, Network, SoftmaxCrossEntropy, export, get_default_dtype,
                  leaky_relu, relu, set_default_dtype, sigmoid, tanh)
from cnnc.activations import LeakyReLU
from cnnc.export import _onnx
from cnnc.layers import Layer

from .conftest import distinct_statistics

onnx = pytest.importorskip("onnx", reason="the ONNX export needs onnx: pip install 'cnnc[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime",
                                  reason="running the exported models needs onnxruntime")


def stack(input_shape, makers, dtype=np.float32):
    """A network of the layers makers make, each maker given the shape of one sample it
    receives (so a FullyConnected can size itself after a Flatten)."""
    shape, layers, previous = input_shape, [], get_default_dtype()
    set_default_dtype(dtype)
    try:
        for make in makers:
            layers.append(make(shape))
            shape = layers[-1].output_shape(shape)
    finally:
        set_default_dtype(previous)
    return Network(layers, loss=SoftmaxCrossEntropy())


def fc(n_out, activation=relu):
    return lambda shape: FullyConnected((shape[0], n_out), activation=activation)


NETWORKS = {
    # "same" with an even kernel and stride 2 pads 1 on top, 2 at the bottom of 9 rows
    "conv-same-even-stride-2": ((9, 11, 3), [
        lambda s: Conv((4, 4, 3, 6), strides=2, padding="same", activation=relu),
        lambda s: BatchNorm(6, activation=LeakyReLU(0.2)),
        lambda s: Conv((3, 2, 6, 8), strides=(1, 2), padding=(1, 0), activation=tanh),
        lambda s: MaxPool(2),
        lambda s: Flatten(),
        fc(16, sigmoid),
        lambda s: BatchNorm(16, activation=relu),
        lambda s: Dropout(0.3, seed=0),
        fc(5, "linear"),
    ]),
    "avgpool-overlapping-global": ((12, 12, 2), [
        lambda s: Conv((3, 3, 2, 4), padding="valid", activation=leaky_relu),
        lambda s: AvgPool(3, strides=2),
        lambda s: Conv((2, 2, 4, 6), padding="same", activation=sigmoid),
        lambda s: MaxPool((2, 1), strides=(1, 2)),
        lambda s: BatchNorm(6),
        lambda s: GlobalAvgPool(),
        lambda s: Dropout(0.5, seed=0),
        fc(3, tanh),
    ]),
    "mlp-flat-input": ((5, 4), [
        lambda s: Flatten(),
        fc(12, leaky_relu),
        lambda s: BatchNorm(12, activation=sigmoid),
        lambda s: Dropout(0.1, seed=0),
        fc(4, tanh),
    ]),
    "fc-first": ((7,), [fc(6, relu), fc(3, "linear")]),
    # a BatchNorm on the NHWC input must transpose it to NCHW itself (H, W, C all differ)
    "batchnorm-first": ((4, 5, 3), [
        lambda s: BatchNorm(3, activation=tanh),
        lambda s: Flatten(),
        fc(3, "linear"),
    ]),
}


def trained(input_shape, makers, dtype=np.float32, steps=2):
    """The network after a few training steps, so that BatchNorm's running statistics and
    every weight are far from their initial values."""
    np.random.seed(0)
    net = stack(input_shape, makers, dtype)
    rng = np.random.default_rng(0)
    classes = net.layers[-1].shape[1]
    for _ in range(steps):
        x = rng.normal(size=(16,) + input_shape)
        net.train_step(x, rng.integers(0, classes, 16), lr=1e-2)
    return net


def run(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x.astype(np.float32)})[0]


def assert_same_as_predict(net, path):
    onnx.checker.check_model(onnx.load(str(path)))
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.normal(size=(batch,) + net.input_shape).astype(np.float32)
        expected = net.predict(x)
        got = run(path, x)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_output_matches_predict(name, tmp_path):
    net = trained(*NETWORKS[name])
    path = tmp_path / "net.onnx"
    assert export.to_onnx(net, path) == path
    assert_same_as_predict(net, path)


def test_float64_network_exports_float32_weights(tmp_path):
    net = trained(*NETWORKS["conv-same-even-stride-2"], dtype=np.float64)
    assert net.dtype == np.float64
    export.to_onnx(net, tmp_path / "net.onnx")
    model = onnx.load(str(tmp_path / "net.onnx"))
    assert {w.data_type for w in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    assert_same_as_predict(net, tmp_path / "net.onnx")


def test_images_out_stay_nhwc(tmp_path):
    """A network ending on images, not trained (its output is not (N, classes)): BatchNorm's
    running statistics are set by hand."""
    np.random.seed(2)
    net = stack((8, 9, 3), [
        lambda s: Conv((3, 3, 3, 4), padding=1, activation=relu),
        lambda s: BatchNorm(4, activation=tanh),
        lambda s: Dropout(0.2),
        lambda s: AvgPool(2),
        lambda s: Conv((1, 1, 4, 2), activation="linear"),
    ])
    rng = np.random.default_rng(3)
    norm = net.layers[1]
    norm.running_mean[:] = rng.normal(size=4)
    norm.running_var[:] = rng.uniform(0.5, 2, size=4)
    norm.params["w"][:] = rng.normal(size=4)
    net.predict(np.zeros((1, 8, 9, 3), np.float32))
    export.to_onnx(net, tmp_path / "net.onnx")
    assert_same_as_predict(net, tmp_path / "net.onnx")
    assert run(tmp_path / "net.onnx", np.zeros((2, 8, 9, 3))).shape == (2, 4, 4, 2)


def test_input_is_nhwc_float32_with_a_dynamic_batch(tmp_path):
    net = trained(*NETWORKS["avgpool-overlapping-global"])
    export.to_onnx(net, tmp_path / "net.onnx", input_shape=(12, 12, 2))
    model = onnx.load(str(tmp_path / "net.onnx"))
    (inputs,), (outputs,) = model.graph.input, model.graph.output
    dims = inputs.type.tensor_type.shape.dim
    assert inputs.name == "input" and outputs.name == "output"
    assert inputs.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [12, 12, 2]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", _onnx.OPSET)]
    assert model.ir_version == _onnx.IR_VERSION
    assert (model.producer_name, model.producer_version, model.graph.name) == ("cnnc", cnnc.__version__, "cnnc")


def test_nodes_and_weights_are_named_after_their_layer(tmp_path):
    """Each node and weight is named after the layer it comes from (its number, then the op
    or cnnc's parameter name), so that a viewer of the graph can tell them apart; the last
    transpose, back to NHWC, belongs to no layer."""
    np.random.seed(0)
    net = stack((6, 6, 2), [lambda s: Conv((3, 3, 2, 3), activation=relu), lambda s: BatchNorm(3),
                            lambda s: Dropout(0.2), lambda s: GlobalAvgPool(), fc(2, "linear")])
    export.to_onnx(net, tmp_path / "net.onnx", input_shape=(6, 6, 2))
    graph = onnx.load(str(tmp_path / "net.onnx")).graph
    assert [node.name for node in graph.node] == [
        "layer0.Transpose_0", "layer0.Conv_1", "layer0.Relu_2", "layer1.BatchNormalization_3",
        "layer2.Dropout_4", "layer3.GlobalAveragePool_5", "layer3.Flatten_6", "layer4.Gemm_7"]
    assert [w.name for w in graph.initializer] == [
        "layer0.w", "layer0.b", "layer1.w", "layer1.b", "layer1.running_mean", "layer1.running_var",
        "layer2.ratio", "layer4.w", "layer4.b"]
    np.random.seed(0)
    net = stack((6, 6, 2), [lambda s: Conv((3, 2, 2, 3), strides=(1, 2)), lambda s: MaxPool(2)])
    export.to_onnx(net, tmp_path / "images.onnx", input_shape=(6, 6, 2))
    graph = onnx.load(str(tmp_path / "images.onnx")).graph
    assert [node.name for node in graph.node] == ["layer0.Transpose_0", "layer0.Conv_1", "layer1.MaxPool_2",
                                                  "Transpose_3"]


def test_every_attribute_is_written(tmp_path):
    """Also those ONNX would infer or default: a reader need not know the defaults."""
    np.random.seed(0)
    net = stack((6, 6, 2), [lambda s: Conv((3, 2, 2, 3), strides=(1, 2), padding="same"),
                            lambda s: Flatten(), fc(2, "linear")])
    export.to_onnx(net, tmp_path / "flat.onnx", input_shape=(6, 6, 2))
    pooled = stack((6, 6, 2), [lambda s: GlobalAvgPool(), fc(2, "linear")])
    export.to_onnx(pooled, tmp_path / "pooled.onnx", input_shape=(6, 6, 2))
    attributes = [(node.op_type, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute})
                  for name in ("flat", "pooled") for node in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node
                  if node.op_type in ("Conv", "Flatten")]
    assert attributes == [("Conv", {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 0, 1, 0]}),
                          ("Flatten", {"axis": 1}), ("Flatten", {"axis": 1})]


class Scale(Layer):
    def output_shape(self, input_shape):
        return input_shape

    def forward(self, inputs):
        return 2 * inputs, 2 * inputs


class Softplus(AbstractActivation):
    def compute(self, x):
        return np.log1p(np.exp(x))


def test_unsupported_layer_or_activation_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"^to_onnx cannot export layer 1, Scale\(\) \(.*Scale\): "
                                         "it exports the layers Conv, "):
        export.to_onnx(Network([Flatten(), Scale()], SoftmaxCrossEntropy()), tmp_path / "a",
                       input_shape=(3,))
    net = Network([FullyConnected((3, 2), activation=Softplus())], SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match="activation Softplus()"):
        export.to_onnx(net, tmp_path / "b", input_shape=(3,))
    assert not list(tmp_path.iterdir())


def test_input_shape_needed(tmp_path):
    net = Network([Conv((3, 3, 1, 2)), Flatten(), fc(2)((72,))], SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match=r"input_shape=\(28, 28, 1\)"):
        export.to_onnx(net, tmp_path / "net.onnx")
    with pytest.raises(ValueError, match=r"^to_onnx: layer 0 \(Conv\): Conv .* expects 1 input channels"):
        export.to_onnx(net, tmp_path / "net.onnx", input_shape=(5, 5, 3))


def test_input_shape_of_the_wrong_kind_is_named(tmp_path):
    net = trained(*NETWORKS["fc-first"])
    for bad in (6, "abc", (), (7, 0), (7.0,), (True,)):
        with pytest.raises(ValueError, match=r"to_onnx input_shape must be .*\(H, W, C\)"):
            export.to_onnx(net, tmp_path / "net.onnx", input_shape=bad)
    assert not list(tmp_path.iterdir())


EPS, MOMENTUM, RATE = 0.1, 0.3, 0.25


def flattened_norm():
    """Conv -> Flatten -> BatchNorm(60, non-default eps and momentum) -> Dropout ->
    FullyConnected, each feature's statistics and scale its own, so that a BatchNorm read in
    the wrong feature order, or without its eps, predicts something else."""
    np.random.seed(4)
    net = stack((4, 5, 2), [
        lambda s: Conv((3, 3, 2, 3), padding=1, activation=relu), lambda s: Flatten(),
        lambda s: BatchNorm(60, eps=EPS, momentum=MOMENTUM), lambda s: Dropout(RATE), fc(4, "linear")])
    distinct_statistics(net.layers[2])
    net.predict(np.zeros((1, 4, 5, 2), np.float32))
    return net


def test_a_batch_norm_after_a_flatten_keeps_its_eps_and_feature_order(tmp_path):
    net = flattened_norm()
    export.to_onnx(net, tmp_path / "net.onnx")
    assert_same_as_predict(net, tmp_path / "net.onnx")


def in_training_mode(path):
    """The model at path with its BatchNormalization and Dropout nodes in training mode, and
    their outputs (BatchNormalization's running statistics too) among the graph's outputs;
    returns it and the names of those outputs by what they are."""
    model = onnx.load(str(path))
    graph = model.graph
    (norm,) = [node for node in graph.node if node.op_type == "BatchNormalization"]
    (dropout,) = [node for node in graph.node if node.op_type == "Dropout"]
    norm.attribute.append(onnx.helper.make_attribute("training_mode", 1))
    norm.output.extend(["running_mean", "running_var"])
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(True), "training"))
    dropout.input.append("training")
    names = {"running_mean": "running_mean", "running_var": "running_var",
             "dropout_in": dropout.input[0], "dropout_out": dropout.output[0]}
    graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                        for name in names.values())
    return model, names


def test_training_attributes_are_carried_momentum_and_dropout_rate(tmp_path):
    """BatchNormalization's momentum and Dropout's ratio only act in training mode: there, the
    running mean moves as cnnc's does in a step, and dropout keeps values scaled by
    1 / (1 - rate). (ONNX's running variance takes the batch's biased variance, where cnnc
    and torch take the unbiased one.)"""
    net = flattened_norm()
    export.to_onnx(net, tmp_path / "net.onnx")
    model, names = in_training_mode(tmp_path / "net.onnx")
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(6)
    x = rng.normal(size=(8, 4, 5, 2)).astype(np.float32)
    got = dict(zip(names, session.run(list(names.values()), {"input": x})))

    norm = net.layers[2]
    kept_var = (1 - MOMENTUM) * norm.running_var
    net.train_step(x, rng.integers(0, 4, 8), lr=0.1)
    np.testing.assert_allclose(got["running_mean"], norm.running_mean, rtol=1e-5, atol=1e-5)
    biased = (norm.running_var - kept_var) * (len(x) - 1) / len(x)
    np.testing.assert_allclose(got["running_var"], kept_var + biased, rtol=1e-5, atol=1e-5)

    kept = got["dropout_out"] != 0
    assert 0.1 < 1 - kept.mean() < 0.4
    np.testing.assert_allclose(got["dropout_out"][kept], got["dropout_in"][kept] / (1 - RATE), rtol=1e-6)


def test_without_onnx_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    net = trained(*NETWORKS["fc-first"])
    with pytest.raises(ImportError, match=r"pip install 'cnnc\[onnx\]'"):
        export.to_onnx(net, tmp_path / "net.onnx")


def test_importing_cnnc_loads_neither_onnx_nor_torch():
    code = "import sys, cnnc.export; assert not {'onnx', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"the old model")
    real = _onnx.atomic_write

    class DiskFullHalfway:
        def __init__(self, out):
            self.out = out

        def write(self, data):
            self.out.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    @contextlib.contextmanager
    def disk_full_halfway(target):
        with real(target) as out:
            yield DiskFullHalfway(out)

    monkeypatch.setattr(_onnx, "atomic_write", disk_full_halfway)
    with pytest.raises(OSError, match="No space left"):
        export.to_onnx(trained(*NETWORKS["fc-first"]), path)
    assert path.read_bytes() == b"the old model"
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]
