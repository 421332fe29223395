"""cnnc.datasets: the IDX reader, the MNIST loaders, downloads from a local HTTP server on
127.0.0.1 (no test touches the internet) and the bundled sample of real digits."""
import gzip
import hashlib
import http.server
import os
import threading
import time
import tracemalloc

import numpy as np
import pytest

from cnnc import datasets

TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32,
         0x0E: np.float64}


def idx_bytes(array, type_code=None):
    """An array as an IDX file."""
    code = type_code if type_code is not None else {np.dtype(t): c for c, t in TYPES.items()}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, compress=False):
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as handle:
        handle.write(data)
    return path


# ============================================================================ load_idx

@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("code", sorted(TYPES))
def test_load_idx_reads_every_type_gzipped_or_raw(tmp_path, code, compress):
    rng = np.random.default_rng(code)
    array = (rng.standard_normal((3, 5, 2)) * 100).astype(TYPES[code])
    path = write(tmp_path / "a.idx", idx_bytes(array), compress)
    loaded = datasets.load_idx(path)
    assert loaded.shape == (3, 5, 2) and loaded.dtype == np.dtype(TYPES[code])
    assert loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


def test_load_idx_reads_one_dimensional_and_empty_arrays(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(datasets.load_idx(write(tmp_path / "l", idx_bytes(labels))), labels)
    empty = datasets.load_idx(write(tmp_path / "e", idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    assert empty.shape == (0, 28, 28)


def bad_files():
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    absurd = bytes([0, 0, 0x08, 4]) + np.full(4, 2**32 - 1, dtype=">u4").tobytes() + b"\0" * 16
    return {
        "empty file": (b"", "not an IDX file"),
        "not IDX at all": (b"PK\x03\x04 a zip file", "not an IDX file"),
        "unknown type code": (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "unknown IDX type code 0x07"),
        "zero dimensions": (bytes([0, 0, 0x08, 0]), "0 dimensions"),
        "truncated header": (good[:9], "truncated IDX header"),
        "truncated data": (good[:-1], "truncated"),
        "trailing data": (good + b"\0", "more data than the header declares"),
        "absurd size": (absurd, "more than MAX_IDX_BYTES"),
        "65 dimensions": (bytes([0, 0, 0x08, 65]) + np.ones(65, dtype=">u4").tobytes() + b"\0",
                          "declares 65 dimensions, more than"),
        "255 dimensions": (bytes([0, 0, 0x08, 255]), "declares 255 dimensions"),
    }


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", sorted(bad_files()))
def test_load_idx_refuses_bad_files_with_a_clear_error(tmp_path, case, compress):
    data, message = bad_files()[case]
    path = write(tmp_path / "bad", data, compress)
    with pytest.raises(ValueError, match=message) as caught:
        datasets.load_idx(path)
    assert str(path) in str(caught.value)


def test_load_idx_refuses_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
    corrupt = data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:]
    with pytest.raises(ValueError, match="corrupt gzip"):
        datasets.load_idx(write(tmp_path / "c.gz", corrupt))
    with pytest.raises(ValueError, match="corrupt gzip|truncated"):
        datasets.load_idx(write(tmp_path / "t.gz", data[: len(data) // 2]))


def test_load_idx_of_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        datasets.load_idx(tmp_path / "nothing-here")


def test_load_idx_of_a_directory_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="cannot be read \\(Is a directory\\)") as caught:
        datasets.load_idx(tmp_path)
    assert str(tmp_path) in str(caught.value)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc/self/mem")
def test_load_idx_of_a_file_that_cannot_be_read_is_a_value_error_naming_it():
    # /proc/self/mem opens, but reading its first bytes fails with an I/O error.
    with pytest.raises(ValueError, match="/proc/self/mem: could not be read"):
        datasets.load_idx("/proc/self/mem")


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_load_idx_holds_one_copy_of_the_array(tmp_path, compress):
    """16 MB of big-endian float32 read into native order: the peak is the array itself
    plus a bounded buffer, not the two full copies of reading then converting."""
    array = np.repeat(np.arange(4096, dtype=np.float32), 1024)   # compresses quickly
    data = idx_bytes(array)
    path = tmp_path / "big.idx"
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    del data
    tracemalloc.start()
    try:
        loaded = datasets.load_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype.isnative
    assert peak < 1.2 * array.nbytes + (4 << 20), f"peak {peak:,} bytes for a {array.nbytes:,}-byte array"


# ============================================================================ mnist()

def fake_mnist(n_train=12, n_test=5, seed=0):
    """The four MNIST files' contents (gzipped IDX), with random digits."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}, arrays


def write_files(root, files):
    os.makedirs(root, exist_ok=True)
    for name, data in files.items():
        write(os.path.join(root, name), data)


def test_mnist_reads_the_four_files_as_nhwc_uint8_and_int64_labels(tmp_path):
    files, arrays = fake_mnist()
    write_files(tmp_path, files)
    (x_train, y_train), (x_test, y_test) = datasets.mnist(tmp_path)
    assert x_train.shape == (12, 28, 28, 1) and x_train.dtype == np.uint8
    assert x_test.shape == (5, 28, 28, 1)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte.gz"])


def test_mnist_reads_unpacked_files_too(tmp_path):
    files, arrays = fake_mnist()
    for name, data in files.items():
        write(tmp_path / name[:-3], gzip.decompress(data))
    (x_train, _), _ = datasets.mnist(str(tmp_path))
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])


def test_mnist_without_its_files_says_which_are_missing_and_how_to_get_them(tmp_path):
    files, _ = fake_mnist()
    write(tmp_path / "train-images-idx3-ubyte.gz", files["train-images-idx3-ubyte.gz"])
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*download=True"):
        datasets.mnist(tmp_path)


def test_mnist_refuses_labels_that_do_not_match_the_images(tmp_path):
    files, _ = fake_mnist()
    files["t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(np.zeros(4, np.uint8)))
    write_files(tmp_path, files)
    with pytest.raises(ValueError, match="test labels"):
        datasets.mnist(tmp_path)


def test_mnist_without_root_reads_cnnc_data(tmp_path, monkeypatch):
    files, _ = fake_mnist()
    write_files(tmp_path / "mnist", files)
    monkeypatch.setenv("CNNC_DATA", str(tmp_path))
    (x_train, _), _ = datasets.mnist()
    assert x_train.shape == (12, 28, 28, 1)


@pytest.mark.parametrize("value", ["", "  "], ids=repr)
def test_cnnc_data_set_to_nothing_means_the_default_root(monkeypatch, value):
    monkeypatch.setenv("CNNC_DATA", value)
    assert datasets.default_root(datasets.MNIST) == os.path.join(os.path.expanduser("~"), ".cache",
                                                                 "cnnc", "mnist")


def test_fashion_mnist_without_root_finds_the_debian_package_directory(tmp_path, monkeypatch):
    files, arrays = fake_mnist(seed=1)
    write_files(tmp_path / "usr-share-datasets-fashion-mnist", files)
    monkeypatch.setenv("CNNC_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(datasets.FASHION_MNIST, "system_dirs",
                        (str(tmp_path / "usr-share-datasets-fashion-mnist"),))
    (x_train, _), _ = datasets.fashion_mnist()
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])


def test_fashion_mnist_looks_where_debian_puts_it():
    assert "/usr/share/datasets/fashion-mnist" in datasets.FASHION_MNIST.system_dirs


# ============================================================================ downloads

class Server:
    """An HTTP server on 127.0.0.1 serving files from memory: path -> bytes, or path -> a
    function of the request handler that answers it in its own (mis)behaving way."""

    def __init__(self):
        self.files, self.requests = {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                elif callable(body):
                    try:
                        body(self)
                    except (BrokenPipeError, ConnectionResetError):
                        pass                # the client gave up: what these tests expect
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.closing = threading.Event()      # ends the responses that wait
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.close()


def start(request, length):
    """Send a 200 status and headers announcing length bytes (None: no Content-Length, the
    body ends when the connection closes)."""
    request.send_response(200)
    if length is not None:
        request.send_header("Content-Length", str(length))
    request.end_headers()


def cut(data):
    """Announces all of data, sends half and closes the connection."""
    def respond(request):
        start(request, len(data))
        request.wfile.write(data[: len(data) // 2])
        request.close_connection = True
    return respond


def announcing(length, data):
    """Announces length bytes whatever it then sends: data."""
    def respond(request):
        start(request, length)
        request.wfile.write(data)
    return respond


class Endless:
    """A body with no announced length that never ends: data over and over, up to `cap`
    bytes so that a client which never stops cannot keep the test running for long.
    `sent` counts what the server got into the socket before the client hung up."""

    def __init__(self, data, cap=256 << 20):
        self.data, self.cap, self.sent = data, cap, 0
        self.done = threading.Event()

    def __call__(self, request):
        try:
            start(request, None)
            while self.sent < self.cap:
                request.wfile.write(self.data)
                self.sent += len(self.data)
        finally:
            self.done.set()


class Trickle:
    """Announces all of data and sends it one byte every `every` seconds; `sent` counts
    the bytes sent before the client hung up."""

    def __init__(self, data, every):
        self.data, self.every, self.sent = data, every, 0
        self.done = threading.Event()

    def __call__(self, request):
        try:
            start(request, len(self.data))
            for byte in self.data:
                if request.server.closing.wait(self.every):
                    return
                request.wfile.write(bytes([byte]))
                request.wfile.flush()
                self.sent += 1
        finally:
            self.done.set()


def stalling(data, seconds=10):
    """Announces all of data, sends half, then stays silent for `seconds`."""
    def respond(request):
        start(request, len(data))
        request.wfile.write(data[: len(data) // 2])
        request.wfile.flush()
        request.server.closing.wait(seconds)
    return respond


def dead_port():
    """A URL on 127.0.0.1 where nothing listens."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def known(data):
    """The size and SHA-256 that fetch checks a download of data against."""
    return len(data), hashlib.sha256(data).hexdigest()


@pytest.fixture
def local_mnist(monkeypatch, server):
    """MNIST as served by the local server: its published sizes and hashes replaced by
    those of the files this test generates, its mirrors by the local server's."""
    files, arrays = fake_mnist()
    monkeypatch.delenv("CNNC_MNIST_MIRRORS", raising=False)
    dataset = datasets.Dataset("mnist", mirrors=[server.url + "/good/"], files={
        role: (name, *known(files[name])) for role, (name, _, _) in datasets.MNIST.files.items()})
    monkeypatch.setattr(datasets, "MNIST", dataset)
    return dataset, files, arrays


def leftovers(root):
    return [name for name in os.listdir(root) if name.startswith(".") or name.endswith(".part")]


def test_download_fetches_verifies_and_loads(tmp_path, server, local_mnist):
    dataset, files, arrays = local_mnist
    for name, data in files.items():
        server.files[f"/good/{name}"] = data
    (x_train, y_train), (x_test, _) = datasets.mnist(tmp_path / "data", download=True)
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])
    assert sorted(os.listdir(tmp_path / "data")) == sorted(files)
    assert len(server.requests) == 4
    datasets.mnist(tmp_path / "data", download=True)     # present and whole: not fetched again
    assert len(server.requests) == 4


def test_download_goes_past_a_dead_mirror_and_a_missing_file(tmp_path, server, local_mnist):
    dataset, files, _ = local_mnist
    for name, data in files.items():
        server.files[f"/good/{name}"] = data
    dataset.mirrors = (dead_port(), server.url + "/empty/", server.url + "/good/")
    datasets.mnist(tmp_path, download=True)
    assert any(path.startswith("/empty/") for path in server.requests)
    assert leftovers(tmp_path) == []


def test_a_corrupt_copy_is_refused_and_the_next_mirror_used(tmp_path, server, local_mnist):
    dataset, files, arrays = local_mnist
    for name, data in files.items():
        server.files[f"/corrupt/{name}"] = data[:-1] + bytes([data[-1] ^ 1])
        server.files[f"/good/{name}"] = data
    dataset.mirrors = (server.url + "/corrupt/", server.url + "/good/")
    (x_train, _), _ = datasets.mnist(tmp_path, download=True)
    np.testing.assert_array_equal(x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])


def test_when_every_mirror_fails_nothing_is_left_and_the_error_says_why(tmp_path, server, local_mnist):
    dataset, files, _ = local_mnist
    name = "train-images-idx3-ubyte.gz"
    server.files[f"/corrupt/{name}"] = files[name][::-1]
    server.files[f"/cut/{name}"] = cut(files[name])
    dataset.mirrors = (server.url + "/corrupt/", server.url + "/cut/", dead_port())
    with pytest.raises(OSError) as caught:
        datasets.mnist(tmp_path, download=True)
    message = str(caught.value)
    assert "SHA-256" in message and "/cut/" in message and message.count("http://127.0.0.1") == 3
    assert os.listdir(tmp_path) == []


def test_an_interrupted_download_leaves_no_partial_file(tmp_path, server):
    data = gzip.compress(idx_bytes(np.arange(100000, dtype=np.int32)))
    server.files["/cut/f.gz"] = cut(data)
    with pytest.raises(OSError, match="could not download f.gz"):
        datasets.fetch([server.url + "/cut/"], "f.gz", *known(data), tmp_path)
    assert os.listdir(tmp_path) == []


def test_fetch_returns_the_verified_file(tmp_path, server):
    data = b"any bytes at all"
    server.files["/m/f.bin"] = data
    path = datasets.fetch([server.url + "/m"], "f.bin", *known(data), tmp_path)
    with open(path, "rb") as handle:
        assert handle.read() == data


def test_an_endless_stream_is_abandoned_past_the_size_and_the_next_mirror_used(tmp_path, server):
    data = os.urandom(5000)
    endless = Endless(data)
    server.files["/endless/f.gz"] = endless
    server.files["/good/f.gz"] = data
    with pytest.raises(OSError, match="sends more than the file's 5,000 bytes"):
        datasets.fetch([server.url + "/endless/"], "f.gz", *known(data), tmp_path, deadline=20)
    assert os.listdir(tmp_path) == []
    assert endless.done.wait(10)
    # Only what the sockets' buffers took before the client hung up, not the 256 MB cap.
    assert endless.sent < 64 << 20, f"the server sent {endless.sent:,} bytes"
    path = datasets.fetch([server.url + "/endless/", server.url + "/good/"], "f.gz",
                          *known(data), tmp_path, deadline=20)
    assert os.listdir(tmp_path) == ["f.gz"] and open(path, "rb").read() == data
    assert server.requests == ["/endless/f.gz", "/endless/f.gz", "/good/f.gz"]


@pytest.mark.parametrize("announced", [5001, 4999, 10 << 30])
def test_a_content_length_that_is_not_the_size_is_refused_at_once(tmp_path, server, announced):
    data = os.urandom(5000)
    server.files["/wrong/f.gz"] = announcing(announced, data)
    server.files["/good/f.gz"] = data
    with pytest.raises(OSError, match=f"announces {announced} bytes, the file has 5,000"):
        datasets.fetch([server.url + "/wrong/"], "f.gz", *known(data), tmp_path, deadline=20)
    assert os.listdir(tmp_path) == []
    datasets.fetch([server.url + "/wrong/", server.url + "/good/"], "f.gz", *known(data), tmp_path)
    assert os.listdir(tmp_path) == ["f.gz"]


def test_a_trickling_mirror_is_abandoned_at_the_deadline_and_the_next_mirror_used(tmp_path, server):
    data = os.urandom(64)
    trickle = Trickle(data, every=0.3)
    server.files["/slow/f.gz"] = trickle
    server.files["/good/f.gz"] = data
    began = time.monotonic()
    datasets.fetch([server.url + "/slow/", server.url + "/good/"], "f.gz", *known(data), tmp_path,
                   deadline=1)
    took = time.monotonic() - began
    assert 1 <= took < 5, f"took {took:.1f} s with a 1 s deadline"
    assert os.listdir(tmp_path) == ["f.gz"]
    assert server.requests == ["/slow/f.gz", "/good/f.gz"]
    assert trickle.done.wait(5) and trickle.sent < 10      # a few bytes of the 64, no more


def test_a_silent_mirror_is_abandoned_at_the_deadline_not_after_the_read_timeout(tmp_path, server):
    data = os.urandom(5000)
    server.files["/silent/f.gz"] = stalling(data)
    began = time.monotonic()
    with pytest.raises(OSError, match="not finished within the 1 s deadline"):
        datasets.fetch([server.url + "/silent/"], "f.gz", *known(data), tmp_path, timeout=30,
                       deadline=1)
    took = time.monotonic() - began
    assert 1 <= took < 5, f"took {took:.1f} s with a 1 s deadline and a 30 s read timeout"
    assert os.listdir(tmp_path) == []


def test_mnist_gives_its_deadline_to_every_download(tmp_path, server, local_mnist):
    dataset, files, _ = local_mnist
    for name, data in files.items():
        server.files[f"/silent/{name}"] = stalling(data)
        server.files[f"/good/{name}"] = data
    dataset.mirrors = (server.url + "/silent/", server.url + "/good/")
    began = time.monotonic()
    datasets.mnist(tmp_path, download=True, deadline=0.5)
    took = time.monotonic() - began
    assert 2 <= took < 8, f"four files, each abandoned by one mirror at 0.5 s, took {took:.1f} s"
    assert leftovers(tmp_path) == []


def test_keyboard_interrupt_mid_download_leaves_nothing_and_stops(tmp_path, server, monkeypatch):
    data = os.urandom(200_000)
    server.files["/a/f.gz"] = server.files["/b/f.gz"] = data
    seen = []

    class Interrupting:
        """A progress bar whose first update is where the user presses Ctrl-C."""
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def update(self, count):
            seen.append(os.listdir(tmp_path))
            raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        datasets.fetch([server.url + "/a/", server.url + "/b/"], "f.gz", *known(data), tmp_path)
    assert len(seen) == 1 and [name for name in seen[0] if name.endswith(".part")]
    assert os.listdir(tmp_path) == []
    assert server.requests == ["/a/f.gz"]


@pytest.mark.parametrize("load, variable", [(datasets.mnist, "CNNC_MNIST_MIRRORS"),
                                            (datasets.fashion_mnist, "CNNC_FASHION_MNIST_MIRRORS")],
                         ids=["mnist", "fashion_mnist"])
def test_mirrors_come_from_the_argument_else_the_variable_else_the_built_in_list(
        tmp_path, server, monkeypatch, load, variable):
    files, _ = fake_mnist()
    name = "mnist" if load is datasets.mnist else "fashion-mnist"
    dataset = datasets.Dataset(name, mirrors=[server.url + "/builtin/"], files={
        role: (file_name, *known(files[file_name]))
        for role, (file_name, _, _) in datasets.MNIST.files.items()})
    monkeypatch.setattr(datasets, "MNIST" if name == "mnist" else "FASHION_MNIST", dataset)
    assert dataset.mirrors_variable == variable
    for where in ("builtin", "variable", "argument"):
        for file_name, data in files.items():
            server.files[f"/{where}/{file_name}"] = data

    def used(root, **kwargs):
        """Where a download into a new root fetched its four files from."""
        server.requests.clear()
        load(tmp_path / root, download=True, **kwargs)
        return sorted({path.split("/")[1] for path in server.requests})

    monkeypatch.delenv(variable, raising=False)
    assert used("a") == ["builtin"]
    monkeypatch.setenv(variable, " ")          # set to nothing: as unset, as every cnnc variable
    assert used("e") == ["builtin"]
    monkeypatch.setenv(variable, f"{dead_port()},\n {server.url}/variable/ ")
    assert used("b") == ["variable"]
    assert used("c", mirrors=[server.url + "/argument/"]) == ["argument"]
    assert used("d", mirrors=f"{server.url}/missing/ {server.url}/argument/") == ["argument", "missing"]


@pytest.mark.parametrize("mirrors", [[], (), "", " , ", ["ftp://127.0.0.1/mnist/"], ["127.0.0.1/mnist/"],
                                     ["http://"], ["http://[::1/"], [b"http://127.0.0.1/"],
                                     "http://127.0.0.1/ file:///tmp/mnist/"])
def test_mirrors_that_are_not_http_urls_are_refused_naming_the_argument(tmp_path, local_mnist,
                                                                        server, mirrors):
    with pytest.raises(ValueError, match="^mirrors: "):
        datasets.mnist(tmp_path, download=True, mirrors=mirrors)
    with pytest.raises(ValueError, match="^mirrors: "):
        datasets.fetch(mirrors, "f.gz", 1, "0" * 64, tmp_path)
    assert server.requests == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("value", [" , ", "ftp://127.0.0.1/mnist/", "http://127.0.0.1/,/tmp/mnist"])
def test_a_bad_mirrors_variable_is_refused_naming_it(tmp_path, local_mnist, server, monkeypatch, value):
    monkeypatch.setenv("CNNC_MNIST_MIRRORS", value)
    with pytest.raises(ValueError, match="^CNNC_MNIST_MIRRORS: "):
        datasets.mnist(tmp_path, download=True)
    assert server.requests == [] and os.listdir(tmp_path) == []


def test_published_sizes_and_hashes():
    sizes = {dataset.name: {name: size for name, size, _ in dataset.files.values()}
             for dataset in (datasets.MNIST, datasets.FASHION_MNIST)}
    assert sizes == {
        "mnist": {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
                  "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542},
        "fashion-mnist": {"train-images-idx3-ubyte.gz": 26421880, "train-labels-idx1-ubyte.gz": 29515,
                          "t10k-images-idx3-ubyte.gz": 4422102, "t10k-labels-idx1-ubyte.gz": 5148},
    }
    for dataset in (datasets.MNIST, datasets.FASHION_MNIST):
        for name, _, sha256 in dataset.files.values():
            assert len(sha256) == 64 and int(sha256, 16) >= 0


# ============================================================================ mnist_sample

def test_mnist_sample_is_real_digits_split_400_and_100_per_class():
    (x_train, y_train), (x_test, y_test) = datasets.mnist_sample()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 100))
    assert x_train.max() == 255 and x_train.min() == 0
    # Digits: ink in the middle, blank borders, about a fifth of the pixels lit.
    ink = (x_train > 0).mean(axis=0)[..., 0]
    assert ink[:2].max() < 0.05 and ink[12:16, 12:16].mean() > 0.3
    assert 0.1 < (x_train > 0).mean() < 0.3
    # No digit is in both parts.
    train_rows = {row.tobytes() for row in x_train}
    assert not any(row.tobytes() in train_rows for row in x_test)


def test_mnist_sample_comes_shuffled_with_the_bundled_digits_and_their_labels():
    """The file holds the digits sorted by class; a first batch must hold every class."""
    (x_train, y_train), (x_test, y_test) = datasets.mnist_sample()
    for labels in (y_train, y_test):
        assert set(labels[:50]) == set(range(10)) and (np.diff(labels) < 0).any()
    bundled = os.path.join(os.path.dirname(datasets.__file__), "data", "mnist_sample.npz")
    with np.load(bundled) as npz:
        for images, labels, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
            stored_images, stored_labels = npz[f"x_{part}"], npz[f"y_{part}"]
            assert (np.diff(stored_labels) >= 0).all()
            assert (sorted(zip((row.tobytes() for row in images), labels.tolist()))
                    == sorted(zip((row.tobytes() for row in stored_images), stored_labels.tolist())))


def test_mnist_sample_is_the_same_every_time():
    (a, _), (b, _) = datasets.mnist_sample()
    (c, _), (d, _) = datasets.mnist_sample()
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)
