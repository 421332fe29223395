"""cnnc.export.to_torch and from_torch: the module computes what the network predicts, and
the way back gives the same network."""
import sys

import numpy as np
import pytest

from cnnc import (AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected, GlobalAvgPool, MaxPool,
                  Network, SoftmaxCrossEntropy, export, leaky_relu)

torch = pytest.importorskip("torch", reason="PyTorch is an optional dependency: pip install 'cnnc[torch]'")


def networks(dtype=np.float32):
    """Every kind of layer and activation, padding, stride and flatten cnnc has, with an input shape."""
    np.random.seed(0)
    yield "every layer", (11, 13, 3), Network([
        Conv((4, 4, 3, 5), strides=2, padding="same", dtype=dtype), BatchNorm(5, activation="relu", dtype=dtype),
        MaxPool(2), Dropout(0.3),
        Conv((3, 3, 5, 6), padding=1, activation=leaky_relu, dtype=dtype), AvgPool(2, 1), Flatten(),
        FullyConnected((24, 8), dtype=dtype), BatchNorm(8, activation="tanh", dtype=dtype), Dropout(0.2),
        FullyConnected((8, 3), activation="sigmoid", dtype=dtype)], loss=SoftmaxCrossEntropy())
    yield "global pooling", (9, 9, 2), Network([
        Conv((3, 3, 2, 4), padding="valid", activation="relu", dtype=dtype), AvgPool(3, 2),
        Conv((1, 1, 4, 6), dtype=dtype), GlobalAvgPool(), FullyConnected((6, 5), dtype=dtype)],
        loss=SoftmaxCrossEntropy())
    yield "MLP", (4, 5, 1), Network([
        Flatten((4, 5, 1)), FullyConnected((20, 7), activation=leaky_relu, dtype=dtype),
        FullyConnected((7, 4), dtype=dtype)], loss=SoftmaxCrossEntropy())


def trained(net, shape, steps=3):
    """A few steps, so that BatchNorm's running statistics are not their start values."""
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = rng.normal(size=(8,) + shape)
        net.train_step(x, rng.integers(0, net.predict(x[:1]).shape[1], 8), lr=1e-2)
    return net


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-4), (np.float64, 1e-10)], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["every layer", "global pooling", "MLP"])
def test_the_torch_module_computes_what_the_network_predicts(name, dtype, tolerance):
    _, shape, net = next(case for case in networks(dtype) if case[0] == name)
    net = trained(net, shape)
    model = export.to_torch(net)
    assert not model.training
    assert all(type(m).__module__.startswith("torch.nn") for m in model.modules())
    for batch in (1, 7):
        x = np.random.default_rng(batch).normal(size=(batch,) + shape).astype(dtype)
        with torch.no_grad():
            theirs = model(nchw(x)).numpy()
        np.testing.assert_allclose(theirs, net.predict(x), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", ["every layer", "global pooling", "MLP"])
def test_cnnc_to_torch_and_back_predicts_the_same_to_the_bit(name):
    _, shape, net = next(case for case in networks() if case[0] == name)
    net = trained(net, shape)
    back = export.from_torch(export.to_torch(net), input_shape=shape)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in net.layers]
    assert [repr(layer.activation) for layer in back.layers] == [repr(layer.activation) for layer in net.layers]
    x = np.random.default_rng(2).normal(size=(5,) + shape).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))


def test_a_module_trained_in_torch_comes_back_with_its_weights():
    _, shape, net = next(networks())
    model = export.to_torch(trained(net, shape)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = np.random.default_rng(3).normal(size=(6,) + shape).astype(np.float32)
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(nchw(x)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
        optimizer.step()
    model.eval()
    back = export.from_torch(model, input_shape=shape)
    with torch.no_grad():
        np.testing.assert_allclose(back.predict(x), model(nchw(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_what_has_no_counterpart_is_refused_by_name():
    with pytest.raises(ValueError, match="needs the shape of one input sample"):
        export.to_torch(Network([Conv((3, 3, 1, 2))], loss=SoftmaxCrossEntropy()))
    with pytest.raises(ValueError, match="has no cnnc layer"):
        export.from_torch(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Softmax(dim=1)))
    with pytest.raises(ValueError, match="follows MaxPool2d"):
        export.from_torch(torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.ReLU()))
    with pytest.raises(ValueError, match="needs input_shape"):
        export.from_torch(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(),
                                              torch.nn.Linear(8, 2)))
    with pytest.raises(ValueError, match="non-empty torch.nn.Sequential"):
        export.from_torch(torch.nn.Linear(2, 2))


def test_without_torch_the_error_names_the_extra(monkeypatch):
    _, shape, net = next(networks())
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'cnnc\[torch\]'"):
        export.to_torch(net, input_shape=shape)
