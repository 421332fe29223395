"""The README's code runs as written: its tour, and the export block after it."""
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")


def block(heading):
    """The first python code block of the README section under `heading`."""
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    section = text[text.index(f"## {heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run(code, tmp_path):
    paths = [os.path.abspath(path) for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(paths)))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_tour_and_the_export_block_run_as_written(tmp_path):
    """The tour trains the seed CNN (to over 90% held out) and saves it; where the export
    extras are installed, the export block then hands that network over (one process)."""
    code = "import os\n" + block("A tour, with the seed report's CNN") + textwrap.dedent("""
        assert len(history["val_accuracy"]) == 3 and history["val_accuracy"][-1] > 0.9, history
        assert np.array_equal(net.predict(x_test), Network.load("seed_cnn.npz").predict(x_test))
        print("tour ok")
    """)
    exports = all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime", "torch"))
    if exports:
        code += block("When one machine is not enough") + textwrap.dedent("""
            assert os.path.getsize("net.onnx") > 100_000 and len(net.layers) == 6
            print("export ok")
        """)
    out = run(code, tmp_path)
    assert "tour ok" in out and "total parameters: 306,122" in out
    assert ("export ok" in out) == exports
