"""Network.save / Network.load (cnnc.saving): one .npz, no pickle, written atomically, and
training resumes exactly where it stopped."""
import io
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from cnnc import (AbstractActivation, AdamOptimizer, AdamWOptimizer, AvgPool, BatchNorm, Conv,
                  Dropout, Flatten, FullyConnected, GlobalAvgPool, MaxPool,
                  MeanSquaredError, Network, SGDOptimizer, SoftmaxCrossEntropy, leaky_relu, relu,
                  init, saving, sigmoid, tanh)
from cnnc.activations import LeakyReLU
from cnnc.layers import Layer, ParametricLayer

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
    assert header["format"] == "cnnc-network" and header["version"] == saving.VERSION == 2
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
    with pytest.raises(ValueError, match="not an .npz archive"):
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


# ============================================================ damaged and crafted files

def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Network.load(tmp_path / "nowhere.npz")


def test_a_directory_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        Network.load(tmp_path)


def damaged_copies(data, count, seed=0):
    """Copies of data with bytes flipped, overwritten, cut off, removed or inserted."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        copy = bytearray(data)
        kind = rng.integers(5)
        at = int(rng.integers(len(copy)))
        if kind == 0:
            for spot in rng.integers(0, len(copy), int(rng.integers(1, 8))):
                copy[spot] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            span = int(rng.integers(1, 64))
            copy[at:at + span] = rng.integers(0, 256, len(copy[at:at + span]), dtype=np.uint8).tobytes()
        elif kind == 2:
            del copy[at:]
        elif kind == 3:
            del copy[at:at + int(rng.integers(1, 64))]
        else:
            copy[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        yield bytes(copy)


def test_every_damaged_copy_loads_whole_or_raises_a_value_error_naming_the_file(tmp_path):
    good = tmp_path / "good.npz"
    net = varied_network()
    net.train_step(*bars(4), lr=1e-3)
    net.save(good)
    refused = 0
    for number, data in enumerate(damaged_copies(good.read_bytes(), 400)):
        path = tmp_path / f"damaged{number}.npz"
        path.write_bytes(data)
        try:
            loaded = Network.load(path)
        except ValueError as error:
            assert str(path) in str(error), error
            refused += 1
        else:
            assert_same_state(state_of(loaded), state_of(net))
        path.unlink()
    assert refused > 350        # the few others hit bytes no reader looks at (timestamps, comments)


def npz_with_header(tmp_path, header, **arrays):
    arrays[saving._HEADER] = np.array(json.dumps(header))
    return write_npz(tmp_path / "crafted.npz", **arrays)


def fc_header(n_in, n_out, steps=None):
    optimizer = {"type": "AdamOptimizer", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                 "steps": steps or {}}
    return {"format": "cnnc-network", "version": 1, "dtype": "float32", "loss": {"type": "MeanSquaredError"},
            "input_shape": None, "layers": [{"type": "FullyConnected", "shape": [n_in, n_out],
                                             "activation": {"type": "Linear"}, "optimizer": optimizer}]}


def npy_member(shape, dtype="<f4", data=b""):
    """An .npy file's bytes: a header declaring shape, then data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + data


def crafted_files(directory):
    """Small files that declare enormous arrays, in every place a size is declared."""
    files = {}
    small = {"layer0/w": np.zeros((2, 3), np.float32), "layer0/b": np.zeros(3, np.float32)}
    for n in (20000, 50000):
        files[f"architecture of {n} x {n}"] = npz_with_header(directory, fc_header(n, n), **small)
        os.rename(files[f"architecture of {n} x {n}"], directory / f"architecture{n}.npz")
        files[f"architecture of {n} x {n}"] = directory / f"architecture{n}.npz"

    header = npy_member((), "<U200", json.dumps(fc_header(2, 3)).ljust(200).encode("utf-32-le"))
    bias = npy_member((3,), data=b"\0" * 12)
    files[".npy header of 10**12 elements"] = directory / "header.npz"
    files[".npy header of 10**12 elements"].write_bytes(zip_bytes({
        saving._HEADER + ".npy": stored(header), "layer0/b.npy": stored(bias),
        "layer0/w.npy": stored(npy_member((10**6, 10**6), data=b"\0" * 24))}))
    bomb = {saving._HEADER + ".npy": stored(header), "layer0/b.npy": stored(bias),
            "layer0/w.npy": deflated_zeros(npy_member((2**28,)), 2**30)}
    files["a member inflating to 1 GiB"] = directory / "bomb.npz"
    files["a member inflating to 1 GiB"].write_bytes(zip_bytes(bomb))
    files["100 members sharing those bytes"] = directory / "overlapping.npz"
    files["100 members sharing those bytes"].write_bytes(zip_bytes(bomb, [f"layer{depth}/w.npy"
                                                                          for depth in range(1, 100)]))
    return files


def stored(data):
    return 0, data, zlib.crc32(data), len(data)


def deflated_zeros(head, count):
    """A deflate stream of head and then count zero bytes (a multiple of 1 MiB), made fast:
    after a full flush the compressor starts afresh, so one compressed MiB repeats."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = [compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH)]
    block = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(count // 2**20):
        crc = zlib.crc32(bytes(2**20), crc)
    data += [block] * (count // 2**20) + [compressor.flush()]
    return 8, b"".join(data), crc, len(head) + count


def zip_bytes(members, aliases=()):
    """A zip archive of members given as name -> (method, compressed data, crc32, size), and
    directory entries named in aliases that point at the bytes of the last member."""
    local, central = bytearray(), bytearray()
    for name, (method, data, crc, size) in members.items():
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0)
        for entry in (name, *aliases) if name == list(members)[-1] else (name,):
            central += (b"PK\1\2" + struct.pack("<H", 20) + fields[:-4] + struct.pack("<HH", len(entry), 0)
                        + struct.pack("<HHHII", 0, 0, 0, 0, len(local)) + entry.encode())
        local += b"PK\3\4" + fields + name.encode() + data
    count = len(members) + len(aliases)
    end = b"PK\5\6" + struct.pack("<HHHHIIH", 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("crafted")
    return directory, crafted_files(directory)


def test_sizes_are_checked_before_anything_large_is_allocated(crafted):
    files = crafted[1]
    assert max(os.path.getsize(path) for path in files.values()) < 1.1 * 2**20
    for case, path in files.items():
        tracemalloc.start()
        with pytest.raises(ValueError, match=str(path)):
            Network.load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 * 2**20, f"{case}: {peak:,} bytes allocated"


def test_crafted_sizes_are_refused_under_a_memory_limit(crafted):
    """In a process that cannot map 512 MiB more than it has, every crafted file is a ValueError."""
    directory = crafted[0]
    script = textwrap.dedent(f"""
        import pathlib, resource
        from cnnc import Network
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**29, resource.RLIM_INFINITY))
        for path in sorted(pathlib.Path({str(directory)!r}).glob("*.npz")):
            try:
                Network.load(path)
            except ValueError as error:
                print("refused", path.name)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused") == 5, done.stdout + done.stderr


def bad_header(change):
    header = fc_header(2, 3, steps={"w": 1})
    change(header)
    return header


@pytest.mark.parametrize("change, message", [
    (lambda h: h["layers"].__setitem__(0, "FullyConnected"), "layer must be an object"),
    # an optimizer that is no object declares no state, so its arrays are unexpected
    (lambda h: h["layers"][0].__setitem__("optimizer", []), "unexpected arrays"),
    (lambda h: h["layers"][0].__setitem__("activation", []), "activation must be an activation"),
    (lambda h: h["layers"][0].__setitem__("activation", {"type": "AdamOptimizer", "beta1": 0.9,
                                                         "beta2": 0.9, "eps": 1.0, "steps": {}}),
     "activation must be an activation"),
    (lambda h: h["layers"][0]["optimizer"]["steps"].__setitem__("w", -1), "step count"),
    (lambda h: h["layers"][0]["optimizer"]["steps"].__setitem__("w", 10**30), "step count"),
    (lambda h: h["layers"][0]["optimizer"]["steps"].__setitem__("w", 1.0), "step count"),
    (lambda h: h["layers"][0]["optimizer"]["steps"].__setitem__("w", True), "step count"),
    (lambda h: h["layers"][0]["optimizer"]["steps"].__setitem__("z", 1), "unknown fields"),
    (lambda h: h["layers"][0]["optimizer"].__setitem__("eps", "1e-8"), "eps must be a finite number"),
    (lambda h: h["layers"][0]["optimizer"].__setitem__("beta1", 1.5), "beta1"),
    (lambda h: h["layers"][0]["optimizer"].__setitem__("eps", -1.0), "eps"),
    (lambda h: h["layers"][0]["optimizer"].update(type="SGDOptimizer", momentum=0.9, nesterov=1,
                                                   **{"beta1": None}), "unknown fields|nesterov"),
    (lambda h: h["layers"][0]["activation"].update(type="LeakyReLU", slope=2), "slope"),
    (lambda h: h["layers"][0]["activation"].update(type="LeakyReLU"), "no slope"),
    (lambda h: h.update(version=True), "version True"),
    (lambda h: h.update(version="1"), "version '1'"),
    (lambda h: h.update(dtype="int8"), "dtype"),
    (lambda h: h.update(input_shape=[3]), "layer 0 does not take the saved input shape"),
    (lambda h: h.update(input_shape=[0]), "input_shape"),
    (lambda h: h.update(input_shape="(2,)"), "input_shape"),
    (lambda h: h["layers"][0].update(shape=[2, 3.0]), "shape"),
    (lambda h: h["layers"][0].update(shape=[2, 3, 4]), "shape"),
    (lambda h: h["layers"][0].update(shape=[2, 2**40]), "shape"),
    (lambda h: h["layers"].append({"type": "MaxPool", "pshape": [2, 2], "strides": [0, 1]}), "strides"),
    (lambda h: h["layers"].append({"type": "Flatten", "input_shape": [[1]]}), "input_shape"),
    (lambda h: h["layers"].insert(0, {"type": "Conv", "fshape": [3, 3, 1, 2], "strides": [1, 1],
                                      "padding": "full", "activation": {"type": "Linear"},
                                      "optimizer": h["layers"][0]["optimizer"]}), "padding"),
    (lambda h: h.update(loss="MeanSquaredError"), "loss must be an object"),
    (lambda h: h.update(loss={"type": "MeanSquaredError", "reduction": "sum"}), "unknown fields"),
    (lambda h: h.update(layers={"0": {}}), "layers must be a list"),
    (lambda h: h.pop("input_shape"), "has no input_shape"),
])
def test_every_header_value_is_checked_at_load(tmp_path, change, message):
    header = bad_header(change)
    arrays = {"layer0/w": np.zeros((2, 3), np.float32), "layer0/b": np.zeros(3, np.float32),
              "layer0/optimizer/w/m": np.zeros((2, 3), np.float32),
              "layer0/optimizer/w/v": np.zeros((2, 3), np.float32)}
    if "padding" in str(header):     # its arrays are there: its padding is refused
        arrays = {"layer0/w": np.zeros((3, 3, 1, 2), np.float32), "layer0/b": np.zeros(2, np.float32),
                  **{name.replace("layer0", "layer1"): value for name, value in arrays.items()}}
        header["layers"][0]["optimizer"] = {**header["layers"][0]["optimizer"], "steps": {}}
    path = npz_with_header(tmp_path, header, **arrays)
    with pytest.raises(ValueError, match=message) as caught:
        Network.load(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("text", [
    '{"format": "cnnc-network", "version": 1, "layers": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"format": "cnnc-network", "version": 1, "x": Infinity}',
    '{"format": "cnnc-network", "version": 1, "x": NaN}',
    '{"format": "cnnc-network", "version": 1, "x": ' + "9" * 5000 + "}",
])
def test_headers_json_cannot_parse_are_value_errors(tmp_path, text):
    arrays = saved_arrays(tmp_path)
    arrays[saving._HEADER] = np.array(text)
    with pytest.raises(ValueError, match="not JSON"):
        Network.load(write_npz(tmp_path / "bad.npz", **arrays))


def nested_activation(depth):
    inner = 0.1
    for _ in range(depth):
        inner = {"type": "LeakyReLU", "slope": inner}
    return inner


@pytest.mark.parametrize("change", [
    lambda h: h["layers"][0].update(shape=json.loads("[" * 900 + "]" * 900)),
    lambda h: h["layers"][0].update(activation=nested_activation(450)),
])
def test_configs_nested_deeper_than_any_class_needs_are_refused(tmp_path, change):
    """Deep enough to exhaust the stack of a check that recursed without a bound."""
    header = fc_header(2, 3)
    change(header)
    arrays = {"layer0/w": np.zeros((2, 3), np.float32), "layer0/b": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match="more than 16 deep"):
        Network.load(npz_with_header(tmp_path, header, **arrays))


def test_a_number_too_large_for_a_float_is_refused(tmp_path):
    header = json.dumps(fc_header(2, 3)).replace('"eps": 1e-08', '"eps": 1e999')
    arrays = {"layer0/w": np.zeros((2, 3), np.float32), "layer0/b": np.zeros(3, np.float32),
              saving._HEADER: np.array(header)}
    with pytest.raises(ValueError, match="eps must be a finite number"):
        Network.load(write_npz(tmp_path / "huge.npz", **arrays))


# ============================================================================= save

def test_saving_into_a_missing_directory_names_the_path_given(tmp_path):
    path = tmp_path / "missing" / "net.npz"
    with pytest.raises(FileNotFoundError) as caught:
        varied_network().save(path)
    assert caught.value.filename == str(path)


def test_saved_files_get_the_permissions_numpy_gives(tmp_path):
    np.savez(tmp_path / "numpy.npz", a=np.zeros(1))
    varied_network().save(tmp_path / "net.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "net.npz").st_mode) == \
        stat.S_IMODE(os.stat(tmp_path / "numpy.npz").st_mode)
    os.chmod(tmp_path / "net.npz", 0o640)           # an existing file keeps its own
    varied_network().save(tmp_path / "net.npz")
    assert stat.S_IMODE(os.stat(tmp_path / "net.npz").st_mode) == 0o640


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "net.npz"
    target.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    net = varied_network()
    net.save(link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert sorted(os.listdir(tmp_path / "models")) == ["net.npz"]
    np.testing.assert_array_equal(Network.load(target).layers[0].params["w"], net.layers[0].params["w"])


def test_a_save_killed_midway_leaves_a_part_the_next_save_removes(tmp_path):
    path = tmp_path / "net.npz"
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from cnnc import saving
        from tests.test_saving import varied_network
        def savez_then_die(file, **arrays):
            file.write(b"half a model")
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        saving.np.savez = savez_then_die
        varied_network().save({str(path)!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (part,) = os.listdir(tmp_path)
    assert part.startswith(".net.npz.") and part.endswith(".part")
    live = tmp_path / f".net.npz.{os.getpid()}.abc123.part"     # a save under way here: kept
    live.write_bytes(b"")
    varied_network().save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["net.npz", live.name])


# ===================================================== the next network's layers and optimizers


def assert_same_network(loaded, expected):
    """The same layers and optimizers, with the same arrays and state to the bit."""
    assert repr(loaded) == repr(expected)
    assert [repr(getattr(layer, "optimizer", None)) for layer in loaded.layers] == \
        [repr(getattr(layer, "optimizer", None)) for layer in expected.layers]
    assert_same_state(state_of(loaded), state_of(expected))
    for ours, theirs in zip(loaded.layers, expected.layers):
        for name, array in ours.state_dict().items():
            np.testing.assert_array_equal(array, theirs.state_dict()[name])
        for name in type(ours).generators:
            assert getattr(ours, name).bit_generator.state == getattr(theirs, name).bit_generator.state


def next_network():
    np.random.seed(2)
    return Network([
        Conv((3, 3, 1, 4), padding="same", optimizer=AdamWOptimizer(weight_decay=0.05)),
        BatchNorm(4, momentum=0.3, activation=relu, optimizer=SGDOptimizer(0.9, True, 1e-3)),
        AvgPool(2), Dropout(0.25, seed=5),
        Conv((3, 3, 4, 6), padding=1, optimizer=AdamOptimizer(weight_decay=1e-2)),
        GlobalAvgPool(), BatchNorm(6), Flatten(), FullyConnected((6, 4)),
    ], loss=SoftmaxCrossEntropy())


def test_the_next_networks_layers_and_optimizers_save_and_load(tmp_path):
    x, y = bars(40)
    net = next_network()
    for start in range(0, 40, 10):
        net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    net.save(tmp_path / "next.npz")
    loaded = Network.load(tmp_path / "next.npz")
    assert_same_network(loaded, net)
    assert not any(np.all(layer.running_var == 1) for layer in loaded.layers
                   if isinstance(layer, BatchNorm))
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))


def test_files_written_before_weight_decay_still_load(tmp_path):
    arrays = saved_arrays(tmp_path)
    header = json.loads(str(arrays.pop(saving._HEADER)))
    for spec in header["layers"]:
        if "optimizer" in spec:
            del spec["optimizer"]["weight_decay"]
    path = npz_with_header(tmp_path, header, **arrays)
    assert Network.load(path).layers[0].optimizer.weight_decay == 0.0


# ===================================================== files written in format version 1

FORMAT1 = os.path.join(os.path.dirname(__file__), "data")


def format1_reference(name):
    """The network a format-1 file holds, made without cnnc.saving: built by the code that
    wrote the file, then given the file's arrays and step counts by hand."""
    from .data.format1_networks import BUILDERS

    net = BUILDERS[name]()
    path = os.path.join(FORMAT1, f"format1_{name}.npz")
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    header = json.loads(str(arrays.pop(saving._HEADER)))
    for depth, (layer, spec) in enumerate(zip(net.layers, header["layers"])):
        for key in ("w", "b", "running_mean", "running_var"):
            if f"layer{depth}/{key}" in arrays:
                getattr(layer, key, layer.params.get(key))[...] = arrays[f"layer{depth}/{key}"]
        if spec["type"] == "Flatten" and spec["input_shape"] is not None:
            layer._fix(tuple(spec["input_shape"]))
        for key, step in spec.get("optimizer", {}).get("steps", {}).items():
            prefix = f"layer{depth}/optimizer/{key}/"
            layer.optimizer.state[key] = {slot[len(prefix):]: value for slot, value in arrays.items()
                                          if slot.startswith(prefix)}
            layer.optimizer.state[key]["step"] = step
    net.input_shape = None if header["input_shape"] is None else tuple(header["input_shape"])
    return net, path


@pytest.mark.parametrize("name", ["every_layer", "float64", "never_trained"])
def test_files_written_in_format_1_load_to_the_identical_network(name):
    from .data.format1_networks import images

    reference, path = format1_reference(name)
    loaded = Network.load(path)
    assert loaded.dtype == reference.dtype and loaded.input_shape == reference.input_shape
    assert_same_network(loaded, reference)
    x, y = images(20, seed=1)
    np.testing.assert_array_equal(loaded.predict(x), reference.predict(x))
    for start in (0, 10):       # training goes on as it would have: same losses, same bits
        assert loaded.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2) == \
            reference.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    assert_same_network(loaded, reference)


# ================================================= classes describe themselves; the registry

@saving.register
class ChannelScale(ParametricLayer):
    """z = x * w + b per channel, and the largest |x| seen in training kept as a buffer: a
    layer defined here, which saving.py has never heard of."""

    config_fields = ("channels", "activation", "optimizer")
    buffers = ("peak",)

    def __init__(self, channels, activation=None, optimizer=None, dtype=None):
        self.channels = int(channels)
        super().__init__((self.channels,), (self.channels,), activation, optimizer, init.ones,
                         init.zeros, dtype)
        self.peak = np.zeros(self.channels, self.dtype)

    @classmethod
    def state_shapes(cls, config):
        shape = (int(config["channels"]),)
        return {"w": shape, "b": shape, "peak": shape}

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, inputs):
        if self.training:
            np.maximum(self.peak, np.abs(inputs).reshape(-1, self.channels).max(axis=0), out=self.peak)
        z = inputs * self.params["w"] + self.params["b"]
        return z, self.activation.compute(z)

    def get_grad(self, inputs, layer_err):
        return {"w": (inputs * layer_err).reshape(-1, self.channels).sum(axis=0),
                "b": layer_err.reshape(-1, self.channels).sum(axis=0)}

    def backward(self, layer_err):
        return layer_err * self.params["w"]

    def __repr__(self):
        return f"ChannelScale({self.channels}, activation={self.activation!r})"


def test_a_layer_defined_outside_cnnc_saves_and_loads_without_a_change_to_saving(tmp_path):
    x, y = bars(30)
    np.random.seed(4)
    net = Network([Conv((3, 3, 1, 4), padding=1), ChannelScale(4, activation=relu,
                                                               optimizer=SGDOptimizer(0.9)),
                   GlobalAvgPool(), FullyConnected((4, 4))], loss=SoftmaxCrossEntropy())
    for start in (0, 10, 20):
        net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    net.save(tmp_path / "custom.npz")
    with np.load(tmp_path / "custom.npz") as npz:
        assert {"layer1/w", "layer1/b", "layer1/peak", "layer1/optimizer/w/velocity"} <= set(npz.files)
    loaded = Network.load(tmp_path / "custom.npz")

    assert repr(loaded) == repr(net) and repr(loaded.layers[1].optimizer) == repr(net.layers[1].optimizer)
    assert_same_state(state_of(loaded), state_of(net))
    assert np.all(net.layers[1].peak > 0)
    np.testing.assert_array_equal(loaded.layers[1].peak, net.layers[1].peak)
    np.testing.assert_array_equal(loaded.predict(x), net.predict(x))
    for start in (0, 10):
        assert loaded.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2) == \
            net.train_step(x[start:start + 10], y[start:start + 10], lr=1e-2)
    assert_same_state(state_of(loaded), state_of(net))
    np.testing.assert_array_equal(loaded.layers[1].peak, net.layers[1].peak)


def test_saving_names_no_class():
    """The module that reads files knows classes only through the registry."""
    with open(saving.__file__) as source:
        text = source.read()
    for cls in ("Conv", "FullyConnected", "BatchNorm", "AdamOptimizer", "SGDOptimizer", "LeakyReLU",
                "SoftmaxCrossEntropy", "Flatten", "Network"):
        assert f"{cls}(" not in text and f"import {cls}" not in text and f".{cls}" not in text


class ShiftedConv(Conv):
    pass


def test_a_subclass_not_registered_is_not_saved_as_its_base(tmp_path):
    net = Network([ShiftedConv((3, 3, 1, 2)), Flatten()], loss=SoftmaxCrossEntropy())
    with pytest.raises(ValueError, match="cannot save layer 0: layer ShiftedConv"):
        net.save(tmp_path / "net.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("where, name", [
    (lambda h: h["layers"][0], "os.system"),
    (lambda h: h["layers"][0], "Network"),
    (lambda h: h["layers"][0], "ShiftedConv"),          # defined, but never registered
    (lambda h: h["layers"][0], "ReLU"),                 # registered, but no layer
    (lambda h: h["layers"][0]["activation"], "FullyConnected"),    # a layer, but no activation
    (lambda h: h["loss"], "AdamOptimizer"),
])
def test_a_class_a_file_names_is_one_registered_for_its_place(tmp_path, where, name):
    header = fc_header(2, 3)
    where(header)["type"] = name
    arrays = {"layer0/w": np.zeros((2, 3), np.float32), "layer0/b": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=f"unknown [a-z]+ '{name}'"):
        Network.load(npz_with_header(tmp_path, header, **arrays))


def test_a_name_stands_for_one_class():
    saving.register(ChannelScale)           # again: the same class, nothing changes
    clash = type("Conv", (Layer,), {})
    with pytest.raises(ValueError, match="the name 'Conv' is cnnc.layers.Conv"):
        saving.register(clash)
    with pytest.raises(ValueError, match="only layers, activations, losses and optimizers"):
        saving.register(type("Thing", (), {}))
    assert saving._REGISTRY["layer"]["Conv"] is Conv


def test_every_class_cnnc_exports_describes_itself():
    """Each one saves, and its config rebuilds an equal object."""
    for obj in (Conv((3, 3, 2, 4), strides=2, padding="same"), MaxPool(3, 2), AvgPool(2),
                GlobalAvgPool(), Dropout(0.5, seed=3), Flatten(), Flatten((2, 3)),
                FullyConnected((3, 2)), BatchNorm(5, momentum=0.2), LeakyReLU(0.3), relu, sigmoid,
                tanh, SGDOptimizer(0.5, True, 1e-4), AdamOptimizer(weight_decay=0.1),
                AdamWOptimizer(), SoftmaxCrossEntropy(), MeanSquaredError()):
        cls = type(obj)
        assert saving._REGISTRY[cls.saved_kind][cls.__name__] is cls
        config = obj.get_config()
        assert set(config) == set(cls.config_fields)
        again = cls.from_config(config, None) if cls.saved_kind == "layer" else cls.from_config(config)
        assert repr(again) == repr(obj) and again.get_config() == config
        if cls.saved_kind == "layer":
            assert {name: value.shape for name, value in again.state_dict().items()} == \
                cls.state_shapes(config)


@pytest.mark.parametrize("name", ["every_layer", "float64", "never_trained"])
def test_a_format_1_file_loaded_and_saved_again_gains_only_the_version_and_generator_states(
        tmp_path, name):
    """Saved again, a format-1 file is format 2: the same arrays to the bit, the same header
    but for its version and each Dropout's generator, which format 1 did not save: the one its
    seed makes, which the loaded Dropout draws from."""
    path = os.path.join(FORMAT1, f"format1_{name}.npz")
    Network.load(path).save(tmp_path / "again.npz")
    with np.load(path) as old, np.load(tmp_path / "again.npz") as new:
        assert sorted(old.files) == sorted(new.files)
        old_header = json.loads(str(old[saving._HEADER]))
        new_header = json.loads(str(new[saving._HEADER]))
        assert (old_header["version"], new_header["version"]) == (1, 2)
        for spec in new_header["layers"]:
            if spec["type"] == "Dropout":
                seeded = np.random.default_rng(spec["seed"]).bit_generator.state
                assert spec.pop("generators") == {"rng": seeded}
        assert {**new_header, "version": 1} == old_header
        for key in set(old.files) - {saving._HEADER}:
            assert old[key].dtype == new[key].dtype
            np.testing.assert_array_equal(old[key], new[key])


# ============================================================ random generators (format 2)

def dropout_network(seed, dtype):
    """A Dropout between two FullyConnected layers, dropping 15 values per sample: batches of
    7 draw an odd number of values, so a float32 Dropout keeps half of a 64-bit draw between
    steps (has_uint32), which must be saved too."""
    np.random.seed(6)
    return Network([
        Conv((3, 3, 1, 2), padding=1, activation=relu, dtype=dtype), Flatten(),
        FullyConnected((288, 15), activation=relu, dtype=dtype), Dropout(0.4, seed=seed),
        FullyConnected((15, 4), dtype=dtype),
    ], loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [7, None])
def test_a_dropout_network_resumes_bit_for_bit(tmp_path, seed, dtype):
    """Trained k steps, saved and loaded, a network takes the next steps its original takes:
    the same masks, losses and weights, seeded or not."""
    x, y = bars(42)
    net = dropout_network(seed, dtype)
    for start in (0, 7, 14):
        net.train_step(x[start:start + 7], y[start:start + 7], lr=1e-2)
    dropout = net.layers[3]
    assert dropout.rng.bit_generator.state["has_uint32"] == (1 if dtype == np.float32 else 0)
    net.save(tmp_path / "dropout.npz")
    loaded = Network.load(tmp_path / "dropout.npz")
    assert loaded.layers[3].seed == seed
    assert_same_network(loaded, net)
    for start in (21, 28, 35):
        assert loaded.train_step(x[start:start + 7], y[start:start + 7], lr=1e-2) == \
            net.train_step(x[start:start + 7], y[start:start + 7], lr=1e-2)
        np.testing.assert_array_equal(loaded.layers[3]._mask, dropout._mask)
        assert_same_state(state_of(loaded), state_of(net))
    assert not np.array_equal(dropout._mask, np.ones_like(dropout._mask) / 0.6)    # it drops


def dropout_file(tmp_path, change):
    """A saved Dropout network's header and arrays, the header changed by change(header)."""
    net = Network([Flatten((4,)), Dropout(0.5, seed=1), FullyConnected((4, 2))], loss=SoftmaxCrossEntropy())
    net.train_step(np.ones((3, 4)), [0, 1, 0])
    net.save(tmp_path / "dropout.npz")
    with np.load(tmp_path / "dropout.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(str(arrays.pop(saving._HEADER)))
    change(header)
    return npz_with_header(tmp_path, header, **arrays)


def generator(header):
    return header["layers"][1]["generators"]["rng"]


@pytest.mark.parametrize("change, message", [
    (lambda h: generator(h).update(bit_generator="MT19937"),
     "layer 1 generator rng: unknown bit generator 'MT19937' \\(known: PCG64\\)"),
    (lambda h: generator(h).update(bit_generator=["PCG64"]), "unknown bit generator \\['PCG64'\\]"),
    (lambda h: generator(h).pop("uinteger"), "layer 1 generator rng has no uinteger"),
    (lambda h: generator(h).update(seed=3), "layer 1 generator rng has unknown fields \\['seed'\\]"),
    (lambda h: generator(h).update(state=[1, 1]), "layer 1 generator rng state must be an object"),
    (lambda h: generator(h)["state"].pop("inc"), "layer 1 generator rng state has no inc"),
    (lambda h: generator(h)["state"].update(state=-1), "layer 1 generator rng state must be an int from 0"),
    (lambda h: generator(h)["state"].update(state=2**128), "generator rng state must be an int from 0"),
    (lambda h: generator(h)["state"].update(state=1.0), "generator rng state must be an int"),
    (lambda h: generator(h)["state"].update(state="12"), "generator rng state must be an int"),
    (lambda h: generator(h)["state"].update(inc=2), "layer 1 generator rng inc must be odd"),
    (lambda h: generator(h)["state"].update(inc=2**128 + 1), "generator rng inc must be an int from 1"),
    (lambda h: generator(h).update(has_uint32=2),
     "layer 1 generator rng has_uint32 must be an int from 0 to 1"),
    (lambda h: generator(h).update(has_uint32=True), "has_uint32 must be an int"),
    (lambda h: generator(h).update(uinteger=2**32), "layer 1 generator rng uinteger must be an int from 0"),
    (lambda h: generator(h).update(uinteger=None), "uinteger must be an int"),
    (lambda h: h["layers"][1]["generators"].update(other=generator(h)), "layer 1 generators has unknown"),
    (lambda h: h["layers"][1].update(generators={}), "layer 1 generators has no rng"),
    (lambda h: h["layers"][1].update(generators=[]), "layer 1 generators must be an object"),
    (lambda h: h["layers"][1].pop("generators"), "layer 1 has no generators"),
    (lambda h: h["layers"][2].update(generators={}), "layer 2 has unknown fields \\['generators'\\]"),
    (lambda h: h.update(version=1), "layer 1 has unknown fields \\['generators'\\]"),
    (lambda h: h.update(version=3), "format version 3; this cnnc reads versions 1 to 2"),
    (lambda h: h["layers"][1].update(seed=-1), "Dropout seed must be None or an int"),
], ids=["kind", "kind_not_a_name", "no_uinteger", "extra_field", "state_not_an_object", "no_inc",
        "negative_state", "state_past_128_bits", "float_state", "string_state", "even_inc",
        "inc_past_128_bits",
        "has_uint32_2", "has_uint32_bool", "uinteger_past_32_bits", "uinteger_null", "unknown_generator",
        "missing_generator", "generators_not_an_object", "version_2_without_generators",
        "generators_of_a_layer_without", "version_1_with_generators", "version_3", "negative_seed"])
def test_a_damaged_generator_state_is_refused_naming_the_file_and_the_field(tmp_path, change, message):
    path = dropout_file(tmp_path, change)
    with pytest.raises(ValueError, match=message) as caught:
        Network.load(path)
    assert str(path) in str(caught.value)


def test_a_generator_state_numpy_accepts_is_restored_whatever_its_values(tmp_path):
    """The largest values each field may take load, and the Dropout draws from exactly them."""
    state = {"bit_generator": "PCG64", "state": {"state": 2**128 - 1, "inc": 2**128 - 1},
             "has_uint32": 1, "uinteger": 2**32 - 1}
    loaded = Network.load(dropout_file(tmp_path, lambda h: generator(h).update(state)))
    expected = np.random.Generator(np.random.PCG64())
    expected.bit_generator.state = state
    assert loaded.layers[1].rng.bit_generator.state == state
    assert loaded.layers[1].rng.random(5).tolist() == expected.random(5).tolist()


def test_saving_refuses_a_generator_it_could_not_restore(tmp_path):
    net = Network([Flatten((4,)), Dropout(0.5), FullyConnected((4, 2))], loss=SoftmaxCrossEntropy())
    net.layers[1].rng = np.random.Generator(np.random.MT19937(0))
    with pytest.raises(ValueError, match="cannot save layer 1: its rng must be a np.random.Generator "
                                         "over PCG64, got Generator\\(MT19937\\)"):
        net.save(tmp_path / "net.npz")
    assert os.listdir(tmp_path) == []
