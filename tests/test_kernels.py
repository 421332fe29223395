"""The backend choice in cnnc.kernels (made at import, so each case runs in a fresh process)."""
import os
import subprocess
import sys

import pytest

import cnnc
from cnnc import _numpy_kernels, kernels

PRINT_IMPLEMENTATION = "from cnnc import kernels; print(kernels.IMPLEMENTATION)"
KERNEL_NAMES = {"conv2d_forward", "conv2d_grad_input", "conv2d_grad_params", "maxpool2d_forward",
                "maxpool2d_backward", "adam_update", "matmul", "leaky_relu", "leaky_relu_backward",
                "memory_pool"}


# Run in a fresh interpreter where importing cnnc._kernels fails, as on a machine where
# the extension was never built.
WITHOUT_EXTENSION = """
import importlib.abc, sys
class NoExtension(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "cnnc._kernels":
            raise ImportError("cnnc._kernels blocked for this test")
sys.meta_path.insert(0, NoExtension())
"""


def run_with_backend(value, code="import cnnc; print(cnnc.backend())", extension=True, avx2="1"):
    env = dict(os.environ, CNNC_BACKEND=value, CNNC_AVX2=avx2)
    code = code if extension else WITHOUT_EXTENSION + code
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env,
                          capture_output=True, text=True)


def compiled_is_built():
    try:
        from cnnc import _kernels  # noqa: F401
    except ImportError:
        return False
    return True


def test_kernels_module_exposes_exactly_the_kernel_functions():
    public = {name for name in dir(kernels) if not name.startswith("_") and callable(getattr(kernels, name))}
    assert public == KERNEL_NAMES
    assert KERNEL_NAMES <= set(dir(_numpy_kernels))


def test_backend_reports_the_module_in_use():
    expected = "compiled" if compiled_is_built() and os.environ.get("CNNC_BACKEND") != "numpy" else "numpy"
    assert cnnc.backend() == expected


def test_numpy_backend_can_be_forced():
    result = run_with_backend("numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_auto_takes_the_compiled_kernels_when_built():
    result = run_with_backend("auto")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("compiled" if compiled_is_built() else "numpy")


def test_compiled_without_the_extension_is_an_import_error_saying_how_to_build():
    result = run_with_backend("compiled", extension=False)
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "pip install" in result.stderr


def test_auto_without_the_extension_runs_on_numpy_and_says_so():
    result = run_with_backend("auto", extension=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"
    assert "RuntimeWarning" in result.stderr and "not built" in result.stderr


def test_numpy_chosen_explicitly_gives_no_warning():
    result = run_with_backend("numpy", extension=False)
    assert result.returncode == 0 and result.stdout.strip() == "numpy"
    assert "Warning" not in result.stderr


@pytest.mark.skipif(not compiled_is_built(), reason="the compiled extension is not built here")
def test_compiled_backend_runs_when_built():
    result = run_with_backend("compiled")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled"


@pytest.mark.parametrize("value", ["fast", "gpu"])
def test_unknown_backend_is_refused(value):
    result = run_with_backend(value)
    assert result.returncode != 0
    assert "CNNC_BACKEND must be" in result.stderr and value in result.stderr


def avx2_runs_here():
    """Whether the AVX2 build is built and this CPU runs it."""
    try:
        from cnnc import _kernels, _kernels_avx2  # noqa: F401
    except ImportError:
        return False
    return _kernels._cpu_has_avx2_fma()


@pytest.mark.skipif(not compiled_is_built(), reason="the compiled extension is not built here")
@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_the_avx2_build_runs_where_the_cpu_has_avx2_and_fma(backend):
    result = run_with_backend(backend, PRINT_IMPLEMENTATION)
    assert result.returncode == 0, result.stderr
    expected = "cnnc._kernels_avx2" if avx2_runs_here() else "cnnc._kernels"
    assert result.stdout.strip() == expected


@pytest.mark.skipif(not compiled_is_built(), reason="the compiled extension is not built here")
def test_cnnc_avx2_0_keeps_the_baseline_build():
    result = run_with_backend("compiled", PRINT_IMPLEMENTATION, avx2="0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cnnc._kernels"


def test_numpy_backend_names_its_module():
    result = run_with_backend("numpy", PRINT_IMPLEMENTATION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cnnc._numpy_kernels"
