"""The examples run as a user runs them, here on the bundled MNIST sample, and print what
they promise (short runs: their options cut the training)."""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def run_example(name, *args, tmp_path):
    env = dict(os.environ, CNNC_DATA=str(tmp_path / "no-mnist-here"))
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_mnist_mlp_runs_the_report_experiments_with_the_report_log(tmp_path):
    out = run_example("mnist_mlp.py", "--iterations", "20", tmp_path=tmp_path)
    assert "the MNIST sample bundled with cnnc" in out
    assert out.count("Iteration: 0, loss : ") == 3 and "Iteration: 10, loss : " in out
    for name in ("sigmoid + SGD", "ReLU + SGD", "ReLU + Adam"):
        assert name in out.split("experiment")[-1]


@pytest.mark.slow
def test_mnist_cnn_trains_summarizes_saves_and_loads(tmp_path):
    out = run_example("mnist_cnn.py", "--epochs", "1", "--save", "cnn.npz", tmp_path=tmp_path)
    assert "total parameters: 306,122" in out and "(None, 6, 6, 32)" in out
    assert out.count("epoch 1: loss") == 2
    assert "loaded back: the same predictions" in out
    assert (tmp_path / "cnn.npz").exists()


@pytest.mark.slow
def test_reproduce_report_prints_the_table_and_plots(tmp_path):
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib (pip install '.[examples]')")
    out = run_example("reproduce_report.py", "--max-iterations", "3", "--plot", "curves.png",
                      tmp_path=tmp_path)
    table = out[out.index("| section |"):]
    assert table.count("\n| ") == 9           # nine experiments below the header
    assert "| 5 | CNN with pooling | 3 | 18.71% |" in table
    assert (tmp_path / "curves.png").stat().st_size > 10000


def test_reproduce_report_without_matplotlib_still_prints_the_table(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "matplotlib.py").write_text("raise ImportError('matplotlib blocked for this test')\n")
    env_path = os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "reproduce_report.py"), "--max-iterations", "2"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=env_path, CNNC_DATA=str(tmp_path)),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| 3 | MLP, ReLU + Adam | 2 | 88.68% |" in result.stdout
    assert "no PNG: matplotlib is not installed" in result.stdout


def fake_fashion_mnist(directory, train=256, test=64):
    """The four Fashion-MNIST files, holding random images of the right shape and type."""
    import gzip

    import numpy as np
    rng = np.random.default_rng(0)
    directory.mkdir()
    for part, count in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)),
                            ("labels-idx1", rng.integers(0, 10, count, dtype=np.uint8))):
            header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
            with gzip.open(directory / f"{part}-{kind}-ubyte.gz", "wb") as out:
                out.write(header + array.tobytes())
    return directory


@pytest.mark.slow
def test_fashion_mnist_trains_the_next_network_saves_it_and_plots(tmp_path):
    data = fake_fashion_mnist(tmp_path / "fashion")
    args = ["--epochs", "1", "--data", str(data), "--save", "net.npz", "--plot", "curves.png"]
    out = run_example("fashion_mnist.py", *args, tmp_path=tmp_path)
    assert "256 training and 64 test images" in out
    assert "BatchNorm(32" in out and "Dropout(0.5)" in out and "total parameters: 431,146" in out
    assert "epoch 1: loss" in out and "loaded back: the same predictions" in out
    assert (tmp_path / "net.npz").exists()
    assert (tmp_path / "curves.png").exists() or "no PNG: matplotlib is not installed" in out


@pytest.mark.slow
def test_export_hands_the_course_cnn_to_onnx_runtime_and_torch(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export needs pip install 'cnnc[onnx]'")
    pytest.importorskip("torch", reason="the export needs pip install 'cnnc[torch]'")
    out = run_example("export.py", "--epochs", "1", "--out", str(tmp_path), tmp_path=tmp_path)
    assert "ONNX Runtime" in out and "same classes for 100.00% of images" in out
    assert out.count("same classes for 100.00%") == 2 and "and back to cnnc: the same predictions" in out
    assert (tmp_path / "course_cnn.onnx").exists()


def png_size(path):
    """(width, height) of a PNG file, read from its header after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


VISUALIZE_PNGS = ("first_conv_filters.png", "feature_maps.png", "confusion_matrix.png")


@pytest.mark.slow
def test_visualize_trains_and_draws_filters_feature_maps_and_confusion_matrix(tmp_path):
    pytest.importorskip("matplotlib", reason="the PNGs need matplotlib (pip install '.[examples]')")
    out = run_example("visualize.py", "--epochs", "1", "--out", "pictures", tmp_path=tmp_path)
    assert "course_cnn() trained for 1 epochs on the 4,000 digits bundled with cnnc" in out
    accuracy = float(out.split("held-out accuracy: ")[1].split("%")[0])
    assert accuracy > 85 and "on 1,000 digits" in out
    for name in VISUALIZE_PNGS:
        path = tmp_path / "pictures" / name
        assert os.path.join("pictures", name) in out
        width, height = png_size(path)
        assert width >= 400 and height >= 100 and path.stat().st_size > 5000, (name, width, height)
    width, height = png_size(tmp_path / "pictures" / "feature_maps.png")
    assert height > 600          # the input and six layers, one row each at least


@pytest.mark.slow
def test_visualize_draws_a_saved_network(tmp_path):
    pytest.importorskip("matplotlib", reason="the PNGs need matplotlib (pip install '.[examples]')")
    import cnnc
    cnnc.models.course_cnn(pooling=False).save(str(tmp_path / "untrained.npz"))
    out = run_example("visualize.py", "--model", "untrained.npz", "--index", "3",
                      "--out", str(tmp_path / "out"), tmp_path=tmp_path)
    assert "the network saved in untrained.npz" in out and "held-out digit 3" in out
    assert "held-out accuracy: " in out
    for name in VISUALIZE_PNGS:
        png_size(tmp_path / "out" / name)


def test_visualize_without_matplotlib_says_what_to_install(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "matplotlib.py").write_text("raise ImportError('matplotlib blocked for this test')\n")
    env_path = os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, os.path.join(EXAMPLES, "visualize.py")], cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=env_path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1
    assert "no PNG: matplotlib is not installed; pip install '.[examples]'" in result.stdout
    assert not list(tmp_path.glob("*.png"))
