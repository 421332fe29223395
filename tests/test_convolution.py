"""conv2d_forward, conv2d_grad_input and conv2d_grad_params (and conv2d_maxpool_inference,
the forward pass with the max pool after it): every backend and every compiled convolution
path against the reference (tests/reference.py), and the Conv layer against PyTorch where
it is installed."""
import numpy as np
import pytest

from cnnc import Conv

from . import reference
from .conftest import (CONV_PARAMS, DTYPES, IMPLEMENTATIONS, assert_close, conv_inputs,
                       filters_from_torch, filters_to_torch, nhwc_to_torch, out_size,
                       torch_to_nhwc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_PARAMS)
def test_conv2d_and_its_gradients_match_the_reference(backend, case, dtype):
    x, w, b, dy = conv_inputs(case, dtype, seed=1)
    stride, padding = case[7], case[8]
    before = [a.copy() for a in (x, w, b, dy)]

    y = backend.conv2d_forward(x, w, b, stride, padding)
    assert_close(y, reference.conv2d_forward(x, w, b, stride, padding), dtype)
    assert y.shape == dy.shape
    dx = backend.conv2d_grad_input(dy, w, x.shape, stride, padding)
    assert_close(dx, reference.conv2d_grad_input(dy, w, x.shape, stride, padding), dtype)
    dw, db = backend.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    expected_dw, expected_db = reference.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    assert_close(dw, expected_dw, dtype)
    assert_close(db, expected_db, dtype)
    for after, snapshot in zip((x, w, b, dy), before):
        np.testing.assert_array_equal(after, snapshot)      # inputs are only read


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("case", [(2, 9, 7, 3, 5, 3, 3, (1, 1), (1, 1, 1, 1)),
                                  (3, 8, 9, 32, 40, 3, 3, (1, 1), (1, 1, 1, 1)),
                                  (2, 9, 9, 4, 17, 1, 1, (1, 1), (0, 0, 0, 0)),
                                  (2, 11, 10, 6, 24, 5, 3, (2, 1), (2, 1, 0, 2))],
                         ids=["thin", "wide", "pointwise", "strided"])
def test_conv2d_forward_fuses_the_leaky_relu_of_its_output(backend, case, slope, dtype):
    """slope s gives z for z > 0 and s * z elsewhere (exactly 0 for s = 0, ReLU's max(z, 0)),
    NaN kept, for every path: what the Conv layer's activations compute after it."""
    x, w, b, _ = conv_inputs(case, dtype, seed=2)
    x[0, 0, 0, 0] = np.nan          # NaN through every output it reaches
    x[1, 1, 1, 0] = np.inf          # infinities of both signs, and NaN where they meet
    stride, padding = case[7], case[8]
    with np.errstate(invalid="ignore"):     # inf - inf, where the infinities meet
        z = reference.conv2d_forward(x, w, b, stride, padding)
        got = backend.conv2d_forward(x, w, b, stride, padding, slope)
    expected = np.where((z > 0) | np.isnan(z), z, z * slope if slope else 0.0)
    finite = np.isfinite(expected)
    assert_close(got[finite], expected[finite], dtype)
    np.testing.assert_array_equal(got[~finite], expected[~finite])
    assert not np.any(np.signbit(got[(got == 0) & ~np.isnan(got)])) or slope > 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, padding", [((3, 3), (1, 1, 1, 1)), ((1, 1), (0, 0, 0, 0)),
                                             ((5, 5), (2, 2, 2, 2))], ids=["3x3", "1x1", "5x5"])
def test_an_empty_batch_gives_empty_results(backend, kernel, padding, dtype):
    """(conv2d_grad_input refuses an input_shape without images: test_kernels.)"""
    x = np.zeros((0, 9, 8, 3), dtype=dtype)
    w = np.ones((*kernel, 3, 5), dtype=dtype)
    b = np.ones(5, dtype=dtype)
    y = backend.conv2d_forward(x, w, b, (1, 1), padding)
    assert y.shape == (0, 9, 8, 5) and y.dtype == np.dtype(dtype)
    dw, db = backend.conv2d_grad_params(x, y, kernel, (1, 1), padding)
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_array_equal(db, np.zeros_like(b))


def test_conv2d_forward_hand_computed(backend):
    """A 3x3 image, 2x2 ones filter, stride 1, one row of zeros on top only."""
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    w = np.ones((2, 2, 1, 1))
    y = backend.conv2d_forward(x, w, np.array([0.5]), (1, 1), (1, 0, 0, 0))
    expected = np.array([[0 + 1, 1 + 2], [0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]])
    np.testing.assert_array_equal(y[0, :, :, 0], expected + 0.5)


def random_geometries(count, seed):
    """count convolutions of random geometry that fit: kernels 1-5 (smaller than the stride
    too), strides 1-3, uneven padding 0-2, 1-19 channels in and out, odd sizes."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        kh, kw, sh, sw = (int(v) for v in rng.integers(1, [6, 6, 4, 4]))
        top, bottom, left, right = (int(v) for v in rng.integers(0, 3, 4))
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        if h + top + bottom >= kh and w + left + right >= kw:
            c, f, n = (int(v) for v in rng.integers(1, [20, 20, 3]))
            cases.append((n, h, w, c, f, kh, kw, (sh, sw), (top, bottom, left, right)))
    return cases


def test_every_pass_matches_the_reference_on_random_geometries(backend):
    """The direct input gradient splits a strided convolution into its phases, and every
    pass pads, tiles and blocks by the shape: 60 random shapes of float64 against the
    reference."""
    for case in random_geometries(60, seed=7):
        x, w, b, dy = conv_inputs(case, np.float64, seed=1)
        stride, padding = case[7], case[8]
        name = f"case {case}"
        assert_close(backend.conv2d_forward(x, w, b, stride, padding),
                     reference.conv2d_forward(x, w, b, stride, padding), np.float64), name
        assert_close(backend.conv2d_grad_input(dy, w, x.shape, stride, padding),
                     reference.conv2d_grad_input(dy, w, x.shape, stride, padding), np.float64)
        for got, want in zip(backend.conv2d_grad_params(x, dy, w.shape[:2], stride, padding),
                             reference.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)):
            assert_close(got, want, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_maxpool_inference_is_the_convolution_then_the_pool_to_the_bit(backend, dtype):
    """conv2d_maxpool_inference pools each row of the convolution as it is computed: on 60
    random convolutions, each with a random max pool (overlapping, apart, or touching;
    windows up to 3x3) and slope, with ties in every window and NaN and infinities in the
    input, it equals conv2d_forward then maxpool2d_inference of the same module and path,
    bit for bit."""
    rng = np.random.default_rng(3)
    for case in random_geometries(60, seed=11):
        x, w, b, _ = conv_inputs(case, dtype, seed=4)
        x, w = np.round(x * 2) / 2, np.round(w * 2) / 2     # small halves: equal sums, ties
        x.flat[rng.integers(0, x.size, 2)] = (np.nan, np.inf)
        stride, padding = case[7], case[8]
        oh, ow = (out_size(case[1], case[5], stride[0], padding[0], padding[1]),
                  out_size(case[2], case[6], stride[1], padding[2], padding[3]))
        pool = tuple(int(v) for v in rng.integers(1, [min(oh, 3) + 1, min(ow, 3) + 1]))
        pool_stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        slope = float(rng.choice([0.0, 0.25, 1.0]))
        with np.errstate(invalid="ignore"):
            got = backend.conv2d_maxpool_inference(x, w, b, stride, padding, pool, pool_stride,
                                                   slope)
            want = backend.maxpool2d_inference(
                backend.conv2d_forward(x, w, b, stride, padding, slope), pool, pool_stride)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}, pool {pool} {pool_stride}")


@pytest.fixture
def winograd(implementation):
    """Each kernel module on the path "winograd" (the NumPy kernels take the name and keep
    their one path), set back after the test."""
    before = implementation.get_conv_path()
    implementation.set_conv_path("winograd")
    yield implementation
    implementation.set_conv_path(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_pools_2x2_windows_in_its_pass_to_the_bit(winograd, dtype):
    """Winograd's 2x2 output tiles are the windows of a 2x2 max pool of stride 2: its fused
    pass equals its convolution then maxpool2d_inference bit for bit, odd sizes (the last
    row and column of tiles dropped), ties, and a block with an infinity or NaN in it (the
    direct loops' then) included."""
    rng = np.random.default_rng(5)
    for trial, (n, h, w, c, f) in enumerate([(3, 9, 11, 5, 7), (2, 16, 13, 33, 40),
                                             (5, 4, 4, 2, 3), (1, 30, 7, 17, 18)]):
        for padding in [(1, 1, 1, 1), (0, 2, 1, 0)]:
            x = np.round(rng.standard_normal((n, h, w, c)) * 2).astype(dtype) / 2
            if trial % 2:
                x[-1, h // 2, w // 2, 0] = (np.inf, np.nan)[padding[0]]
            filters = np.round(rng.standard_normal((3, 3, c, f)) * 2).astype(dtype) / 2
            b = rng.standard_normal(f).astype(dtype)
            with np.errstate(invalid="ignore"):
                got = winograd.conv2d_maxpool_inference(x, filters, b, (1, 1), padding, (2, 2),
                                                        (2, 2), 0.0)
                want = winograd.maxpool2d_inference(
                    winograd.conv2d_forward(x, filters, b, (1, 1), padding, 0.0), (2, 2), (2, 2))
            np.testing.assert_array_equal(got, want, err_msg=f"{(n, h, w, c, f)} {padding}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(14, 13), (16, 16)], ids=["2x2-tiles", "4x4-tiles"])
def test_winograd_keeps_an_infinity_or_nan_to_the_outputs_that_see_it(winograd, size, dtype):
    """The transforms would spread an infinity over its whole tile (inf - inf): a block with
    a value that is not finite, in the input or in the filters, goes by the direct loops
    (a filter gradient with one in x or dy, wholly), so every output is what the direct
    path gives, to the float tolerance, and the same outputs are infinite or NaN."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, *size, 32)).astype(dtype)
    filters, b = rng.standard_normal((3, 3, 32, 40)).astype(dtype), rng.standard_normal(40).astype(dtype)
    dy = rng.standard_normal((3, *size, 40)).astype(dtype)
    x[1, 5, 6, 3], x[2, 0, 0, 0], dy[0, 7, 7, 1] = np.inf, np.nan, -np.inf
    bad_filters = filters.copy()
    bad_filters[1, 2, 4, 5] = np.inf
    clean_x, clean_dy = x.copy(), dy.copy()
    clean_x[1, 5, 6, 3] = clean_x[2, 0, 0, 0] = clean_dy[0, 7, 7, 1] = 0

    def passes():
        return (winograd.conv2d_forward(x, filters, b, (1, 1), (1, 1, 1, 1)),
                winograd.conv2d_forward(x[:1], bad_filters, b, (1, 1), (1, 1, 1, 1)),
                winograd.conv2d_grad_input(dy, filters, x.shape, (1, 1), (1, 1, 1, 1)),
                winograd.conv2d_grad_params(x, clean_dy, (3, 3), (1, 1), (1, 1, 1, 1))[0],
                *winograd.conv2d_grad_params(clean_x, dy, (3, 3), (1, 1), (1, 1, 1, 1)))

    with np.errstate(invalid="ignore"):
        results = [passes()]
        winograd.set_conv_path("direct")
        results.append(passes())
    for got, want in zip(*results):
        finite = np.isfinite(want)
        assert finite.sum() < want.size
        np.testing.assert_array_equal(np.isfinite(got), finite)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
        assert_close(got[finite], want[finite], dtype)


@pytest.mark.parametrize("module", [build for build in IMPLEMENTATIONS if build.id != "numpy"])
def test_auto_takes_winograd_where_it_measured_faster(module):
    """On "auto", a 3x3 stride-1 pass (forward, or filter gradient) with 16 or more
    channels on each side, outputs 12 or more wide, and 32 or more channels on one side or
    outputs 24 or more wide goes by Winograd (its bits are the "winograd" path's, not the
    direct loops'), and a thinner or narrower one by the direct loops: on every compiled
    build (the NumPy kernels have one path)."""
    rng = np.random.default_rng(7)
    before = module.get_conv_path()
    try:
        for (h, c, f), expected in [((16, 32, 32), "winograd"), ((14, 24, 96), "winograd"),
                                    ((16, 16, 64), "winograd"), ((32, 16, 16), "winograd"),
                                    ((16, 12, 64), "direct"), ((16, 24, 24), "direct"),
                                    ((8, 64, 64), "direct")]:
            x = rng.standard_normal((2, h, h, c)).astype(np.float32)
            filters = rng.standard_normal((3, 3, c, f)).astype(np.float32)
            b = np.zeros(f, np.float32)
            dy = rng.standard_normal((2, h, h, f)).astype(np.float32)
            outputs = {}
            for path in ("auto", "winograd", "direct"):
                module.set_conv_path(path)
                outputs[path] = (module.conv2d_forward(x, filters, b, (1, 1), (1, 1, 1, 1)),
                                 module.conv2d_grad_params(x, dy, (3, 3), (1, 1), (1, 1, 1, 1))[0])
            other = "direct" if expected == "winograd" else "winograd"
            for auto, chosen, not_chosen in zip(outputs["auto"], outputs[expected],
                                                outputs[other]):
                np.testing.assert_array_equal(auto, chosen)
                assert not np.array_equal(auto, not_chosen), (h, c, f)
    finally:
        module.set_conv_path(before)


def test_conv2d_kernels_are_adjoint(backend):
    """<conv(x), dy> == <x, grad_input(dy)> == <w, grad_w(x, dy)> (bias zero)."""
    case = (2, 7, 6, 2, 3, 3, 2, (2, 1), (1, 0, 2, 1))
    x, w, _, dy = conv_inputs(case, np.float64, seed=3)
    stride, padding = case[7], case[8]
    y = backend.conv2d_forward(x, w, np.zeros(w.shape[3]), stride, padding)
    lhs = np.sum(y * dy)
    dx = backend.conv2d_grad_input(dy, w, x.shape, stride, padding)
    dw, _ = backend.conv2d_grad_params(x, dy, w.shape[:2], stride, padding)
    np.testing.assert_allclose(np.sum(x * dx), lhs, rtol=1e-12)
    np.testing.assert_allclose(np.sum(w * dw), lhs, rtol=1e-12)


# ---------------------------------------------------------------- the Conv layer and PyTorch

def conv_layer_and_torch(torch, x, w, b, stride, padding, torch_padding, dy):
    """A cnnc Conv layer and torch's conv2d on the same numbers: both outputs and gradients."""
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
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=torch_padding)
    ty.backward(nhwc_to_torch(dy))
    ours = {"z": z, "dx": dx, "dw": grads["w"], "db": grads["b"]}
    theirs = {"z": torch_to_nhwc(ty), "dx": torch_to_nhwc(tx.grad),
              "dw": filters_from_torch(tw.grad), "db": tb.grad.numpy()}
    return ours, theirs


# The Conv layer's own arguments: (N, H, W, C_in), (kh, kw, C_out), strides, padding
LAYER_CASES = [
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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LAYER_CASES, ids=[f"case{i}" for i in range(len(LAYER_CASES))])
def test_conv_layer_forward_and_gradients_match_torch(torch, case, dtype):
    (n, h, w_, cin), (kh, kw, cout), stride, padding = case
    rng = np.random.default_rng(n * 1000 + h * 100 + kh * 10 + cout)
    x = rng.normal(size=(n, h, w_, cin)).astype(dtype)
    w = rng.normal(size=(kh, kw, cin, cout)).astype(dtype)
    b = rng.normal(size=(cout,)).astype(dtype)
    pair = (padding, padding) if np.ndim(padding) == 0 else tuple(padding)
    stride_pair = (stride, stride) if np.ndim(stride) == 0 else tuple(stride)
    oh = out_size(h, kh, stride_pair[0], pair[0], pair[0])
    ow = out_size(w_, kw, stride_pair[1], pair[1], pair[1])
    dy = rng.normal(size=(n, oh, ow, cout)).astype(dtype)

    ours, theirs = conv_layer_and_torch(torch, x, w, b, stride, padding, pair, dy)
    assert ours["z"].shape == (n, oh, ow, cout)
    for key in ("z", "dx", "dw", "db"):
        assert_close(ours[key], theirs[key], dtype)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (2, 3), (4, 1)])
def test_conv_same_padding_matches_torch(torch, kernel, dtype):
    """padding="same", stride 1: torch also puts the odd pixel of padding bottom/right."""
    kh, kw = kernel
    rng = np.random.default_rng(100 + 10 * kh + kw)
    n, h, w_, cin, cout = 2, 7, 8, 3, 4
    x = rng.normal(size=(n, h, w_, cin)).astype(dtype)
    w = rng.normal(size=(kh, kw, cin, cout)).astype(dtype)
    b = rng.normal(size=(cout,)).astype(dtype)
    dy = rng.normal(size=(n, h, w_, cout)).astype(dtype)

    ours, theirs = conv_layer_and_torch(torch, x, w, b, 1, "same", "same", dy)
    assert ours["z"].shape == (n, h, w_, cout)
    for key in ("z", "dx", "dw", "db"):
        assert_close(ours[key], theirs[key], dtype)


def test_conversion_helpers_round_trip(torch):
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
