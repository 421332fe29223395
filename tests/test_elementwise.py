"""leaky_relu and its gradient, and matmul: every kernel implementation against the
reference (tests/reference.py)."""
import numpy as np
import pytest

from . import reference
from .conftest import DTYPES, assert_close


def leaky_inputs(dtype, seed=0):
    """x with zeros of both signs, NaN and infinities among random values, and an upstream."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5, 7, 2)).astype(dtype)
    x.flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30]
    return x, rng.standard_normal(x.shape).astype(dtype)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_and_its_gradient_are_the_references_to_the_bit(implementation, dtype, slope):
    """Each output is one product rounded once: NaN for NaN, -0.0 for -0.0."""
    x, upstream = leaky_inputs(dtype)
    before = x.copy(), upstream.copy()
    for got, want in ((implementation.leaky_relu(x, slope), reference.leaky_relu(x, slope)),
                      (implementation.leaky_relu_backward(x, upstream, slope),
                       reference.leaky_relu_backward(x, upstream, slope))):
        assert got.dtype == np.dtype(dtype) and got.shape == x.shape
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(upstream, before[1])


def test_leaky_relu_keeps_an_infinite_input_at_slope_0(implementation):
    """-inf * 0 is NaN; leaky_relu with slope 0 (ReLU) keeps -inf instead."""
    x = np.array([-np.inf, np.inf, -1.0])
    np.testing.assert_array_equal(implementation.leaky_relu(x, 0.0), [-np.inf, np.inf, -0.0])


LAYOUTS = ["plain", "a_transposed", "b_transposed", "both_transposed", "strided"]


@pytest.mark.parametrize("shape", [(301, 203, 157), (7, 3, 2)] + [
    pytest.param(shape, marks=pytest.mark.slow)
    for shape in [(50, 256, 1152), (3, 900, 1000), (257, 1152, 256)]])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_matches_the_reference(implementation, dtype, shape):
    """Large enough for the threaded BLAS path (and one tiny case for NumPy's); operands
    transposed or strided as views are taken as they are."""
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    for layout in LAYOUTS:
        a = rng.standard_normal((k, m) if layout in ("a_transposed", "both_transposed") else (m, k))
        b = rng.standard_normal((n, k) if layout in ("b_transposed", "both_transposed") else (k, n))
        a, b = a.astype(dtype), b.astype(dtype)
        if layout in ("a_transposed", "both_transposed"):
            a = a.T
        if layout in ("b_transposed", "both_transposed"):
            b = b.T
        if layout == "strided":
            a = np.repeat(a, 2, axis=1)[:, ::2]
        c = implementation.matmul(a, b)
        assert c.shape == (m, n) and c.flags.c_contiguous, layout
        assert_close(c, reference.matmul(a, b), dtype)


@pytest.mark.parametrize("slope", [0.0, 0.01, 1.0])
@pytest.mark.parametrize("shape", [(301, 203, 157), (7, 3, 2), (1000, 64, 9)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_is_the_product_plus_bias_then_leaky_relu(implementation, dtype, shape,
                                                                  slope):
    """What a FullyConnected layer computes with its activation fused (as conv2d_forward's
    slope: 0 is ReLU's max(z, 0), NaN kept), on the threaded BLAS path and NumPy's; a
    transposed x is taken as it is."""
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    w, b = rng.standard_normal((k, n)).astype(dtype), rng.standard_normal(n).astype(dtype)
    x[0, 0] = np.nan
    for operand in (x, np.asfortranarray(x)):
        with np.errstate(invalid="ignore"):
            got = implementation.dense_forward(operand, w, b, slope)
            z = reference.matmul(x, w) + b
        want = np.where((z > 0) | np.isnan(z), z, z * slope if slope else 0.0)
        assert got.shape == (m, n) and got.dtype == np.dtype(dtype) and got.flags.c_contiguous
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = ~np.isnan(want)
        assert_close(got[finite], want[finite], dtype)
        assert not np.any(np.signbit(got[got == 0])) or slope > 0
