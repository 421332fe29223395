"""cnnc.schedules, and fit's learning rate as a callable step -> lr; cosine against
torch.optim.lr_scheduler where PyTorch is installed."""
import math

import numpy as np
import pytest

from cnnc import schedules

from .test_network import bars, small_cnn


def test_cosine_goes_from_base_to_zero_over_total_steps_and_stays():
    schedule = schedules.cosine(0.1, total_steps=10)
    assert schedule(0) == 0.1
    assert schedule(5) == pytest.approx(0.05)
    assert schedule(10) == pytest.approx(0.0, abs=1e-18) and schedule(25) == schedule(10)
    assert all(schedule(t) >= schedule(t + 1) for t in range(12))
    assert schedule(3) == 0.1 * (1 + math.cos(math.pi * 3 / 10)) / 2
    assert repr(schedule) == "schedules.cosine(0.1, total_steps=10)"


@pytest.mark.parametrize("base, total", [(-1, 10), (float("nan"), 10), (0.1, 0), (0.1, 2.5), (0.1, None)])
def test_cosine_refuses_bad_arguments(base, total):
    with pytest.raises(ValueError, match="base|total_steps"):
        schedules.cosine(base, total)


def test_fit_calls_the_schedule_once_per_batch_counting_across_epochs():
    x, y = bars(30)
    seen = []

    def schedule(step):
        seen.append(step)
        return 1e-3

    small_cnn().fit(x, y, epochs=3, batch_size=8, lr=schedule, progress=False)
    assert seen == list(range(12))          # 4 batches (8, 8, 8, 6) per epoch


def test_fit_with_a_schedule_takes_the_steps_train_step_takes_with_those_rates():
    x, y = bars(24)
    schedule = schedules.cosine(0.01, total_steps=6)
    np.random.seed(0)
    fitted = small_cnn()
    np.random.seed(0)
    stepped = small_cnn()
    fitted.fit(x, y, epochs=2, batch_size=8, lr=schedule, shuffle=False, progress=False)
    for step in range(6):
        start = step % 3 * 8
        stepped.train_step(x[start:start + 8], y[start:start + 8], lr=schedule(step))
    for a, b in zip(fitted.layers, stepped.layers):
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])


@pytest.mark.parametrize("value", [float("nan"), -1.0, "0.1", None])
def test_a_schedule_giving_a_bad_rate_is_refused_naming_the_step(value):
    x, y = bars(16)
    net = small_cnn()
    with pytest.raises(ValueError, match="the lr schedule at step 1: lr must be"):
        net.fit(x, y, batch_size=8, lr=lambda step: 1e-3 if step == 0 else value, progress=False)


def test_train_step_takes_a_number_and_says_schedules_are_for_fit():
    x, y = bars(8)
    with pytest.raises(ValueError, match="a schedule .* is for fit"):
        small_cnn().train_step(x, y, lr=schedules.cosine(0.1, 10))


def test_cosine_schedule_is_torch_cosine_annealing(torch):
    schedule = schedules.cosine(0.1, total_steps=17)
    tw = torch.nn.Parameter(torch.zeros(1))
    topt = torch.optim.SGD([tw], lr=0.1)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=17)
    for step in range(18):
        assert schedule(step) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        topt.step()
        tsched.step()
