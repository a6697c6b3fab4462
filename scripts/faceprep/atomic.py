"""Atomic file writes: a reader (or a resumed run) sees the old file or the whole new one."""

import contextlib
import json
import os


def write_atomically(path, write):
    """Write ``path`` through ``write(binary_stream)`` via ``<path>.tmp``, fsync, then rename.

    The temporary name is fixed, so a rerun after a hard kill overwrites a leftover
    instead of adding another; on an error it is removed.
    """
    path = os.fspath(path)
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


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
