"""Max pooling (maxpool2d_forward with its argmax, maxpool2d_backward) and average pooling
(avgpool2d_forward, avgpool2d_backward): every kernel implementation against the reference
(tests/reference.py), and the MaxPool and AvgPool layers against PyTorch where it is
installed."""
import numpy as np
import pytest

from cnnc import AvgPool, MaxPool

from . import reference
from .conftest import (AVGPOOL_CASES, DTYPES, POOL_CASES, assert_close, nhwc_to_torch, out_size,
                       pool_ids, torch_to_nhwc)
from .gradcheck import assert_grad_close, numerical_grad

# What the values in a window are like: max pooling must pick the same element, NaN and
# signed zero included, whatever they are.
KINDS = ["normal", "ties", "signed_zeros", "all_equal", "nan", "nan_ties", "all_nan",
         "infinities", "all_neg_inf"]


def pool_input(kind, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
    elif kind == "signed_zeros":
        x = rng.choice([-1.0, -0.0, 0.0], size=shape, p=[0.2, 0.4, 0.4])
    elif kind == "all_equal":
        x = np.full(shape, 0.5)
    elif kind == "nan":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.2] = np.nan
    elif kind == "nan_ties":
        x = rng.integers(0, 3, shape).astype(np.float64)
        x[rng.random(shape) < 0.3] = np.nan
    elif kind == "all_nan":
        x = np.full(shape, np.nan)
    elif kind == "infinities":
        x = rng.choice([-np.inf, -1.0, 0.0, np.inf, np.nan], size=shape, p=[0.3, 0.2, 0.2, 0.2, 0.1])
    elif kind == "all_neg_inf":
        x = np.full(shape, -np.inf)
    else:
        raise AssertionError(kind)
    return x.astype(dtype)


# ---------------------------------------------------------------- max pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_ids(POOL_CASES))
def test_maxpool2d_forward_picks_the_references_element(implementation, case, dtype):
    """For every kind of values: the maximum is one of the inputs, equal bit for bit, NaN
    for NaN, -0.0 for -0.0, and argmax names the same element (the first maximum, or first
    NaN, of its window)."""
    n, h, w, c, pool_size, stride = case
    for kind in KINDS:
        x = pool_input(kind, (n, h, w, c), dtype, seed=4)
        x_before = x.copy()
        y, argmax = implementation.maxpool2d_forward(x, pool_size, stride)
        expected_y, expected_argmax = reference.maxpool2d_forward(x, pool_size, stride)
        assert y.dtype == np.dtype(dtype) and argmax.dtype == np.int64
        assert y.shape == argmax.shape == (n, out_size(h, pool_size[0], stride[0]),
                                           out_size(w, pool_size[1], stride[1]), c)
        np.testing.assert_array_equal(y, expected_y, err_msg=kind)
        np.testing.assert_array_equal(np.signbit(y), np.signbit(expected_y), err_msg=kind)
        np.testing.assert_array_equal(argmax, expected_argmax, err_msg=kind)
        np.testing.assert_array_equal(x, x_before, err_msg=kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_ids(POOL_CASES))
def test_maxpool2d_inference_gives_the_forward_maxima(implementation, case, dtype):
    """The same values as maxpool2d_forward, bit for bit and for every kind of values (NaN
    winning, -0.0 kept), without the argmax."""
    n, h, w, c, pool_size, stride = case
    for kind in KINDS:
        x = pool_input(kind, (n, h, w, c), dtype, seed=4)
        x_before = x.copy()
        y = implementation.maxpool2d_inference(x, pool_size, stride)
        expected, _ = reference.maxpool2d_forward(x, pool_size, stride)
        assert y.dtype == np.dtype(dtype) and y.flags.c_contiguous
        np.testing.assert_array_equal(y, expected, err_msg=kind)
        assert np.array_equal(np.signbit(y), np.signbit(expected)), kind
        np.testing.assert_array_equal(x, x_before)


def test_maxpool2d_forward_all_equal_window_points_at_window_start(implementation):
    x = np.full((1, 5, 5, 2), 3.0)
    y, argmax = implementation.maxpool2d_forward(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(y, np.full((1, 2, 2, 2), 3.0))
    starts = np.array([[0 * 5 + 0, 0 * 5 + 2], [2 * 5 + 0, 2 * 5 + 2]])
    np.testing.assert_array_equal(argmax[0, :, :, 0], starts)
    np.testing.assert_array_equal(argmax[0, :, :, 1], starts)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=pool_ids(POOL_CASES))
def test_maxpool2d_backward_matches_the_reference(implementation, case, dtype):
    """Overlapping windows over tied inputs send many gradients to the same pixel."""
    n, h, w, c, pool_size, stride = case
    for kind in ("normal", "ties", "all_equal"):
        x = pool_input(kind, (n, h, w, c), dtype, seed=5)
        _, argmax = reference.maxpool2d_forward(x, pool_size, stride)
        dy = np.random.default_rng(6).standard_normal(argmax.shape).astype(dtype)
        before = dy.copy(), argmax.copy()
        dx = implementation.maxpool2d_backward(dy, argmax, x.shape)
        assert_close(dx, reference.maxpool2d_backward(dy, argmax, x.shape), dtype)
        np.testing.assert_allclose(dx.sum(dtype=np.float64), dy.sum(dtype=np.float64),
                                   rtol=1e-4, atol=1e-4 * np.abs(dy).sum(), err_msg=kind)
        np.testing.assert_array_equal(dy, before[0])
        np.testing.assert_array_equal(argmax, before[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_shape,dy_hw,highest", [
    ((1, 7, 9, 1), (3, 4), 63), ((3, 5, 13, 4), (6, 2), 65), ((2, 1, 1, 3), (2, 3), 1),
    ((2, 5, 3, 3), (3, 2), 4),      # only the first 4 elements of each plane: indices repeat
])
def test_maxpool2d_backward_adds_up_any_valid_indices(implementation, input_shape, dy_hw, highest,
                                                      dtype):
    """The scatter needs only indices in [0, H*W), not ones a forward pass produced; where
    several outputs name one element, their gradients add up."""
    n, h, w, c = input_shape
    rng = np.random.default_rng(7)
    argmax = rng.integers(0, highest, (n, *dy_hw, c)).astype(np.int64)
    argmax[..., 0, 0, :] = highest - 1           # both ends of the range
    argmax[..., -1, -1, :] = 0
    dy = rng.standard_normal(argmax.shape).astype(dtype)
    dx = implementation.maxpool2d_backward(dy, argmax, input_shape)
    assert_close(dx, reference.maxpool2d_backward(dy, argmax, input_shape), dtype)


# ---------------------------------------------------------------- average pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=pool_ids(AVGPOOL_CASES))
def test_avgpool2d_matches_the_reference(implementation, case, dtype):
    n, h, w, c, pool_size, stride = case
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((n, h, w, c)) + 3).astype(dtype)
    x_before = x.copy()
    y = implementation.avgpool2d_forward(x, pool_size, stride)
    assert_close(y, reference.avgpool2d_forward(x, pool_size, stride), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dy_before = dy.copy()
    dx = implementation.avgpool2d_backward(dy, x.shape, pool_size, stride)
    assert_close(dx, reference.avgpool2d_backward(dy, x.shape, pool_size, stride), dtype)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


@pytest.mark.parametrize("case", [(2, 5, 6, 2, (3, 3), (2, 1)), (1, 4, 5, 3, (4, 5), (1, 1)),
                                  (1, 7, 7, 1, (2, 2), (3, 3))])
def test_avgpool2d_backward_is_the_gradient_of_the_forward(implementation, case):
    n, h, w, c, pool, stride = case
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n, h, w, c))
    dy = rng.standard_normal(implementation.avgpool2d_forward(x, pool, stride).shape)
    numeric = numerical_grad(lambda: np.sum(implementation.avgpool2d_forward(x, pool, stride) * dy), x)
    assert_grad_close(implementation.avgpool2d_backward(dy, x.shape, pool, stride), numeric)


def test_avgpool2d_on_an_empty_batch_is_empty(implementation):
    y = implementation.avgpool2d_forward(np.zeros((0, 5, 4, 3), np.float32), (2, 2), (2, 2))
    assert y.shape == (0, 2, 2, 3) and y.dtype == np.float32


# ---------------------------------------------------------------- the layers and PyTorch

def maxpool_layer_and_torch(torch, x, pshape, strides, dy):
    layer = MaxPool(pshape=pshape, strides=strides)
    y, a = layer.forward(x)
    dx = layer.backward(dy)
    tx = nhwc_to_torch(x).requires_grad_(True)
    ty = torch.nn.functional.max_pool2d(tx, kernel_size=pshape,
                                        stride=pshape if strides is None else strides)
    ty.backward(nhwc_to_torch(dy))
    np.testing.assert_array_equal(a, y)
    return y, dx, torch_to_nhwc(ty), torch_to_nhwc(tx.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES[:13], ids=pool_ids(POOL_CASES[:13]))
def test_maxpool_layer_matches_torch_exactly(torch, case, dtype):
    """Distinct values, many ties and all equal: the same maxima, and every gradient sent
    to the element torch sends it to (distinct integer upstream values make every partial
    sum exact, so dx is equal only then)."""
    n, h, w, c, pool_size, stride = case
    rng = np.random.default_rng(7)
    oh, ow = out_size(h, pool_size[0], stride[0]), out_size(w, pool_size[1], stride[1])
    for x in (rng.normal(size=(n, h, w, c)), rng.integers(-2, 2, size=(n, h, w, c)).astype(float),
              np.full((n, h, w, c), 0.5)):
        x = x.astype(dtype)
        dy = rng.permutation(n * oh * ow * c).reshape(n, oh, ow, c).astype(dtype) + 1
        y, dx, ty, tdx = maxpool_layer_and_torch(torch, x, pool_size, stride, dy)
        assert y.dtype == dx.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(y, ty)
        np.testing.assert_array_equal(dx, tdx)
        assert dx.sum() == dy.sum()


def test_maxpool_ties_go_to_first_element_of_window_like_torch(torch):
    """All-equal 4x4 input, 2x2 windows (strides=None: the window): both send each gradient
    to the window's top-left."""
    x = np.zeros((1, 4, 4, 1))
    dy = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    _, dx, _, tdx = maxpool_layer_and_torch(torch, x, 2, None, dy)
    expected = np.zeros((1, 4, 4, 1))
    expected[0, 0, 0, 0], expected[0, 0, 2, 0], expected[0, 2, 0, 0], expected[0, 2, 2, 0] = 1, 2, 3, 4
    np.testing.assert_array_equal(tdx, expected)
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("case", [((2, 7, 6, 3), 2, 2), ((3, 9, 9, 2), 3, 2), ((1, 5, 7, 4), (2, 3), 1),
                                  ((2, 7, 9, 3), (2, 2), (2, 2)), ((2, 9, 7, 4), 3, 2),
                                  ((1, 8, 6, 2), (3, 2), 1), ((3, 5, 7, 2), (5, 7), 1)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_avgpool_layer_matches_torch(torch, case, dtype):
    shape, pshape, strides = case
    rng = np.random.default_rng(42)
    layer = AvgPool(pshape, strides)
    x = rng.normal(size=shape).astype(dtype)
    z, _ = layer.forward(x)
    tx = nhwc_to_torch(x).requires_grad_(True)
    tz = torch.nn.functional.avg_pool2d(tx, layer.pshape, layer.strides)
    dy = rng.normal(size=z.shape).astype(dtype)
    (tz * nhwc_to_torch(dy)).sum().backward()
    assert_close(z, torch_to_nhwc(tz), dtype)
    assert_close(layer.backward(dy), torch_to_nhwc(tx.grad), dtype)
