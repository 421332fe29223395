"""Network.save / Network.load (cnnc.saving): one .npz, no pickle, written atomically, and
training resumes exactly where it stopped."""
import json
import os
import zipfile

import numpy as np
import pytest

from cnnc import (AbstractActivation, AdamOptimizer, Conv, Flatten, FullyConnected, MaxPool,
                  MeanSquaredError, Network, SGDOptimizer, SoftmaxCrossEntropy, leaky_relu, relu,
                  saving, sigmoid, tanh)
from cnnc.activations import LeakyReLU

from .test_network import assert_same_state, bars, state_of


def varied_network(dtype=np.float32):
    """Every kind of layer, activation and optimizer that can be saved."""
    np.random.seed(1)
    return Network([
        Conv((3, 3, 1, 4), padding="same", activation=leaky_relu, optimizer=AdamOptimizer(0.8, 0.99, 1e-6),
             dtype=dtype),
        Conv((2, 2, 4, 6), strides=(2, 1), padding=(1, 0), activation=LeakyReLU(0.2),
             optimizer=SGDOptimizer(momentum=0.9, nesterov=True), dtype=dtype),
        MaxPool(2, strides=1),
        Flatten((6, 10, 6)),
        FullyConnected((360, 16), activation=sigmoid, optimizer=SGDOptimizer(), dtype=dtype),
        FullyConnected((16, 8), activation=tanh, dtype=dtype),
        FullyConnected((8, 4), activation=relu, dtype=dtype),
    ], loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_gives_identical_predictions_and_an_identical_next_step(tmp_path, dtype):
    x, y = bars(40)
    net = varied_network(dtype)
    for start in range(0, 40, 10):
        net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    net.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")

    assert loaded.dtype == net.dtype and loaded.input_shape == (12, 12, 1)
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in net.layers]
    assert_same_state(state_of(loaded), state_of(net))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    for start in range(0, 20, 10):      # the next steps: same losses, same weights, to the bit
        assert loaded.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2) == \
            net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    assert_same_state(state_of(loaded), state_of(net))


def test_a_network_never_trained_saves_and_loads(tmp_path):
    net = Network([Flatten((2, 2, 1)), FullyConnected((4, 3))], loss=MeanSquaredError())
    net.save(tmp_path / "fresh.npz")
    loaded = Network.load(tmp_path / "fresh.npz")
    assert isinstance(loaded.loss, MeanSquaredError) and loaded.layers[1].optimizer.state == {}
    np.testing.assert_array_equal(loaded.layers[1].params["w"], net.layers[1].params["w"])


def test_load_does_not_draw_from_numpy_random(tmp_path):
    varied_network().save(tmp_path / "net.npz")
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    Network.load(tmp_path / "net.npz")
    assert np.random.rand() == expected


def test_the_file_is_a_plain_npz_without_pickle(tmp_path):
    net = varied_network()
    net.train_step(*bars(4), lr=1e-3)
    net.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(str(arrays.pop(saving._HEADER)))
    assert header["format"] == "cnnc-network" and header["version"] == 1
    assert all(a.dtype != object for a in arrays.values())
    assert "layer0/w" in arrays and "layer0/optimizer/w/m" in arrays and "layer1/optimizer/b/velocity" in arrays


def test_an_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"
    net = varied_network()
    net.save(path)
    with open(path, "rb") as handle:
        before = handle.read()
    real_savez = np.savez

    def savez_then_fail(file, **arrays):
        real_savez(file, **dict(list(arrays.items())[:2]))   # part of the file written...
        raise KeyboardInterrupt                               # ...and then the user hits Ctrl-C

    monkeypatch.setattr(saving.np, "savez", savez_then_fail)
    net.train_step(*bars(4), lr=1e-3)
    with pytest.raises(KeyboardInterrupt):
        net.save(path)
    with open(path, "rb") as handle:
        assert handle.read() == before
    assert os.listdir(tmp_path) == ["net.npz"]           # no temporary file left behind


def write_npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def saved_arrays(tmp_path):
    net = varied_network()
    net.train_step(*bars(4), lr=1e-3)
    net.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        return {name: npz[name] for name in npz.files}


def test_load_refuses_a_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"\x80\x04 not an archive at all")
    with pytest.raises(ValueError, match="not a cnnc network file"):
        Network.load(path)


def test_load_refuses_an_npz_that_is_not_ours(tmp_path):
    path = write_npz(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a cnnc network file"):
        Network.load(path)


def test_load_refuses_pickled_objects(tmp_path):
    arrays = saved_arrays(tmp_path)
    arrays["layer0/w"] = np.array([{"a": 1}, None], dtype=object)
    path = write_npz(tmp_path / "pickled.npz", **arrays)
    with pytest.raises(ValueError, match="pickled objects"):
        Network.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda h, a: h.update(format="keras"), "not a cnnc network file"),
    (lambda h, a: h.update(version=99), "format version 99"),
    (lambda h, a: h["layers"][0].update(type="Dense"), "unknown layer 'Dense'"),
    (lambda h, a: h["layers"][0]["activation"].update(type="Swish"), "unknown activation 'Swish'"),
    (lambda h, a: h["layers"][0]["optimizer"].update(lr=3), "malformed"),
    (lambda h, a: h["layers"][0].pop("fshape"), "malformed"),
    (lambda h, a: a.pop("layer4/b"), "no array 'layer4/b'"),
    (lambda h, a: a.update({"layer0/w": np.zeros((3, 3, 1, 5), np.float32)}), "layer0/w"),
    (lambda h, a: a.update({"layer0/w": a["layer0/w"].astype(np.float64)}), "float64"),
    (lambda h, a: a.update(extra=np.zeros(2)), "unexpected arrays"),
])
def test_load_refuses_a_damaged_file_with_a_clear_error(tmp_path, change, message):
    arrays = saved_arrays(tmp_path)
    header = json.loads(str(arrays.pop(saving._HEADER)))
    change(header, arrays)
    arrays[saving._HEADER] = np.array(json.dumps(header))
    path = write_npz(tmp_path / "damaged.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        Network.load(path)


def test_load_refuses_a_header_that_is_not_json(tmp_path):
    arrays = saved_arrays(tmp_path)
    arrays[saving._HEADER] = np.array("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        Network.load(write_npz(tmp_path / "bad.npz", **arrays))


class Swish(AbstractActivation):
    def compute(self, x):
        return x / (1 + np.exp(-x))

    def deriv(self, x):
        s = 1 / (1 + np.exp(-x))
        return s + x * s * (1 - s)


def test_save_refuses_what_it_could_not_build_again(tmp_path):
    net = Network([Flatten((2, 2, 1)), FullyConnected((4, 3), activation=Swish())],
                  loss=SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match="activation Swish"):
        net.save(tmp_path / "net.npz")
    assert not (tmp_path / "net.npz").exists() and os.listdir(tmp_path) == []


def test_saved_file_is_a_zip_that_numpy_reads(tmp_path):
    varied_network().save(tmp_path / "net.npz")
    assert zipfile.is_zipfile(tmp_path / "net.npz")
