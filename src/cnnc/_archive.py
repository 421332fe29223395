"""Reading an .npz archive without trusting it.

Every size is checked against the others before anything is allocated: an array's
header against its zip member's size, the member's size against the bytes that can hold
it. So the memory a file makes cnnc allocate is bounded by the file's own size (times
deflate's largest ratio for a compressed member), whatever its headers claim. Every
failure is a ValueError naming the file; a missing file is a FileNotFoundError.
"""
import contextlib
import os
import struct
import tokenize
import zipfile
import zlib

import numpy as np

MAX_MEMBERS = 10_000
# Deflate cannot expand data by more than 1032:1 (plus a little for tiny streams).
_DEFLATE_RATIO, _DEFLATE_SLACK = 1032, 1024
_NPY_HEADER_LIMIT = 10_000      # bytes of an .npy header dictionary, as NumPy's own default
_CHUNK = 1 << 20
# What damaged bytes make the zip and npy readers raise.
_DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
           NotImplementedError, RuntimeError, OverflowError, zlib.error, struct.error,
           UnicodeDecodeError, SyntaxError, tokenize.TokenError)


class DamagedFile(ValueError):
    """A file cnnc cannot read: its message names the file and what is wrong."""


class Archive:
    """The arrays of an .npz file, read one by one after their sizes are checked."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError:
            raise
        except OSError as error:
            raise ValueError(f"{self.path}: cannot be read ({error.strerror or error})") from None
        try:
            with self._damage_reported("not an .npz archive, or a damaged one"):
                size = os.fstat(self._file.fileno()).st_size
                self._zip = zipfile.ZipFile(self._file)
                self._members = self._index(self._zip.infolist(), size)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()

    def error(self, message):
        """A ValueError about this file."""
        return DamagedFile(f"{self.path}: {message}")

    @contextlib.contextmanager
    def _damage_reported(self, what):
        """Turn what damaged bytes make the readers raise into one DamagedFile."""
        try:
            yield
        except DamagedFile:
            raise
        except _DAMAGE as error:
            raise self.error(f"{what} ({type(error).__name__}: {error})") from None

    def names(self):
        """The names of the arrays in the archive."""
        return set(self._members)

    def _index(self, members, file_size):
        if len(members) > MAX_MEMBERS:
            raise self.error(f"{len(members):,} members; a cnnc file has far fewer")
        index = {}
        for info in members:
            if not info.filename.endswith(".npy"):
                raise self.error(f"member {info.filename!r} is not an .npy array")
            name = info.filename[:-4]
            if name in index:
                raise self.error(f"the array {name!r} appears twice")
            if info.flag_bits & 0x1:
                raise self.error(f"member {info.filename!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self.error(f"member {info.filename!r} uses compression method "
                                 f"{info.compress_type}; cnnc reads stored or deflated members")
            largest = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
                       else info.compress_size * _DEFLATE_RATIO + _DEFLATE_SLACK)
            if info.compress_size > file_size or info.file_size > largest:
                raise self.error(f"member {info.filename!r} declares {info.file_size:,} bytes, "
                                 f"more than its {info.compress_size:,} stored bytes can hold")
            index[name] = info
        stored = sum(info.compress_size for info in members)
        if stored > file_size:      # members that share their bytes: a zip bomb's trick
            raise self.error(f"its members claim {stored:,} stored bytes, more than the file's "
                             f"{file_size:,}")
        return index

    def describe(self, name):
        """The (shape, dtype) the array's .npy header declares, checked against its member's size."""
        with self._open(name) as member:
            return self._npy_header(name, member)[:2]

    def read_into(self, name, out):
        """Fill `out` (a C-contiguous array of the declared shape and dtype) with the array's data."""
        with self._open(name) as member:
            shape, dtype, _ = self._npy_header(name, member)
            if shape != out.shape or dtype != out.dtype:
                raise self.error(f"array {name!r} is {shape} {dtype}, expected {out.shape} {out.dtype}")
            self._fill(name, member, memoryview(out.reshape(-1).view(np.uint8)))

    def read_small(self, name, limit):
        """The whole array, when its data is at most `limit` bytes."""
        with self._open(name) as member:
            shape, dtype, nbytes = self._npy_header(name, member)
            if nbytes > limit:
                raise self.error(f"array {name!r} holds {nbytes:,} bytes, more than the "
                                 f"{limit:,} it may have")
            out = np.empty(shape, dtype)
            self._fill(name, member, memoryview(out.reshape(-1).view(np.uint8)))
            return out

    def _open(self, name):
        if name not in self._members:
            raise self.error(f"the file has no array {name!r}")
        with self._damage_reported(f"array {name!r} cannot be read"):
            return self._zip.open(self._members[name])

    def _npy_header(self, name, member):
        """Shape, dtype and data size from the .npy header, which must agree with the member's size."""
        with self._damage_reported(f"array {name!r} has a damaged .npy header"):
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(member, _NPY_HEADER_LIMIT)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(member, _NPY_HEADER_LIMIT)
            else:
                raise self.error(f"array {name!r} uses .npy format version {version}")
            header_size = member.tell()
        if dtype.hasobject:
            raise self.error(f"array {name!r} holds pickled objects, which cnnc never loads "
                             "(unpickling can run code)")
        if any(d < 0 for d in shape):
            raise self.error(f"array {name!r} declares a negative dimension: {shape}")
        if fortran:
            raise self.error(f"array {name!r} is stored in Fortran order; cnnc writes C order")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        expected = header_size + nbytes
        if self._members[name].file_size != expected:
            raise self.error(f"array {name!r} declares {shape} {dtype} ({nbytes:,} bytes), but its "
                             f"member holds {self._members[name].file_size - header_size:,} bytes of data")
        return shape, dtype, nbytes

    def _fill(self, name, member, buffer):
        with self._damage_reported(f"array {name!r} is damaged"):
            done = 0
            while done < len(buffer):
                chunk = member.read(min(_CHUNK, len(buffer) - done))
                if not chunk:
                    break
                buffer[done:done + len(chunk)] = chunk
                done += len(chunk)
            if done < len(buffer) or member.read(1):
                raise self.error(f"array {name!r}: its data does not match its declared size")
