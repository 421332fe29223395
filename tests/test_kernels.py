"""The backend choice in cnnc.kernels (made at import, so each case runs in a fresh process)."""
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import cnnc
from cnnc import _checks, _numpy_kernels, kernels

PRINT_IMPLEMENTATION = "from cnnc import kernels; print(kernels.IMPLEMENTATION)"
KERNEL_NAMES = {"conv2d_forward", "conv2d_grad_input", "conv2d_grad_params", "maxpool2d_forward",
                "maxpool2d_backward", "avgpool2d_forward", "avgpool2d_backward", "batchnorm_forward",
                "batchnorm_backward", "batchnorm_inference", "adam_update", "matmul", "leaky_relu",
                "leaky_relu_backward", "memory_pool", "set_num_threads", "get_num_threads"}


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
    with os.fdopen(write, "wb") as out:
        pickle.dump(work(), out)
    os._exit(0)
os.close(write)
with os.fdopen(read, "rb") as answer:
    child = pickle.load(answer)
os.waitpid(pid, 0)
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
    if not compiled_is_built():
        return False
    from cnnc import _kernels
    before = _kernels.get_num_threads()
    _kernels.set_num_threads(2)
    threads = _kernels.get_num_threads()
    _kernels.set_num_threads(before)
    return threads == 2


FORK_TIMEOUT = 120   # seconds; the work takes about one


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_forked_children_compute_what_the_parent_computed(backend):
    """A child forked after the kernels ran in threads (os.fork, a multiprocessing fork Pool)
    neither hangs nor computes anything else."""
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
assert os.environ.get("OMP_WAIT_POLICY") == {policy!r}, "the import changed the environment"
x = np.random.default_rng(0).random((64, 28, 28, 8), dtype=np.float32)
idle = []
for _ in range(5):     # the least of five: other work on the machine adds, spinning never stops
    kernels.maxpool2d_forward(x, (2, 2), (2, 2))
    start = time.process_time()
    time.sleep(0.2)
    idle.append(time.process_time() - start)
print(min(idle))
"""


@pytest.mark.skipif(not compiled_has_openmp(), reason="no OpenMP threads: the extension is not "
                    "built, or its compiler had no OpenMP")
@pytest.mark.parametrize("policy, most, least", [(None, 0.002, 0.0), ("ACTIVE", None, 0.1)],
                         ids=["default", "user_chose_active"])
def test_idle_threads_sleep_instead_of_holding_a_core(policy, most, least):
    """After a parallel loop, the threads of the compiled kernels use no CPU while the
    program does something else (OpenMP's default lets them spin for milliseconds); a wait
    policy set in the environment is the user's choice and stays as it is."""
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


@pytest.mark.parametrize("value", ["0", "-2", "two", "2.5", "", "100000", "99999999999999999999"])
def test_a_bad_cnnc_num_threads_is_a_value_error_naming_it(value, monkeypatch):
    monkeypatch.setenv("CNNC_NUM_THREADS", value)
    with pytest.raises(ValueError, match="CNNC_NUM_THREADS must be an int from 1 to"):
        _checks.thread_count("CNNC_NUM_THREADS")


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_a_bad_cnnc_num_threads_stops_the_import(backend):
    env = dict(os.environ, CNNC_BACKEND=backend, CNNC_NUM_THREADS="0")
    result = subprocess.run([sys.executable, "-c", "import cnnc"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "ValueError: CNNC_NUM_THREADS must be an int from 1 to" in result.stderr


def test_results_do_not_depend_on_the_thread_count_beyond_rounding():
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((9, 11, 11, 3)), rng.standard_normal((9, 9, 9, 16))
    before = cnnc.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            cnnc.set_num_threads(threads)
            results.append(kernels.conv2d_grad_params(x, dy, (3, 3), (1, 1), (0, 0, 0, 0)))
    finally:
        cnnc.set_num_threads(before)
    for dw, db in results[1:]:
        np.testing.assert_allclose(dw, results[0][0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, results[0][1], rtol=1e-12, atol=1e-12)


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


def test_the_default_thread_count_is_at_most_the_cores_this_process_may_use():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _checks.cpu_quota()
    assert _checks.cores_available() == min(cores, quota or cores)
    env = {k: v for k, v in os.environ.items() if k != "CNNC_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", "import cnnc; print(cnnc.get_num_threads())"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 1 <= int(done.stdout) <= _checks.cores_available()
