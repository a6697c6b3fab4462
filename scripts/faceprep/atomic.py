"""File writes inside an output tree: never through a link, whole or not at all.

A reader (or a resumed run) sees the old file or the whole new one, and no write goes
through a symbolic link or a hard link to a file outside the outputs: files are created
new (``O_EXCL | O_NOFOLLOW``), a leftover of an earlier run is unlinked first, and a link
or a directory where the workflow writes its own file is an OutputError naming it. An I/O
error (a full disk) names the file it was writing.
"""

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import stat
import sys

from faceprep.errors import OutputError

log = logging.getLogger(__name__)

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _kind(mode):
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def refuse_foreign(name, dir_fd=None, path=None, expected="a file of its own"):
    """Raise OutputError if ``name`` exists as anything but a regular file: the workflow
    would write or rename through, or over, what is not its own (``expected``)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OutputError(
            errno.EEXIST,
            f"{_kind(mode)} where the workflow writes {expected}; nothing is written through it:"
            " move it away (or delete it) and rerun",
            path or name,
        )


def create_file(name, dir_fd=None, path=None):
    """A descriptor of new, empty regular file ``name`` (relative to ``dir_fd``), mode 0644.

    An earlier regular file there (an interrupted run's) is unlinked, not truncated, so a
    hard link to it keeps its bytes. A named pipe is written into as it is: what goes
    into one lands in no file (the tests hold a writer mid-write with one). Anything else
    there is refused (``refuse_foreign``). ``path`` names the file in errors.
    """
    try:
        return os.open(name, _NEW_FILE, 0o644, dir_fd=dir_fd)
    except FileExistsError:
        if stat.S_ISFIFO(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        refuse_foreign(name, dir_fd, path)
        os.unlink(name, dir_fd=dir_fd)
        return os.open(name, _NEW_FILE, 0o644, dir_fd=dir_fd)


def open_in_place(name, ranges):
    """A descriptor of regular file ``name`` for writing its byte ``ranges`` (``[begin, end)``
    pairs) in place (``os.pwrite``), created empty with mode 0644 if missing, never truncated:
    several jobs write their own ranges of one file. A link or anything else there is refused
    (``refuse_foreign``).

    Each range is held under a POSIX write lock until the descriptor is closed. That is for
    NFS, where the jobs may run on several machines: with no byte-range lock on a file,
    Linux's NFS client may widen a write to the whole page (or folio) around it and send its
    own, older copy of the bytes beside it, which another machine's job writes (the kernel's
    ``noalignwrite`` mount option was added for such writers); with one, it sends only the
    bytes written. A range that another process holds is an OutputError naming it; where the
    filesystem cannot lock (ENOLCK, ENOSYS), a warning says so and the writes go ahead."""
    refuse_foreign(name)
    descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        for begin, end in ranges:
            if end > begin:  # a length of 0 would lock to the end of the file, and beyond
                _lock_range(descriptor, name, begin, end)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def sync_in_place(descriptor):
    """Wait until what was written through ``descriptor`` (``open_in_place``) is on disk. On
    NFS, then drop this machine's cached pages of the file: a page it wrote only part of may
    hold zeros where a job on another machine wrote the rest, and a later reader here could
    be given them (NFS revalidates a file's cache by its change attribute, which this
    machine's own writes may have last set)."""
    os.fdatasync(descriptor)
    if _filesystem_type(descriptor) == _NFS_SUPER_MAGIC:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)


_NFS_SUPER_MAGIC = 0x6969
# Linux's struct statfs begins with f_type; other systems lay it out otherwise.
_fstatfs = getattr(ctypes.CDLL(None, use_errno=True), "fstatfs", None) if sys.platform.startswith("linux") else None


def _filesystem_type(descriptor):
    """The ``f_type`` of the filesystem holding an open file (Linux's fstatfs), else None."""
    if _fstatfs is None:
        return None
    buffer = ctypes.create_string_buffer(512)  # struct statfs: f_type, a C long, comes first
    if _fstatfs(descriptor, buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value


# What a filesystem that does not lock answers: NFS without a lock manager, Lustre mounted
# with noflock, a FUSE filesystem without locks.
_CANNOT_LOCK = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def _lock_range(descriptor, name, begin, end):
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, end - begin, begin, os.SEEK_SET)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EAGAIN):
            raise OutputError(error.errno, f"bytes {begin}..{end} are being written by another process (another run "
                              "of this workflow, or a job of an earlier one still running): let it end, then rerun",
                              os.fspath(name)) from None
        if error.errno not in _CANNOT_LOCK:
            raise naming(error, name) from None
        log.warning("%s: cannot lock bytes %d..%d (%s): on NFS without locks, jobs on several machines may "
                    "overwrite the bytes beside their own (verify_rec would find it)", name, begin, end,
                    error.strerror)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)


def start_writeback(descriptor, offset, length):
    """Ask the kernel to start writing bytes ``[offset, offset + length)`` of a file to disk now,
    without waiting (Linux's sync_file_range; a no-op elsewhere). The kernel would otherwise
    wait until a tenth of memory is dirty, then leave a large file's last fsync to write
    gigabytes while nothing else runs."""
    if _sync_file_range is not None:
        _sync_file_range(descriptor, offset, length, _SYNC_FILE_RANGE_WRITE)


def naming(error, path):
    """``error`` with ``path`` as its file name when it has none (a write's ENOSPC)."""
    if isinstance(error, OSError) and error.filename is None and error.errno is not None:
        return OSError(error.errno, f"writing {path}: {error.strerror}", path)
    return error


def write_atomically(path, write):
    """Write ``path`` through ``write(binary_stream)`` via ``<path>.tmp``, fsync, then rename.

    The temporary name is fixed, so a rerun after a hard kill replaces a leftover instead
    of adding another; on an error it is removed. A link at ``path`` or at the temporary
    name is refused before anything is written.
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp"
    refuse_foreign(path)
    try:
        with open(create_file(temporary), "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OutputError:
        raise
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        named = naming(error, path)
        if named is error:
            raise
        raise named from None


def open_temporary(path, buffering=1 << 20):
    """A binary stream on new ``<path>.tmp``, for a file written in many writes; ``path`` and
    the temporary name are refused if a link or another non-file sits there."""
    refuse_foreign(path)
    return open(create_file(f"{path}.tmp"), "wb", buffering=buffering)


def commit_temporary(stream, path, fsync=True):
    """Flush, fsync (unless not ``fsync``) and close ``stream`` (from ``open_temporary``) and
    rename it to ``path``; on an I/O error (a full disk) remove the temporary and raise it
    naming ``path``."""
    try:
        stream.flush()
        if fsync:
            os.fsync(stream.fileno())
        stream.close()
    except OSError as error:
        discard_temporary(stream, path)
        raise naming(error, path) from None
    os.replace(f"{path}.tmp", path)


@contextlib.contextmanager
def temporaries(*paths):
    """Streams from ``open_temporary`` for each of ``paths``, written together: all committed
    (``commit_temporary``) when the block succeeds, all discarded when it raises."""
    streams = []
    try:
        for path in paths:
            streams.append(open_temporary(path))
        yield streams
    except BaseException:
        for stream, path in zip(streams, paths):
            discard_temporary(stream, path)
        raise
    for stream, path in zip(streams, paths):
        commit_temporary(stream, path)


def discard_temporary(stream, path):
    """Close ``stream`` (from ``open_temporary``) and remove its temporary."""
    with contextlib.suppress(OSError):  # a full disk fails the buffer's last flush too
        stream.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.tmp")


class CommitOnExit:
    """A writer used as a context manager: ``close()`` (commit) when the block succeeds,
    ``abort()`` when it raises."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_bytes(path, data):
    write_atomically(path, lambda stream: stream.write(data))


def write_json(path, data):
    write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
