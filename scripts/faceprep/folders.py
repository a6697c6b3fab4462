"""The ``<images>/<label>/<key>.jpg`` tree: its writer and the chunk manifests that list it.

A chunk's ``FolderWriter`` writes each image in place (names are deterministic, so an
interrupted chunk is simply rewritten whole) and then renames its manifest into place:
the manifest is the only mark that the chunk is done.
"""

import errno
import os
import zlib
from dataclasses import dataclass

import numpy as np

from faceprep.atomic import CommitOnExit, write_atomically
from faceprep.insightface import DatasetError
from faceprep.recordio import count_lines

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
    """Rows of a chunk manifest as a list of ``(path, label, bytes, crc32)`` tuples."""
    return list(manifest_rows(path))


def manifest_rows(path):
    """The rows of a chunk manifest one by one, as ``(path, label, bytes, crc32)`` tuples."""
    with open(path) as stream:
        header = stream.readline().rstrip("\n").split("\t")
        if tuple(header) != MANIFEST_COLUMNS:
            raise DatasetError(f"{path}: not a chunk manifest (header {header!r})")
        for line_number, line in enumerate(stream, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise DatasetError(f"{path}: line {line_number}: expected 4 tab-separated fields")
            try:
                yield fields[0], int(fields[1]), int(fields[2]), int(fields[3], 16)
            except ValueError:
                raise DatasetError(
                    f"{path}: line {line_number}: expected an integer label and size and a hex CRC32, got {fields[1:]!r}"
                ) from None


@dataclass
class ManifestImages:
    """Every image the chunk manifests list, as compact per-row arrays (manifest order).

    ``labels`` and ``keys`` (int64) name image ``<label>/<key>.jpg``; ``ends[m]`` is the row
    after manifest ``m``'s last; ``sizes`` (int64) and ``crcs`` (uint32) are None unless
    asked for. ``bytes`` is the images' total size, ``longest`` the longest relative path.
    """

    manifest_paths: list
    labels: np.ndarray
    keys: np.ndarray
    ends: np.ndarray
    bytes: int
    longest: int
    sizes: np.ndarray = None
    crcs: np.ndarray = None

    def manifest_of(self, row):
        return self.manifest_paths[int(np.searchsorted(self.ends, row, side="right"))]


def read_manifest_images(manifest_paths, sizes_and_crcs=False):
    """The rows of ``manifest_paths`` as ManifestImages: 16 bytes a row (28 with sizes and
    CRC32s) instead of a tuple of Python objects, even within a manifest; a path that is not ``<label>/<key>.jpg``
    of its row's label is refused, naming the manifest."""
    # Allocated once for every line of every manifest (growing arrays would copy them).
    capacity = sum(count_lines(path) for path in manifest_paths)
    columns = {"labels": np.int64, "keys": np.int64} | ({"sizes": np.int64, "crcs": np.uint32} if sizes_and_crcs else {})
    arrays = {name: np.zeros(capacity, dtype) for name, dtype in columns.items()}
    views = {name: memoryview(column) for name, column in arrays.items()}
    labels, keys = views["labels"], views["keys"]
    ends, total_bytes, longest, row = [], 0, 0, 0
    for manifest_path in manifest_paths:
        for relative, label, size, crc in manifest_rows(manifest_path):
            directory, _, name = relative.partition("/")
            stem = name[: -len(".jpg")]
            if directory != str(label) or not name.endswith(".jpg") or not stem.isdigit():
                raise DatasetError(f"{manifest_path}: path {relative!r} is not <label>/<key>.jpg of label {label}")
            labels[row], keys[row] = label, int(stem)
            if sizes_and_crcs:
                views["sizes"][row], views["crcs"][row] = size, crc
            total_bytes += size
            if len(relative) > longest:
                longest = len(relative)
            row += 1
        ends.append(row)
    for view in views.values():
        view.release()
    arrays = {name: column[:row] for name, column in arrays.items()}
    return ManifestImages(
        list(manifest_paths),
        arrays["labels"],
        arrays["keys"],
        np.array(ends, np.int64),
        total_bytes,
        longest,
        arrays.get("sizes"),
        arrays.get("crcs"),
    )
