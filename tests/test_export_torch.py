"""cnnc.export.to_torch and from_torch: the module computes what the network predicts, the
way back gives the same network, and every attribute is carried or refused by name."""
import re
import sys

import numpy as np
import pytest

from cnnc import (AvgPool, BatchNorm, Conv, Dropout, Flatten, FullyConnected, GlobalAvgPool, MaxPool,
                  Network, SoftmaxCrossEntropy, export, leaky_relu)
from cnnc.activations import LeakyReLU

from .conftest import distinct_statistics

torch = pytest.importorskip("torch", reason="PyTorch is an optional dependency: pip install 'cnnc[torch]'")
nn = torch.nn


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
        Flatten((4, 5, 1)), FullyConnected((20, 7), activation=LeakyReLU(0.2), dtype=dtype),
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
    assert [carried(layer) for layer in back.layers] == [carried(layer) for layer in net.layers]
    x = np.random.default_rng(2).normal(size=(5,) + shape).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), net.predict(x))


def carried(layer):
    """What a layer holds besides its arrays and activation, that the conversions carry."""
    names = ("rate", "momentum", "eps", "pshape", "strides", "fshape", "shape")
    return {name: getattr(layer, name) for name in names if hasattr(layer, name)}


def test_a_module_trained_in_torch_comes_back_with_its_weights():
    _, shape, net = next(networks())
    model = export.to_torch(trained(net, shape)).train()
    x = np.random.default_rng(3).normal(size=(6,) + shape).astype(np.float32)
    for _ in range(2):      # plain SGD steps (importing torch.optim alone takes a second)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(nchw(x)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= 0.1 * parameter.grad
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


@pytest.mark.parametrize("function", ["to_torch", "from_torch"])
def test_without_torch_the_error_names_the_function_and_the_extra(function, monkeypatch):
    _, shape, net = next(networks())
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=rf"^cnnc\.export\.{function} needs PyTorch: pip install 'cnnc\[torch\]'$"):
        getattr(export, function)(net if function == "to_torch" else None, input_shape=shape)


# ---------------------------------------------------------------- a BatchNorm after a Flatten of images

SHAPE = (4, 5, 2)       # one sample, NHWC: the Flatten makes 4 * 5 * 3 = 60 features
EPS, MOMENTUM = 0.1, 0.3
# The NHWC position of each feature torch's Flatten makes from NCHW images of (4, 5, 3)
NCHW_ORDER = np.arange(60).reshape(4, 5, 3).transpose(2, 0, 1).ravel()


def flattened_norm(dtype):
    """Conv -> Flatten -> BatchNorm(60, non-default eps and momentum) -> FullyConnected, each
    feature's statistics and scale its own, so that a BatchNorm read in the wrong feature
    order, or without its eps, predicts something else."""
    np.random.seed(4)
    net = Network([Conv((3, 3, 2, 3), padding=1, activation="relu", dtype=dtype), Flatten(),
                   BatchNorm(60, eps=EPS, momentum=MOMENTUM, dtype=dtype),
                   FullyConnected((60, 4), dtype=dtype)], loss=SoftmaxCrossEntropy())
    distinct_statistics(net.layers[2])
    net.predict(np.zeros((1,) + SHAPE, dtype))
    return net


def batch(dtype, n=6):
    """n samples for flattened_norm and their labels."""
    rng = np.random.default_rng(n)
    return rng.normal(size=(n,) + SHAPE).astype(dtype), rng.integers(0, 4, n)


DTYPES = pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-4), (np.float64, 1e-12)],
                                 ids=["f32", "f64"])


@DTYPES
def test_to_torch_carries_a_batch_norm_after_a_flatten_with_its_eps_and_momentum(dtype, tolerance):
    net = flattened_norm(dtype)
    model = export.to_torch(net)
    (norm,) = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    assert (norm.eps, norm.momentum) == (EPS, MOMENTUM)
    x, y = batch(dtype)
    with torch.no_grad():
        np.testing.assert_allclose(model(nchw(x)).numpy(), net.predict(x), rtol=tolerance, atol=tolerance)
        model.train()(nchw(x))          # one training-mode forward moves the running statistics
    net.train_step(x, y, lr=0.1)        # ... as one cnnc step moves them
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(norm, name).numpy(), getattr(net.layers[2], name)[NCHW_ORDER],
                                   rtol=tolerance, atol=tolerance)


def randomized(model):
    """Every BatchNorm's running statistics and affine parameters drawn at random, so that a
    dropped or reordered one shows (torch starts them at 0 and 1)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
                size = norm.num_features
                norm.running_mean.copy_(torch.randn(size, generator=generator))
                norm.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                for parameter in (norm.weight, norm.bias):
                    if parameter is not None:
                        parameter.copy_(torch.randn(size, generator=generator))
    return model


def flattened_norm_module(dtype):
    """The torch counterpart of flattened_norm: Conv2d, ReLU, Flatten, BatchNorm1d, Linear."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.BatchNorm1d(60, eps=EPS, momentum=MOMENTUM), nn.Linear(60, 4))
    randomized(model)
    return model.to(torch.float64 if dtype == np.float64 else torch.float32).eval()


@DTYPES
def test_from_torch_reads_a_batch_norm_after_a_flatten_with_its_eps_and_momentum(dtype, tolerance):
    model = flattened_norm_module(dtype)
    net = export.from_torch(model, input_shape=SHAPE)
    assert net.dtype == dtype
    norm = net.layers[2]
    assert (type(norm), norm.eps, norm.momentum) == (BatchNorm, EPS, MOMENTUM)
    x, y = batch(dtype)
    with torch.no_grad():
        np.testing.assert_allclose(net.predict(x), model(nchw(x)).numpy(), rtol=tolerance, atol=tolerance)
        model.train()(nchw(x))
    net.train_step(x, y, lr=0.1)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(norm, name)[NCHW_ORDER], getattr(model[3], name).numpy(),
                                   rtol=tolerance, atol=tolerance)


# ---------------------------------------------------------------- every module kind from_torch reads

IMAGES, FEATURES = (6, 7, 3), (7,)

# (id, the modules, one sample's shape): every kind from_torch reads, across the attribute
# values it takes.
READ = [
    ("Conv2d", lambda: [nn.Conv2d(3, 4, 3)], IMAGES),
    ("Conv2d tuples", lambda: [nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 2))], IMAGES),
    ("Conv2d same even", lambda: [nn.Conv2d(3, 4, 4, padding="same")], IMAGES),
    ("Conv2d same odd/even", lambda: [nn.Conv2d(3, 4, (3, 2), padding="same")], IMAGES),
    ("Conv2d same even/odd", lambda: [nn.Conv2d(3, 4, (2, 3), padding="same")], IMAGES),
    ("Conv2d same odd 5", lambda: [nn.Conv2d(3, 4, (1, 5), padding="same")], IMAGES),
    ("Conv2d valid", lambda: [nn.Conv2d(3, 4, 3, padding="valid")], IMAGES),
    ("Conv2d stride 3", lambda: [nn.Conv2d(3, 2, 1, stride=3)], IMAGES),
    ("Conv2d bias None", lambda: [nn.Conv2d(3, 4, 2, padding=1, bias=False)], IMAGES),
    ("ZeroPad2d same stride 2", lambda: [nn.ZeroPad2d((1, 2, 1, 1)), nn.Conv2d(3, 4, 4, stride=2)], IMAGES),
    ("ZeroPad2d same stride 1", lambda: [nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(3, 4, (2, 4))], IMAGES),
    ("ZeroPad2d + Conv2d padding", lambda: [nn.ZeroPad2d(1), nn.Conv2d(3, 4, 3, padding=(1, 0))], IMAGES),
    ("ZeroPad2d twice", lambda: [nn.ZeroPad2d((1, 0, 1, 0)), nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 2, 3)],
     IMAGES),
    ("MaxPool2d", lambda: [nn.MaxPool2d(2)], IMAGES),
    ("MaxPool2d stride", lambda: [nn.MaxPool2d(3, stride=2)], IMAGES),
    ("MaxPool2d tuples", lambda: [nn.MaxPool2d((2, 3), stride=(1, 2), padding=0, dilation=1)], IMAGES),
    ("AvgPool2d", lambda: [nn.AvgPool2d(2)], IMAGES),
    ("AvgPool2d stride", lambda: [nn.AvgPool2d(3, stride=1)], IMAGES),
    ("AvgPool2d count_include_pad", lambda: [nn.AvgPool2d((2, 3), count_include_pad=False)], IMAGES),
    ("AvgPool2d divisor = window", lambda: [nn.AvgPool2d((2, 3), divisor_override=6)], IMAGES),
    ("AdaptiveAvgPool2d 1", lambda: [nn.AdaptiveAvgPool2d(1), nn.Flatten()], IMAGES),
    ("AdaptiveAvgPool2d (1, 1)", lambda: [nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1, -1), nn.Linear(3, 2)],
     IMAGES),
    ("Flatten images", lambda: [nn.Flatten(), nn.Linear(126, 3)], IMAGES),
    ("Flatten 1x1 images", lambda: [nn.Flatten()], (1, 1, 4)),
    ("Flatten features", lambda: [nn.Linear(7, 3), nn.Flatten()], FEATURES),
    ("Flatten rank 2", lambda: [nn.Flatten(), nn.Linear(20, 3)], (5, 4)),
    ("Dropout images", lambda: [nn.Dropout(0.3)], IMAGES),
    ("Dropout 0 inplace", lambda: [nn.Linear(7, 3), nn.Dropout(0.0, inplace=True)], FEATURES),
    ("Dropout after Flatten", lambda: [nn.Flatten(), nn.Dropout(0.5), nn.Linear(126, 3)], IMAGES),
    ("BatchNorm2d", lambda: [nn.BatchNorm2d(3)], IMAGES),
    ("BatchNorm2d eps momentum", lambda: [nn.BatchNorm2d(3, eps=0.5, momentum=0.7)], IMAGES),
    ("BatchNorm2d affine False", lambda: [nn.BatchNorm2d(3, affine=False)], IMAGES),
    ("BatchNorm2d bias False", lambda: [nn.BatchNorm2d(3, bias=False)], IMAGES),
    ("BatchNorm1d", lambda: [nn.BatchNorm1d(7, eps=1e-3, momentum=0.0)], FEATURES),
    ("BatchNorm1d affine False", lambda: [nn.BatchNorm1d(7, affine=False, momentum=1.0)], FEATURES),
    ("BatchNorm1d after Flatten", lambda: [nn.Flatten(), nn.BatchNorm1d(126, eps=0.2), nn.Linear(126, 2)],
     IMAGES),
    ("Linear", lambda: [nn.Linear(7, 4)], FEATURES),
    ("Linear bias None", lambda: [nn.Linear(7, 4, bias=False)], FEATURES),
    ("ReLU", lambda: [nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True)], IMAGES),
    ("LeakyReLU", lambda: [nn.Linear(7, 4), nn.LeakyReLU(0.2)], FEATURES),
    ("LeakyReLU 0 and 1", lambda: [nn.Linear(7, 4), nn.LeakyReLU(0.0), nn.Linear(4, 3), nn.LeakyReLU(1.0)],
     FEATURES),
    ("Sigmoid", lambda: [nn.BatchNorm2d(3), nn.Sigmoid()], IMAGES),
    ("Tanh", lambda: [nn.Linear(7, 4), nn.Tanh()], FEATURES),
    ("Identity", lambda: [nn.Identity(), nn.MaxPool2d(2), nn.Identity(), nn.Conv2d(3, 2, 2), nn.Identity(54),
                          nn.ReLU()], IMAGES),
]


def nchw_or_flat(x):
    return nchw(x) if x.ndim == 4 else torch.from_numpy(x)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, on its speed
@pytest.mark.parametrize("modules, shape", [case[1:] for case in READ], ids=[case[0] for case in READ])
def test_from_torch_computes_what_each_module_kind_computes(modules, shape):
    torch.manual_seed(0)
    model = randomized(nn.Sequential(*modules())).double().eval()
    net = export.from_torch(model, input_shape=shape)
    x = np.random.default_rng(0).normal(size=(3,) + shape)
    with torch.no_grad():
        theirs = model(nchw_or_flat(x)).numpy()
    if theirs.ndim == 4:
        theirs = theirs.transpose(0, 2, 3, 1)
    # a network without parameters computes in the default dtype, float32
    tolerance = 1e-12 if net.dtype == np.float64 else 1e-6
    np.testing.assert_allclose(net.predict(x), theirs, rtol=tolerance, atol=tolerance)


# (the modules, one sample's shape, the module refused, the attribute named)
REFUSED = [
    (lambda: [nn.Conv2d(4, 4, 3, groups=2)], (6, 6, 4), "Conv2d", "groups"),
    (lambda: [nn.Conv2d(3, 4, 3, dilation=2)], IMAGES, "Conv2d", "dilation"),
    (lambda: [nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")], IMAGES, "Conv2d", "padding_mode"),
    (lambda: [nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")], IMAGES, "Conv2d", "padding_mode"),
    (lambda: [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3)], IMAGES, "Conv2d", "padding"),
    (lambda: [nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(3, 4, 2)], IMAGES, "Conv2d", "padding"),
    (lambda: [nn.ZeroPad2d(-1), nn.Conv2d(3, 4, 2)], IMAGES, "ZeroPad2d", "padding"),
    (lambda: [nn.Conv2d(2, 4, 3)], IMAGES, "Conv2d", "in_channels"),
    (lambda: [nn.MaxPool2d(2, stride=1, dilation=2)], IMAGES, "MaxPool2d", "dilation"),
    (lambda: [nn.MaxPool2d(3, padding=1)], IMAGES, "MaxPool2d", "padding"),
    (lambda: [nn.MaxPool2d(2, ceil_mode=True)], IMAGES, "MaxPool2d", "ceil_mode"),
    (lambda: [nn.MaxPool2d(2, return_indices=True)], IMAGES, "MaxPool2d", "return_indices"),
    (lambda: [nn.AvgPool2d(3, padding=1)], IMAGES, "AvgPool2d", "padding"),
    (lambda: [nn.AvgPool2d(2, ceil_mode=True)], IMAGES, "AvgPool2d", "ceil_mode"),
    (lambda: [nn.AvgPool2d(2, divisor_override=3)], IMAGES, "AvgPool2d", "divisor_override"),
    (lambda: [nn.AdaptiveAvgPool2d(2), nn.Flatten()], IMAGES, "AdaptiveAvgPool2d", "output_size"),
    (lambda: [nn.AdaptiveAvgPool2d((1, None)), nn.Flatten()], IMAGES, "AdaptiveAvgPool2d", "output_size"),
    (lambda: [nn.Flatten(start_dim=0)], IMAGES, "Flatten", "start_dim"),
    (lambda: [nn.Flatten(1, 2)], IMAGES, "Flatten", "end_dim"),
    (lambda: [nn.Dropout(1.0)], IMAGES, "Dropout", "p"),
    (lambda: [nn.BatchNorm2d(3, track_running_stats=False)], IMAGES, "BatchNorm2d", "track_running_stats"),
    (lambda: [nn.BatchNorm1d(7, track_running_stats=False)], FEATURES, "BatchNorm1d", "track_running_stats"),
    (lambda: [nn.BatchNorm2d(3, momentum=None)], IMAGES, "BatchNorm2d", "momentum"),
    (lambda: [nn.BatchNorm1d(7, momentum=1.5)], FEATURES, "BatchNorm1d", "momentum"),
    (lambda: [nn.BatchNorm2d(3, eps=0.0)], IMAGES, "BatchNorm2d", "eps"),
    (lambda: [nn.BatchNorm2d(4)], IMAGES, "BatchNorm2d", "num_features"),
    (lambda: [nn.BatchNorm1d(6)], FEATURES, "BatchNorm1d", "num_features"),
    (lambda: [nn.Linear(6, 2)], FEATURES, "Linear", "in_features"),
    (lambda: [nn.Linear(7, 2), nn.LeakyReLU(-0.1)], FEATURES, "LeakyReLU", "negative_slope"),
    (lambda: [nn.Linear(7, 2), nn.LeakyReLU(1.5)], FEATURES, "LeakyReLU", "negative_slope"),
]


@pytest.mark.parametrize("modules, shape, kind, attribute", REFUSED,
                         ids=[f"{kind}.{attribute}-{i}" for i, (_, _, kind, attribute) in enumerate(REFUSED)])
def test_every_attribute_value_cnnc_cannot_honour_is_refused_by_name(modules, shape, kind, attribute):
    """The message shows the module, then names the attribute (which its repr may show too)."""
    with pytest.raises(ValueError, match=rf"(?s){kind}\(.*\): {attribute}\b"):
        export.from_torch(nn.Sequential(*modules()), input_shape=shape)


class OwnConv(nn.Conv2d):
    """A subclass may compute something else: from_torch cannot know what."""

    def forward(self, x):
        return 2 * super().forward(x)


class OwnReLU(nn.ReLU):
    pass


# (the modules, the name the refusal shows): kinds from_torch does not read, some of them
# subclasses of those it does.
OTHER_KINDS = [
    (lambda: [nn.LazyLinear(3)], "LazyLinear"), (lambda: [nn.BatchNorm3d(3)], "BatchNorm3d"),
    (lambda: [nn.SyncBatchNorm(3)], "SyncBatchNorm"), (lambda: [nn.Dropout2d(0.1)], "Dropout2d"),
    (lambda: [nn.AlphaDropout(0.1)], "AlphaDropout"), (lambda: [nn.ConstantPad2d(1, 0.0)], "ConstantPad2d"),
    (lambda: [OwnConv(3, 2, 3)], "OwnConv"), (lambda: [nn.Conv2d(3, 2, 3), OwnReLU()], "OwnReLU"),
    (lambda: [nn.Sequential(nn.Conv2d(3, 2, 3))], "Sequential"),
    (lambda: [nn.Conv2d(3, 2, 3), nn.Softmax(1)], "Softmax"),
    (lambda: [nn.ConvTranspose2d(3, 2, 3)], "ConvTranspose2d"),
    (lambda: [nn.AdaptiveMaxPool2d(1)], "AdaptiveMaxPool2d"),
]


@pytest.mark.parametrize("modules, name", OTHER_KINDS, ids=[name for _, name in OTHER_KINDS])
def test_other_module_kinds_and_subclasses_are_refused_by_name(modules, name):
    with pytest.raises(ValueError, match=rf"(?s){name}\(.*has no cnnc layer"):
        export.from_torch(nn.Sequential(*modules()), input_shape=IMAGES)


# (id, the modules, one sample's shape, what the refusal says): modules in a place where
# cnnc's layer would compute something else than torch's module (or torch's would fail)
MISPLACED = [
    ("BatchNorm1d on images", lambda: [nn.Conv2d(3, 2, 3), nn.BatchNorm1d(2)], None,
     r"BatchNorm1d\(2.* takes features .* gives images"),
    ("BatchNorm2d on features", lambda: [nn.Flatten(), nn.BatchNorm2d(126)], IMAGES,
     r"BatchNorm2d\(126.* takes images .* gives features"),
    ("Linear on images", lambda: [nn.Conv2d(3, 2, 3), nn.Linear(5, 2)], None,
     r"Linear\(.* takes features .* gives images"),
    ("Linear on input images", lambda: [nn.Linear(7, 2)], IMAGES,
     r"Linear\(.* takes features .* the input, which gives images"),
    ("BatchNorm1d on 3-D", lambda: [nn.BatchNorm1d(4)], (5, 4),
     r"BatchNorm1d\(4.* takes features .* 3-D inputs"),
    ("AdaptiveAvgPool2d then Linear", lambda: [nn.AdaptiveAvgPool2d(1), nn.Linear(3, 2)], IMAGES,
     r"AdaptiveAvgPool2d\(.* followed by a Flatten"),
    ("AdaptiveAvgPool2d last", lambda: [nn.AdaptiveAvgPool2d(1)], IMAGES,
     r"AdaptiveAvgPool2d\(.* followed by a Flatten"),
    ("ZeroPad2d then MaxPool2d", lambda: [nn.ZeroPad2d(1), nn.MaxPool2d(2)], IMAGES,
     r"MaxPool2d\(.* follows a ZeroPad2d"),
    ("ZeroPad2d last", lambda: [nn.Conv2d(3, 2, 3), nn.ZeroPad2d(1)], IMAGES,
     "a ZeroPad2d ends the Sequential"),
    ("Flatten of images last", lambda: [nn.Conv2d(3, 2, 3), nn.Flatten()], IMAGES,
     "Flatten of images must be followed by a Linear"),
    ("BatchNorm1d last after Flatten", lambda: [nn.Flatten(), nn.BatchNorm1d(126)], IMAGES,
     "Flatten of images must be followed by a Linear"),
    ("activation after Dropout", lambda: [nn.Linear(7, 2), nn.Dropout(), nn.Sigmoid()], FEATURES,
     r"Sigmoid\(\) follows Dropout"),
    ("two activations", lambda: [nn.Linear(7, 2), nn.ReLU(), nn.Tanh()], FEATURES, r"Tanh\(\) follows ReLU"),
    ("activation first", lambda: [nn.Tanh()], FEATURES, r"Tanh\(\) follows the input"),
    ("Linear after Dropout on images", lambda: [nn.Conv2d(3, 2, 3), nn.Dropout(), nn.Linear(5, 2)], None,
     r"Linear\(.* takes features .* follows Dropout\(.*\), which gives images"),
    ("Linear after BatchNorm2d", lambda: [nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.Linear(5, 2)], None,
     r"Linear\(.* takes features .* follows BatchNorm2d\(.*\), which gives images"),
    ("Flatten without input_shape", lambda: [nn.Conv2d(3, 2, 3), nn.Flatten()], None,
     r"needs input_shape=\(H, W, C\)"),
    ("ZeroPad2d stride 2 without input_shape",
     lambda: [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 2, stride=2)], None, "pass input_shape"),
    ("window larger than the input", lambda: [nn.MaxPool2d(7)], IMAGES,
     r"MaxPool2d\(kernel_size=7.* does not fit .* 6x7"),
]


@pytest.mark.parametrize("modules, shape, message", [case[1:] for case in MISPLACED],
                         ids=[case[0] for case in MISPLACED])
def test_a_module_where_it_would_compute_something_else_is_refused(modules, shape, message):
    with pytest.raises(ValueError, match=message):
        export.from_torch(nn.Sequential(*modules()), input_shape=shape)


class Doubled(FullyConnected):
    """A cnnc layer of one's own: to_torch cannot know what it computes."""

    def forward(self, inputs):
        z, a = super().forward(inputs)
        return 2 * z, 2 * a


def test_to_torch_refuses_what_torch_would_compute_otherwise():
    with pytest.raises(ValueError, match=r"to_torch cannot convert layer 1, FullyConnected.* \(.*Doubled\)"):
        export.to_torch(Network([Flatten(), Doubled((4, 2))], loss=SoftmaxCrossEntropy()), input_shape=(4,))
    ends_flat = Network([Conv((3, 3, 1, 2)), Flatten()], loss=SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match="Flatten of images must be followed by a FullyConnected"):
        export.to_torch(ends_flat, input_shape=(5, 5, 1))
    with pytest.raises(ValueError, match=r"to_torch: layer 0 \(Conv\): Conv .* expects 1 input channels"):
        export.to_torch(ends_flat, input_shape=(5, 5, 3))


def test_a_module_with_forward_hooks_is_refused():
    model = nn.Sequential(nn.Linear(7, 2))
    model[0].register_forward_hook(lambda module, inputs, output: 2 * output)
    with pytest.raises(ValueError, match=r"Linear\(.* has forward hooks"):
        export.from_torch(model)
    model = nn.Sequential(nn.Linear(7, 2))
    model.register_forward_pre_hook(lambda module, inputs: inputs)
    with pytest.raises(ValueError, match=r"(?s)Sequential\(.* has forward hooks"):
        export.from_torch(model)


def test_arguments_of_the_wrong_kind_are_named():
    net = flattened_norm(np.float32)
    for bad in (6, "abc", (4, 0, 2), (4.0, 5, 2), (True, 5, 2)):
        with pytest.raises(ValueError, match=r"to_torch input_shape must be .*\(H, W, C\)"):
            export.to_torch(net, input_shape=bad)
        with pytest.raises(ValueError, match=r"from_torch input_shape must be .*\(H, W, C\)"):
            export.from_torch(nn.Sequential(nn.ReLU()), input_shape=bad)
    for bad in (np.int32, "float16", "no such type", torch.float64):
        with pytest.raises(ValueError, match="from_torch dtype must be float32 or float64"):
            export.from_torch(nn.Sequential(nn.Linear(2, 2)), dtype=bad)
    for bad, got in ((nn.Linear(2, 2), "got Linear"), (nn.Sequential(), "got an empty one"),
                     (nn.ModuleList([nn.Linear(2, 2)]), "got ModuleList"), ([nn.Linear(2, 2)], "got list")):
        with pytest.raises(ValueError, match=rf"non-empty torch.nn.Sequential \(for one module: "
                                             rf"torch.nn.Sequential\(module\)\), {got}"):
            export.from_torch(bad)


def test_to_torch_pads_in_the_conv2d_where_symmetric_and_keeps_pool_strides():
    """Symmetric padding stays the Conv2d's own; only cnnc's uneven "same" needs a ZeroPad2d
    before it. A pooling window's stride is carried, also when it is not the window's size."""
    net = Network([Conv((3, 3, 2, 3), padding=1), Conv((4, 4, 3, 3), strides=2, padding="same"),
                   MaxPool((3, 2), strides=1), MaxPool(2)], loss=SoftmaxCrossEntropy())
    model = export.to_torch(net, input_shape=(9, 9, 2))
    assert [type(m) for m in model] == [nn.Conv2d, nn.ZeroPad2d, nn.Conv2d, nn.MaxPool2d, nn.MaxPool2d]
    assert model[0].padding == (1, 1) and model[2].padding == (0, 0)
    assert model[1].padding == (1, 2, 1, 2)       # (left, right, top, bottom): the odd pixel bottom/right
    assert (model[3].kernel_size, model[3].stride) == ((3, 2), (1, 1))
    assert (model[4].kernel_size, model[4].stride) == ((2, 2), (2, 2))


@pytest.mark.parametrize("shape", [IMAGES, None], ids=["input_shape", "unknown"])
def test_from_torch_keeps_the_input_shape_and_the_flatten_shape(shape):
    """The network knows the input_shape it was read for (None: not yet), and a Flatten of
    images is fixed to the images it receives, so that other ones are refused."""
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(40, 2))
    if shape is None:
        model = nn.Sequential(nn.Linear(7, 3), nn.Flatten())
    net = export.from_torch(model, input_shape=shape)
    assert net.input_shape == shape
    if shape is not None:
        assert net.layers[1].input_shape == (4, 5, 2)


def test_a_stride_1_same_padding_needs_no_input_shape():
    """At stride 1 cnnc's "same" pads k - 1 whatever the size: a ZeroPad2d + Conv2d read
    without input_shape computes what torch does on any size."""
    torch.manual_seed(0)
    for pad, kernel in (((1, 2, 0, 1), (2, 4)), ((0, 1, 1, 1), (3, 2))):
        model = nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(3, 4, kernel)).double().eval()
        net = export.from_torch(model)
        assert net.layers[0].padding == "same"
        x = np.random.default_rng(0).normal(size=(2,) + IMAGES)
        with torch.no_grad():
            np.testing.assert_allclose(net.predict(x), model(nchw(x)).numpy().transpose(0, 2, 3, 1), atol=1e-12)


def test_uneven_padding_that_is_not_same_is_refused_with_its_pads():
    with pytest.raises(ValueError, match=r"^from_torch: Conv2d\(.*\): padding \(top, bottom, left, right\) = "
                                         r"\(0, 1, 0, 1\), with any ZeroPad2d before it, is neither symmetric"):
        export.from_torch(nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3)), input_shape=IMAGES)
    with pytest.raises(ValueError, match=r"^from_torch: Conv2d\(.*\): padding \(top, bottom, left, right\) = "
                                         r"\(0, 1, 0, 1\), with any ZeroPad2d before it, is not symmetric: "
                                         r"pass input_shape"):
        export.from_torch(nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 2, stride=2)))


@pytest.mark.parametrize("model, dtype, expected", [
    (lambda: nn.Sequential(nn.Linear(2, 2)).double(), None, np.float64),
    (lambda: nn.Sequential(nn.BatchNorm2d(3, affine=False)).double(), None, np.float64),
    (lambda: nn.Sequential(nn.BatchNorm2d(3, affine=False)), None, np.float32),
    (lambda: nn.Sequential(nn.MaxPool2d(2)), None, np.float32),
    (lambda: nn.Sequential(nn.Linear(2, 2)), np.float64, np.float64),
    (lambda: nn.Sequential(nn.Linear(2, 2)).double(), "float32", np.float32),
], ids=["params f64", "buffers f64", "buffers f32", "nothing", "asked f64", "asked f32"])
def test_from_torch_chooses_the_dtype_of_the_weights_or_the_one_asked(model, dtype, expected):
    """None follows the first parameter, or without any the first buffer (BatchNorm's statistics)."""
    net = export.from_torch(model(), dtype=dtype)
    assert all(layer.params[name].dtype == expected for layer in net.layers for name in layer.params)
    assert net.dtype == expected or not any(layer.params for layer in net.layers)


def test_a_refused_class_is_named_with_its_module():
    """A subclass's repr shows its base's name: the message names the class, with its module."""
    with pytest.raises(ValueError, match=rf"\({re.escape(OwnConv.__module__)}\.OwnConv\) has no cnnc layer"):
        export.from_torch(nn.Sequential(OwnConv(3, 2, 3)), input_shape=IMAGES)
    with pytest.raises(ValueError, match=rf"\({re.escape(Doubled.__module__)}\.Doubled\): it converts"):
        export.to_torch(Network([Flatten(), Doubled((4, 2))], loss=SoftmaxCrossEntropy()), input_shape=(4,))
