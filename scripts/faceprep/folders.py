"""The ``<images>/<label>/<key>.jpg`` tree: its writer and the chunk manifests that list it.

A chunk's ``FolderWriter`` writes each image in place (names are deterministic, so an
interrupted chunk is simply rewritten whole) and then renames its manifest into place:
the manifest is the only mark that the chunk is done.
"""

import errno
import os
import zlib

from faceprep.atomic import CommitOnExit, write_atomically
from faceprep.insightface import DatasetError

MANIFEST_COLUMNS = ("path", "label", "bytes", "crc32")


class _LabelDirectories:
    """Open descriptors of ``<images_dir>/<label>`` directories, created on first use.

    Opening each image relative to its label directory spares the kernel a path walk per
    file. Records of a label usually lie together, so a few open directories suffice.
    """

    OPEN_AT_MOST = 64

    def __init__(self, images_dir):
        os.makedirs(images_dir, exist_ok=True)
        self._root = os.open(images_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._open = {}

    def __getitem__(self, label):
        descriptor = self._open.get(label)
        if descriptor is None:
            if len(self._open) >= self.OPEN_AT_MOST:
                os.close(self._open.pop(next(iter(self._open))))
            name = str(label)
            try:
                os.mkdir(name, dir_fd=self._root)
            except FileExistsError:
                pass
            descriptor = self._open[label] = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root
            )
        return descriptor

    def close(self):
        for descriptor in [*self._open.values(), self._root]:
            os.close(descriptor)
        self._open.clear()


class FolderWriter(CommitOnExit):
    """Write a chunk's images as ``<images_dir>/<label>/<key>.jpg``; ``close`` writes its manifest.

    Every file is checked to be written whole (a short write means a full disk).
    """

    _FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

    def __init__(self, images_dir, manifest_path):
        self.images_dir = os.fspath(images_dir)
        self.manifest_path = manifest_path
        self._directories = _LabelDirectories(self.images_dir)
        self._rows = []

    def write(self, key, label, image):
        name = f"{key}.jpg"
        try:
            descriptor = os.open(name, self._FLAGS, 0o644, dir_fd=self._directories[label])
            try:
                if os.write(descriptor, image) != len(image):
                    raise OSError(errno.ENOSPC, "short write (disk full?)")
            finally:
                os.close(descriptor)
        except OSError as error:
            path = os.path.join(self.images_dir, str(label), name)
            raise OSError(error.errno, f"writing image record key {key}: {error.strerror}", path) from None
        self._rows.append(f"{label}/{name}\t{label}\t{len(image)}\t{zlib.crc32(image):08x}\n")

    def close(self):
        self._directories.close()
        write_manifest(self.manifest_path, self._rows)

    def abort(self):
        self._directories.close()


def write_manifest(path, rows):
    header = "\t".join(MANIFEST_COLUMNS) + "\n"
    write_atomically(path, lambda stream: stream.write("".join([header, *rows]).encode()))


def read_manifest(path):
    """Rows of a chunk manifest as ``(path, label, bytes, crc32)`` tuples."""
    with open(path) as stream:
        header = stream.readline().rstrip("\n").split("\t")
        if tuple(header) != MANIFEST_COLUMNS:
            raise DatasetError(f"{path}: not a chunk manifest (header {header!r})")
        rows = []
        for line_number, line in enumerate(stream, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise DatasetError(f"{path}: line {line_number}: expected 4 tab-separated fields")
            try:
                rows.append((fields[0], int(fields[1]), int(fields[2]), int(fields[3], 16)))
            except ValueError:
                raise DatasetError(
                    f"{path}: line {line_number}: expected an integer label and size and a hex CRC32, got {fields[1:]!r}"
                ) from None
    return rows


