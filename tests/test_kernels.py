"""cnnc.kernels and the kernel modules as a whole: the backend choice (made at import, so
each case runs in a fresh process), threads and fork safety, the convolution path switch,
the names every module defines alike, the validation every kernel does at its entry
(bad calls raise ValueError or TypeError and change nothing, zero sizes, scalars,
read-only and non-contiguous inputs), memory_pool, and the compiled builds (one per
instruction set) computing the same numbers. What each kernel computes is tested with its op (test_convolution,
test_pooling, test_batchnorm, test_elementwise, test_optimizers)."""
import importlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import cnnc
from cnnc import _builds, _checks, _numpy_kernels, kernels

from .calls import (ALIASED, adam, arr, avgb, avgf, bnb, bnf, bni, cmpi, dense, fwd, gin, gpar,
                    leaky, leaky_back, mm, pbwd, pfwd, pinf, readonly, run, valid_argmax)
from .conftest import BASELINE, DTYPES, IMPLEMENTATIONS, WIDER_BUILDS, assert_close, out_size

PRINT_IMPLEMENTATION = "from cnnc import kernels; print(kernels.IMPLEMENTATION)"
KERNEL_FUNCTIONS = ("conv2d_forward", "conv2d_grad_input", "conv2d_grad_params",
                    "conv2d_maxpool_inference", "maxpool2d_forward", "maxpool2d_inference",
                    "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward",
                    "batchnorm_forward", "batchnorm_backward", "batchnorm_inference",
                    "adam_update", "matmul", "dense_forward", "leaky_relu", "leaky_relu_backward")
# Besides the kernels: memory_pool() is a context manager (a NumPy allocator on the
# compiled backend, a plain block on NumPy), and the thread count and convolution path
# are set and told.
OTHER_CALLABLES = {"memory_pool", "set_num_threads", "get_num_threads", "set_conv_path",
                   "get_conv_path"}
KERNEL_NAMES = set(KERNEL_FUNCTIONS) | OTHER_CALLABLES
# Every kernel module here, and the compiled build cnnc.kernels runs (else the baseline one).
MODULES = [parameter.values[0] for parameter in IMPLEMENTATIONS]
COMPILED = importlib.import_module(kernels.IMPLEMENTATION) if kernels.BACKEND == "compiled" else BASELINE
needs_compiled = pytest.mark.skipif(COMPILED is None, reason="the compiled extension is not built here")


def run_with_backend(value, code="import cnnc; print(cnnc.backend())", isa="auto", package_dir=None,
                     conv_path=None):
    """Run code in a fresh interpreter; package_dir, when given, holds the cnnc it imports."""
    env = dict(os.environ, CNNC_BACKEND=value, CNNC_ISA=isa)
    if conv_path is not None:
        env["CNNC_CONV_PATH"] = conv_path
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


def test_kernels_module_exposes_exactly_the_kernel_functions():
    public = {name for name in dir(kernels) if not name.startswith("_") and callable(getattr(kernels, name))}
    assert public == KERNEL_NAMES


def test_backend_reports_the_module_in_use():
    expected = "compiled" if BASELINE is not None and os.environ.get("CNNC_BACKEND") != "numpy" else "numpy"
    assert cnnc.backend() == expected


def test_numpy_backend_can_be_forced():
    result = run_with_backend("numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_auto_takes_the_compiled_kernels_when_built():
    result = run_with_backend("auto")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("compiled" if BASELINE is not None else "numpy")


@pytest.mark.slow
def test_compiled_without_the_extension_is_an_import_error_saying_how_to_build(tmp_path):
    result = run_with_backend("compiled", package_dir=cnnc_without_extension(tmp_path))
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "pip install" in result.stderr
    assert "no compiled extension" in result.stderr


@pytest.mark.slow
def test_auto_without_the_extension_runs_on_numpy_and_says_why(tmp_path):
    result = run_with_backend("auto", package_dir=cnnc_without_extension(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"
    assert "RuntimeWarning" in result.stderr and "no compiled extension" in result.stderr
    assert "circular import" not in result.stderr


@pytest.mark.slow
def test_the_warning_gives_the_reason_the_build_recorded(tmp_path):
    package_dir = cnnc_without_extension(tmp_path)
    (package_dir / "cnnc" / "_build_failure.txt").write_text(
        "the C compiler (cc) cannot compile a test program\n")
    result = run_with_backend("auto", package_dir=package_dir)
    assert result.returncode == 0 and result.stdout.strip() == "numpy", result.stderr
    assert "the build could not make them: the C compiler (cc) cannot compile" in result.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_numpy_chosen_explicitly_gives_no_warning(tmp_path):
    result = run_with_backend("numpy", package_dir=cnnc_without_extension(tmp_path))
    assert result.returncode == 0 and result.stdout.strip() == "numpy"
    assert "Warning" not in result.stderr


@needs_compiled
def test_compiled_backend_runs_when_built():
    result = run_with_backend("compiled")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled"


@pytest.mark.slow
@pytest.mark.parametrize("value", ["fast", "gpu"])
def test_unknown_backend_is_refused(value):
    result = run_with_backend(value)
    assert result.returncode != 0
    assert "CNNC_BACKEND must be" in result.stderr and value in result.stderr


@needs_compiled
@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_the_best_build_the_cpu_runs_is_the_one_loaded(backend):
    result = run_with_backend(backend, PRINT_IMPLEMENTATION)
    assert result.returncode == 0, result.stderr
    best = [build for build in _builds.BUILDS if build.isa in WIDER_BUILDS]
    assert result.stdout.strip() == (best[-1] if best else _builds.BUILDS[0]).module


@needs_compiled
@pytest.mark.parametrize("isa", ["baseline", *WIDER_BUILDS])
def test_cnnc_isa_loads_the_build_it_names(isa):
    result = run_with_backend("compiled", PRINT_IMPLEMENTATION, isa=isa)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == next(b.module for b in _builds.BUILDS if b.isa == isa)


@needs_compiled
def test_cnnc_isa_naming_a_build_the_cpu_cannot_run_stops_the_import():
    """A CPU without the features (cnnc._cpu saying no, as a Python stub that does) is refused
    naming the build and what it needs, rather than dying of an illegal instruction."""
    stub = ("import sys, types; cpu = types.ModuleType('cnnc._cpu'); "
            "cpu.supports = lambda feature: False; sys.modules['cnnc._cpu'] = cpu; ")
    result = run_with_backend("compiled", stub + "import cnnc", isa="avx2")
    assert result.returncode != 0
    assert "CNNC_ISA=avx2: this CPU does not run that build (it needs avx2, fma)" in result.stderr


def test_numpy_backend_names_its_module():
    result = run_with_backend("numpy", PRINT_IMPLEMENTATION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cnnc._numpy_kernels"


FORKED_CHILDREN = """
import multiprocessing, os, pickle
import numpy as np
import cnnc

np.random.seed(0)
net = cnnc.Network([cnnc.Conv((3, 3, 1, 16), activation=cnnc.relu, dtype=np.float64), cnnc.MaxPool(2),
                    cnnc.Flatten((13, 13, 16)), cnnc.FullyConnected((13 * 13 * 16, 10), dtype=np.float64)],
                   loss=cnnc.SoftmaxCrossEntropy())
x, y = np.random.rand(64, 28, 28, 1), np.arange(64) % 10


def work(_=None):
    loss, grads = net.loss_and_grads(x, y)
    return loss, [grads[0]["w"], grads[0]["b"], grads[3]["w"]], net.predict(x)


parent = work()                     # the parent's threads exist from here on
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        cnnc.set_num_threads(2)     # threads OpenMP cannot start here: refused, never a hang
        refused = None
    except RuntimeError as error:
        refused = str(error)
    with os.fdopen(write, "wb") as out:
        pickle.dump((work(), refused, cnnc.get_num_threads()), out)
    os._exit(0)
os.close(write)
with os.fdopen(read, "rb") as answer:
    child, refused, child_threads = pickle.load(answer)
os.waitpid(pid, 0)
if cnnc.backend() == "compiled" and cnnc.get_num_threads() == 2:    # OpenMP threads
    assert refused.startswith("set_num_threads(2): this process was made by fork()"), refused
    assert child_threads == 1
else:
    assert refused is None and child_threads == 2
with multiprocessing.get_context("fork").Pool(2) as pool:
    pooled = pool.map(work, range(2))
for result in [child] + pooled:
    assert abs(result[0] - parent[0]) <= 1e-12 * abs(parent[0]), (result[0], parent[0])
    for got, want in zip(result[1] + [result[2]], parent[1] + [parent[2]]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
print("children agree with the parent")
"""


def compiled_has_openmp():
    """Whether the compiled extension runs its loops on several threads (its compiler had
    OpenMP): a build without asks for two threads and is told one."""
    if BASELINE is None:
        return False
    from cnnc import _kernels
    before = _kernels.get_num_threads()
    _kernels.set_num_threads(2)
    threads = _kernels.get_num_threads()
    _kernels.set_num_threads(before)
    return threads == 2


FORK_TIMEOUT = 120   # seconds; the work takes about one


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_forked_children_compute_what_the_parent_computed(backend):
    """A child forked after the kernels ran in threads (os.fork, a multiprocessing fork Pool)
    neither hangs nor computes anything else, and one asking for threads OpenMP cannot give
    it is told so (a RuntimeError) instead of waiting forever."""
    env = dict(os.environ, CNNC_BACKEND=backend, CNNC_NUM_THREADS="2")
    process = subprocess.Popen([sys.executable, "-c", FORKED_CHILDREN], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=FORK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)      # the children too
        process.communicate()
        pytest.fail(f"a forked child hung: killed after {FORK_TIMEOUT} s")
    assert process.returncode == 0, err
    assert "children agree with the parent" in out


IDLE_THREADS = """
import os, time
import numpy as np
from cnnc import kernels
assert kernels.BACKEND == "compiled" and kernels.get_num_threads() == 2
assert [os.environ.get(v) for v in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")] == [
    {policy!r}, None, None], "the import changed the environment"
x = np.random.default_rng(0).random((64, 28, 28, 8), dtype=np.float32)
idle = []
for _ in range(5):     # the least of five: other work on the machine adds, spinning never stops
    kernels.maxpool2d_forward(x, (2, 2), (2, 2))
    start = time.process_time()
    time.sleep(0.2)
    idle.append(time.process_time() - start)
print(min(idle))
"""


@pytest.mark.slow
@pytest.mark.skipif(not compiled_has_openmp(), reason="no OpenMP threads: the extension is not "
                    "built, or its compiler had no OpenMP")
@pytest.mark.parametrize("policy, most, least", [(None, 0.002, 0.0), ("ACTIVE", None, 0.1)],
                         ids=["default", "user_chose_active"])
def test_idle_threads_sleep_instead_of_holding_a_core(policy, most, least):
    """After a parallel loop, the threads of the compiled kernels spin no longer than a
    wake-up takes, then use no CPU while the program does something else (OpenMP's default
    lets them spin for milliseconds); a wait policy set in the environment is the user's
    choice and stays as it is."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                             "KMP_BLOCKTIME")}
    env.update(CNNC_BACKEND="compiled", CNNC_NUM_THREADS="2")
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", IDLE_THREADS.format(policy=policy)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cpu_seconds = float(done.stdout)
    assert cpu_seconds >= least and (most is None or cpu_seconds <= most), cpu_seconds


@pytest.mark.parametrize("module", [cnnc, _numpy_kernels], ids=["cnnc", "numpy_kernels"])
def test_the_thread_count_is_set_and_told_at_run_time(module):
    """As asked, or 1 in a compiled build without OpenMP, which has no other threads."""
    without_openmp = module is cnnc and cnnc.backend() == "compiled" and not compiled_has_openmp()
    before = module.get_num_threads()
    try:
        module.set_num_threads(3)
        assert module.get_num_threads() == (1 if without_openmp else 3)
        module.set_num_threads(np.int64(1))
        assert module.get_num_threads() == 1
    finally:
        module.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 2.5, "2", True, False, None, 10**6, 2**64, 10**400,
                                 float("nan"), np.uint64(2**64 - 1)])
def test_a_bad_thread_count_is_a_value_error(bad):
    before = cnnc.get_num_threads()
    with pytest.raises(ValueError, match="number of threads must be an int from 1 to"):
        cnnc.set_num_threads(bad)
    assert cnnc.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "-2", "two", "2.5", "100000", "99999999999999999999"])
def test_a_bad_cnnc_num_threads_is_a_value_error_naming_it(value, monkeypatch):
    monkeypatch.setenv("CNNC_NUM_THREADS", value)
    with pytest.raises(ValueError, match="CNNC_NUM_THREADS must be an int from 1 to"):
        _checks.thread_count("CNNC_NUM_THREADS")


@pytest.mark.parametrize("value", ["", "  ", " 3 "], ids=repr)
def test_cnnc_num_threads_set_to_nothing_means_every_core(value, monkeypatch):
    monkeypatch.setenv("CNNC_NUM_THREADS", value)
    expected = int(value) if value.strip() else min(_checks.cores_available(), _checks.MAX_THREADS)
    assert _checks.thread_count("CNNC_NUM_THREADS") == expected


# What an import chose, for each variable cnnc reads at import.
PRINT_CHOICES = ("import cnnc; from cnnc import kernels; "
                 "print(kernels.IMPLEMENTATION, cnnc.get_num_threads(), kernels.get_conv_path())")
IMPORT_VARIABLES = ("CNNC_BACKEND", "CNNC_NUM_THREADS", "CNNC_CONV_PATH", "CNNC_ISA")


def import_with(**variables):
    """Run PRINT_CHOICES in a fresh interpreter with IMPORT_VARIABLES unset but for those given."""
    env = {k: v for k, v in os.environ.items() if k not in IMPORT_VARIABLES}
    return subprocess.run([sys.executable, "-c", PRINT_CHOICES], env={**env, **variables},
                          capture_output=True, text=True, timeout=120)


def test_every_variable_read_at_import_means_its_default_when_set_to_nothing():
    """CNNC_BACKEND= and CNNC_NUM_THREADS= choose what leaving them unset chooses, as every cnnc
    variable does, rather than one meaning the default and another failing the import. (Spaces
    count as nothing: test_checks tests _checks.environment, which reads them all.)"""
    unset = import_with()
    empty = import_with(**{variable: "" for variable in IMPORT_VARIABLES})
    assert unset.returncode == 0 and empty.returncode == 0, unset.stderr + empty.stderr
    assert empty.stdout == unset.stdout


def test_a_bad_cnnc_isa_stops_the_import_naming_it():
    result = run_with_backend("auto", isa="sse9")
    assert result.returncode != 0
    assert ("ValueError: CNNC_ISA must be 'auto' (the best build this CPU runs, the default) or "
            "one of 'baseline', 'avx2', 'avx512', got 'sse9'") in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_a_bad_cnnc_num_threads_stops_the_import(backend):
    env = dict(os.environ, CNNC_BACKEND=backend, CNNC_NUM_THREADS="0")
    result = subprocess.run([sys.executable, "-c", "import cnnc"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "ValueError: CNNC_NUM_THREADS must be an int from 1 to" in result.stderr


@pytest.mark.parametrize("case", [((9, 11, 11, 3), (3, 3, 3, 16), (1, 1), (0, 0, 0, 0)),
                                  ((33, 17, 15, 32), (3, 3, 32, 40), (1, 1), (1, 1, 1, 1)),
                                  ((20, 16, 16, 8), (5, 5, 8, 24), (2, 2), (2, 1, 2, 1))])
def test_convolutions_give_the_same_bits_with_any_thread_count(case):
    """On the default path every output value is summed by one thread in an order fixed by
    the shape (partial sums over chunks of images, not over threads): the thread count
    changes no bit, so a run does not change with the machine it runs on."""
    x_shape, w_shape, stride, padding = case
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[3])
    before = cnnc.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 5):
            cnnc.set_num_threads(threads)
            y = kernels.conv2d_forward(x, w, b, stride, padding)
            results.append([y, kernels.conv2d_grad_input(y, w, x.shape, stride, padding),
                            *kernels.conv2d_grad_params(x, y, w.shape[:2], stride, padding)])
    finally:
        cnnc.set_num_threads(before)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            np.testing.assert_array_equal(got, want)


def test_every_kernel_gives_the_same_bits_on_every_run_with_several_threads():
    """Work handed out to threads as they come free still lands in the same place, and sums
    over threads are added in a fixed order: one seed, one training run."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 13, 11, 3)).astype(np.float32)
    w_thin = rng.standard_normal((5, 5, 3, 6)).astype(np.float32)
    w_wide = rng.standard_normal((3, 3, 3, 40)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    param, grad = rng.standard_normal((2, 50000)).astype(np.float32)
    rows, dy_rows = (rng.standard_normal((2, 20011, 16)) + 3).astype(np.float32)  # 20 chunks of rows
    gamma, beta = rng.standard_normal((2, 16)).astype(np.float32)

    def run():
        out = []
        for w in (w_thin, w_wide):
            y = kernels.conv2d_forward(x, w, b[:w.shape[3]], (1, 2), (2, 1, 0, 2))
            out += [y, *kernels.conv2d_grad_params(x, y, w.shape[:2], (1, 2), (2, 1, 0, 2)),
                    kernels.conv2d_grad_input(y, w, x.shape, (1, 2), (2, 1, 0, 2))]
        pooled, argmax = kernels.maxpool2d_forward(x, (2, 3), (2, 2))
        for window, stride in (((3, 3), (2, 1)), ((13, 11), (1, 1))):    # overlapping; global
            averaged = kernels.avgpool2d_forward(x, window, stride)
            out += [averaged, kernels.avgpool2d_backward(averaged, x.shape, window, stride)]
        y, mean, var = kernels.batchnorm_forward(rows, gamma, beta, 1e-5)
        out += [y, mean, var, *kernels.batchnorm_backward(rows, dy_rows, gamma, mean, var, 1e-5),
                kernels.batchnorm_inference(rows, gamma, beta, mean, var, 1e-5)]
        p, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
        kernels.adam_update(p, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, 1)
        return out + [pooled, argmax, kernels.maxpool2d_backward(pooled, argmax, x.shape),
                      p, m, v, kernels.leaky_relu(param, 0.01),
                      kernels.leaky_relu_backward(param, grad, 0.01)]

    before = cnnc.get_num_threads()
    try:
        cnnc.set_num_threads(3)
        first = run()
        for _ in range(5):
            for a, b_ in zip(run(), first):
                np.testing.assert_array_equal(a, b_)
    finally:
        cnnc.set_num_threads(before)


def test_batch_norm_and_average_pooling_give_the_same_bits_with_any_thread_count():
    """Their sums over the batch go by chunks fixed by the shape, added in chunk order, and
    each output is computed by one thread: the thread count changes no bit."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 13, 11, 3)).astype(np.float32)
    rows, dy_rows = (rng.standard_normal((2, 20011, 16)) + 3).astype(np.float32)
    gamma, beta = rng.standard_normal((2, 16)).astype(np.float32)

    def run():
        averaged = kernels.avgpool2d_forward(x, (3, 2), (1, 1))
        y, mean, var = kernels.batchnorm_forward(rows, gamma, beta, 1e-5)
        return [averaged, kernels.avgpool2d_backward(averaged, x.shape, (3, 2), (1, 1)), y, mean,
                var, *kernels.batchnorm_backward(rows, dy_rows, gamma, mean, var, 1e-5)]

    before = cnnc.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 8):
            cnnc.set_num_threads(threads)
            results.append(run())
    finally:
        cnnc.set_num_threads(before)
    for result in results[1:]:
        for a, b in zip(result, results[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("files, cores", [
    ({"cpu.max": "200000 100000\n"}, 2),
    ({"cpu.max": "150000 100000\n"}, 2),            # a core and a half: two threads
    ({"cpu.max": "50000 100000\n"}, 1),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu.max": "garbage"}, None),
    ({}, None),
], ids=["v2_two", "v2_fraction", "v2_half", "v2_max", "v1_three", "v1_unlimited", "garbage", "none"])
def test_a_containers_cpu_quota_is_read_from_its_cgroup(tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _checks.cpu_quota(str(tmp_path)) == cores


@pytest.mark.slow
def test_the_default_thread_count_is_at_most_the_cores_this_process_may_use():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _checks.cpu_quota()
    assert _checks.cores_available() == min(cores, quota or cores)
    env = {k: v for k, v in os.environ.items() if k != "CNNC_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", "import cnnc; print(cnnc.get_num_threads())"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 1 <= int(done.stdout) <= _checks.cores_available()


# ================================================================ what the modules hold

def public_functions(module):
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and callable(value)
            and getattr(value, "__module__", None) == module.__name__}


def test_kernels_module_functions_come_from_one_backend():
    assert kernels.BACKEND in ("compiled", "numpy")
    backend = importlib.import_module(kernels.IMPLEMENTATION)
    for name in sorted(KERNEL_NAMES):
        assert getattr(kernels, name) is getattr(backend, name)


def test_every_module_defines_the_same_public_functions():
    for module in MODULES:
        assert public_functions(module) == KERNEL_NAMES, module.__name__
        for name in KERNEL_NAMES:
            assert getattr(module, name).__name__ == name


@pytest.mark.parametrize("name", sorted(KERNEL_NAMES))
def test_twin_functions_have_the_same_signature_and_docstrings(name):
    signatures = {module.__name__: inspect.signature(getattr(module, name)) for module in MODULES}
    assert len(set(signatures.values())) == 1, signatures
    for function in [getattr(module, name) for module in MODULES] + [getattr(kernels, name)]:
        assert function.__doc__ and function.__doc__.strip()


def test_modules_have_docstrings():
    for module in [kernels] + MODULES:
        assert module.__doc__ and module.__doc__.strip()


# ================================================================ the convolution path

def test_the_conv_path_is_set_and_told(implementation):
    before = implementation.get_conv_path()
    try:
        for path in ("direct", "matmul", "auto"):
            implementation.set_conv_path(path)
            assert implementation.get_conv_path() == path
    finally:
        implementation.set_conv_path(before)


@pytest.mark.parametrize("bad", ["fast", "", "AUTO", " auto", None, 1, b"auto", ("auto",)])
def test_an_unknown_conv_path_is_a_value_error_naming_the_choices(implementation, bad):
    before = implementation.get_conv_path()
    with pytest.raises(ValueError, match="^the convolution path must be one of 'auto', 'direct', "
                                         "'winograd', 'gemm', 'matmul', got "):
        implementation.set_conv_path(bad)
    assert implementation.get_conv_path() == before


def test_gemm_is_taken_where_numpy_ships_openblas_and_refused_by_name_elsewhere(implementation):
    """Never another path in its place: the NumPy kernels, which have one path, take the
    name; a compiled build takes it, or refuses it saying why, and keeps its path."""
    before = implementation.get_conv_path()
    try:
        implementation.set_conv_path("gemm")
    except ValueError as error:
        assert implementation is not _numpy_kernels
        assert "'gemm' calls the OpenBLAS of NumPy's wheel" in str(error)
        assert implementation.get_conv_path() == before
    else:
        assert implementation.get_conv_path() == "gemm"
        assert implementation is _numpy_kernels or numpy_ships_openblas()
    finally:
        implementation.set_conv_path(before)


@pytest.mark.parametrize("backend_name", ["auto", "numpy"])
def test_cnnc_conv_path_sets_the_first_path(backend_name):
    result = run_with_backend(backend_name, "from cnnc import kernels; print(kernels.get_conv_path())",
                              conv_path=" Direct ")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "direct"


def test_a_bad_cnnc_conv_path_stops_the_import_naming_it():
    result = run_with_backend("auto", conv_path="fastest")
    assert result.returncode != 0
    assert ("ValueError: CNNC_CONV_PATH: the convolution path must be one of 'auto', 'direct', "
            "'winograd', 'gemm', 'matmul', got 'fastest'") in result.stderr


# ================================================================ validation common to all kernels

BAD_CALLS = {
    # matmul
    "matmul-a-1d": lambda: mm(a=arr(4)),
    "matmul-b-3d": lambda: mm(b=arr(4, 3, 1)),
    "matmul-inner-mismatch": lambda: mm(b=arr(5, 3)),
    "matmul-mixed-dtypes": lambda: mm(b=arr(4, 3, dtype=np.float32)),
    "matmul-int": lambda: mm(a=np.ones((5, 4), np.int64)),
    "matmul-list": lambda: mm(a=[[1.0] * 4] * 5),
    "dense-x-1d": lambda: dense(x=arr(4)),
    "dense-inner-mismatch": lambda: dense(w=arr(5, 3)),
    "dense-b-short": lambda: dense(b=arr(2)),
    "dense-b-2d": lambda: dense(b=arr(1, 3)),
    "dense-mixed-dtypes": lambda: dense(w=arr(4, 3, dtype=np.float32)),
    "dense-slope-above-1": lambda: dense(slope=2.0),
    # leaky_relu and its backward
    "leaky-x-list": lambda: leaky(x=[1.0, -1.0]),
    "leaky-x-int": lambda: leaky(x=np.ones(4, np.int64)),
    "leaky-slope-negative": lambda: leaky(slope=-0.1),
    "leaky-slope-above-1": lambda: leaky(slope=1.5),
    "leaky-slope-nan": lambda: leaky(slope=float("nan")),
    "leaky-back-upstream-shape": lambda: leaky_back(upstream=arr(2, 3, 5)),
    "leaky-back-upstream-dtype": lambda: leaky_back(upstream=arr(2, 3, 4, dtype=np.float32)),
    "leaky-back-upstream-ndim": lambda: leaky_back(upstream=arr(24)),
    # conv2d_forward
    "fwd-x-3d": lambda: fwd(x=arr(7, 9, 3)),
    "fwd-slope-negative": lambda: fwd(slope=-0.1),
    "fwd-slope-above-1": lambda: fwd(slope=1.5),
    "fwd-x-5d": lambda: fwd(x=arr(1, 2, 7, 9, 3)),
    "fwd-w-3d": lambda: fwd(w=arr(3, 3, 3)),
    "fwd-b-2d": lambda: fwd(b=arr(1, 4)),
    "fwd-x-float16": lambda: fwd(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "fwd-x-int64": lambda: fwd(x=np.ones((2, 7, 9, 3), np.int64)),
    "fwd-x-int32": lambda: fwd(x=np.ones((2, 7, 9, 3), np.int32)),
    "fwd-w-float16": lambda: fwd(w=arr(3, 3, 3, 4, dtype=np.float16)),
    "fwd-x-complex": lambda: fwd(x=arr(2, 7, 9, 3).astype(np.complex128)),
    "fwd-x32-w64": lambda: fwd(x=arr(2, 7, 9, 3, dtype=np.float32)),
    "fwd-x64-w32": lambda: fwd(w=arr(3, 3, 3, 4, dtype=np.float32)),
    "fwd-b32": lambda: fwd(b=arr(4, dtype=np.float32)),
    "fwd-w-channels": lambda: fwd(w=arr(3, 3, 2, 4)),
    "fwd-b-short": lambda: fwd(b=arr(3)),
    "fwd-b-long": lambda: fwd(b=arr(5)),
    "fwd-w-zero-filters": lambda: fwd(w=arr(3, 3, 3, 0), b=arr(0)),
    "fwd-x-zero-height": lambda: fwd(x=arr(2, 0, 9, 3)),
    "fwd-x-zero-channels": lambda: fwd(x=arr(2, 7, 9, 0), w=arr(3, 3, 0, 4)),
    "fwd-stride-0": lambda: fwd(stride=(0, 1)),
    "fwd-stride-negative": lambda: fwd(stride=(1, -1)),
    "fwd-stride-1-long": lambda: fwd(stride=(1,)),
    "fwd-stride-3-long": lambda: fwd(stride=(1, 1, 1)),
    "fwd-stride-int": lambda: fwd(stride=1),
    "fwd-stride-float": lambda: fwd(stride=(1.0, 1)),
    "fwd-stride-None": lambda: fwd(stride=None),
    "fwd-padding-negative": lambda: fwd(padding=(1, 1, -1, 1)),
    "fwd-padding-2-long": lambda: fwd(padding=(1, 1)),
    "fwd-window-too-tall": lambda: fwd(w=arr(10, 3, 3, 4)),
    "fwd-window-too-wide": lambda: fwd(w=arr(3, 12, 3, 4)),
    "fwd-window-too-big-unpadded": lambda: fwd(w=arr(8, 3, 3, 4), padding=(0, 0, 0, 0)),
    "fwd-x-list": lambda: fwd(x=arr(2, 7, 9, 3).tolist()),
    "fwd-w-list": lambda: fwd(w=arr(3, 3, 3, 4).tolist()),
    "fwd-b-list": lambda: fwd(b=[0.0, 0.0, 0.0, 0.0]),
    "fwd-x-None": lambda: fwd(x=None),
    # conv2d_grad_input
    "gin-dy-wrong-width": lambda: gin(dy=arr(2, 7, 8, 4)),
    "gin-dy-wrong-height": lambda: gin(dy=arr(2, 8, 9, 4)),
    "gin-dy-wrong-filters": lambda: gin(dy=arr(2, 7, 9, 5)),
    "gin-dy-wrong-batch": lambda: gin(dy=arr(3, 7, 9, 4)),
    "gin-dy-3d": lambda: gin(dy=arr(7, 9, 4)),
    "gin-dy-int": lambda: gin(dy=np.ones((2, 7, 9, 4), np.int64)),
    "gin-dy-float16": lambda: gin(dy=arr(2, 7, 9, 4, dtype=np.float16)),
    "gin-dy32-w64": lambda: gin(dy=arr(2, 7, 9, 4, dtype=np.float32)),
    "gin-w-3d": lambda: gin(w=arr(3, 3, 3)),
    "gin-input-shape-3-long": lambda: gin(input_shape=(7, 9, 3)),
    "gin-input-shape-5-long": lambda: gin(input_shape=(2, 7, 9, 3, 1)),
    "gin-input-shape-zero-height": lambda: gin(input_shape=(2, 0, 9, 3)),
    "gin-input-shape-zero-batch": lambda: gin(input_shape=(0, 7, 9, 3), dy=arr(0, 7, 9, 4)),
    "gin-input-shape-negative": lambda: gin(input_shape=(2, -7, 9, 3)),
    "gin-input-shape-float": lambda: gin(input_shape=(2, 7.0, 9, 3)),
    "gin-input-shape-channels": lambda: gin(input_shape=(2, 7, 9, 2)),
    "gin-stride-0": lambda: gin(stride=(1, 0)),
    "gin-padding-negative": lambda: gin(padding=(-1, 0, 0, 0)),
    "gin-window-too-big": lambda: gin(w=arr(8, 3, 3, 4), padding=(0, 0, 0, 0)),
    "gin-dy-list": lambda: gin(dy=arr(2, 7, 9, 4).tolist()),
    # conv2d_grad_params
    "gpar-dy-wrong-width": lambda: gpar(dy=arr(2, 7, 8, 4)),
    "gpar-dy-wrong-batch": lambda: gpar(dy=arr(3, 7, 9, 4)),
    "gpar-dy-3d": lambda: gpar(dy=arr(7, 9, 4)),
    "gpar-x-3d": lambda: gpar(x=arr(7, 9, 3)),
    "gpar-x-float16": lambda: gpar(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "gpar-dy-int": lambda: gpar(dy=np.ones((2, 7, 9, 4), np.int32)),
    "gpar-x64-dy32": lambda: gpar(dy=arr(2, 7, 9, 4, dtype=np.float32)),
    "gpar-kernel-size-3-long": lambda: gpar(kernel_size=(3, 3, 3)),
    "gpar-kernel-size-0": lambda: gpar(kernel_size=(0, 3)),
    "gpar-kernel-too-big": lambda: gpar(kernel_size=(10, 3)),
    "gpar-stride-negative": lambda: gpar(stride=(-1, 1)),
    "gpar-padding-negative": lambda: gpar(padding=(0, 0, 0, -2)),
    "gpar-x-zero-width": lambda: gpar(x=arr(2, 7, 0, 3)),
    "gpar-dy-list": lambda: gpar(dy=arr(2, 7, 9, 4).tolist()),
    # maxpool2d_forward
    "pfwd-x-3d": lambda: pfwd(x=arr(7, 9, 3)),
    "pfwd-x-float16": lambda: pfwd(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "pfwd-x-int": lambda: pfwd(x=np.ones((2, 7, 9, 3), np.int64)),
    "pfwd-x-bool": lambda: pfwd(x=np.ones((2, 7, 9, 3), bool)),
    "pfwd-pool-0": lambda: pfwd(pool_size=(0, 2)),
    "pfwd-pool-negative": lambda: pfwd(pool_size=(2, -2)),
    "pfwd-pool-3-long": lambda: pfwd(pool_size=(2, 2, 2)),
    "pfwd-stride-0": lambda: pfwd(stride=(2, 0)),
    "pfwd-stride-negative": lambda: pfwd(stride=(-2, 2)),
    "pfwd-stride-1-long": lambda: pfwd(stride=(2,)),
    "pfwd-window-too-tall": lambda: pfwd(pool_size=(8, 2)),
    "pfwd-window-too-wide": lambda: pfwd(pool_size=(2, 10)),
    "pfwd-x-zero-height": lambda: pfwd(x=arr(2, 0, 9, 3)),
    "pfwd-x-zero-channels": lambda: pfwd(x=arr(2, 7, 9, 0)),
    "pfwd-x-list": lambda: pfwd(x=arr(2, 7, 9, 3).tolist()),
    "pinf-x-3d": lambda: pinf(x=arr(7, 9, 3)),
    "pinf-x-int": lambda: pinf(x=np.ones((2, 7, 9, 3), np.int64)),
    "pinf-pool-0": lambda: pinf(pool_size=(0, 2)),
    "pinf-stride-negative": lambda: pinf(stride=(-2, 2)),
    "pinf-window-too-wide": lambda: pinf(pool_size=(2, 10)),
    # conv2d_maxpool_inference: the convolution's checks, then the pool's on its output
    "cmpi-x-3d": lambda: cmpi(x=arr(7, 9, 3)),
    "cmpi-x-int": lambda: cmpi(x=np.ones((2, 7, 9, 3), np.int64)),
    "cmpi-channel-mismatch": lambda: cmpi(w=arr(3, 3, 2, 4)),
    "cmpi-b-short": lambda: cmpi(b=arr(3)),
    "cmpi-mixed-dtypes": lambda: cmpi(w=arr(3, 3, 3, 4, dtype=np.float32)),
    "cmpi-kernel-too-big": lambda: cmpi(w=arr(10, 3, 3, 4)),
    "cmpi-stride-0": lambda: cmpi(stride=(0, 1)),
    "cmpi-padding-negative": lambda: cmpi(padding=(1, -1, 1, 1)),
    "cmpi-pool-0": lambda: cmpi(pool_size=(0, 2)),
    "cmpi-pool-3-long": lambda: cmpi(pool_size=(2, 2, 2)),
    "cmpi-pool-stride-negative": lambda: cmpi(pool_stride=(-2, 2)),
    "cmpi-pool-stride-list-of-floats": lambda: cmpi(pool_stride=[2.0, 2.0]),
    "cmpi-window-taller-than-the-output": lambda: cmpi(pool_size=(8, 2)),
    "cmpi-window-wider-than-the-output": lambda: cmpi(padding=(1, 1, 0, 0), pool_size=(2, 8)),
    "cmpi-slope-above-1": lambda: cmpi(slope=1.5),
    # maxpool2d_backward
    "pbwd-argmax-int32": lambda: pbwd(argmax=valid_argmax().astype(np.int32)),
    "pbwd-argmax-uint64": lambda: pbwd(argmax=valid_argmax().astype(np.uint64)),
    "pbwd-argmax-float": lambda: pbwd(argmax=valid_argmax().astype(np.float64)),
    "pbwd-argmax-wrong-channels": lambda: pbwd(argmax=valid_argmax((2, 3, 4, 2))),
    "pbwd-argmax-wrong-width": lambda: pbwd(argmax=valid_argmax((2, 3, 5, 3))),
    "pbwd-argmax-3d": lambda: pbwd(argmax=valid_argmax((2, 12, 3))),
    "pbwd-argmax-negative": lambda: pbwd(argmax=np.where(valid_argmax() == 5, -1, valid_argmax())),
    "pbwd-argmax-equal-plane": lambda: pbwd(argmax=np.where(valid_argmax() == 5, 63, valid_argmax())),
    "pbwd-argmax-huge": lambda: pbwd(argmax=np.where(valid_argmax() == 5, 2**40, valid_argmax())),
    "pbwd-argmax-int64-min": lambda: pbwd(
        argmax=np.where(valid_argmax() == 5, np.iinfo(np.int64).min, valid_argmax())),
    "pbwd-argmax-list": lambda: pbwd(argmax=valid_argmax().tolist()),
    "pbwd-dy-float16": lambda: pbwd(dy=arr(2, 3, 4, 3, dtype=np.float16)),
    "pbwd-dy-int": lambda: pbwd(dy=np.ones((2, 3, 4, 3), np.int64)),
    "pbwd-dy-3d": lambda: pbwd(dy=arr(3, 4, 3), argmax=valid_argmax((3, 4, 3))),
    "pbwd-dy-list": lambda: pbwd(dy=arr(2, 3, 4, 3).tolist()),
    "pbwd-dy-batch": lambda: pbwd(dy=arr(3, 3, 4, 3), argmax=valid_argmax((3, 3, 4, 3))),
    "pbwd-dy-channels": lambda: pbwd(dy=arr(2, 3, 4, 2), argmax=valid_argmax((2, 3, 4, 2))),
    "pbwd-input-shape-3-long": lambda: pbwd(input_shape=(2, 63, 3)),
    "pbwd-input-shape-zero-height": lambda: pbwd(input_shape=(2, 0, 9, 3)),
    "pbwd-input-shape-zero-width": lambda: pbwd(input_shape=(2, 7, 0, 3)),
    "pbwd-input-shape-too-small": lambda: pbwd(input_shape=(2, 7, 8, 3)),  # plane 56 <= max index 62
    # avgpool2d_forward
    "avgf-x-3d": lambda: avgf(x=arr(7, 9, 3)),
    "avgf-x-int": lambda: avgf(x=np.ones((2, 7, 9, 3), np.int64)),
    "avgf-x-float16": lambda: avgf(x=arr(2, 7, 9, 3, dtype=np.float16)),
    "avgf-x-list": lambda: avgf(x=arr(2, 7, 9, 3).tolist()),
    "avgf-pool-0": lambda: avgf(pool_size=(0, 2)),
    "avgf-pool-3-long": lambda: avgf(pool_size=(2, 2, 2)),
    "avgf-stride-0": lambda: avgf(stride=(2, 0)),
    "avgf-stride-negative": lambda: avgf(stride=(-2, 2)),
    "avgf-window-too-tall": lambda: avgf(pool_size=(8, 2)),
    "avgf-window-too-wide": lambda: avgf(pool_size=(2, 10)),
    "avgf-x-zero-height": lambda: avgf(x=arr(2, 0, 9, 3)),
    "avgf-x-zero-channels": lambda: avgf(x=arr(2, 7, 9, 0)),
    # avgpool2d_backward
    "avgb-dy-wrong-height": lambda: avgb(dy=arr(2, 4, 4, 3)),
    "avgb-dy-wrong-width": lambda: avgb(dy=arr(2, 3, 5, 3)),
    "avgb-dy-wrong-batch": lambda: avgb(dy=arr(1, 3, 4, 3)),
    "avgb-dy-wrong-channels": lambda: avgb(dy=arr(2, 3, 4, 2)),
    "avgb-dy-3d": lambda: avgb(dy=arr(3, 4, 3)),
    "avgb-dy-int": lambda: avgb(dy=np.ones((2, 3, 4, 3), np.int32)),
    "avgb-dy-list": lambda: avgb(dy=arr(2, 3, 4, 3).tolist()),
    "avgb-input-shape-3-long": lambda: avgb(input_shape=(7, 9, 3)),
    "avgb-input-shape-zero-width": lambda: avgb(input_shape=(2, 7, 0, 3)),
    "avgb-input-shape-negative": lambda: avgb(input_shape=(2, -7, 9, 3)),
    "avgb-input-shape-float": lambda: avgb(input_shape=(2, 7, 9.0, 3)),
    "avgb-window-too-big": lambda: avgb(pool_size=(8, 2)),
    "avgb-pool-0": lambda: avgb(pool_size=(2, 0)),
    "avgb-stride-negative": lambda: avgb(stride=(2, -1)),
    "avgb-stride-None": lambda: avgb(stride=None),
    # batchnorm_forward
    "bnf-x-1d": lambda: bnf(x=arr(6)),
    "bnf-x-4d": lambda: bnf(x=arr(2, 3, 1, 3)),
    "bnf-x-int": lambda: bnf(x=np.ones((6, 3), np.int64)),
    "bnf-x-list": lambda: bnf(x=arr(6, 3).tolist()),
    "bnf-x-no-rows": lambda: bnf(x=arr(0, 3)),
    "bnf-x-no-channels": lambda: bnf(x=arr(6, 0), gamma=arr(0), beta=arr(0)),
    "bnf-gamma-short": lambda: bnf(gamma=arr(2)),
    "bnf-gamma-2d": lambda: bnf(gamma=arr(1, 3)),
    "bnf-gamma-float32": lambda: bnf(gamma=arr(3, dtype=np.float32)),
    "bnf-beta-long": lambda: bnf(beta=arr(4)),
    "bnf-beta-list": lambda: bnf(beta=[0.0, 0.0, 0.0]),
    "bnf-x32-gamma64": lambda: bnf(x=arr(6, 3, dtype=np.float32)),
    "bnf-eps-0": lambda: bnf(eps=0.0),
    "bnf-eps-negative": lambda: bnf(eps=-1e-5),
    "bnf-eps-nan": lambda: bnf(eps=float("nan")),
    "bnf-eps-None": lambda: bnf(eps=None),
    "bnf-slope-above-1": lambda: bnf(slope=1.5),
    "bnf-slope-negative": lambda: bnf(slope=-0.1),
    "bnf-slope-nan": lambda: bnf(slope=float("nan")),
    # batchnorm_backward
    "bnb-dy-wrong-shape": lambda: bnb(dy=arr(6, 4)),
    "bnb-dy-wrong-rows": lambda: bnb(dy=arr(5, 3)),
    "bnb-dy-float32": lambda: bnb(dy=arr(6, 3, dtype=np.float32)),
    "bnb-dy-1d": lambda: bnb(dy=arr(18)),
    "bnb-x-no-rows": lambda: bnb(x=arr(0, 3), dy=arr(0, 3)),
    "bnb-mean-short": lambda: bnb(mean=arr(2)),
    "bnb-var-float32": lambda: bnb(var=np.abs(arr(3, dtype=np.float32))),
    "bnb-gamma-list": lambda: bnb(gamma=[1.0, 1.0, 1.0]),
    "bnb-eps-0": lambda: bnb(eps=0),
    "bnb-eps-inf": lambda: bnb(eps=float("inf")),
    # batchnorm_inference
    "bni-x-3d": lambda: bni(x=arr(2, 3, 3)),
    "bni-x-no-channels": lambda: bni(x=arr(6, 0), gamma=arr(0), beta=arr(0), mean=arr(0),
                                     var=arr(0)),
    "bni-mean-long": lambda: bni(mean=arr(4)),
    "bni-slope-above-1": lambda: bni(slope=2.0),
    "bni-slope-string": lambda: bni(slope="relu"),
    "bni-var-2d": lambda: bni(var=np.abs(arr(3, 1))),
    "bni-beta-int": lambda: bni(beta=np.zeros(3, np.int64)),
    "bni-eps-negative": lambda: bni(eps=-1.0),
    "bni-eps-string": lambda: bni(eps="1e-5"),
    # adam_update
    "adam-param-transposed": lambda: adam(param=arr(5, 4).T),
    "adam-param-strided": lambda: adam(param=arr(4, 10)[:, ::2]),
    "adam-param-readonly": lambda: adam(param=readonly(arr(4, 5))),
    "adam-param-float16": lambda: adam(param=arr(4, 5, dtype=np.float16)),
    "adam-param-int": lambda: adam(param=np.ones((4, 5), np.int64)),
    "adam-param-list": lambda: adam(param=arr(4, 5).tolist()),
    "adam-m-wrong-shape": lambda: adam(m=arr(5, 4)),
    "adam-m-flat": lambda: adam(m=arr(20)),
    "adam-m-float32": lambda: adam(m=arr(4, 5, dtype=np.float32)),
    "adam-m-transposed": lambda: adam(m=arr(5, 4).T),
    "adam-m-readonly": lambda: adam(m=readonly(arr(4, 5))),
    "adam-m-list": lambda: adam(m=arr(4, 5).tolist()),
    "adam-v-wrong-shape": lambda: adam(v=arr(4, 6)),
    "adam-v-float32": lambda: adam(v=arr(4, 5, dtype=np.float32)),
    "adam-v-readonly": lambda: adam(v=readonly(arr(4, 5))),
    "adam-grad-wrong-shape": lambda: adam(grad=arr(5, 4)),
    "adam-grad-flat": lambda: adam(grad=arr(20)),
    "adam-grad-float32": lambda: adam(grad=arr(4, 5, dtype=np.float32)),
    "adam-grad-int": lambda: adam(grad=np.ones((4, 5), np.int64)),
    "adam-grad-list": lambda: adam(grad=arr(4, 5).tolist()),
    "adam-step-0": lambda: adam(step=0),
    "adam-step-negative": lambda: adam(step=-1),
    "adam-step-float": lambda: adam(step=1.5),
    "adam-step-None": lambda: adam(step=None),
    "adam-lr-nan": lambda: adam(lr=float("nan")),
    "adam-lr-inf": lambda: adam(lr=float("inf")),
    "adam-lr-negative": lambda: adam(lr=-1e-3),
    "adam-lr-string": lambda: adam(lr="0.001"),
    "adam-beta1-1": lambda: adam(beta1=1.0),
    "adam-beta1-negative": lambda: adam(beta1=-0.1),
    "adam-beta1-nan": lambda: adam(beta1=float("nan")),
    "adam-beta2-1": lambda: adam(beta2=1.0),
    "adam-beta2-above-1": lambda: adam(beta2=1.5),
    "adam-eps-negative": lambda: adam(eps=-1e-8),
    "adam-eps-nan": lambda: adam(eps=float("nan")),
    **{f"adam-aliased-{key}": maker for key, (maker, _) in ALIASED.items()},
}
BAD_IDS = list(BAD_CALLS)
BAD_MAKERS = list(BAD_CALLS.values())


@pytest.mark.parametrize("maker", BAD_MAKERS, ids=BAD_IDS)
def test_a_bad_call_is_refused_alike_everywhere_and_changes_nothing(maker):
    """Every implementation raises ValueError or TypeError, each the same one, and leaves
    the arrays it was given as they were (Adam's, updated in place, included)."""
    raised = []
    for module in MODULES:
        name, args = maker()
        before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else None for a in args]
        with pytest.raises((ValueError, TypeError)) as info:
            getattr(module, name)(*args)
        raised.append(info.type)
        for after, snapshot in zip(args, before):
            if snapshot is not None:
                np.testing.assert_array_equal(after, snapshot)
    assert len(set(raised)) == 1, f"{[error.__name__ for error in raised]} from {MODULES}"


def test_valid_calls_behind_the_bad_ones_are_accepted():
    """The bad calls differ from these in one argument only, so each one tests its check."""
    for maker in (fwd, gin, gpar, pfwd, pbwd, avgf, avgb, bnf, bnb, bni, adam, mm, leaky, leaky_back):
        for module in MODULES:
            name, args = maker()
            result = getattr(module, name)(*args)
            if name == "adam_update":
                assert not np.array_equal(args[0], maker()[1][0])
            else:
                outputs = result if isinstance(result, tuple) else (result,)
                assert all(isinstance(o, np.ndarray) and o.size for o in outputs)


# Zero sizes: every kernel with an empty batch, no channels or no filters, and what both
# backends do: None where they accept the call (an empty batch, empty products and
# elementwise arrays), else the start of the ValueError (any input or filter without
# channels; any filter bank without filters, as for w so for conv2d_grad_params' dy; an
# input_shape with an empty dimension).
ZERO_SIZED = {
    "fwd-batch-0": (lambda: fwd(x=arr(0, 7, 9, 3)), None),
    "fwd-channels-0": (lambda: fwd(x=arr(2, 7, 9, 0), w=arr(3, 3, 0, 4)),
                       "w must have no empty dimension"),
    "fwd-filters-0": (lambda: fwd(w=arr(3, 3, 3, 0), b=arr(0)), "w must have no empty dimension"),
    "gin-batch-0": (lambda: gin(dy=arr(0, 7, 9, 4), input_shape=(0, 7, 9, 3)),
                    "input_shape must be 4 ints in"),
    "gin-channels-0": (lambda: gin(w=arr(3, 3, 0, 4), input_shape=(2, 7, 9, 0)),
                       "input_shape must be 4 ints in"),
    "gin-filters-0": (lambda: gin(dy=arr(2, 7, 9, 0), w=arr(3, 3, 3, 0)),
                      "w must have no empty dimension"),
    "gpar-batch-0": (lambda: gpar(x=arr(0, 7, 9, 3), dy=arr(0, 7, 9, 4)), None),
    "gpar-channels-0": (lambda: gpar(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "gpar-filters-0": (lambda: gpar(dy=arr(2, 7, 9, 0)), "dy must have at least one filter"),
    "gpar-filters-0-1x1": (lambda: gpar(dy=arr(2, 7, 9, 0), kernel_size=(1, 1),
                                        padding=(0, 0, 0, 0)), "dy must have at least one filter"),
    "gpar-batch-0-filters-0": (lambda: gpar(x=arr(0, 7, 9, 3), dy=arr(0, 7, 9, 0)),
                               "dy must have at least one filter"),
    "pfwd-batch-0": (lambda: pfwd(x=arr(0, 7, 9, 3)), None),
    "pfwd-channels-0": (lambda: pfwd(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "pinf-batch-0": (lambda: pinf(x=arr(0, 7, 9, 3)), None),
    "cmpi-batch-0": (lambda: cmpi(x=arr(0, 7, 9, 3)), None),
    "cmpi-filters-0": (lambda: cmpi(w=arr(3, 3, 3, 0), b=arr(0)), "w must have no empty dimension"),
    "pbwd-batch-0": (lambda: pbwd(dy=arr(0, 3, 4, 3), argmax=valid_argmax((0, 3, 4, 3)),
                                  input_shape=(0, 7, 9, 3)), "input_shape must be 4 ints in"),
    "pbwd-channels-0": (lambda: pbwd(dy=arr(2, 3, 4, 0), argmax=valid_argmax((2, 3, 4, 0)),
                                     input_shape=(2, 7, 9, 0)), "input_shape must be 4 ints in"),
    "avgf-batch-0": (lambda: avgf(x=arr(0, 7, 9, 3)), None),
    "avgf-channels-0": (lambda: avgf(x=arr(2, 7, 9, 0)),
                        "the input's height, width and channels must have no empty dimension"),
    "avgb-batch-0": (lambda: avgb(dy=arr(0, 3, 4, 3), input_shape=(0, 7, 9, 3)),
                     "input_shape must be 4 ints in"),
    "avgb-channels-0": (lambda: avgb(dy=arr(2, 3, 4, 0), input_shape=(2, 7, 9, 0)),
                        "input_shape must be 4 ints in"),
    "bnf-rows-0": (lambda: bnf(x=arr(0, 3)), "batch statistics need at least one row of x"),
    "bnf-channels-0": (lambda: bnf(x=arr(6, 0), gamma=arr(0), beta=arr(0)),
                       "x must have at least one channel"),
    "bnb-rows-0": (lambda: bnb(x=arr(0, 3), dy=arr(0, 3)),
                   "batch statistics need at least one row of x"),
    "bni-rows-0": (lambda: bni(x=arr(0, 3)), None),
    "bni-channels-0": (lambda: bni(x=arr(6, 0), gamma=arr(0), beta=arr(0), mean=arr(0),
                                   var=arr(0)), "x must have at least one channel"),
    "adam-empty": (lambda: adam(param=arr(0), grad=arr(0), m=arr(0), v=arr(0)), None),
    "adam-3x0": (lambda: adam(param=arr(3, 0), grad=arr(3, 0), m=arr(3, 0), v=arr(3, 0)), None),
    "matmul-no-rows": (lambda: mm(a=arr(0, 4)), None),
    "matmul-no-inner": (lambda: mm(a=arr(5, 0), b=arr(0, 3)), None),
    "dense-no-rows": (lambda: dense(x=arr(0, 4)), None),
    "dense-no-inner": (lambda: dense(x=arr(5, 0), w=arr(0, 3)), None),
    "matmul-no-columns": (lambda: mm(b=arr(4, 0)), None),
    "leaky-empty": (lambda: leaky(x=arr(0, 3)), None),
    "leaky-back-empty": (lambda: leaky_back(x=arr(0, 3), upstream=arr(0, 3)), None),
}




def outcome(module, maker):
    """What the kernel gives (run: Adam's updated arrays), or the ValueError it raises."""
    name, args = maker()
    try:
        return run(module, name, args)
    except ValueError as error:
        return error


CONV_ZERO_SIZED = [key for key in ZERO_SIZED if key.startswith(("fwd-", "gin-", "gpar-"))]


@pytest.mark.parametrize("key", CONV_ZERO_SIZED)
def test_zero_sizes_give_the_same_result_or_the_same_error_on_every_path(backend, key):
    check_zero_sizes(backend, key)


@pytest.mark.parametrize("key", [key for key in ZERO_SIZED if key not in CONV_ZERO_SIZED])
def test_zero_sizes_give_the_same_result_or_the_same_error_everywhere(implementation, key):
    check_zero_sizes(implementation, key)


def check_zero_sizes(module, key):
    """module does with ZERO_SIZED[key] what the NumPy kernels do."""
    maker, refusal = ZERO_SIZED[key]
    expected, actual = outcome(_numpy_kernels, maker), outcome(module, maker)
    if refusal is not None:
        for error in (expected, actual):
            assert isinstance(error, ValueError), f"accepted: {error!r}"
            assert str(error).startswith(refusal), str(error)
        assert str(actual) == str(expected)
        return
    assert not isinstance(expected, ValueError) and not isinstance(actual, ValueError), (
        expected, actual)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


# Integer scalars outside the range of the C integer the compiled kernels make of them
# (stride, padding and sizes: int32 and up; Adam's step: int64), bools, floats, NaN and
# strings are ValueErrors naming the argument in both backends; NumPy's integers in range
# are ints like Python's. Each argument with the value its call takes by default.
INT_ARGUMENTS = {
    "step": (lambda v: adam(step=v), 3, "step must be an int from 1 to 9223372036854775807"),
    "conv-stride": (lambda v: fwd(stride=(1, v)), 1, "stride must be 2 ints"),
    "conv-padding": (lambda v: fwd(padding=(1, 1, v, 1)), 1, "padding (top, bottom, left, right) "
                                                             "must be 4 ints"),
    "grad-input-stride": (lambda v: gin(stride=(v, 1)), 1, "stride must be 2 ints"),
    "grad-input-shape": (lambda v: gin(input_shape=(v, 7, 9, 3)), 2, "input_shape must be 4 ints"),
    "grad-params-kernel-size": (lambda v: gpar(kernel_size=(v, 3)), 3,
                                "kernel_size must be 2 ints"),
    "pool-size": (lambda v: pfwd(pool_size=(2, v)), 2, "pool_size must be 2 ints"),
    "pool-stride": (lambda v: pfwd(stride=(v, 2)), 2, "stride must be 2 ints"),
    "pool-backward-input-shape": (lambda v: pbwd(input_shape=(v, 7, 9, 3)), 2,
                                  "input_shape must be 4 ints"),
    "avgpool-size": (lambda v: avgf(pool_size=(v, 2)), 2, "pool_size must be 2 ints"),
    "avgpool-stride": (lambda v: avgf(stride=(2, v)), 2, "stride must be 2 ints"),
    "avgpool-backward-input-shape": (lambda v: avgb(input_shape=(v, 7, 9, 3)), 2,
                                     "input_shape must be 4 ints"),
    "avgpool-backward-stride": (lambda v: avgb(stride=(v, 2)), 2, "stride must be 2 ints"),
}
# Each bad value made from the argument's default.
BAD_INTEGERS = {
    "10**400": lambda default: 10**400,
    "10**5000": lambda default: 10**5000,           # more digits than Python prints
    "2**63": lambda default: 2**63,
    "2**64": lambda default: 2**64,
    "uint64-max": lambda default: np.uint64(2**64 - 1),
    "-1": lambda default: -1,
    "True": lambda default: True,
    "False": lambda default: False,
    "numpy-bool": lambda default: np.True_,
    "as-float": float,
    "2.5": lambda default: 2.5,
    "nan": lambda default: float("nan"),
    "inf": lambda default: float("inf"),
    "None": lambda default: None,
    "as-string": str,
}
GOOD_INTEGERS = [np.int64, np.int8, np.uint16]


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_bad_integer_scalars_are_value_errors_naming_the_argument_everywhere(argument):
    make, default, refusal = INT_ARGUMENTS[argument]
    for bad, value_from in BAD_INTEGERS.items():
        for module in MODULES:
            name, args = make(value_from(default))
            with pytest.raises(ValueError) as info:
                getattr(module, name)(*args)
            assert str(info.value).startswith(refusal), (bad, str(info.value))
            assert len(str(info.value)) < 200, bad


@pytest.mark.parametrize("argument", list(INT_ARGUMENTS))
def test_numpy_integers_are_taken_as_ints_everywhere(argument):
    make, default, _ = INT_ARGUMENTS[argument]
    for kind in GOOD_INTEGERS:
        results = []
        for module in MODULES:
            expected = run(module, *make(default))
            results.append(run(module, *make(kind(default))))
            for got, want in zip(results[-1], expected):
                np.testing.assert_array_equal(got, want, err_msg=kind.__name__)
        for result in results[1:]:
            for got, want in zip(result, results[0]):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=kind.__name__)


FLOAT_ARGUMENTS = {
    "lr": lambda v: adam(lr=v),
    "beta1": lambda v: adam(beta1=v),
    "beta2": lambda v: adam(beta2=v),
    "eps": lambda v: adam(eps=v),
    "slope": lambda v: leaky(slope=v),
    "slope-backward": lambda v: leaky_back(slope=v),
    "slope-conv": lambda v: fwd(slope=v),
    "slope-dense": lambda v: dense(slope=v),
    "slope-conv-pool": lambda v: cmpi(slope=v),
}
BAD_FLOATS = {"10**400": 10**400, "-10**400": -(10**400), "True": True, "False": False,
              "nan": float("nan"), "-inf": float("-inf"), "float32-inf": np.float32("inf"),
              "None": None, "string": "0.25", "complex": 0.25j}


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_bad_real_scalars_are_value_errors_naming_the_argument_everywhere(argument):
    parameter = argument.split("-")[0]
    for bad, value in BAD_FLOATS.items():
        for module in MODULES:
            name, args = FLOAT_ARGUMENTS[argument](value)
            with pytest.raises(ValueError, match=f"^{parameter} must be a finite number, got "):
                getattr(module, name)(*args)


@pytest.mark.parametrize("argument", list(FLOAT_ARGUMENTS))
def test_numpy_and_python_numbers_of_one_value_are_alike_everywhere(argument):
    for module in MODULES:
        expected = run(module, *FLOAT_ARGUMENTS[argument](0.25))
        for value in (np.float32(0.25), np.float64(0.25), 2**-2):
            for got, want in zip(run(module, *FLOAT_ARGUMENTS[argument](value)), expected):
                np.testing.assert_array_equal(got, want)
        expected = run(module, *FLOAT_ARGUMENTS[argument](0.0))
        for value in (0, np.int64(0), np.uint8(0)):
            for got, want in zip(run(module, *FLOAT_ARGUMENTS[argument](value)), expected):
                np.testing.assert_array_equal(got, want)


EPS_CALLS = {"forward": lambda v: bnf(eps=v), "backward": lambda v: bnb(eps=v),
             "inference": lambda v: bni(eps=v)}


@pytest.mark.parametrize("kernel", list(EPS_CALLS))
def test_an_eps_that_is_not_a_finite_number_above_0_is_a_value_error_naming_it_everywhere(kernel):
    for value in list(BAD_FLOATS.values()) + [0, -1e-5, -0.0]:
        for module in MODULES:
            name, args = EPS_CALLS[kernel](value)
            with pytest.raises(ValueError, match="^eps must be "):
                getattr(module, name)(*args)


@pytest.mark.parametrize("kernel", list(EPS_CALLS))
def test_numpy_and_python_numbers_for_eps_are_alike_everywhere(kernel):
    for module in MODULES:
        for plain, others in ((0.25, (np.float32(0.25), np.float64(0.25), 2**-2)),
                              (1.0, (1, np.int64(1), np.uint8(1)))):
            expected = run(module, *EPS_CALLS[kernel](plain))
            for value in others:
                for got, want in zip(run(module, *EPS_CALLS[kernel](value)), expected):
                    np.testing.assert_array_equal(got, want)


# ================================================ read-only and non-contiguous inputs


def variant(kind, a):
    """An array equal to a, laid out or flagged as `kind` says."""
    if kind == "readonly":
        out = readonly(a)
    elif kind == "strided_rows":          # like x[:, ::2] (or b[::2])
        axis = 1 if a.ndim > 1 else 0
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.zeros(shape, a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = a
        out = big[tuple(index)]
    elif kind == "strided_last_axis":     # channels with a stride of two elements
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        out = big[..., ::2]
    elif kind == "fortran":               # transposed, copied, transposed back
        out = a.T.copy().T
    elif kind == "reversed":              # negative strides
        out = a[..., ::-1].copy()[..., ::-1]
    elif kind == "readonly_strided":
        out = variant("strided_rows", a)
        out.setflags(write=False)
    else:
        raise AssertionError(kind)
    np.testing.assert_array_equal(out, a)
    if kind == "readonly" or kind == "readonly_strided":
        assert not out.flags.writeable
    if kind != "readonly" and a.size > 1 and (a.ndim > 1 or kind != "fortran"):
        assert not out.flags.c_contiguous
    return out


VARIANTS = ["readonly", "strided_rows", "strided_last_axis", "fortran", "reversed", "readonly_strided"]


def read_only_inputs(name, dtype):
    """Arguments for kernel `name` and the positions of the array arguments it only reads."""
    rng = np.random.default_rng(9)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    stride, padding = (2, 1), (1, 2, 0, 1)
    if name == "conv2d_forward":
        return (r(2, 7, 9, 3), r(3, 2, 3, 4), r(4), stride, padding), (0, 1, 2)
    if name == "conv2d_grad_input":
        oh, ow = out_size(7, 3, 2, 1, 2), out_size(9, 2, 1, 0, 1)
        return (r(2, oh, ow, 4), r(3, 2, 3, 4), (2, 7, 9, 3), stride, padding), (0, 1)
    if name == "conv2d_grad_params":
        oh, ow = out_size(7, 3, 2, 1, 2), out_size(9, 2, 1, 0, 1)
        return (r(2, 7, 9, 3), r(2, oh, ow, 4), (3, 2), stride, padding), (0, 1)
    if name == "conv2d_maxpool_inference":
        return (r(2, 7, 9, 3), r(3, 2, 3, 4), r(4), stride, padding, (2, 2), (1, 2), 0.0), (0, 1, 2)
    if name in ("maxpool2d_forward", "maxpool2d_inference"):
        return (r(2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "maxpool2d_backward":
        x = r(2, 7, 9, 3)
        _, argmax = _numpy_kernels.maxpool2d_forward(x, (3, 3), (2, 2))
        return (r(*argmax.shape), argmax, x.shape), (0, 1)
    if name == "avgpool2d_forward":
        return (r(2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "avgpool2d_backward":
        return (r(2, 3, 4, 3), (2, 7, 9, 3), (3, 3), (2, 2)), (0,)
    if name == "batchnorm_forward":
        return (r(50, 3), r(3), r(3), 1e-5), (0, 1, 2)
    if name == "batchnorm_backward":
        return (r(50, 3), r(50, 3), r(3), r(3), np.abs(r(3)), 1e-5), (0, 1, 2, 3, 4)
    if name == "batchnorm_inference":
        return (r(50, 3), r(3), r(3), r(3), np.abs(r(3)), 1e-5), (0, 1, 2, 3, 4)
    if name == "adam_update":
        return (r(4, 5), r(4, 5), r(4, 5), np.abs(r(4, 5)), 1e-2, 0.9, 0.999, 1e-8, 2), (1,)
    if name == "matmul":
        return (r(37, 19), r(19, 23)), (0, 1)
    if name == "dense_forward":
        return (r(37, 19), r(19, 23), r(23), 0.1), (0, 1, 2)
    if name == "leaky_relu":
        return (r(2, 7, 9, 3), 0.01), (0,)
    if name == "leaky_relu_backward":
        return (r(2, 7, 9, 3), r(2, 7, 9, 3), 0.01), (0, 1)
    raise AssertionError(name)




READ_ARGS = [(name, position) for name in KERNEL_FUNCTIONS
             for position in read_only_inputs(name, np.float64)[1]] + [
             (name, "all") for name in KERNEL_FUNCTIONS
             if len(read_only_inputs(name, np.float64)[1]) > 1]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,position", READ_ARGS, ids=[f"{n}-{p}" for n, p in READ_ARGS])
def test_read_only_and_non_contiguous_inputs_give_the_same_result(implementation, name, position,
                                                                  dtype):
    """Each input the kernel only reads, read-only or laid out in each way of VARIANTS (or
    all of them at once): the same result, in new writable arrays, the inputs untouched."""
    args, read_positions = read_only_inputs(name, dtype)
    expected = run(implementation, name, args)
    for kind in VARIANTS:
        changed = list(args)
        for i in (read_positions if position == "all" else (position,)):
            changed[i] = variant(kind, args[i])
        snapshots = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in changed]
        actual = run(implementation, name, tuple(changed))
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=kind)
            if name != "adam_update":
                assert got.flags.writeable
                assert not any(np.shares_memory(got, a) for a in changed if isinstance(a, np.ndarray))
        for after, before in zip(changed, snapshots):
            if isinstance(after, np.ndarray):
                np.testing.assert_array_equal(after, before, err_msg=kind)  # inputs are only read


# ================================================================ memory_pool and OpenBLAS

# The compiled kernels inside memory_pool(), which swaps NumPy's allocator: the
# same results, and results made inside stay intact when later arrays reuse freed memory.

def pool_workload(dtype, seed):
    """Every kernel on tensors big enough (>= 64 KiB) for the pool to keep their memory."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 28, 28, 8)).astype(dtype)
    w = rng.standard_normal((3, 3, 8, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = COMPILED.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))
    dx = COMPILED.conv2d_grad_input(y, w, x.shape, (1, 1), (1, 1, 1, 1))
    dw, db = COMPILED.conv2d_grad_params(x, y, (3, 3), (1, 1), (1, 1, 1, 1))
    pooled, argmax = COMPILED.maxpool2d_forward(x, (3, 3), (2, 2))
    dpool = COMPILED.maxpool2d_backward(pooled, argmax, x.shape)
    averaged = COMPILED.avgpool2d_forward(x, (3, 3), (2, 2))
    daverage = COMPILED.avgpool2d_backward(averaged, x.shape, (3, 3), (2, 2))
    normalized = COMPILED.batchnorm_forward(y.reshape(-1, 6), b, b, 1e-5)
    dnormal = COMPILED.batchnorm_backward(y.reshape(-1, 6), y.reshape(-1, 6), b, *normalized[1:], 1e-5)
    param, m, v = x.copy(), np.zeros_like(x), np.zeros_like(x)
    for step in (1, 2):
        COMPILED.adam_update(param, y[..., :1].repeat(8, axis=3), m, v, 1e-3, 0.9, 0.999, 1e-8, step)
    return [y, dx, dw, db, pooled, argmax, dpool, averaged, daverage, *normalized, *dnormal,
            param, m, v]


@needs_compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_kernels_inside_memory_pool_match_outside(dtype):
    expected = pool_workload(dtype, seed=10)
    with COMPILED.memory_pool():
        first = pool_workload(dtype, seed=10)
        del first
        inside = pool_workload(dtype, seed=10)      # now on reused blocks
        kept = [a.copy() for a in inside]
        scribble = [np.full_like(a, 7) for a in pool_workload(dtype, seed=11)]
    after = pool_workload(dtype, seed=12)          # outside again, freed blocks still pooled
    del scribble, after
    for got, copy, want in zip(inside, kept, expected):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, copy)


def test_memory_pool_is_a_context_manager_that_restores_the_allocator(implementation):
    module = implementation
    get_handler_name = (getattr(np, "_core", None) or np.core).multiarray.get_handler_name

    before = get_handler_name()
    assert module.memory_pool.__doc__ and module.memory_pool.__doc__.strip()
    with pytest.raises(KeyError):
        with module.memory_pool():
            big = np.ones(1 << 15)
            raise KeyError("leave the block by an exception")
    assert get_handler_name() == before
    np.testing.assert_array_equal(big, 1.0)


@needs_compiled
def test_kernels_and_pool_are_safe_from_several_python_threads():
    """Four Python threads running every kernel at once, each inside the pool, get what one
    thread alone gets: scratch buffers, BLAS thread settings and pool lists don't mix."""
    from concurrent.futures import ThreadPoolExecutor

    expected = [pool_workload(np.float32, seed) for seed in range(4)]

    def work(seed):
        with COMPILED.memory_pool():
            for _ in range(5):
                result = pool_workload(np.float32, seed)
            return [a.copy() for a in result]

    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(work, range(4)))
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def numpy_ships_openblas():
    import glob
    import os
    root = os.path.dirname(os.path.dirname(np.__file__))
    return bool(glob.glob(os.path.join(root, "numpy.libs", "*openblas*")))


@needs_compiled
@pytest.mark.skipif(not numpy_ships_openblas(), reason="this NumPy is not a wheel with its own OpenBLAS")
def test_numpy_wheels_openblas_is_found_for_direct_products():
    """Where NumPy ships its own OpenBLAS (its PyPI wheels), the compiled kernels use it."""
    assert COMPILED._blas is not None and all(COMPILED._blas.values())


@pytest.mark.skipif(COMPILED is None or COMPILED._blas is None,
                    reason="NumPy's OpenBLAS is not called directly here")
def test_openblas_keeps_its_thread_count_across_kernel_calls():
    """The kernels run OpenBLAS on their own threads and give NumPy its thread count back."""
    import ctypes
    get_threads = ctypes.CFUNCTYPE(ctypes.c_int)(COMPILED._blas["get_threads"])
    before = get_threads()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 20, 20, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 32)).astype(np.float32)
    COMPILED.conv2d_forward(x, w, np.zeros(32, np.float32), (1, 1), (1, 1, 1, 1))
    a = rng.standard_normal((300, 200))
    np.testing.assert_allclose(COMPILED.matmul(a, a.T), a @ a.T, rtol=1e-12, atol=1e-9)
    assert get_threads() == before
    with COMPILED.memory_pool():        # where a Network computes: one thread throughout
        assert get_threads() == 1
        COMPILED.matmul(a, a.T)
        assert get_threads() == 1
    assert get_threads() == before


# ================================================================ the builds

def every_kernel_once(module, dtype, seed):
    """Each kernel of the module once, each on inputs made by the NumPy kernels from one set
    of random arrays (so that every result differs between modules only by the kernel's own
    rounding): thin convolutions (the direct loops where the filters take them, strides,
    uneven padding), a wide one, pooling, batch normalization, Adam, matmul, leaky ReLU."""
    rng = np.random.default_rng(seed)
    twin = _numpy_kernels
    x = rng.standard_normal((3, 15, 13, 1)).astype(dtype)
    w1 = rng.standard_normal((3, 3, 1, 35)).astype(dtype)
    x2 = rng.standard_normal((3, 15, 13, 4)).astype(dtype)
    w2 = rng.standard_normal((4, 4, 4, 8)).astype(dtype)
    x3 = rng.standard_normal((2, 9, 10, 32)).astype(dtype)
    w3 = rng.standard_normal((3, 3, 32, 40)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    y1 = twin.conv2d_forward(x, w1, b[:35], (1, 2), (1, 0, 1, 1))
    y2 = twin.conv2d_forward(x2, w2, b[:8], (2, 1), (1, 2, 0, 1))
    y3 = twin.conv2d_forward(x3, w3, b, (1, 1), (1, 1, 1, 1))
    pooled, argmax = twin.maxpool2d_forward(y2, (2, 2), (2, 2))
    param, grad = rng.standard_normal((2, 1000)).astype(dtype)
    m, v = np.zeros_like(param), np.zeros_like(param)
    for step in range(1, 4):
        module.adam_update(param, grad, m, v, 1e-3, 0.9, 0.999, 1e-8, step)
    averaged = twin.avgpool2d_forward(y1, (3, 3), (2, 1))
    rows = y1.reshape(-1, 35)
    dy_rows = rng.standard_normal(rows.shape).astype(dtype)
    _, mean, var = twin.batchnorm_forward(rows, b[:35], b[:35][::-1].copy(), 1e-5)
    return [module.conv2d_forward(x, w1, b[:35], (1, 2), (1, 0, 1, 1)),
            module.conv2d_forward(x2, w2, b[:8], (2, 1), (1, 2, 0, 1), 0.0),
            module.conv2d_forward(x3, w3, b, (1, 1), (1, 1, 1, 1), 0.1),
            *module.conv2d_grad_params(x2, y2, (4, 4), (2, 1), (1, 2, 0, 1)),
            *module.conv2d_grad_params(x3, y3, (3, 3), (1, 1), (1, 1, 1, 1)),
            module.conv2d_grad_input(y2, w2, x2.shape, (2, 1), (1, 2, 0, 1)),
            module.conv2d_grad_input(y3, w3, x3.shape, (1, 1), (1, 1, 1, 1)),
            *module.maxpool2d_forward(y2, (2, 2), (2, 2)),
            module.maxpool2d_backward(pooled, argmax, y2.shape),
            module.avgpool2d_forward(y1, (3, 3), (2, 1)),
            module.avgpool2d_backward(averaged, y1.shape, (3, 3), (2, 1)),
            *module.batchnorm_forward(rows, b[:35], b[:35][::-1].copy(), 1e-5),
            *module.batchnorm_backward(rows, dy_rows, b[:35], mean, var, 1e-5),
            module.batchnorm_inference(rows, b[:35], b[:35], mean, var, 1e-3), param, m, v,
            module.matmul(x2.reshape(-1, 4).T, x2.reshape(-1, 4)),
            module.leaky_relu(y1, 0.01), module.leaky_relu_backward(y1, dy_rows.reshape(y1.shape), 0.01)]


@pytest.mark.skipif(not WIDER_BUILDS, reason="no wider build here (a CPU without AVX2 and FMA, "
                                             "or a compiler without them)")
@pytest.mark.parametrize("isa", list(WIDER_BUILDS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(3))
def test_every_wider_build_computes_what_the_baseline_build_computes(isa, dtype, seed):
    """Up to rounding: the wider builds fuse multiplies and adds (FMA) where the baseline
    cannot; indices (max pooling's argmax) are equal."""
    for wide, narrow in zip(every_kernel_once(WIDER_BUILDS[isa], dtype, seed),
                            every_kernel_once(BASELINE, dtype, seed)):
        if np.issubdtype(narrow.dtype, np.integer):
            np.testing.assert_array_equal(wide, narrow)
        else:
            assert_close(wide, narrow, dtype)
