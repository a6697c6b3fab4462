"""One shard file of any shard format, and what a format declares to the registry.

A shard is written to ``<shard>.tmp``, hashed as it is written, its writeback to disk started
every WRITEBACK_BYTES, fsynced and renamed on ``close``; both names are refused if a link or
another non-file sits there (``atomic``), and a write error (a full disk) names the shard. A
format subclasses ``ShardFile`` with its ``write(key, label, image)`` and ``_finish()``.
"""

import hashlib
import os
from dataclasses import dataclass

from faceprep.atomic import commit_temporary, discard_temporary, naming, open_temporary, start_writeback
from faceprep.errors import DatasetError

# Bytes buffered before a write() to the shard file.
WRITE_BUFFER = 1 << 20
# Bytes written between two starts of the kernel's writeback of them (atomic.start_writeback).
WRITEBACK_BYTES = 4 << 20


@dataclass(frozen=True)
class ShardFormat:
    """A shard format: its config name, file extension, writer (a ShardFile), the walker that
    counts a shard's images (``count_images(path, binary stream)``), what a reader finds per
    image (``members``, for metadata.json) and the bytes it adds to each image (shard sizing)."""

    name: str
    extension: str
    writer: type
    count_images: object
    members: dict
    bytes_per_image: int


class ShardFile:
    """The bytes of one shard: written to ``<path>.tmp``, counted and hashed."""

    def __init__(self, path, classes):
        self.path = os.fspath(path)
        self.classes = classes
        self.images = self.size = self._written_back = 0
        self._hash = hashlib.sha256()
        self._stream = open_temporary(self.path, WRITE_BUFFER)

    def _write(self, data):
        try:
            self._stream.write(data)
        except OSError as error:
            raise naming(error, self.path) from None
        self._hash.update(data)
        self.size += len(data)
        if self.size - self._written_back >= WRITEBACK_BYTES:
            self._start_writeback()

    def _start_writeback(self):
        """Flush what is buffered and start writing it to disk: the disk then works while the
        job goes on, instead of during the fsync of the whole shard on ``close``."""
        try:
            self._stream.flush()
        except OSError as error:
            raise naming(error, self.path) from None
        start_writeback(self._stream.fileno(), self._written_back, self.size - self._written_back)
        self._written_back = self.size

    def _class_of(self, key, label):
        try:
            return self.classes.class_of(label)
        except DatasetError as error:
            raise DatasetError(f"{self.path}: image record key {key}: {error}") from None

    def _finish(self):
        """Bytes that end the file (the tar end-of-archive blocks)."""
        return b""

    def close(self):
        """Finish, fsync and rename the shard into place; return its summary."""
        try:
            self._write(self._finish())
        except OSError:
            self.abort()
            raise
        commit_temporary(self._stream, self.path)
        return {"file": os.path.basename(self.path), "images": self.images, "bytes": self.size,
                "sha256": self._hash.hexdigest()}

    def abort(self):
        discard_temporary(self._stream, self.path)
