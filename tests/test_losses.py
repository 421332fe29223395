"""Losses: gradients, label forms, batch means, numerical stability, label validation; and
against PyTorch where it is installed."""
import warnings

import numpy as np
import pytest

from cnnc import MeanSquaredError, SoftmaxCrossEntropy

from .conftest import DTYPES, assert_close
from .gradcheck import assert_grad_close, numerical_grad

LOSSES = pytest.mark.parametrize(
    "loss", [SoftmaxCrossEntropy(), MeanSquaredError()], ids=["softmax_ce", "mse"]
)

N, CLASSES = 5, 4


def logits(seed=0, n=N, classes=CLASSES, scale=2.0):
    return np.random.default_rng(seed).normal(scale=scale, size=(n, classes))


def int_labels(seed=0, n=N, classes=CLASSES):
    return np.random.default_rng(seed + 100).integers(0, classes, size=n)


def one_hot(ids, classes=CLASSES):
    out = np.zeros((ids.size, classes))
    out[np.arange(ids.size), ids] = 1.0
    return out


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@LOSSES
@pytest.mark.parametrize("form", ["int", "onehot"])
def test_deriv_matches_central_difference(loss, form):
    x = logits(1)
    ids = int_labels(1)
    y = ids if form == "int" else one_hot(ids)
    numeric = numerical_grad(lambda: loss.compute(x, y), x)
    analytic = loss.deriv(x, y)
    assert analytic.shape == x.shape
    assert_grad_close(analytic, numeric)


@LOSSES
def test_soft_targets_gradient(loss):
    x = logits(2)
    y = np.random.default_rng(3).random((N, CLASSES))
    y /= y.sum(axis=1, keepdims=True)
    numeric = numerical_grad(lambda: loss.compute(x, y), x)
    assert_grad_close(loss.deriv(x, y), numeric)


def test_softmax_ce_unnormalised_targets_gradient():
    # targets need not sum to 1: the fused gradient must still be exact
    x = logits(4)
    y = np.random.default_rng(5).random((N, CLASSES)) * 3
    loss = SoftmaxCrossEntropy()
    numeric = numerical_grad(lambda: loss.compute(x, y), x)
    assert_grad_close(loss.deriv(x, y), numeric)


@LOSSES
def test_int_and_onehot_labels_agree(loss):
    x = logits(6)
    ids = int_labels(6)
    assert loss.compute(x, ids) == pytest.approx(loss.compute(x, one_hot(ids)), rel=1e-15)
    np.testing.assert_allclose(loss.deriv(x, ids), loss.deriv(x, one_hot(ids)), rtol=1e-15, atol=0)
    # other integer dtypes and list labels are the same labels
    assert loss.compute(x, ids.astype(np.uint8)) == pytest.approx(loss.compute(x, ids), rel=1e-15)
    assert loss.compute(x, ids.tolist()) == pytest.approx(loss.compute(x, ids), rel=1e-15)


def test_softmax_ce_reference_values():
    x = logits(7)
    ids = int_labels(7)
    probs = softmax(x)
    expected = -np.mean(np.log(probs[np.arange(N), ids]))
    loss = SoftmaxCrossEntropy()
    assert loss.compute(x, ids) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(loss.deriv(x, ids), (probs - one_hot(ids)) / N, rtol=1e-12, atol=1e-15)
    assert isinstance(loss.compute(x, ids), float)


def test_mse_reference_values():
    x = logits(8)
    ids = int_labels(8)
    t = one_hot(ids)
    loss = MeanSquaredError()
    assert loss.compute(x, ids) == pytest.approx(np.mean((x - t) ** 2), rel=1e-12)
    np.testing.assert_allclose(loss.deriv(x, ids), 2 * (x - t) / x.size, rtol=1e-12)
    assert isinstance(loss.compute(x, ids), float)


@LOSSES
def test_loss_is_mean_over_batch(loss):
    x = logits(9)
    ids = int_labels(9)
    x2 = np.concatenate([x, x])
    ids2 = np.concatenate([ids, ids])
    assert loss.compute(x2, ids2) == pytest.approx(loss.compute(x, ids), rel=1e-13)
    g, g2 = loss.deriv(x, ids), loss.deriv(x2, ids2)
    np.testing.assert_allclose(g2, np.concatenate([g, g]) / 2, rtol=1e-13)


@LOSSES
def test_compute_and_deriv_do_not_modify_inputs(loss):
    x = logits(10)
    y = one_hot(int_labels(10))
    x_copy, y_copy = x.copy(), y.copy()
    loss.compute(x, y)
    loss.deriv(x, y)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)


@LOSSES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deriv_dtype_follows_outputs(loss, dtype):
    x = logits(11).astype(dtype)
    ids = int_labels(11)
    assert loss.deriv(x, ids).dtype == dtype
    assert loss.deriv(x, one_hot(ids)).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_softmax_ce_huge_logits_finite_without_warnings(dtype, magnitude):
    x = np.array([[magnitude, 0.0, -magnitude], [0.0, magnitude, 0.0], [-magnitude, -magnitude, magnitude]],
                 dtype=dtype)
    ids = np.array([2, 0, 2])
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.compute(x, ids)
        grad = loss.deriv(x, ids)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    # each row's gradient sums to 0 and stays within [-1/N, 1/N]
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)
    assert np.all(np.abs(grad) <= 1 / 3 + 1e-6)
    # per row: max logit - label logit + log(number of tied maxima), averaged
    if magnitude > 0:
        expected = (2e4 + 1e4 + 0.0) / 3
    else:
        expected = (0.0 + np.log(2.0) + (2e4 + np.log(2.0))) / 3
    assert value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_ce_perfect_prediction_has_zero_loss(dtype):
    ids = np.array([0, 3, 1, 2])
    x = np.full((4, CLASSES), -1e4, dtype=dtype)
    x[np.arange(4), ids] = 1e4
    loss = SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.compute(x, ids)
        grad = loss.deriv(x, ids)
    assert value == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)


def test_mse_perfect_prediction_has_zero_loss():
    ids = np.array([0, 3, 1])
    loss = MeanSquaredError()
    assert loss.compute(one_hot(ids), ids) == 0.0
    np.testing.assert_array_equal(loss.deriv(one_hot(ids), ids), 0.0)


BAD_LABELS = [
    ("negative", np.array([0, -1, 2, 1, 0]), r"\[0, 4\)"),
    ("too_large", np.array([0, 1, 4, 1, 0]), r"\[0, 4\)"),
    ("too_few", np.array([0, 1, 2, 1]), r"5 samples"),
    ("too_many", np.array([0, 1, 2, 1, 0, 3]), r"5 samples"),
    ("float_ids", np.array([0.0, 1.0, 2.0, 1.0, 0.0]), r"integer"),
    ("onehot_wrong_columns", np.eye(5), r"4 columns"),
    ("onehot_wrong_rows", np.eye(4), r"5 samples"),
    ("three_d", np.zeros((5, 4, 1)), r"shape"),
]


@LOSSES
@pytest.mark.parametrize("method", ["compute", "deriv"])
@pytest.mark.parametrize("labels,pattern", [(b[1], b[2]) for b in BAD_LABELS], ids=[b[0] for b in BAD_LABELS])
def test_bad_labels_raise_value_error(loss, method, labels, pattern):
    x = logits(12)
    with pytest.raises(ValueError, match=pattern):
        getattr(loss, method)(x, labels)


@LOSSES
def test_outputs_must_be_2d(loss):
    with pytest.raises(ValueError, match="shape"):
        loss.compute(np.zeros((2, 3, 4)), np.array([0, 1]))


# ==================================================== regression targets for MeanSquaredError

def test_mse_takes_targets_of_shape_n_for_one_output_as_n_by_1():
    x = logits(13, classes=1)
    values = np.random.default_rng(14).normal(size=N)
    loss = MeanSquaredError()
    assert loss.compute(x, values) == pytest.approx(np.mean((x[:, 0] - values) ** 2), rel=1e-14)
    assert loss.compute(x, values) == loss.compute(x, values[:, None])
    np.testing.assert_array_equal(loss.deriv(x, values), loss.deriv(x, values[:, None]))
    numeric = numerical_grad(lambda: loss.compute(x, values), x)
    assert_grad_close(loss.deriv(x, values), numeric)
    # integers too are values here, not class ids (one output has no class 3)
    ints = np.array([0, 3, -1, 2, 1])
    assert loss.compute(x, ints) == pytest.approx(np.mean((x[:, 0] - ints) ** 2), rel=1e-14)
    assert loss.deriv(x.astype(np.float32), values).dtype == np.float32


@pytest.mark.parametrize("labels, pattern", [
    (np.zeros(N), r"targets of shape \(N,\) fit a network with one output, this one has 4: pass targets "
                  r"of shape \(N, 4\)"),
    (np.zeros(N, dtype=bool), r"one output"),
], ids=["float", "bool"])
def test_mse_refuses_targets_of_shape_n_for_several_outputs(labels, pattern):
    for method in ("compute", "deriv"):
        with pytest.raises(ValueError, match=pattern):
            getattr(MeanSquaredError(), method)(logits(15), labels)


@pytest.mark.parametrize("labels, pattern", [(np.zeros(N - 1), f"{N} samples"),
                                             (np.array(["a"] * N), "numbers")], ids=["count", "strings"])
def test_mse_checks_targets_of_shape_n(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        MeanSquaredError().compute(logits(16, classes=1), labels)


def test_softmax_ce_still_reads_float_labels_of_shape_n_as_a_mistake():
    with pytest.raises(ValueError, match="class-id labels must be integers"):
        SoftmaxCrossEntropy().compute(logits(17, classes=1), np.zeros(N))


def test_losses_say_whether_a_network_reports_accuracy_for_them():
    assert SoftmaxCrossEntropy.classification is True
    assert MeanSquaredError.classification is False


def test_losses_read_as_the_call_that_makes_them():
    assert repr(SoftmaxCrossEntropy()) == "SoftmaxCrossEntropy()"
    assert repr(MeanSquaredError()) == "MeanSquaredError()"


# ---------------------------------------------------------------- PyTorch


def _cross_entropy_torch(torch, logits, target):
    t = torch.from_numpy(logits.copy()).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(t, torch.from_numpy(target), reduction="mean")
    loss.backward()
    return loss.item(), t.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
@pytest.mark.parametrize("label_kind", ["ids", "onehot"])
def test_softmax_cross_entropy_matches_torch(torch, label_kind, scale, dtype):
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
    t_loss, t_grad = _cross_entropy_torch(torch, logits, torch_target)
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grad.dtype == np.dtype(dtype) and np.isfinite(grad).all()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(loss, t_loss, rtol=rtol)
    assert_close(grad, t_grad, dtype, rtol)
    if scale == 1e4:  # the logit gaps are huge: losses are large, probabilities 0/1
        assert loss > 100


def test_softmax_cross_entropy_extreme_equal_logits(torch):
    logits = np.array([[1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    labels = np.array([0, 2])
    loss_fn = SoftmaxCrossEntropy()
    t_loss, t_grad = _cross_entropy_torch(torch, logits, labels)
    np.testing.assert_allclose(loss_fn.compute(logits, labels), t_loss, rtol=1e-14)
    np.testing.assert_allclose(loss_fn.deriv(logits, labels), t_grad, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_squared_error_matches_torch(torch, dtype):
    rng = np.random.default_rng(12)
    outputs = rng.normal(size=(6, 4)).astype(dtype)
    target = rng.normal(size=(6, 4)).astype(dtype)
    loss_fn = MeanSquaredError()
    t = torch.from_numpy(outputs.copy()).requires_grad_(True)
    t_loss = torch.nn.functional.mse_loss(t, torch.from_numpy(target))
    t_loss.backward()
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(loss_fn.compute(outputs, target), t_loss.item(), rtol=rtol)
    grad = loss_fn.deriv(outputs, target)
    assert grad.dtype == np.dtype(dtype)
    assert_close(grad, t.grad.numpy(), dtype, rtol)
