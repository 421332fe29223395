"""The backend choice in cnnc.kernels (made at import, so each case runs in a fresh process)."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

import cnnc
from cnnc import _numpy_kernels, kernels

PRINT_IMPLEMENTATION = "from cnnc import kernels; print(kernels.IMPLEMENTATION)"
KERNEL_NAMES = {"conv2d_forward", "conv2d_grad_input", "conv2d_grad_params", "maxpool2d_forward",
                "maxpool2d_backward", "adam_update", "matmul", "leaky_relu", "leaky_relu_backward",
                "memory_pool"}


def run_with_backend(value, code="import cnnc; print(cnnc.backend())", avx2="1", package_dir=None):
    """Run code in a fresh interpreter; package_dir, when given, holds the cnnc it imports."""
    env = dict(os.environ, CNNC_BACKEND=value, CNNC_AVX2=avx2)
    if package_dir is not None:
        env["PYTHONPATH"] = str(package_dir)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, cwd=package_dir,
                          capture_output=True, text=True, timeout=120)


def cnnc_without_extension(tmp_path):
    """A copy of cnnc without its compiled modules, as an install whose build failed has it;
    returns the directory to import it from."""
    shutil.copytree(os.path.dirname(cnnc.__file__), tmp_path / "cnnc", ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "__pycache__", "_build_failure.txt"))
    return tmp_path


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


def test_compiled_without_the_extension_is_an_import_error_saying_how_to_build(tmp_path):
    result = run_with_backend("compiled", package_dir=cnnc_without_extension(tmp_path))
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "pip install" in result.stderr
    assert "no compiled extension" in result.stderr


def test_auto_without_the_extension_runs_on_numpy_and_says_why(tmp_path):
    result = run_with_backend("auto", package_dir=cnnc_without_extension(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"
    assert "RuntimeWarning" in result.stderr and "no compiled extension" in result.stderr
    assert "circular import" not in result.stderr


def test_the_warning_gives_the_reason_the_build_recorded(tmp_path):
    package_dir = cnnc_without_extension(tmp_path)
    (package_dir / "cnnc" / "_build_failure.txt").write_text(
        "the C compiler (cc) cannot compile a test program\n")
    result = run_with_backend("auto", package_dir=package_dir)
    assert result.returncode == 0 and result.stdout.strip() == "numpy", result.stderr
    assert "the build could not make them: the C compiler (cc) cannot compile" in result.stderr


@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_an_extension_that_does_not_load_is_named_with_its_error(tmp_path, backend):
    package_dir = cnnc_without_extension(tmp_path)
    (package_dir / "cnnc" / ("_kernels" + sysconfig.get_config_var("EXT_SUFFIX"))).write_bytes(
        b"not a shared library")
    result = run_with_backend(backend, package_dir=package_dir)
    assert "is there but does not load" in result.stderr
    if backend == "auto":
        assert result.returncode == 0 and result.stdout.strip() == "numpy", result.stderr
    else:
        assert result.returncode != 0 and "ImportError" in result.stderr


def test_numpy_chosen_explicitly_gives_no_warning(tmp_path):
    result = run_with_backend("numpy", package_dir=cnnc_without_extension(tmp_path))
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
