"""Initializers (fans from the filter shape, statistics, repeatability) and the default dtype."""
import numpy as np
import pytest

import cnnc
from cnnc import Conv, FullyConnected, init

BIG = (3, 3, 64, 128)  # fan_in 576, fan_out 1152, 73728 draws


def expected_std(name, shape):
    fan_in, fan_out = init.fans(shape)
    return {
        "lecun_normal": np.sqrt(1.0 / fan_in),
        "xavier_normal": np.sqrt(2.0 / (fan_in + fan_out)),
        "xavier_uniform": np.sqrt(2.0 / (fan_in + fan_out)),  # a / sqrt(3), a = sqrt(6/(in+out))
        "he_normal": np.sqrt(2.0 / fan_in),
        "he_uniform": np.sqrt(2.0 / fan_in),  # a / sqrt(3), a = sqrt(6/in)
    }[name]


RANDOM = ["lecun_normal", "xavier_normal", "xavier_uniform", "he_normal", "he_uniform"]


def test_fans_fully_connected():
    assert init.fans((784, 100)) == (784, 100)
    assert init.fans((5, 3)) == (5, 3)


def test_fans_filter_shape():
    assert init.fans((3, 3, 1, 16)) == (9, 144)
    assert init.fans((4, 4, 16, 32)) == (256, 512)
    assert init.fans(BIG) == (576, 1152)
    assert init.fans([2, 5, 7, 11]) == (70, 110)


@pytest.mark.parametrize("name", RANDOM)
@pytest.mark.parametrize("shape", [BIG, (300, 200), (3, 3, 1, 16), (1, 1)], ids=["filter", "fc", "small", "tiny"])
def test_shape_and_dtype(name, shape):
    np.random.seed(0)
    w = getattr(init, name)(shape)
    assert isinstance(w, np.ndarray)
    assert w.shape == shape
    assert w.dtype == np.float64
    assert np.all(np.isfinite(w))


@pytest.mark.parametrize("name", RANDOM)
@pytest.mark.parametrize("shape", [BIG, (600, 400)], ids=["filter", "fc"])
def test_standard_deviation(name, shape):
    np.random.seed(1234)
    w = getattr(init, name)(shape)
    want = expected_std(name, shape)
    assert w.std() == pytest.approx(want, rel=0.03)
    assert abs(w.mean()) < 5 * want / np.sqrt(w.size)


@pytest.mark.parametrize("name,limit", [("xavier_uniform", np.sqrt(6.0 / (576 + 1152))),
                                        ("he_uniform", np.sqrt(6.0 / 576))])
def test_uniform_bounds(name, limit):
    np.random.seed(5)
    w = getattr(init, name)(BIG)
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit  # the whole interval is used


def test_normal_initializers_are_not_uniform():
    np.random.seed(6)
    w = init.he_normal(BIG)
    # a normal sample this size has values beyond 3.5 std; a uniform one of equal std cannot exceed sqrt(3)
    assert np.abs(w).max() > 3.5 * np.sqrt(2.0 / 576)


def test_he_normal_fan_in_comes_from_filter_not_image():
    # The report used sqrt(2/(28*28)) for a (3, 3, 1, 16) filter; fan_in is 3*3*1 = 9.
    np.random.seed(7)
    draws = np.concatenate([init.he_normal((3, 3, 1, 16)).ravel() for _ in range(200)])
    want, seed_std = np.sqrt(2.0 / 9), np.sqrt(2.0 / (28 * 28))
    assert draws.std() == pytest.approx(want, rel=0.03)
    assert draws.std() > 5 * seed_std
    # second conv of the report: (4, 4, 16, 32) has fan_in 256, not 16*26*26
    np.random.seed(8)
    w = init.he_normal((4, 4, 16, 32))
    assert w.std() == pytest.approx(np.sqrt(2.0 / 256), rel=0.05)


@pytest.mark.parametrize("name", RANDOM)
def test_np_random_seed_makes_draws_repeatable(name):
    fn = getattr(init, name)
    np.random.seed(42)
    a = fn((3, 3, 2, 4))
    np.random.seed(42)
    b = fn((3, 3, 2, 4))
    np.random.seed(43)
    c = fn((3, 3, 2, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zeros():
    for shape in [(16,), (3, 3, 1, 16), (10, 5)]:
        z = init.zeros(shape)
        assert z.shape == shape
        assert z.dtype == np.float64
        assert not np.any(z)


def test_initializers_work_as_layer_inits():
    np.random.seed(9)
    layer = Conv((3, 3, 8, 64), filter_init=init.xavier_uniform, dtype=np.float64)
    w = layer.params["w"]
    assert w.shape == (3, 3, 8, 64)
    assert np.abs(w).max() <= np.sqrt(6.0 / (72 + 576))
    np.testing.assert_array_equal(layer.params["b"], 0)


# ---------------------------------------------------------------- default dtype


@pytest.fixture
def restore_default_dtype():
    saved = cnnc.get_default_dtype()
    try:
        yield saved
    finally:
        cnnc.set_default_dtype(saved)


def test_default_dtype_is_float32(restore_default_dtype):
    assert restore_default_dtype == np.float32
    layer = FullyConnected((4, 3))
    assert layer.params["w"].dtype == np.float32
    assert layer.params["b"].dtype == np.float32


def test_set_default_dtype_float64(restore_default_dtype):
    cnnc.set_default_dtype(np.float64)
    assert cnnc.get_default_dtype() == np.float64
    fc = FullyConnected((4, 3))
    conv = Conv((3, 3, 2, 5))
    for layer in (fc, conv):
        assert layer.params["w"].dtype == np.float64
        assert layer.params["b"].dtype == np.float64
    # an explicit dtype still wins
    assert FullyConnected((4, 3), dtype=np.float32).params["w"].dtype == np.float32
    # and back
    cnnc.set_default_dtype(np.float32)
    assert FullyConnected((4, 3)).params["w"].dtype == np.float32


def test_set_default_dtype_accepts_names(restore_default_dtype):
    cnnc.set_default_dtype("float64")
    assert cnnc.get_default_dtype() == np.float64
    cnnc.set_default_dtype(np.dtype("float32"))
    assert cnnc.get_default_dtype() == np.float32


def test_layers_keep_dtype_they_were_created_with(restore_default_dtype):
    cnnc.set_default_dtype(np.float32)
    before = FullyConnected((2, 2))
    cnnc.set_default_dtype(np.float64)
    assert before.params["w"].dtype == np.float32


@pytest.mark.parametrize("bad", [np.float16, np.int32, "int64", np.complex128], ids=str)
def test_unsupported_default_dtype_raises(restore_default_dtype, bad):
    cnnc.set_default_dtype(np.float64)
    with pytest.raises(ValueError, match="float32 or float64"):
        cnnc.set_default_dtype(bad)
    assert cnnc.get_default_dtype() == np.float64  # unchanged by the failed call


@pytest.mark.parametrize("bad", [np.float16, np.int32])
def test_unsupported_layer_dtype_raises(bad):
    with pytest.raises(ValueError, match="float32 or float64"):
        FullyConnected((2, 2), dtype=bad)
