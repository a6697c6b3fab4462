"""One shard file of any shard format, and what a format declares to the registry.

A shard is written to ``<shard>.tmp``, hashed as it is written, fsynced and renamed on
``close``; both names are refused if a link or another non-file sits there (``atomic``),
and a write error (a full disk) names the shard. A format subclasses ``ShardFile`` with
its ``write(key, label, image)`` and ``_finish()``.
"""

import hashlib
import os
from dataclasses import dataclass

from faceprep.atomic import commit_temporary, discard_temporary, naming, open_temporary
from faceprep.errors import DatasetError

# Bytes buffered before a write() to the shard file.
WRITE_BUFFER = 1 << 20


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
        self.images = self.size = 0
        self._hash = hashlib.sha256()
        self._stream = open_temporary(self.path, WRITE_BUFFER)

    def _write(self, data):
        try:
            self._stream.write(data)
        except OSError as error:
            raise naming(error, self.path) from None
        self._hash.update(data)
        self.size += len(data)

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
