"""Optimizers: Adam and SGD against hand references, per-parameter state, validation,
dtypes; the adam_update kernel on every implementation against the reference
(tests/reference.py), its refusals and its arrays sharing memory; and the optimizers
against torch.optim where PyTorch is installed."""
import numpy as np
import pytest

import cnnc
from cnnc import AdamOptimizer, AdamWOptimizer, SGDoptimizer, SGDOptimizer, optimizers

from . import reference
from .calls import ALIASED, adam, arr, run
from .conftest import DTYPES, IMPLEMENTATIONS, assert_close


def grads(n_steps, shape, seed=0):
    rng = np.random.default_rng(seed)
    # mixed scales, so eps and the bias corrections both matter somewhere
    return [rng.normal(size=shape) * rng.choice([1e-3, 1.0, 10.0], size=shape) for _ in range(n_steps)]


class ReferenceAdam:
    """Textbook Adam (reference.adam_update) keeping its own state, float64: step returns
    what the optimizer subtracts."""

    def __init__(self, shape, beta1=0.9, beta2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, g, lr):
        self.t += 1
        moved, self.m, self.v = reference.adam_update(np.zeros_like(self.m), g, self.m, self.v, lr,
                                                      self.b1, self.b2, self.eps, self.t)
        return -moved


def reference_sgd(gs, lr, momentum, nesterov=False):
    """torch.optim.SGD's convention: the first velocity is g; v = mu*v + g."""
    steps, v = [], None
    for g in gs:
        v = g.copy() if v is None else momentum * v + g
        steps.append(lr * (g + momentum * v) if nesterov else lr * v)
    return steps


# ---------------------------------------------------------------- Adam


@pytest.mark.parametrize(
    "hyper", [{}, {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, {"beta1": 0.0, "beta2": 0.5, "eps": 0.0}],
    ids=["default", "custom", "no_momentum"],
)
def test_adam_update_matches_textbook_reference(hyper):
    shape = (4, 3)
    gs = grads(10, shape, seed=1)
    lrs = [1e-3] * 5 + [3e-2, 1e-1, 1e-3, 5e-4, 2.0]  # lr may change between steps
    opt, ref = AdamOptimizer(**hyper), ReferenceAdam(shape, **hyper)
    for g, lr in zip(gs, lrs):
        step = opt.update(g, lr)
        assert step.shape == shape
        # atol: Adam steps are ~lr per element; m += (1-b1)*(g-m) (torch's lerp form) and
        # m = b1*m + (1-b1)*g round differently where m nearly cancels
        np.testing.assert_allclose(step, ref.step(g, lr), rtol=1e-12, atol=1e-12 * lr)


def test_adam_apply_updates_param_in_place_like_reference():
    shape = (3, 5)
    gs = grads(10, shape, seed=2)
    param = np.random.default_rng(3).normal(size=shape)
    expected = param.copy()
    same_object = param
    opt, ref = AdamOptimizer(), ReferenceAdam(shape)
    for g in gs:
        result = opt.apply(param, g, 1e-2, key="w")
        expected = expected - ref.step(g, 1e-2)
        assert result is None or result is param
        assert param is same_object
        np.testing.assert_allclose(param, expected, rtol=1e-12, atol=0)


def test_adam_update_and_apply_agree():
    shape = (6,)
    gs = grads(10, shape, seed=4)
    a, b = AdamOptimizer(), AdamOptimizer()
    param = np.zeros(shape)
    total = np.zeros(shape)
    for g in gs:
        total += a.update(g, 1e-3)
        b.apply(param, g, 1e-3)
    np.testing.assert_allclose(param, -total, rtol=1e-12, atol=0)


def test_adam_is_not_the_course_project_adam():
    # The course project did m = beta1*m + lr*dx; its first step is ~10*lr**2, real Adam's is ~lr.
    lr = 1e-3
    g = np.array([[0.5, -2.0, 3.0], [-0.1, 1e-2, 7.0]])
    step = AdamOptimizer().update(g, lr)
    np.testing.assert_allclose(np.abs(step), lr, rtol=1e-5)
    np.testing.assert_array_equal(np.sign(step), np.sign(g))

    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 1
    m = beta1 * 0 + lr * g
    v = beta2 * 0 + (1 - beta2) * g * g
    seed_step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    assert not np.allclose(step, seed_step, rtol=0.5)
    assert np.all(np.abs(step) > 50 * np.abs(seed_step))


def test_adam_per_parameter_state_interleaved_equals_separate_optimizers():
    gw = grads(7, (3, 4), seed=5)
    gb = grads(4, (4,), seed=6)
    shared, opt_w, opt_b = AdamOptimizer(), AdamOptimizer(), AdamOptimizer()
    # uneven interleaving: the step counts of w and b differ
    order = ["w", "w", "b", "w", "b", "w", "w", "b", "w", "b", "w"]
    iw = ib = 0
    for key in order:
        if key == "w":
            got = shared.update(gw[iw], 1e-3, key="w")
            np.testing.assert_array_equal(got, opt_w.update(gw[iw], 1e-3, key="w"))
            iw += 1
        else:
            got = shared.update(gb[ib], 1e-3, key="b")
            np.testing.assert_array_equal(got, opt_b.update(gb[ib], 1e-3, key="b"))
            ib += 1
    assert (iw, ib) == (7, 4)


def test_adam_apply_per_parameter_state_interleaved():
    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(2, 3)), rng.normal(size=(3,))
    w2, b2 = w.copy(), b.copy()
    ref_w, ref_b = ReferenceAdam(w.shape), ReferenceAdam(b.shape)
    shared = AdamOptimizer()
    for i in range(5):
        gw, gb = rng.normal(size=w.shape), rng.normal(size=b.shape)
        shared.apply(w, gw, 1e-2, key="w")
        w2 -= ref_w.step(gw, 1e-2)
        if i % 2 == 0:
            shared.apply(b, gb, 1e-2, key="b")
            b2 -= ref_b.step(gb, 1e-2)
    np.testing.assert_allclose(w, w2, rtol=1e-12)
    np.testing.assert_allclose(b, b2, rtol=1e-12)


@pytest.mark.parametrize("make", [AdamOptimizer, lambda: SGDOptimizer(momentum=0.9)], ids=["adam", "sgd_momentum"])
def test_shape_mismatch_on_existing_key_raises(make):
    opt = make()
    opt.update(np.ones((3, 4)), 1e-3, key="w")
    opt.update(np.ones((4,)), 1e-3, key="b")  # another key may have another shape
    with pytest.raises(ValueError, match=rf"^{type(opt).__name__}: gradient for 'w' has shape \(4, 3\)"):
        opt.update(np.ones((4, 3)), 1e-3, key="w")
    with pytest.raises(ValueError, match="'b'"):
        opt.update(np.ones((5,)), 1e-3, key="b")
    with pytest.raises(ValueError, match="shape"):
        opt.apply(np.zeros((2, 2)), np.ones((2, 2)), 1e-3, key="w")


@pytest.mark.parametrize(
    "make", [AdamOptimizer, SGDOptimizer, lambda: SGDOptimizer(momentum=0.9),
             lambda: SGDOptimizer(momentum=0.9, nesterov=True)],
    ids=["adam", "sgd", "sgd_momentum", "sgd_nesterov"],
)
def test_update_and_apply_do_not_modify_gradient(make):
    opt = make()
    g = np.random.default_rng(8).normal(size=(3, 3))
    g_copy = g.copy()
    for _ in range(3):
        step = opt.update(g, 0.1, key="w")
        np.testing.assert_array_equal(g, g_copy)
        assert not np.shares_memory(step, g)
    param = np.zeros((3, 3))
    for _ in range(3):
        opt.apply(param, g, 0.1, key="p")
        np.testing.assert_array_equal(g, g_copy)


def test_adam_update_returns_fresh_arrays_not_state():
    opt = AdamOptimizer()
    g = np.ones(3)
    first = opt.update(g, 1e-3)
    first_copy = first.copy()
    opt.update(g, 1e-3)
    np.testing.assert_array_equal(first, first_copy)


@pytest.mark.parametrize("make", [AdamOptimizer, lambda: SGDOptimizer(momentum=0.9, nesterov=True), SGDOptimizer],
                         ids=["adam", "sgd_nesterov", "sgd"])
def test_float32_params_stay_float32(make):
    opt = make()
    param = np.random.default_rng(9).normal(size=(4, 4)).astype(np.float32)
    same_object = param
    for _ in range(3):
        g = np.random.default_rng(10).normal(size=(4, 4)).astype(np.float32)
        opt.apply(param, g, 1e-2, key="w")
        assert param.dtype == np.float32
        assert param is same_object
        assert opt.update(g, 1e-2, key="other").dtype == np.float32


def test_adam_float32_close_to_float64_reference():
    shape = (5, 5)
    gs = grads(10, shape, seed=11)
    param = np.random.default_rng(12).normal(size=shape).astype(np.float32)
    expected = param.astype(np.float64)
    opt, ref = AdamOptimizer(), ReferenceAdam(shape)
    for g in gs:
        g32 = g.astype(np.float32)
        opt.apply(param, g32, 1e-2)
        expected -= ref.step(g32.astype(np.float64), 1e-2)
    np.testing.assert_allclose(param, expected, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"beta1": 1.0}, {"beta2": 1.0}, {"beta1": -0.1}, {"beta2": -0.1}, {"beta2": 1.5},
     {"eps": -1e-8}],
    ids=["beta1_one", "beta2_one", "beta1_negative", "beta2_negative", "beta2_above_one",
         "eps_negative"],
)
def test_adam_invalid_hyperparameters_raise(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"^{name} must be"):
        AdamOptimizer(**kwargs)


# Values no hyperparameter takes: not numbers, not finite, or bools (True is no rate).
NOT_FINITE_NUMBERS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
                      "float32-nan": np.float32("nan"), "int-beyond-float": 10**400,
                      "True": True, "False": False, "None": None, "string": "0.5",
                      "complex": 0.5j, "list": [0.5], "array": np.array([0.5])}


@pytest.mark.parametrize("bad", list(NOT_FINITE_NUMBERS))
@pytest.mark.parametrize("name", ["beta1", "beta2", "eps"])
def test_adam_refuses_hyperparameters_that_are_not_finite_numbers(name, bad):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number"):
        AdamOptimizer(**{name: NOT_FINITE_NUMBERS[bad]})


def test_adam_keeps_numpy_hyperparameters_as_python_floats():
    opt = AdamOptimizer(beta1=np.float32(0.5), beta2=np.float64(0.25), eps=0)
    assert (opt.beta1, opt.beta2, opt.eps) == (0.5, 0.25, 0.0)
    assert all(type(value) is float for value in (opt.beta1, opt.beta2, opt.eps))


def test_adam_defaults():
    opt = AdamOptimizer()
    assert (opt.beta1, opt.beta2, opt.eps) == (0.9, 0.999, 1e-8)


# ---------------------------------------------------------------- SGD


def test_sgd_alias():
    assert SGDoptimizer is SGDOptimizer
    assert cnnc.SGDoptimizer is cnnc.SGDOptimizer


def test_sgd_without_momentum_returns_lr_times_grad():
    opt = SGDOptimizer()
    assert opt.momentum == 0.0
    rng = np.random.default_rng(13)
    for lr in (0.1, 1e-3, 2.5):
        g = rng.normal(size=(3, 2))
        np.testing.assert_array_equal(opt.update(g, lr), lr * g)
        np.testing.assert_array_equal(opt.update(g, lr, key="w"), lr * g)  # no hidden state


def test_update_takes_the_course_projects_default_learning_rates():
    """update(dx) without lr: 0.01 for SGD, and 0.001 for Adam as in the course project."""
    g = np.array([0.5, -2.0, 4.0])
    np.testing.assert_array_equal(SGDOptimizer().update(g), 0.01 * g)
    np.testing.assert_allclose(AdamOptimizer().update(g), 0.001 * np.sign(g), rtol=1e-6)


@pytest.mark.parametrize("make", [AdamOptimizer, lambda: SGDOptimizer(momentum=0.9)], ids=["adam", "sgd_momentum"])
def test_prepare_makes_the_state_of_that_key_before_any_update(make):
    """A Network readies every optimizer before it updates any parameter: prepare allocates
    the key's zero state for a gradient of that shape, and refuses one of another shape."""
    opt = make()
    opt.prepare(np.ones((2, 3)), key="w")
    assert list(opt.state) == ["w"] and opt.state["w"]["step"] == 0
    for name in opt.slots:
        np.testing.assert_array_equal(opt.state["w"][name], np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^\w+Optimizer: gradient for 'w' has shape \(3,\)"):
        opt.prepare(np.ones(3), key="w")


def test_sgd_without_momentum_keeps_no_state():
    opt = SGDOptimizer()
    opt.update(np.ones(3), 0.1, key="w")
    opt.prepare(np.ones(3), key="b")
    assert opt.state == {}


@pytest.mark.parametrize("make", [AdamOptimizer, lambda: SGDOptimizer(momentum=0.9)], ids=["adam", "sgd_momentum"])
def test_the_step_count_counts_the_updates(make):
    """The count is saved with the state: a resumed run must go on from it."""
    opt = make()
    for _ in range(3):
        opt.update(np.ones(2), 0.1, key="w")
    assert opt.state["w"]["step"] == 3


def test_an_optimizer_of_ones_own_needs_only_update():
    """The course project's protocol: a subclass that defines update alone is applied as
    w -= update(dx, lr, key), each parameter by its own key."""
    class HalfStep(optimizers.Optimizer):
        def update(self, dx, lr, key=None):
            self.state.setdefault(key, {"step": 0})["step"] += 1
            return 0.5 * lr * dx

    opt = HalfStep()
    w, b = np.array([1.0, 2.0]), np.array([3.0])
    opt.apply(w, np.array([2.0, -4.0]), 0.1, key="w")
    opt.apply(b, np.array([1.0]), 0.1, key="b")
    np.testing.assert_array_equal(w, [0.9, 2.2])
    np.testing.assert_array_equal(b, [2.95])
    assert opt.state == {"w": {"step": 1}, "b": {"step": 1}}


def test_sgd_apply_in_place():
    opt = SGDOptimizer()
    param = np.arange(6.0).reshape(2, 3)
    same_object = param
    g = np.full((2, 3), 2.0)
    opt.apply(param, g, 0.5, key="w")
    assert param is same_object
    np.testing.assert_array_equal(param, np.arange(6.0).reshape(2, 3) - 1.0)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
def test_sgd_momentum_matches_torch_convention(nesterov):
    gs = grads(8, (3, 2), seed=14)
    opt = SGDOptimizer(momentum=0.9, nesterov=nesterov)
    for got_g, want in zip(gs, reference_sgd(gs, 0.05, 0.9, nesterov)):
        np.testing.assert_allclose(opt.update(got_g, 0.05), want, rtol=1e-12, atol=0)


def test_sgd_momentum_first_steps_by_hand():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    opt = SGDOptimizer(momentum=0.9)
    np.testing.assert_allclose(opt.update(g1, 0.1), 0.1 * g1, rtol=1e-15)  # first velocity = g
    np.testing.assert_allclose(opt.update(g2, 0.1), 0.1 * (0.9 * g1 + g2), rtol=1e-15)
    nes = SGDOptimizer(momentum=0.9, nesterov=True)
    np.testing.assert_allclose(nes.update(g1, 0.1), 0.1 * (g1 + 0.9 * g1), rtol=1e-15)
    v2 = 0.9 * g1 + g2
    np.testing.assert_allclose(nes.update(g2, 0.1), 0.1 * (g2 + 0.9 * v2), rtol=1e-15)


def test_sgd_momentum_per_parameter_state():
    gw = grads(5, (2, 2), seed=15)
    gb = grads(3, (2,), seed=16)
    shared = SGDOptimizer(momentum=0.9)
    ref_w = reference_sgd(gw, 0.1, 0.9)
    ref_b = reference_sgd(gb, 0.1, 0.9)
    order = ["w", "b", "w", "w", "b", "w", "b", "w"]
    iw = ib = 0
    for key in order:
        if key == "w":
            np.testing.assert_allclose(shared.update(gw[iw], 0.1, key="w"), ref_w[iw], rtol=1e-12)
            iw += 1
        else:
            np.testing.assert_allclose(shared.update(gb[ib], 0.1, key="b"), ref_b[ib], rtol=1e-12)
            ib += 1
    assert (iw, ib) == (5, 3)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [({"momentum": -0.1}, "^momentum must be"), ({"nesterov": True}, "^Nesterov momentum needs momentum > 0$"),
     ({"momentum": 0.0, "nesterov": True}, "^Nesterov momentum needs momentum > 0$")],
    ids=["negative_momentum", "nesterov_default_momentum", "nesterov_zero_momentum"],
)
def test_sgd_invalid_hyperparameters_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SGDOptimizer(**kwargs)


@pytest.mark.parametrize("bad", list(NOT_FINITE_NUMBERS))
def test_sgd_refuses_a_momentum_that_is_not_a_finite_number(bad):
    """A NaN momentum used to be taken, and turned the weights into NaN within two steps."""
    with pytest.raises(ValueError, match="^momentum must be a finite number"):
        SGDOptimizer(momentum=NOT_FINITE_NUMBERS[bad])


@pytest.mark.parametrize("bad", [1, 0, 1.0, np.int64(1), "True", None, [True]])
def test_sgd_refuses_a_nesterov_that_is_not_a_bool(bad):
    with pytest.raises(ValueError, match="^nesterov must be True or False"):
        SGDOptimizer(momentum=0.9, nesterov=bad)


def test_sgd_keeps_numpy_hyperparameters_as_python_ones():
    opt = SGDOptimizer(momentum=np.float32(0.5), nesterov=np.True_)
    assert type(opt.momentum) is float and opt.momentum == 0.5
    assert opt.nesterov is True
    assert SGDOptimizer(momentum=0).momentum == 0.0


# ================================================================ weight decay, AdamW

@pytest.mark.parametrize("make", [lambda: AdamOptimizer(weight_decay=0.1), lambda: AdamWOptimizer(),
                                  lambda: SGDOptimizer(weight_decay=0.1)], ids=["adam", "adamw", "sgd"])
def test_update_without_the_parameter_refuses_weight_decay(make):
    optimizer = make()
    with pytest.raises(ValueError, match=f"^{type(optimizer).__name__} with weight_decay needs the "
                                         "parameter: call apply"):
        optimizer.update(np.ones(3), 0.1)


def test_adam_weight_decay_is_the_gradient_plus_decay_times_the_weights():
    w = np.array([1.0, -2.0, 3.0])
    decayed, plain = AdamOptimizer(weight_decay=0.5), AdamOptimizer()
    g = np.array([0.1, 0.2, -0.3])
    w1, w2 = w.copy(), w.copy()
    decayed.apply(w1, g, 0.01, key="w")
    plain.apply(w2, g + 0.5 * w, 0.01, key="w")
    np.testing.assert_array_equal(w1, w2)


def test_adamw_shrinks_the_weights_before_the_adam_step():
    w = np.array([1.0, -2.0, 3.0])
    g = np.array([0.1, 0.2, -0.3])
    decoupled, plain = AdamWOptimizer(weight_decay=0.1), AdamOptimizer()
    w1, w2 = w.copy(), w * (1 - 0.01 * 0.1)
    decoupled.apply(w1, g, 0.01, key="w")
    plain.apply(w2, g, 0.01, key="w")
    np.testing.assert_array_equal(w1, w2)


@pytest.mark.parametrize("bad", [float("nan"), -0.1, None, "0.1"])
def test_adamw_refuses_a_bad_lr_before_the_weights_change(bad):
    w = np.ones(3)
    with pytest.raises(ValueError, match="^lr must be"):
        AdamWOptimizer().apply(w, np.ones(3), bad, key="w")
    np.testing.assert_array_equal(w, np.ones(3))


def test_adamw_keeps_one_state_per_key():
    """Two parameters through one AdamW == each through its own."""
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(3, 4)), rng.normal(size=4)
    w2, b2 = w.copy(), b.copy()
    shared, own_w, own_b = AdamWOptimizer(), AdamWOptimizer(), AdamWOptimizer()
    for _ in range(3):
        gw, gb = rng.normal(size=w.shape), rng.normal(size=b.shape)
        shared.apply(w, gw, 0.01, key="w")
        shared.apply(b, gb, 0.01, key="b")
        own_w.apply(w2, gw, 0.01, key="w")
        own_b.apply(b2, gb, 0.01, key="b")
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(b, b2)


@pytest.mark.parametrize("make", [AdamOptimizer, AdamWOptimizer, SGDOptimizer])
@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", None, True])
def test_weight_decay_must_be_a_finite_number_at_least_0(make, bad):
    with pytest.raises(ValueError, match="^weight_decay must be"):
        make(weight_decay=bad)


def test_optimizers_show_their_weight_decay():
    assert repr(AdamWOptimizer()) == "AdamWOptimizer(beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01)"
    assert "weight_decay=0.2" in repr(SGDOptimizer(momentum=0.9, weight_decay=0.2))


def test_get_takes_an_optimizer_as_it_is_and_a_class_with_its_defaults():
    adam = AdamOptimizer(beta1=0.5)
    assert optimizers.get(adam) is adam
    made = optimizers.get(SGDOptimizer)
    assert type(made) is SGDOptimizer and made.momentum == 0.0
    assert type(optimizers.get(AdamOptimizer)) is AdamOptimizer


@pytest.mark.parametrize("value", ["adam", None, 0.01, optimizers.Optimizer.update, cnnc.relu, object])
def test_get_refuses_what_is_not_an_optimizer(value):
    with pytest.raises(ValueError, match=r"^optimizer must be an optimizer such as AdamOptimizer\(\) or "
                                         "SGDOptimizer"):
        optimizers.get(value)


# ================================================================ the adam_update kernel

# (lr, beta1, beta2, eps)
ADAM_HYPER = [(1e-3, 0.9, 0.999, 1e-8), (0.1, 0.5, 0.9, 1e-6), (0.01, 0.0, 0.0, 1e-3),
              (0.0, 0.9, 0.999, 0.0), (0.05, 0.0, 0.99, 1e-6), (1.0, 0.8, 0.0, 1e-8)]


@pytest.mark.parametrize("hyper", ADAM_HYPER, ids=lambda h: "lr{}-b{}-{}-eps{}".format(*h))
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_matches_the_reference_over_ten_steps(implementation, dtype, hyper):
    """In place (the same arrays, of the same dtype, updated), grad only read, for
    gradients of mixed scales so that eps and the bias corrections both matter."""
    for shape in [(1,), (7,), (3, 5), (2, 3, 3, 4)]:
        rng = np.random.default_rng(8)
        start = rng.standard_normal(shape).astype(dtype)
        param = start.copy()
        m = (0.1 * rng.standard_normal(shape)).astype(dtype)
        v = (0.1 * rng.random(shape)).astype(dtype)
        expected = param, m, v
        for step in range(1, 11):
            grad = (rng.standard_normal(shape) * (0.1 if step % 2 else 3.0)).astype(dtype)
            grad_before = grad.copy()
            expected = reference.adam_update(*expected[:1], grad, *expected[1:], *hyper, step)
            implementation.adam_update(param, grad, m, v, *hyper, step)
            np.testing.assert_array_equal(grad, grad_before)
            for got, want in zip((param, m, v), expected):
                assert_close(got, want, dtype)
        if hyper[0] == 0.0:
            np.testing.assert_array_equal(param, start)
        else:
            assert not np.array_equal(param, start)


def test_adam_update_first_step_moves_by_about_lr(implementation):
    """At t=1 bias correction makes the step lr * g / (|g| + eps), i.e. about lr * sign(g)."""
    g = np.array([[2.0, -0.5, 1e-3]])
    param, m, v = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
    implementation.adam_update(param, g, m, v, 0.01, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_allclose(param, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, 0.1 * g, rtol=1e-15)
    np.testing.assert_allclose(v, 0.001 * g * g, rtol=1e-12)


def test_the_largest_step_is_taken_alike_everywhere():
    """At step 2**63 - 1, as from a few thousand steps on, beta**step is 0 and Adam's bias
    corrections are 1."""
    results = []
    for parameter in IMPLEMENTATIONS:
        module = parameter.values[0]
        results.append(run(module, *adam(step=2**63 - 1)))
        for got, want in zip(results[-1], run(module, *adam(step=10**6))):
            np.testing.assert_array_equal(got, want)
    for result in results[1:]:
        for got, want in zip(result, results[0]):
            assert_close(got, want, np.float64)


@pytest.mark.parametrize("key", list(ALIASED))
def test_adam_update_refuses_arrays_sharing_memory_names_them_and_changes_nothing(
        implementation, key):
    """With param, m or v sharing memory with another argument, each backend would compute
    something else (and the threads of the compiled one race); every one refuses alike."""
    maker, names = ALIASED[key]
    _, args = maker()
    before = [np.array(a, copy=True) for a in args[:4]]
    with pytest.raises(ValueError, match=f"^{names} share memory, but"):
        implementation.adam_update(*args)
    for after, snapshot in zip(args[:4], before):
        np.testing.assert_array_equal(after, snapshot)


def disjoint_views(count, seed):
    """`count` (4, 5) views, side by side in one buffer: one memory, nothing shared."""
    buffer = np.abs(arr(20 * count, seed=seed))
    return [buffer[20 * i:20 * (i + 1)].reshape(4, 5) for i in range(count)]


def test_adam_update_takes_views_that_share_only_a_buffer_and_grads_it_copies(implementation):
    """Neighbouring slices of one buffer share no memory; a non-contiguous grad over param
    is copied before any update, so there is nothing shared left to refuse."""
    for views in (disjoint_views(4, seed=6), disjoint_views(4, seed=6)[::-1]):
        separate = [a.copy() for a in views]
        implementation.adam_update(*views, 1e-2, 0.9, 0.999, 1e-8, 2)
        implementation.adam_update(*separate, 1e-2, 0.9, 0.999, 1e-8, 2)
        for got, want in zip(views, separate):
            np.testing.assert_array_equal(got, want)
    buffer = arr(4, 10, seed=7)
    param, grad = buffer[:2].reshape(4, 5), buffer[:, ::2]
    expected = param.copy(), grad.copy(), np.zeros((4, 5)), np.ones((4, 5))
    implementation.adam_update(*expected, 1e-2, 0.9, 0.999, 1e-8, 2)
    implementation.adam_update(param, grad, np.zeros((4, 5)), np.ones((4, 5)), 1e-2, 0.9, 0.999,
                               1e-8, 2)
    np.testing.assert_array_equal(param, expected[0])


# ================================================================ torch.optim

ADAM_SETTINGS = [
    {"lr": 1e-3},
    {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6},
    {"lr": 3e-4, "betas": (0.3, 0.9), "eps": 1e-10},
]


def _adam_run(torch, dtype, setting, use_update, steps=20):
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
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_matches_torch_adam(torch, dtype, setting, use_update):
    # cnnc copies torch's fused multiply-adds; torch's vectorized sqrt (Sleef) is not always
    # correctly rounded, so a parameter can still be an ulp or so away after 20 steps
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    history = _adam_run(torch, dtype, setting, use_update)
    for ours, theirs in history:
        assert_close(ours, theirs, dtype, rtol)
    assert not np.allclose(history[-1][0], history[0][0])


@pytest.mark.parametrize("setting", ADAM_SETTINGS, ids=["default", "betas08_099", "betas03_09"])
def test_adam_step_is_torch_step_to_rounding(torch, setting):
    """One float32 Adam step from the same weights and moments as torch's lands within the
    rounding error any correct implementation may make, whatever the CPU.

    The bound, in units of float32's eps: a moment is two products and a sum (or torch's lerp,
    a difference, a product and a sum), each rounded once, so it is within 2 eps of the sum of
    its terms' magnitudes; the step lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) takes about six
    more roundings (sqrt and division may be off by an ulp in a vectorized library, as torch's
    Sleef is), so it is within 16 eps of itself; the weight adds one rounding of w - step. Bits
    are not compared: torch picks its instructions (FMA or not, exact sqrt or not) per CPU.
    """
    rng = np.random.default_rng(23)
    beta1, beta2 = setting.get("betas", (0.9, 0.999))
    opt = AdamOptimizer(beta1=beta1, beta2=beta2, eps=setting.get("eps", 1e-8))
    eps32 = float(np.finfo(np.float32).eps)
    w = rng.normal(size=4099).astype(np.float32)
    tw = torch.nn.Parameter(torch.from_numpy(w.copy()))
    topt = torch.optim.Adam([tw], **setting)
    m = v = np.zeros_like(w, dtype=np.float64)
    for _ in range(10):
        g = (rng.normal(size=w.shape) * 10.0 ** rng.uniform(-4, 1, size=w.shape)).astype(np.float32)
        before = w.astype(np.float64)
        tw.data = torch.from_numpy(w.copy())       # the same weights and moments on both sides
        if topt.state[tw]:
            topt.state[tw]["exp_avg"].copy_(torch.from_numpy(opt.state["w"]["m"]))
            topt.state[tw]["exp_avg_sq"].copy_(torch.from_numpy(opt.state["w"]["v"]))
            m = opt.state["w"]["m"].astype(np.float64)
            v = opt.state["w"]["v"].astype(np.float64)
        opt.apply(w, g, setting["lr"], key="w")
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        state, g64 = topt.state[tw], g.astype(np.float64)
        for ours, theirs, terms in (
                (opt.state["w"]["m"], state["exp_avg"], beta1 * np.abs(m) + (1 - beta1) * np.abs(g64)),
                (opt.state["w"]["v"], state["exp_avg_sq"], beta2 * v + (1 - beta2) * g64 ** 2)):
            error = np.abs(ours.astype(np.float64) - theirs.numpy())
            assert np.all(error <= 2 * eps32 * terms), error.max()
        theirs = tw.detach().numpy().astype(np.float64)
        bound = 16 * eps32 * np.abs(before - theirs) + eps32 * np.abs(theirs)
        assert np.all(np.abs(w - theirs) <= bound), np.abs(w - theirs).max()
        assert np.mean(w != before) > 0.99          # the step moved the weights


def test_adam_keeps_one_state_per_key(torch):
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
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_matches_torch_sgd(torch, dtype, nesterov, use_update):
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
        assert_close(w, tw.detach().numpy(), dtype, rtol)
    assert not np.allclose(w, start)


@pytest.mark.parametrize("dtype", DTYPES)
def test_plain_sgd_matches_torch_sgd(torch, dtype):
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
    (lambda: AdamOptimizer(weight_decay=0.1), lambda torch, p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    (lambda: AdamOptimizer(0.8, 0.99, 1e-6, weight_decay=0.5),
     lambda torch, p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.5)),
    (lambda: AdamWOptimizer(), lambda torch, p: torch.optim.AdamW(p, lr=0.01)),
    (lambda: AdamWOptimizer(weight_decay=0.3), lambda torch, p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
    (lambda: SGDOptimizer(weight_decay=0.2), lambda torch, p: torch.optim.SGD(p, lr=0.01, weight_decay=0.2)),
    (lambda: SGDOptimizer(momentum=0.9, nesterov=True, weight_decay=0.2),
     lambda torch, p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.2)),
]


@pytest.mark.parametrize("ours, theirs", DECAYED,
                         ids=["adam", "adam_betas", "adamw", "adamw_03", "sgd", "sgd_nesterov"])
def test_weight_decay_matches_torch_optim(torch, ours, theirs):
    """float64, 30 steps through apply (what layers call) against torch.optim, to 1e-9."""
    rng = np.random.default_rng(33)
    start = rng.normal(size=(5, 6))
    w, opt = start.copy(), ours()
    tw = torch.nn.Parameter(torch.from_numpy(start.copy()))
    topt = theirs(torch, [tw])
    for _ in range(30):
        g = rng.normal(size=start.shape)
        opt.apply(w, g.copy(), 0.01, key="w")
        tw.grad = torch.from_numpy(g)
        topt.step()
        np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-9, atol=1e-12)
    assert not np.allclose(w, start)
