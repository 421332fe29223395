"""Writing a file atomically: readers see the old file or the complete new one, never a
part; an interrupted write leaves nothing behind that the next write does not remove."""
import contextlib
import os
import re
import stat
import tempfile


@contextlib.contextmanager
def atomic_write(path):
    """A binary file to write that replaces `path` when the block ends without an exception.

    Through a symlink, the link's target is written. The file gets the permissions that
    open(path, "wb") would give it: an existing file's own, else 0666 less the umask.
    Temporary files left by writers that died (SIGKILL, power loss) are removed first.
    OSErrors name `path`, not the temporary file.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    _remove_stale_parts(directory, name)
    try:
        handle, partial = tempfile.mkstemp(dir=directory, prefix=f".{name}.{os.getpid()}.",
                                           suffix=".part")
    except OSError as error:
        raise _naming(error, path) from None
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
            out.flush()
            os.fchmod(out.fileno(), _mode_for(target))
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        if isinstance(error, OSError) and error.filename in (partial, target):
            raise _naming(error, path) from None
        raise


def _naming(error, path):
    """The same error, about the path the caller gave."""
    if error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, path)


def _mode_for(target):
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_parts(directory, name):
    """Remove the temporary files of earlier writes to `name` whose process has ended."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[^.]+\.part")
    try:
        entries = os.listdir(directory)
    except OSError:
        return                      # mkstemp reports the directory's problem
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match and not _process_exists(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


def _process_exists(pid):
    try:
        os.kill(pid, 0)             # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:         # it exists, and belongs to another user
        return True
    return True
