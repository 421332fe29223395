"""Network.profile: a row per layer and one for the loss, FLOPs as counted by hand, times,
shares, the table, and a network left exactly as it was."""
import copy
import dataclasses

import numpy as np
import pytest

from cnnc import (BatchNorm, Conv, Dropout, Flatten, FullyConnected, MaxPool, Network,
                  SoftmaxCrossEntropy, relu)
from cnnc.profiling import Profile, Row

N = 5


def conv_pool_fc():
    """(N, 8, 8, 2) -> Conv 3x3 -> (6, 6, 4) -> Conv 2x2 stride 2 -> (3, 3, 6)
    -> MaxPool 2 stride 1 -> (2, 2, 6) -> Flatten -> (24,) -> FullyConnected -> (5,)."""
    np.random.seed(0)
    return Network([
        Conv((3, 3, 2, 4), activation=relu),
        Conv((2, 2, 4, 6), strides=2, activation=relu),
        MaxPool(2, strides=1),
        Flatten(),
        FullyConnected((24, 5)),
    ], loss=SoftmaxCrossEntropy())


def batch(shape=(8, 8, 2), classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N,) + shape).astype(np.float32), rng.integers(0, classes, N)


# (forward, backward) FLOPs, 2 per multiply-add
HAND_COUNTED = [
    (2 * N * 6 * 6 * 3 * 3 * 2 * 4,) * 2,          # 25,920: the first layer, no input gradient
    (2 * N * 3 * 3 * 2 * 2 * 4 * 6, 2 * 8640),      # 8,640; input and filter gradients
    (0, 0),                                         # MaxPool
    (0, 0),                                         # Flatten
    (2 * N * 24 * 5, 2 * 1200),                     # 1,200; input and weight gradients
    (0, 0),                                         # the loss
]


def test_a_row_per_layer_then_the_loss_with_flops_counted_by_hand():
    x, y = batch()
    result = conv_pool_fc().profile(x, y, repeats=3)
    assert isinstance(result, Profile)
    assert [row.name for row in result.rows] == [
        "0: Conv", "1: Conv", "2: MaxPool", "3: Flatten", "4: FullyConnected",
        "loss: SoftmaxCrossEntropy"]
    assert [(row.forward_flops, row.backward_flops) for row in result.rows] == HAND_COUNTED
    assert HAND_COUNTED[:2] == [(25920, 25920), (8640, 17280)]
    assert (result.total.forward_flops, result.total.backward_flops) == (35760, 45600)
    assert (result.samples, result.repeats) == (N, 3)


def test_row_fields_times_rates_and_shares():
    x, y = batch()
    result = conv_pool_fc().profile(x, y, repeats=3)
    assert [field.name for field in dataclasses.fields(Row)] == [
        "name", "forward_ms", "backward_ms", "forward_flops", "backward_flops",
        "forward_gflops", "backward_gflops", "share"]
    for row in result.rows:
        assert row.forward_ms > 0 and row.backward_ms > 0, row
        assert row.forward_gflops == (row.forward_flops / (row.forward_ms * 1e6)
                                      if row.forward_flops else 0.0)
        assert row.backward_gflops == (row.backward_flops / (row.backward_ms * 1e6)
                                       if row.backward_flops else 0.0)
        assert type(row.forward_ms) is float and type(row.share) is float
        assert row.share == pytest.approx((row.forward_ms + row.backward_ms)
                                          / (result.total.forward_ms + result.total.backward_ms))
    assert sum(row.share for row in result.rows) == pytest.approx(1.0)
    assert result.total.share == 1.0
    assert result.total.forward_ms == pytest.approx(sum(row.forward_ms for row in result.rows))


def test_layers_below_the_first_with_parameters_do_no_backward():
    np.random.seed(0)
    net = Network([MaxPool(2), Flatten(), FullyConnected((32, 5))], loss=SoftmaxCrossEntropy())
    x, y = batch()
    rows = net.profile(x, y, repeats=2).rows
    assert [row.backward_ms for row in rows[:2]] == [0.0, 0.0]
    assert rows[2].backward_ms > 0
    assert (rows[2].forward_flops, rows[2].backward_flops) == (2 * N * 32 * 5,) * 2  # weights only


def test_the_table_shows_every_row_aligned_with_a_total_line():
    x, y = batch()
    result = conv_pool_fc().profile(x, y, repeats=2)
    text = str(result)
    lines = text.splitlines()
    assert "median of 2 passes" in lines[0] and f"on {N} samples" in lines[0]
    assert lines[1].split() == ["layer", "fwd", "ms", "bwd", "ms", "fwd", "FLOPs", "bwd", "FLOPs",
                                "fwd", "GFLOP/s", "bwd", "GFLOP/s", "share"]
    table = lines[1:]
    assert len({len(line) for line in table}) == 1, text       # one width: aligned
    names = [line.split("  ")[0].strip() for line in table if not line.startswith("-")]
    assert names == ["layer"] + [row.name for row in result.rows] + ["total"]
    assert table[-1].startswith("total") and table[-1].endswith("100.0%")
    conv, pool = table[2].split(), table[4].split()
    assert conv[4:6] == ["25.9k", "25.9k"] and pool[4:8] == ["0", "0", "-", "-"]


def network_with_state():
    """Conv, BatchNorm, Dropout, MaxPool, Flatten, FullyConnected, after two training steps:
    optimizer states, running statistics and a generator that has drawn."""
    np.random.seed(1)
    net = Network([
        Conv((3, 3, 2, 4), padding=1), BatchNorm(4, activation=relu), Dropout(0.3, seed=7),
        MaxPool(2), Flatten(), FullyConnected((64, 5)),
    ], loss=SoftmaxCrossEntropy())
    for seed in (1, 2):
        net.train_step(*batch(seed=seed), lr=1e-2)
    return net


def state(net):
    """Every array and generator state the network holds, and its shapes, copied."""
    return copy.deepcopy({
        "input_shape": net.input_shape,
        "layers": [(layer.state_dict(), getattr(getattr(layer, "optimizer", None), "state", None),
                    [getattr(layer, name).bit_generator.state for name in layer.generators],
                    getattr(layer, "input_shape", None))
                   for layer in net.layers]})


def assert_same(a, b):
    """a == b, arrays compared bit for bit (dtype, shape and every value)."""
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for item_a, item_b in zip(a, b):
            assert_same(item_a, item_b)
    else:
        assert a == b


def test_the_network_is_left_bit_for_bit_as_it_was_and_trains_on_the_same():
    net = network_with_state()
    twin = copy.deepcopy(net)
    before = state(net)
    assert before["layers"][1][0]["running_var"].tolist() != [1, 1, 1, 1]   # statistics taken
    rows = net.profile(*batch(seed=3), repeats=2).rows
    assert_same(state(net), before)
    assert [(row.forward_flops, row.backward_flops) for row in rows[1:5]] == [(0, 0)] * 4
    x, y = batch(seed=4)
    assert net.train_step(x, y, lr=1e-2) == twin.train_step(x, y, lr=1e-2)
    assert_same(state(net), state(twin))


def test_a_fresh_network_is_left_without_an_input_shape_and_its_flatten_unfixed():
    net = conv_pool_fc()
    net.profile(*batch(), repeats=1)
    assert net.input_shape is None and net.layers[3].input_shape is None
    assert not any(getattr(layer, "training", False) for layer in net.layers)


@pytest.mark.parametrize("repeats", [0, -1, 2.5, "3", True, None])
def test_a_bad_repeats_is_a_value_error_naming_it(repeats):
    with pytest.raises(ValueError, match="repeats must be an int from 1"):
        conv_pool_fc().profile(*batch(), repeats=repeats)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((N, 8, 8)), np.zeros(N, int), "Conv expects images"),
    (np.zeros((N, 10, 10, 2)), np.zeros(N, int), r"FullyConnected \(24, 5\) expects"),
    (np.zeros((N, 8, 8, 2)), np.zeros(N + 1, int), "labels"),
    (np.full((N, 8, 8, 2), "a"), np.zeros(N, int), "inputs must be numbers"),
    (np.zeros((0, 8, 8, 2)), np.zeros(0, int), "empty"),
    (np.zeros((N, 8, 8, 2)), np.full(N, 5), r"class ids must lie in \[0, 5\)"),
])
def test_bad_inputs_raise_as_train_step_does(x, y, message):
    net = conv_pool_fc()
    with pytest.raises(ValueError, match=message) as profiled:
        net.profile(x, y)
    with pytest.raises(ValueError) as trained:
        conv_pool_fc().train_step(x, y)
    assert str(profiled.value) == str(trained.value)
    assert net.input_shape is None
