"""cnnc._checks: the one validator of each kind of argument (int tuples, shapes, flags, seeds,
pairs, environment variables), and the named results of the kernel checks."""
import re

import numpy as np
import pytest

from cnnc import _checks


def test_ints_gives_python_ints_and_takes_one_int_for_all_with_repeat():
    assert _checks.ints("stride", (np.int64(2), 3), 2) == (2, 3)
    assert type(_checks.ints("stride", (np.int64(2), 3), 2)[0]) is int
    assert _checks.ints("strides", 2, 2, repeat=True) == (2, 2)
    assert _checks.ints("padding", 0, 2, minimum=0, repeat=True) == (0, 0)
    assert _checks.ints("padding", [1, 0], 2, minimum=0, repeat=True) == (1, 0)


@pytest.mark.parametrize("values, count, minimum, repeat, message", [
    (2, 2, 1, False, "stride must be 2 ints in \\[1, 2\\*\\*31\\), got 2"),
    ((1, 2, 3), 2, 1, True, "an int or 2 ints"),
    ((True, 1), 2, 1, False, "2 ints"),          # True is no size
    (True, 2, 1, True, "an int or 2 ints"),
    ((0, 1), 2, 1, False, "\\[1, 2\\*\\*31\\)"),
    ((1, 2**31), 2, 1, False, "got \\(1, 2147483648\\)"),
    ((1.0, 2), 2, 1, False, "2 ints"),
    ("ab", 2, 1, False, "got 'ab'"),
    ((0,), 1, 1, False, "stride must be 1 int in"),
])
def test_ints_refuses_what_is_not_count_ints_in_range(values, count, minimum, repeat, message):
    with pytest.raises(ValueError, match=message):
        _checks.ints("stride", values, count, minimum, repeat=repeat)


def test_kernel_checks_name_their_results():
    x = np.zeros((2, 7, 9, 3), np.float32)
    w = np.zeros((3, 2, 3, 4), np.float32)
    call = _checks.conv2d_forward(x, w, np.zeros(4, np.float32), (2, 1), (1, 1, 0, 0), 0)
    assert call.x is x and call.w is w and call.stride == (2, 1)
    assert call.padding == (1, 1, 0, 0) and call.out_hw == (4, 8) and call.slope == 0.0
    x, w, b, stride, padding, slope, out_hw = call   # still unpacks in field order
    assert out_hw == (4, 8)

    dy = np.zeros((2, 4, 8, 4), np.float32)
    assert _checks.conv2d_grad_input(dy, w, (2, 7, 9, 3), (2, 1), (1, 1, 0, 0)).input_shape == (2, 7, 9, 3)
    assert _checks.conv2d_grad_params(x, dy, (3, 2), (2, 1), (1, 1, 0, 0)).kernel_size == (3, 2)
    pool = _checks.maxpool2d_forward(x, (2, 2), (2, 2))
    assert (pool.pool_size, pool.stride, pool.out_hw) == ((2, 2), (2, 2), (3, 4))
    assert _checks.avgpool2d_forward(x, (3, 3), (2, 2)).out_hw == (3, 4)
    assert _checks.avgpool2d_backward(np.zeros((2, 3, 4, 3), np.float32), x.shape, (2, 2), (2, 2)).pool_size == (2, 2)
    argmax = np.zeros((2, 3, 4, 3), np.int64)
    assert _checks.maxpool2d_backward(np.zeros((2, 3, 4, 3), np.float32), argmax, x.shape).argmax is argmax

    p, g = np.zeros(3), np.ones(3)
    adam = _checks.adam_update(p, g, np.zeros(3), np.zeros(3), 0.1, 0.9, 0.99, 1e-8, 4)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.step) == (0.1, 0.9, 0.99, 1e-8, 4)
    assert _checks.leaky_relu(p, 0.2).slope == 0.2
    assert _checks.leaky_relu_backward(p, g, 0.2).upstream is g
    assert _checks.matmul(np.zeros((2, 3)), np.zeros((3, 4))).b.shape == (3, 4)

    rows, c = np.zeros((5, 3)), np.ones(3)
    assert _checks.batchnorm_forward(rows, c, c, 1e-5, 0.5).slope == 0.5
    assert _checks.batchnorm_backward(rows, rows, c, c, c, 1e-5).var is c
    assert _checks.batchnorm_inference(rows, c, c, c, c, 1e-5, 1.0).mean is c


def test_shape_is_a_tuple_of_1_to_32_positive_ints():
    assert _checks.shape("input_shape", [np.int64(28), 28, 1]) == (28, 28, 1)
    assert _checks.shape("input_shape", (1,) * 32) == (1,) * 32
    for bad in ((), (1,) * 33, (28, 0), (28, 2**31), (28.0,), (True,), 28, "28", None):
        with pytest.raises(ValueError, match=r"^input_shape must be a shape: a tuple of 1 to 32 ints >= 1 "
                                             r"such as \(28, 28, 1\), got "):
            _checks.shape("input_shape", bad)


def test_number_takes_an_inclusive_maximum():
    assert _checks.number("momentum", 1, 0, maximum=1) == 1.0
    with pytest.raises(ValueError, match=r"^momentum must be <= 1, got 1.0000001$"):
        _checks.number("momentum", 1.0000001, 0, maximum=1)


def test_flag_is_true_or_false_and_nothing_that_reads_as_one():
    assert _checks.flag("shuffle", True) is True and _checks.flag("shuffle", np.bool_(False)) is False
    for bad in ("no", "False", 0, 1, None):
        with pytest.raises(ValueError, match=f"^shuffle must be True or False, got {re.escape(repr(bad))}$"):
            _checks.flag("shuffle", bad)


def test_seed_is_none_or_an_int_default_rng_takes():
    assert _checks.seed("seed", None) is None
    assert _checks.seed("seed", np.uint64(2**64 - 1)) == 2**64 - 1
    assert _checks.seed("seed", 2**128 - 1) == 2**128 - 1
    for bad in (-1, 2**128, 1.0, True, "1", [1, 2], np.random.default_rng(0)):
        with pytest.raises(ValueError, match=r"^seed must be None or an int from 0 to 2\*\*128 - 1, got "):
            _checks.seed("seed", bad)


def test_pair_is_a_tuple_or_list_of_two():
    x, y = np.zeros((3, 2)), [0, 1, 2]
    assert _checks.pair("validation_data", [x, y], "(x_val, y_val)") == (x, y)
    for bad, shown in [(x, "an array of shape (3, 2)"), ((x,), None), ((x, y, y), None), ({"x": x}, None),
                       (None, "None")]:
        with pytest.raises(ValueError, match=r"^validation_data must be a pair \(x_val, y_val\), as a "
                                             r"tuple or list, got ") as caught:
            _checks.pair("validation_data", bad, "(x_val, y_val)")
        assert shown is None or str(caught.value).endswith(shown)


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("   ", "auto"), ("\t\n", "auto"),
                                             (" numpy ", "numpy")], ids=repr)
def test_an_environment_variable_set_to_nothing_means_its_default(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CNNC_TEST_VARIABLE", raising=False)
    else:
        monkeypatch.setenv("CNNC_TEST_VARIABLE", value)
    assert _checks.environment("CNNC_TEST_VARIABLE", "auto") == expected
