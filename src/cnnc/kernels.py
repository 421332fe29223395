"""The kernel functions of the running backend: compiled `_kernels` or `_numpy_kernels`.

Besides the kernels, `memory_pool()` opens a block in which NumPy reuses the memory of
freed arrays (compiled backend; a plain block on NumPy), `set_num_threads(n)` /
`get_num_threads()` set and tell how many threads the compiled loops run on, and
`set_conv_path(path)` / `get_conv_path()` choose and tell how the compiled kernels compute
a convolution: "auto" (the default) chooses by shape, "direct" takes the register-tiled
direct loops, "winograd" takes Winograd's transforms for the 3x3 stride-1 passes, "gemm"
multiplies patch matrices by NumPy's OpenBLAS from the kernel threads (a ValueError where
NumPy ships none), "matmul" multiplies them by numpy.matmul.
Every path computes the same numbers up to rounding; the NumPy kernels have one path and
take any of the names.

The environment variable CNNC_BACKEND chooses: `auto` (the default) takes the compiled
extension when it is built and NumPy otherwise, with a warning, `numpy` always takes
NumPy, `compiled` insists on the extension. The extension comes in one build per
instruction set (cnnc._builds: baseline, avx2, avx512); the best one the CPU runs is
loaded, or the one CNNC_ISA names. IMPLEMENTATION names the module that runs.
The environment variable CNNC_CONV_PATH sets the first convolution path (as
set_conv_path), and CNNC_NUM_THREADS the first thread count. A variable set to nothing
(or spaces) means its default, as an unset one does.
"""
import importlib as _importlib
import os as _os
import warnings as _warnings

from . import _builds, _checks

# Written into the package by a build that could not compile the extension (see setup.py).
_BUILD_FAILURE_NOTE = _os.path.join(_os.path.dirname(__file__), "_build_failure.txt")


def _why_not_compiled(error):
    """Why the compiled extension cannot run, as the build recorded it or as the import failed."""
    if isinstance(error, ModuleNotFoundError) and error.name == _builds.BUILDS[0].module:
        try:
            with open(_BUILD_FAILURE_NOTE) as note:
                return f"the build could not make them: {note.read().strip()}"
        except OSError:
            return "this installation of cnnc has no compiled extension in it"
    return f"the compiled extension is there but does not load: {error}"


# OpenMP lets an idle worker thread spin for milliseconds after each parallel loop, in case
# another follows. On a busy machine that spinning holds a core the other work needs, and
# the loops stall on threads the system had to set aside; sleeping at once instead costs a
# wake-up (tens of microseconds) per loop, a third of a small network's step. cnnc's
# threads spin briefly, about as long as a wake-up takes, then sleep: GNU OpenMP counts
# that spin in GOMP_SPINCOUNT iterations; LLVM's (KMP_BLOCKTIME, in milliseconds) cannot
# spin that little and sleeps at once.
_WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
_WAIT_POLICY = {"GOMP_SPINCOUNT": "2000", "KMP_BLOCKTIME": "0"}


def _import_compiled(name):
    """Import a compiled build with its OpenMP threads spinning briefly while idle, unless
    the environment chose a wait policy. OpenMP reads it once, as the extension loads it."""
    chosen = any(variable in _os.environ for variable in _WAIT_POLICY_VARIABLES)
    if not chosen:
        _os.environ.update(_WAIT_POLICY)
    try:
        return _importlib.import_module(name)
    finally:
        if not chosen:
            for variable in _WAIT_POLICY:
                del _os.environ[variable]


_choice = _checks.environment("CNNC_BACKEND", "auto").lower()
if _choice not in ("auto", "compiled", "numpy"):
    raise ImportError(f"CNNC_BACKEND must be 'auto', 'compiled' or 'numpy', got {_choice!r}")
_isa = _checks.environment("CNNC_ISA", "auto").lower()
_ISAS = [build.isa for build in _builds.BUILDS]
if _isa not in ["auto"] + _ISAS:
    raise ValueError(f"CNNC_ISA must be 'auto' (the best build this CPU runs, the default) or "
                     f"one of {', '.join(map(repr, _ISAS))}, got {_isa!r}")


def _runnable_builds():
    """The builds this CPU runs, best first (only the baseline where cnnc._cpu cannot tell)."""
    try:
        cpu = _importlib.import_module(_builds.CPU_MODULE)
    except ImportError:
        return [_builds.BUILDS[0]]
    return [build for build in reversed(_builds.BUILDS)
            if all(cpu.supports(feature) for feature in build.features)]


def _load_compiled():
    """The compiled build CNNC_ISA asks for, or the best one built that the CPU runs."""
    runnable = _runnable_builds()
    if _isa == "auto":
        for build in runnable[:-1]:
            try:
                return _import_compiled(build.module)
            except ModuleNotFoundError:     # not built here (another compiler): the next best
                pass
        return _import_compiled(runnable[-1].module)
    chosen = next(build for build in _builds.BUILDS if build.isa == _isa)
    if chosen not in runnable:
        raise RuntimeError(f"CNNC_ISA={_isa}: this CPU does not run that build (it needs "
                           f"{', '.join(chosen.features)}); it runs "
                           f"{', '.join(build.isa for build in runnable)}")
    try:
        return _import_compiled(chosen.module)
    except ModuleNotFoundError as error:
        raise RuntimeError(f"CNNC_ISA={_isa}: this installation has no {_isa} build (its "
                           f"compiler could not make it; pip install -v shows why)") from error

if _choice == "numpy":
    from . import _numpy_kernels as _impl
else:
    try:
        _impl = _load_compiled()
    except ImportError as _error:
        if _choice == "compiled":
            raise ImportError(
                f"CNNC_BACKEND=compiled, but cnnc's compiled kernels cannot run: "
                f"{_why_not_compiled(_error)}. Reinstall where they can be built (pip install "
                "-v --force-reinstall --no-cache-dir cnnc shows the build), or unset "
                "CNNC_BACKEND to run on NumPy"
            ) from _error
        _warnings.warn(
            f"cnnc's compiled kernels cannot run ({_why_not_compiled(_error)}); running on "
            "the NumPy kernels, several times slower. Reinstall where they can be built (pip "
            "install -v shows the build), or set CNNC_BACKEND=numpy to choose NumPy without "
            "this warning.",
            RuntimeWarning, stacklevel=2)
        from . import _numpy_kernels as _impl

_conv_path = _checks.environment("CNNC_CONV_PATH", "auto").lower()
try:
    _impl.set_conv_path(_conv_path)
except ValueError as _error:
    raise ValueError(f"CNNC_CONV_PATH: {_error}") from None

IMPLEMENTATION = _impl.__name__
BACKEND = "numpy" if IMPLEMENTATION.endswith("._numpy_kernels") else "compiled"

conv2d_forward = _impl.conv2d_forward
conv2d_grad_input = _impl.conv2d_grad_input
conv2d_grad_params = _impl.conv2d_grad_params
maxpool2d_forward = _impl.maxpool2d_forward
maxpool2d_inference = _impl.maxpool2d_inference
conv2d_maxpool_inference = _impl.conv2d_maxpool_inference
maxpool2d_backward = _impl.maxpool2d_backward
avgpool2d_forward = _impl.avgpool2d_forward
avgpool2d_backward = _impl.avgpool2d_backward
batchnorm_forward = _impl.batchnorm_forward
batchnorm_backward = _impl.batchnorm_backward
batchnorm_inference = _impl.batchnorm_inference
adam_update = _impl.adam_update
matmul = _impl.matmul
dense_forward = _impl.dense_forward
leaky_relu = _impl.leaky_relu
leaky_relu_backward = _impl.leaky_relu_backward
memory_pool = _impl.memory_pool
set_num_threads = _impl.set_num_threads
get_num_threads = _impl.get_num_threads
set_conv_path = _impl.set_conv_path
get_conv_path = _impl.get_conv_path

del _importlib, _os, _warnings, _builds, _checks, _choice, _isa, _ISAS, _conv_path, _impl
