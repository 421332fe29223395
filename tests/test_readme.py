"""Every Python block of the README runs as written, in order, as one session.

A block may be marked on the line before its fence: `<!-- readme-test: skip, why -->`
(the internet, large files) or `<!-- readme-test: needs module ... -->` (run where those
modules are installed)."""
import importlib.util
import os
import re
import subprocess
import sys
import textwrap

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")
BLOCK = re.compile(r"(?:<!-- readme-test: (?P<mark>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)

# Checked after the block whose first line this is: the tour trains to over 90% held out
# and saves a network that loads back predicting the same.
AFTER = {
    "import numpy as np": """
        assert history["val_accuracy"][-1] > 0.9, history
        assert np.array_equal(net.predict(x_test), Network.load("course_cnn.npz").predict(x_test))
    """,
}


def blocks():
    """(mark or None, code) of every python block, in README order."""
    with open(README, encoding="utf-8") as handle:
        return [(match["mark"], match["code"]) for match in BLOCK.finditer(handle.read())]


def runs(mark):
    """Whether the tests run a block with this mark, here."""
    if mark is None:
        return True
    if mark.startswith("skip,"):
        return False
    kind, *modules = mark.split()
    assert kind == "needs" and modules, f"unknown README block mark {mark!r}"
    return all(importlib.util.find_spec(module) for module in modules)


def test_every_block_is_marked_in_a_way_the_test_understands():
    marks = [mark for mark, _ in blocks() if mark is not None]
    assert marks, "the README marks its blocks that need the internet or extras"
    for mark in marks:
        runs(mark)


def test_every_python_block_runs_as_written_in_order(tmp_path):
    session = []
    for number, (mark, code) in enumerate(blocks(), 1):
        if not runs(mark):
            continue
        session.append(code)
        session.append(textwrap.dedent(AFTER.get(code.splitlines()[0], "")))
        session.append(f"print('block {number} ok')\n")
    paths = [os.path.abspath(path) for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    done = subprocess.run([sys.executable, "-c", "".join(session)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(paths)))
    assert done.returncode == 0, done.stderr[-3000:]
    expected = [f"block {number} ok" for number, (mark, _) in enumerate(blocks(), 1) if runs(mark)]
    assert re.findall(r"block \d+ ok", done.stdout) == expected
    assert "total parameters: 306,122" in done.stdout
