"""cnnc against PyTorch on the same numbers: conv, max pooling, activations, losses,
optimizers and the whole seed CNN.

cnnc is NHWC with filters (kh, kw, c_in, c_out); torch is NCHW with weights
(c_out, c_in, kh, kw). Every conversion is spelled out by the helpers below.
"""
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is an optional test dependency: the parity tests need it"
)
F = torch.nn.functional

from cnnc import (  # noqa: E402
    AdamOptimizer,
    AdamWOptimizer,
    Conv,
    Flatten,
    FullyConnected,
    MaxPool,
    MeanSquaredError,
    Network,
    SGDOptimizer,
    SoftmaxCrossEntropy,
    leaky_relu,
    linear,
    relu,
    sigmoid,
    tanh,
)

TOL = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]
DTYPE_IDS = ["float64", "float32"]


@pytest.fixture(scope="module", autouse=True)
def _torch_single_thread():
    """One torch thread for this module only (small problems; no oversubscription)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- conversions


def nhwc_to_torch(x):
    """(N, H, W, C) array -> contiguous (N, C, H, W) tensor with the same values."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def torch_to_nhwc(t):
    """(N, C, H, W) tensor -> (N, H, W, C) array."""
    return np.ascontiguousarray(np.transpose(t.detach().numpy(), (0, 2, 3, 1)))


def filters_to_torch(w):
    """cnnc filters (kh, kw, c_in, c_out) -> torch weight (c_out, c_in, kh, kw)."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1))))


def filters_from_torch(t):
    """torch weight (c_out, c_in, kh, kw) -> cnnc filters (kh, kw, c_in, c_out)."""
    return np.ascontiguousarray(np.transpose(t.detach().numpy(), (2, 3, 1, 0)))


def assert_close(actual, expected, rtol):
    """Elementwise rtol, plus an absolute floor of rtol times the largest |expected|
    (sums of mixed-sign terms can cancel to near zero, where only absolute error means anything)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def test_conversion_helpers_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5))
    t = nhwc_to_torch(x)
    assert tuple(t.shape) == (2, 5, 3, 4)
    assert t[1, 4, 2, 3].item() == x[1, 2, 3, 4]
    np.testing.assert_array_equal(torch_to_nhwc(t), x)
    w = rng.normal(size=(3, 2, 4, 6))
    tw = filters_to_torch(w)
    assert tuple(tw.shape) == (6, 4, 3, 2)
    assert tw[5, 3, 2, 1].item() == w[2, 1, 3, 5]
    np.testing.assert_array_equal(filters_from_torch(tw), w)


# ---------------------------------------------------------------- convolution


def _conv_both(x, w, b, stride, padding, torch_padding, dy):
    """Run a cnnc Conv layer and torch conv2d on the same numbers; return both results."""
    kh, kw, cin, cout = w.shape
    layer = Conv((kh, kw, cin, cout), strides=stride, padding=padding, dtype=x.dtype)
    layer.params["w"][...] = w
    layer.params["b"][...] = b
    z, a = layer.forward(x)
    assert a is z or np.array_equal(a, z)  # linear activation
    grads = layer.get_grad(x, dy)
    dx = layer.backward(dy)

    tx = nhwc_to_torch(x).requires_grad_(True)
    tw = filters_to_torch(w).requires_grad_(True)
    tb = torch.from_numpy(b.copy()).requires_grad_(True)
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=torch_padding)
    ty.backward(nhwc_to_torch(dy))
    ours = {"z": z, "dx": dx, "dw": grads["w"], "db": grads["b"]}
    theirs = {
        "z": torch_to_nhwc(ty),
        "dx": torch_to_nhwc(tx.grad),
        "dw": filters_from_torch(tw.grad),
        "db": tb.grad.numpy(),
    }
    return ours, theirs


# (N, H, W, C_in), (kh, kw, C_out), stride, padding
CONV_CASES = [
    ((2, 7, 9, 1), (1, 1, 3), 1, 0),
    ((2, 7, 9, 3), (3, 3, 4), 1, 0),
    ((3, 11, 8, 2), (3, 3, 5), 2, 1),
    ((2, 13, 13, 3), (5, 5, 2), 3, 2),
    ((1, 9, 10, 4), (2, 3, 3), (2, 1), (1, 0)),
    ((2, 10, 7, 2), (4, 2, 3), (1, 3), (0, 2)),
    ((2, 15, 12, 1), (4, 4, 6), 2, (2, 1)),
    ((1, 6, 6, 5), (5, 5, 7), 1, 2),
    ((2, 5, 5, 2), (3, 3, 2), 3, 0),  # stride larger than the last partial window
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv_forward_and_gradients_match_torch(case, dtype):
    (n, h, w_, cin), (kh, kw, cout), stride, padding = case
    rng = np.random.default_rng(hash((n, h, w_, cin, kh, kw, cout)) % 2**32)
    x = rng.normal(size=(n, h, w_, cin)).astype(dtype)
    w = rng.normal(size=(kh, kw, cin, cout)).astype(dtype)
    b = rng.normal(size=(cout,)).astype(dtype)
    pair = (padding, padding) if np.ndim(padding) == 0 else tuple(padding)
    stride_pair = (stride, stride) if np.ndim(stride) == 0 else tuple(stride)
    oh = (h + 2 * pair[0] - kh) // stride_pair[0] + 1
    ow = (w_ + 2 * pair[1] - kw) // stride_pair[1] + 1
    dy = rng.normal(size=(n, oh, ow, cout)).astype(dtype)

    ours, theirs = _conv_both(x, w, b, stride, padding, pair, dy)
    assert ours["z"].shape == (n, oh, ow, cout)
    for key in ("z", "dx", "dw", "db"):
        assert_close(ours[key], theirs[key], TOL[dtype])


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (2, 3), (4, 1)])
def test_conv_same_padding_matches_torch(kernel, dtype):
    """padding="same", stride 1: torch also puts the odd pixel of padding bottom/right."""
    kh, kw = kernel
    rng = np.random.default_rng(100 + 10 * kh + kw)
    n, h, w_, cin, cout = 2, 7, 8, 3, 4
    x = rng.normal(size=(n, h, w_, cin)).astype(dtype)
    w = rng.normal(size=(kh, kw, cin, cout)).astype(dtype)
    b = rng.normal(size=(cout,)).astype(dtype)
    dy = rng.normal(size=(n, h, w_, cout)).astype(dtype)

    ours, theirs = _conv_both(x, w, b, 1, "same", "same", dy)
    assert ours["z"].shape == (n, h, w_, cout)
    for key in ("z", "dx", "dw", "db"):
        assert_close(ours[key], theirs[key], TOL[dtype])


# ---------------------------------------------------------------- max pooling


def _pool_both(x, pshape, strides, dy):
    layer = MaxPool(pshape=pshape, strides=strides)
    y, a = layer.forward(x)
    dx = layer.backward(dy)
    tx = nhwc_to_torch(x).requires_grad_(True)
    ty = F.max_pool2d(tx, kernel_size=pshape, stride=pshape if strides is None else strides)
    ty.backward(nhwc_to_torch(dy))
    np.testing.assert_array_equal(a, y)
    return y, dx, torch_to_nhwc(ty), torch_to_nhwc(tx.grad)


POOL_CASES = [  # pshape, strides, (H, W): none of these is tiled exactly by its windows
    (2, None, (9, 7)),
    (2, 2, (8, 8)),
    (3, 2, (9, 10)),  # overlapping windows
    (3, 1, (7, 6)),  # heavily overlapping
    ((2, 3), (1, 2), (6, 9)),
    (3, 3, (10, 11)),
]


def _pool_out(size, k, s):
    return (size - k) // s + 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("values", ["distinct", "small_ints", "all_equal"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_maxpool_forward_and_gradient_match_torch_exactly(case, values, dtype):
    pshape, strides, (h, w) = case
    n, c = 2, 3
    rng = np.random.default_rng(7)
    if values == "distinct":
        x = rng.normal(size=(n, h, w, c))
    elif values == "small_ints":  # many ties inside every window
        x = rng.integers(-2, 2, size=(n, h, w, c)).astype(float)
    else:
        x = np.full((n, h, w, c), 0.5)
    x = x.astype(dtype)
    ph, pw = (pshape, pshape) if np.ndim(pshape) == 0 else pshape
    sh, sw = (ph, pw) if strides is None else ((strides, strides) if np.ndim(strides) == 0 else strides)
    oh, ow = _pool_out(h, ph, sh), _pool_out(w, pw, sw)
    # distinct integer upstream values: every partial sum is exact, so dx is equal
    # only when each window sends its gradient to the very same input element
    dy = rng.permutation(n * oh * ow * c).reshape(n, oh, ow, c).astype(dtype) + 1

    y, dx, ty, tdx = _pool_both(x, pshape, strides, dy)
    assert y.shape == (n, oh, ow, c)
    assert y.dtype == dx.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(dx, tdx)
    assert dx.sum() == dy.sum()


def test_maxpool_ties_go_to_first_element_of_window_like_torch():
    """All-equal 4x4 input, 2x2 windows: both send each gradient to the window's top-left."""
    x = np.zeros((1, 4, 4, 1))
    dy = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    _, dx, _, tdx = _pool_both(x, 2, None, dy)
    expected = np.zeros((1, 4, 4, 1))
    expected[0, 0, 0, 0], expected[0, 0, 2, 0], expected[0, 2, 0, 0], expected[0, 2, 2, 0] = 1, 2, 3, 4
    np.testing.assert_array_equal(tdx, expected)
    np.testing.assert_array_equal(dx, expected)


# ---------------------------------------------------------------- activations

ACTIVATIONS = {
    "relu": (relu, F.relu),
    "leaky_relu": (leaky_relu, lambda t: F.leaky_relu(t, negative_slope=0.01)),
    "sigmoid": (sigmoid, torch.sigmoid),
    "tanh": (tanh, torch.tanh),
}


def _activation_inputs(dtype, rng):
    special = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 20.0, -20.0, 50.0, -50.0,
               100.0, -100.0, 1000.0, -1000.0]
    z = np.concatenate([special, rng.normal(scale=3.0, size=60)]).astype(dtype)
    return z.reshape(2, 37)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_compute_backward_deriv_match_torch(name, dtype):
    ours, theirs = ACTIVATIONS[name]
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


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_activation_edge_values_exact(dtype):
    z = np.array([0.0, -1000.0, 1000.0, 2.0, -2.0], dtype=dtype)
    one = np.ones_like(z)
    # slope at exactly 0: relu 0 and leaky relu 0.01, as torch's backward
    for ours, theirs in (ACTIVATIONS["relu"], ACTIVATIONS["leaky_relu"]):
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


# ---------------------------------------------------------------- losses


def _cross_entropy_torch(logits, target):
    t = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss = F.cross_entropy(t, torch.from_numpy(target), reduction="mean")
    loss.backward()
    return loss.item(), t.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("label_kind", ["ids", "onehot"])
def test_softmax_cross_entropy_matches_torch(label_kind, scale, dtype):
    rng = np.random.default_rng(11)
    n, k = 9, 7
    logits = (rng.normal(size=(n, k)) * scale).astype(dtype)
    ids = rng.integers(0, k, size=n)
    if label_kind == "ids":
        labels, torch_target = ids, ids.astype(np.int64)
    else:
        labels = np.eye(k, dtype=dtype)[ids]
        torch_target = labels
    loss_fn = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        loss = loss_fn.compute(logits, labels)
        grad = loss_fn.deriv(logits, labels)
    t_loss, t_grad = _cross_entropy_torch(logits, torch_target)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad.dtype == np.dtype(dtype) and np.isfinite(grad).all()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(loss, t_loss, rtol=rtol)
    assert_close(grad, t_grad, rtol)
    if scale == 1e4:  # the logit gaps are huge: losses are large, probabilities 0/1
        assert loss > 100


def test_softmax_cross_entropy_extreme_equal_logits():
    logits = np.array([[1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    labels = np.array([0, 2])
    loss_fn = SoftmaxCrossEntropy()
    t_loss, t_grad = _cross_entropy_torch(logits, labels)
    np.testing.assert_allclose(loss_fn.compute(logits, labels), t_loss, rtol=1e-14)
    np.testing.assert_allclose(loss_fn.deriv(logits, labels), t_grad, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_mean_squared_error_matches_torch(dtype):
    rng = np.random.default_rng(12)
    outputs = rng.normal(size=(6, 4)).astype(dtype)
    target = rng.normal(size=(6, 4)).astype(dtype)
    loss_fn = MeanSquaredError()
    t = torch.from_numpy(outputs.copy()).requires_grad_(True)
    t_loss = F.mse_loss(t, torch.from_numpy(target))
    t_loss.backward()
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(loss_fn.compute(outputs, target), t_loss.item(), rtol=rtol)
    grad = loss_fn.deriv(outputs, target)
    assert grad.dtype == np.dtype(dtype)
    assert_close(grad, t.grad.numpy(), rtol)


# ---------------------------------------------------------------- optimizers

ADAM_SETTINGS = [
    {"lr": 1e-3},
    {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 3e-4, "betas": (0.3, 0.9), "eps": 1e-10},
]


def _adam_run(dtype, setting, use_update, steps=20):
    rng = np.random.default_rng(21)
    shape = (5, 7)
    start = rng.normal(size=shape).astype(dtype)
    grads = [(rng.normal(size=shape) * 10.0 ** rng.uniform(-4, 1)).astype(dtype) for _ in range(steps)]
    lr = setting["lr"]
    beta1, beta2 = setting.get("betas", (0.9, 0.999))
    eps = setting.get("eps", 1e-8)
    opt = AdamOptimizer(beta1=beta1, beta2=beta2, eps=eps)
    w = start.copy()
    tw = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = torch.optim.Adam([tw], **setting)
    history = []
    for g in grads:
        if use_update:
            step = opt.update(g.copy(), lr)
            assert step.dtype == np.dtype(dtype)
            w -= step
        else:
            opt.apply(w, g.copy(), lr, key="w")
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        history.append((w.copy(), tw.detach().numpy().copy()))
    return history


@pytest.mark.parametrize("use_update", [False, True], ids=["apply", "update"])
@pytest.mark.parametrize("setting", ADAM_SETTINGS, ids=["default", "betas08_099", "betas03_09"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_adam_matches_torch_adam(dtype, setting, use_update):
    # cnnc copies torch's fused multiply-adds; torch's vectorized sqrt (Sleef) is not always
    # correctly rounded, so a parameter can still be an ulp or so away after 20 steps
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    history = _adam_run(dtype, setting, use_update)
    for ours, theirs in history:
        assert_close(ours, theirs, rtol)
    assert not np.allclose(history[-1][0], history[0][0])


@pytest.mark.parametrize("setting", ADAM_SETTINGS, ids=["default", "betas08_099", "betas03_09"])
def test_adam_moments_are_torch_moments_bit_for_bit(setting):
    """float32 m and v equal torch's exp_avg and exp_avg_sq exactly, step after step."""
    rng = np.random.default_rng(23)
    beta1, beta2 = setting.get("betas", (0.9, 0.999))
    opt = AdamOptimizer(beta1=beta1, beta2=beta2, eps=setting.get("eps", 1e-8))
    w = rng.normal(size=4099).astype(np.float32)
    tw = torch.nn.Parameter(torch.from_numpy(w.copy()))
    topt = torch.optim.Adam([tw], **setting)
    for _ in range(10):
        g = (rng.normal(size=w.shape) * 10.0 ** rng.uniform(-4, 1, size=w.shape)).astype(np.float32)
        tw.data = torch.from_numpy(w.copy())  # same starting point each step: compare one step
        opt.apply(w, g, setting["lr"], key="w")
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        state = topt.state[tw]
        np.testing.assert_array_equal(opt.state["w"]["m"], state["exp_avg"].numpy())
        np.testing.assert_array_equal(opt.state["w"]["v"], state["exp_avg_sq"].numpy())
        assert np.mean(w == tw.detach().numpy()) > 0.999


def test_adam_keeps_one_state_per_key():
    """Two parameters through one optimizer == two separate torch Adams on them."""
    rng = np.random.default_rng(22)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    tw, tb = torch.nn.Parameter(torch.from_numpy(w.copy())), torch.nn.Parameter(torch.from_numpy(b.copy()))
    topt = torch.optim.Adam([tw, tb], lr=0.01)
    opt = AdamOptimizer()
    for _ in range(6):
        gw, gb = rng.normal(size=w.shape), rng.normal(size=b.shape)
        opt.apply(w, gw, 0.01, key="w")
        opt.apply(b, gb, 0.01, key="b")
        tw.grad, tb.grad = torch.from_numpy(gw), torch.from_numpy(gb)
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-14)


@pytest.mark.parametrize("use_update", [False, True], ids=["apply", "update"])
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sgd_momentum_matches_torch_sgd(dtype, nesterov, use_update):
    rng = np.random.default_rng(31)
    start = rng.normal(size=(4, 6)).astype(dtype)
    lr = 0.05
    opt = SGDOptimizer(momentum=0.9, nesterov=nesterov)
    tw = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = torch.optim.SGD([tw], lr=lr, momentum=0.9, nesterov=nesterov)
    w = start.copy()
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    for _ in range(8):
        g = rng.normal(size=start.shape).astype(dtype)
        if use_update:
            w -= opt.update(g.copy(), lr, key="w")
        else:
            opt.apply(w, g.copy(), lr, key="w")
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        assert w.dtype == np.dtype(dtype)
        assert_close(w, tw.detach().numpy(), rtol)
    assert not np.allclose(w, start)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_plain_sgd_matches_torch_sgd(dtype):
    rng = np.random.default_rng(32)
    start = rng.normal(size=(3, 3)).astype(dtype)
    w = start.copy()
    tw = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = torch.optim.SGD([tw], lr=0.1)
    opt = SGDOptimizer()
    for _ in range(4):
        g = rng.normal(size=start.shape).astype(dtype)
        w -= opt.update(g, 0.1)
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-13 if dtype == np.float64 else 1e-6)


DECAYED = [
    (lambda: AdamOptimizer(weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    (lambda: AdamOptimizer(0.8, 0.99, 1e-6, weight_decay=0.5),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5)),
    (lambda: AdamWOptimizer(), lambda p: torch.optim.AdamW(p, lr=0.01)),
    (lambda: AdamWOptimizer(weight_decay=0.3), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
    (lambda: SGDOptimizer(weight_decay=0.2), lambda p: torch.optim.SGD(p, lr=0.01, weight_decay=0.2)),
    (lambda: SGDOptimizer(momentum=0.9, nesterov=True, weight_decay=0.2),
     lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.2)),
]


@pytest.mark.parametrize("ours, theirs", DECAYED,
                         ids=["adam", "adam_betas", "adamw", "adamw_03", "sgd", "sgd_nesterov"])
def test_weight_decay_matches_torch_optim(ours, theirs):
    """float64, 30 steps through apply (what layers call) against torch.optim, to 1e-9."""
    rng = np.random.default_rng(33)
    start = rng.normal(size=(5, 6))
    w, opt = start.copy(), ours()
    tw = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = theirs([tw])
    for _ in range(30):
        g = rng.normal(size=start.shape)
        opt.apply(w, g.copy(), 0.01, key="w")
        tw.grad = torch.from_numpy(g)
        topt.step()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert not np.allclose(w, start)


def test_cosine_schedule_is_torch_cosine_annealing():
    from cnnc import schedules
    schedule = schedules.cosine(0.1, total_steps=17)
    tw = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([tw], lr=0.1)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=17)
    for step in range(18):
        assert schedule(step) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        topt.step()
        tsched.step()


# ---------------------------------------------------------------- the seed CNN


def _seed_cnn(dtype, rng):
    def normal(std):
        return lambda shp: rng.normal(size=shp) * std

    layers = [
        Conv((3, 3, 1, 16), strides=1, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=normal(np.sqrt(2.0 / 9)), bias_init=normal(0.1), dtype=dtype),
        Conv((4, 4, 16, 32), strides=2, activation=leaky_relu, optimizer=AdamOptimizer(),
             filter_init=normal(np.sqrt(2.0 / (4 * 4 * 16))), bias_init=normal(0.1), dtype=dtype),
        MaxPool(pshape=2),
        Flatten((6, 6, 32)),
        FullyConnected((6 * 6 * 32, 256), activation=relu, optimizer=AdamOptimizer(),
                       weight_init=normal(np.sqrt(2.0 / 1152)), bias_init=normal(0.1), dtype=dtype),
        FullyConnected((256, 10), activation=linear, optimizer=AdamOptimizer(),
                       weight_init=normal(np.sqrt(2.0 / 266)), bias_init=normal(0.1), dtype=dtype),
    ]
    return Network(layers, loss=SoftmaxCrossEntropy())


class TorchSeedCNN(torch.nn.Module):
    """The seed CNN in torch, with weights copied from a cnnc Network."""

    def __init__(self, net):
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

    def as_cnnc(self):
        """Per cnnc layer, its {"w", "b"} in cnnc layout ({} for MaxPool and Flatten)."""
        return [
            {"w": filters_from_torch(self.conv1), "b": self.b1.detach().numpy()},
            {"w": filters_from_torch(self.conv2), "b": self.b2.detach().numpy()},
            {},
            {},
            {"w": self.fc1.detach().numpy(), "b": self.fb1.detach().numpy()},
            {"w": self.fc2.detach().numpy(), "b": self.fb2.detach().numpy()},
        ]

    def grads_as_cnnc(self):
        return [
            {"w": filters_from_torch(self.conv1.grad), "b": self.b1.grad.numpy()},
            {"w": filters_from_torch(self.conv2.grad), "b": self.b2.grad.numpy()},
            {},
            {},
            {"w": self.fc1.grad.numpy(), "b": self.fb1.grad.numpy()},
            {"w": self.fc2.grad.numpy(), "b": self.fb2.grad.numpy()},
        ]


def _seed_batch(dtype, rng):
    x = rng.uniform(0.0, 1.0, size=(8, 28, 28, 1)).astype(dtype)
    y = rng.integers(0, 10, size=8)
    return x, y


@pytest.mark.parametrize("label_kind", ["ids", "onehot"])
def test_seed_cnn_loss_and_grads_match_torch_float64(label_kind):
    rng = np.random.default_rng(41)
    net = _seed_cnn(np.float64, rng)
    x, y = _seed_batch(np.float64, rng)
    labels = y if label_kind == "ids" else np.eye(10)[y]
    model = TorchSeedCNN(net)
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]

    loss, grads = net.loss_and_grads(x, labels)
    t_loss = F.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y))
    t_loss.backward()

    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    assert len(grads) == len(net.layers) == 6
    assert grads[2] == {} and grads[3] == {}
    for depth, (ours, theirs) in enumerate(zip(grads, model.grads_as_cnnc())):
        assert set(ours) == set(theirs), depth
        for name in theirs:
            assert ours[name].shape == net.layers[depth].params[name].shape
            assert np.abs(theirs[name]).max() > 0, (depth, name)  # a real gradient
            assert_close(ours[name], theirs[name], 1e-9)
    for layer, saved in zip(net.layers, before):  # loss_and_grads changes no weight
        for name, value in saved.items():
            np.testing.assert_array_equal(layer.params[name], value)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_seed_cnn_five_adam_steps_match_torch(dtype):
    rng = np.random.default_rng(42)
    net = _seed_cnn(dtype, rng)
    model = TorchSeedCNN(net)
    topt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = [{k: v.copy() for k, v in layer.params.items()} for layer in net.layers]
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    for _ in range(5):
        x, y = _seed_batch(dtype, rng)
        loss = net.train_step(x, y, lr=1e-3)
        topt.zero_grad()
        t_loss = F.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y))
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


# ---------------------------------------------------------- BatchNorm and average pooling

@pytest.mark.parametrize("shape", [(4, 5, 3, 6), (9, 5)], ids=["2d", "1d"])
def test_batchnorm_training_forward_backward_and_statistics_match_torch(shape):
    from cnnc import BatchNorm
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
        assert_close(z, from_torch(tz), 1e-12)
        grads = layer.get_grad(x, r)
        assert_close(layer.backward(r), from_torch(tx.grad), 1e-10)
        assert_close(grads["w"], module.weight.grad.numpy(), 1e-10)
        assert_close(grads["b"], module.bias.grad.numpy(), 1e-10)
        module.weight.grad = module.bias.grad = None
        layer.commit_statistics()
        assert_close(layer.running_mean, module.running_mean.numpy(), 1e-12)
        assert_close(layer.running_var, module.running_var.numpy(), 1e-12)
    layer.training = False
    module.eval()
    x = rng.normal(size=shape)
    assert_close(layer.forward(x)[0], from_torch(module(to_torch(x))), 1e-12)


@pytest.mark.parametrize("case", [((2, 7, 6, 3), 2, 2), ((3, 9, 9, 2), 3, 2), ((1, 5, 7, 4), (2, 3), 1)],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_avgpool_forward_and_gradient_match_torch(case, dtype):
    from cnnc import AvgPool
    shape, pshape, strides = case
    rng = np.random.default_rng(42)
    layer = AvgPool(pshape, strides)
    x = rng.normal(size=shape).astype(dtype)
    z, _ = layer.forward(x)
    tx = nhwc_to_torch(x).requires_grad_(True)
    tz = F.avg_pool2d(tx, layer.pshape, layer.strides)
    dy = rng.normal(size=z.shape).astype(dtype)
    (tz * nhwc_to_torch(dy)).sum().backward()
    rtol = TOL[dtype]
    assert_close(z, torch_to_nhwc(tz), rtol)
    assert_close(layer.backward(dy), torch_to_nhwc(tx.grad), rtol)


def test_conv_batchnorm_network_takes_torchs_adam_steps():
    """Conv -> BatchNorm(relu) -> GlobalAvgPool -> FC with Adam, float64: three training
    steps give torch's weights and running statistics, then the same inference output."""
    from cnnc import BatchNorm, GlobalAvgPool
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
        F.cross_entropy(model(nhwc_to_torch(x)), torch.from_numpy(y)).backward()
        optimizer.step()
    assert_close(conv.params["w"], filters_from_torch(model[0].weight.detach()), 1e-9)
    assert_close(norm.params["w"], model[1].weight.detach().numpy(), 1e-9)
    assert_close(norm.running_var, model[1].running_var.numpy(), 1e-9)
    assert_close(fc.params["w"], model[5].weight.detach().numpy().T, 1e-9)
    model.eval()
    x = rng.normal(size=(4, 5, 5, 2))
    assert_close(net.predict(x), model(nhwc_to_torch(x)).detach().numpy(), 1e-9)
