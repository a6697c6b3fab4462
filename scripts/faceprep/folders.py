"""The ``<images>/<label>/<key>.jpg`` tree: its writer and the chunk manifests that list it.

A chunk's ``FolderWriter`` writes each image in place (names are deterministic, so an
interrupted chunk is simply rewritten whole) and then renames its manifest into place:
the manifest is the only mark that the chunk is done.
"""

import errno
import os
import zlib
from dataclasses import dataclass

import crc32c
import numpy as np

from faceprep.atomic import CommitOnExit, create_file, refuse_foreign, write_atomically
from faceprep.errors import DatasetError, OutputError
from faceprep.text_columns import count_lines, decimals, hex32, line_blocks, tab_fields

MANIFEST_COLUMNS = ("path", "label", "bytes", "crc32c")
# The checksum a manifest's last column holds, by its name: CRC-32C (hardware-assisted, a
# fifth of zlib's CRC32 time per image), or the CRC32 of manifests written before it.
CHECKSUMS = {"crc32c": crc32c.crc32c, "crc32": zlib.crc32}


class _LabelDirectories:
    """Open descriptors of ``<images_dir>/<label>`` directories, created on first use.

    Opening each image relative to its label directory spares the kernel a path walk per
    file. Records of a label usually lie together, so a few open directories suffice.
    Neither the images directory nor a label directory is opened through a symbolic link:
    one would lead the writer out of the tree (OutputError, before any file is written).
    """

    OPEN_AT_MOST = 64
    _FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, images_dir):
        self.images_dir = images_dir
        os.makedirs(images_dir, exist_ok=True)
        self._root = self._open(images_dir, images_dir)
        self._open_labels = {}

    def _open(self, name, path, dir_fd=None):
        try:
            return os.open(name, self._FLAGS, dir_fd=dir_fd)
        except NotADirectoryError:  # O_NOFOLLOW and O_DIRECTORY on a link: ENOTDIR
            refuse_foreign(name, dir_fd, path, expected="its own directory")
            raise OutputError(errno.ENOTDIR, "a file where the workflow writes its own directory", path) from None

    def __getitem__(self, label):
        descriptor = self._open_labels.get(label)
        if descriptor is None:
            if len(self._open_labels) >= self.OPEN_AT_MOST:
                os.close(self._open_labels.pop(next(iter(self._open_labels))))
            name = str(label)
            try:
                os.mkdir(name, dir_fd=self._root)
            except FileExistsError:
                pass
            descriptor = self._open_labels[label] = self._open(name, os.path.join(self.images_dir, name), self._root)
        return descriptor

    def close(self):
        for descriptor in [*self._open_labels.values(), self._root]:
            os.close(descriptor)
        self._open_labels.clear()


class FolderWriter(CommitOnExit):
    """Write a chunk's images as ``<images_dir>/<label>/<key>.jpg``; ``close`` writes its manifest.

    Every file is created new, never written through a link (``atomic.create_file``), and
    checked to be written whole (a short write means a full disk).
    """

    def __init__(self, images_dir, manifest_path):
        self.images_dir = os.fspath(images_dir)
        self.manifest_path = manifest_path
        self._directories = _LabelDirectories(self.images_dir)
        self._rows = []

    def write(self, key, label, image):
        name = f"{key}.jpg"
        try:
            directory = self._directories[label]
        except OutputError:
            raise
        except OSError as error:
            raise _failure(error, key, os.path.join(self.images_dir, str(label))) from None
        try:
            descriptor = create_file(name, directory)
            try:
                written = os.write(descriptor, image)
            finally:
                os.close(descriptor)
            if written != len(image):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
        except OSError as error:
            # The file's path is formed only on failure, not for each of millions of images.
            path = os.path.join(self.images_dir, str(label), name)
            if isinstance(error, OutputError):  # create_file named the file alone
                raise OutputError(error.errno, error.strerror, path) from None
            raise _failure(error, key, path) from None
        self._rows.append(f"{label}/{name}\t{label}\t{len(image)}\t{crc32c.crc32c(image):08x}\n")

    def close(self):
        self._directories.close()
        write_manifest(self.manifest_path, self._rows)

    def abort(self):
        self._directories.close()


def _failure(error, key, path):
    return OSError(error.errno, f"writing image record key {key}: {error.strerror}", path)


def write_manifest(path, rows):
    header = "\t".join(MANIFEST_COLUMNS) + "\n"
    write_atomically(path, lambda stream: stream.write("".join([header, *rows]).encode()))


def read_manifest(path):
    """Rows of a chunk manifest as a list of ``(path, label, bytes, checksum)`` tuples."""
    with open(path, "rb") as stream:
        _check_header(stream, path)
        return _manifest_line_rows(stream.read(), 2, path)


def _check_header(stream, path):
    """The name of the manifest's checksum column (a key of CHECKSUMS)."""
    header = stream.readline().decode(errors="replace").rstrip("\n").split("\t")
    if tuple(header[:3]) != MANIFEST_COLUMNS[:3] or len(header) != 4 or header[3] not in CHECKSUMS:
        raise DatasetError(f"{path}: not a chunk manifest (header {header!r})")
    return header[3]


def _manifest_line_rows(block, first_line, path):
    """The ``(path, label, bytes, checksum)`` rows of a block of manifest lines; an error names the line."""
    rows = []
    for line_number, line in enumerate(block.decode(errors="replace").split("\n")[:-1], start=first_line):
        fields = line.split("\t")
        if len(fields) != 4:
            raise DatasetError(f"{path}: line {line_number}: expected 4 tab-separated fields")
        try:
            rows.append((fields[0], int(fields[1]), int(fields[2]), int(fields[3], 16)))
        except ValueError:
            raise DatasetError(
                f"{path}: line {line_number}: expected an integer label and size and a hex checksum, got {fields[1:]!r}"
            ) from None
    return rows


def _manifest_columns_line_by_line(block, first_line, path):
    """The columns of ``_manifest_columns`` for a block of lines in any form ``read_manifest``
    accepts; a path that is not ``<label>/<key>.jpg`` of its row's label is refused."""
    rows = _manifest_line_rows(block, first_line, path)
    keys = []
    for relative, label, _, _ in rows:
        directory, _, name = relative.partition("/")
        stem = name[: -len(".jpg")]
        if directory != str(label) or not name.endswith(".jpg") or not stem.isdigit():
            raise DatasetError(f"{path}: path {relative!r} is not <label>/<key>.jpg of label {label}")
        keys.append(int(stem))
    labels = np.array([label for _, label, _, _ in rows], np.int64)
    sizes = np.array([size for _, _, size, _ in rows], np.int64)
    checksums = np.array([checksum for _, _, _, checksum in rows], np.uint32)
    longest = max((len(relative) for relative, _, _, _ in rows), default=0)
    return labels, np.array(keys, np.int64), sizes, checksums, longest


def _manifest_columns(block):
    """``(labels, keys, sizes, checksums, longest path)`` of a block of manifest lines as
    ``write_manifest`` writes them (``<label>/<key>.jpg``, canonical decimals, 8 hex
    digits), parsed as arrays; None for any other form."""
    fields = tab_fields(block, 4)
    if fields is None:
        return None
    buffer, starts, ends = fields
    labels = decimals(buffer, starts[:, 1], ends[:, 1])
    sizes = decimals(buffer, starts[:, 2], ends[:, 2])
    checksums = hex32(buffer, starts[:, 3], ends[:, 3])
    if labels is None or sizes is None or checksums is None:
        return None
    # The path: the label's own digits, '/', the key's digits, '.jpg'.
    slash = starts[:, 0] + (ends[:, 1] - starts[:, 1])
    if not (slash + len("/0.jpg") <= ends[:, 0]).all() or not (buffer[slash] == ord("/")).all():
        return None
    directories = decimals(buffer, starts[:, 0], slash)
    keys = decimals(buffer, slash + 1, ends[:, 0] - len(".jpg"))
    if directories is None or keys is None or not (directories == labels).all():
        return None
    suffix = buffer[ends[:, 0, None] - len(".jpg") + np.arange(len(".jpg"))]
    if not (suffix == np.frombuffer(b".jpg", np.uint8)).all():
        return None
    longest = int((ends[:, 0] - starts[:, 0]).max()) if len(labels) else 0
    return labels, keys, sizes, checksums, longest


@dataclass
class ManifestImages:
    """Every image the chunk manifests list, as compact per-row arrays (manifest order).

    ``labels`` and ``keys`` (int64) name image ``<label>/<key>.jpg``; ``ends[m]`` is the row
    after manifest ``m``'s last, ``checksum_names[m]`` its checksum (a key of CHECKSUMS);
    ``sizes`` (int64) and ``checksums`` (uint32) are None unless asked for. ``bytes`` is the
    images' total size, ``longest`` the longest relative path.
    """

    manifest_paths: list
    checksum_names: list
    labels: np.ndarray
    keys: np.ndarray
    ends: np.ndarray
    bytes: int
    longest: int
    sizes: np.ndarray = None
    checksums: np.ndarray = None

    def manifest_of(self, row):
        return self.manifest_paths[self._manifest_number(row)]

    def checksum_name_of(self, row):
        return self.checksum_names[self._manifest_number(row)]

    def _manifest_number(self, row):
        return int(np.searchsorted(self.ends, row, side="right"))


def read_manifest_images(manifest_paths, sizes_and_checksums=False):
    """The rows of ``manifest_paths`` as ManifestImages: 16 bytes a row (28 with sizes and
    checksums) instead of a tuple of Python objects, even within a manifest; a path that is not ``<label>/<key>.jpg``
    of its row's label is refused, naming the manifest."""
    # Allocated once for every line of every manifest (growing arrays would copy them).
    capacity = sum(count_lines(path) for path in manifest_paths)
    columns = {"labels": np.int64, "keys": np.int64} | ({"sizes": np.int64, "checksums": np.uint32} if sizes_and_checksums else {})
    arrays = {name: np.zeros(capacity, dtype) for name, dtype in columns.items()}
    ends, checksum_names, total_bytes, longest, row = [], [], 0, 0, 0
    for manifest_path in manifest_paths:
        with open(manifest_path, "rb") as stream:
            checksum_names.append(_check_header(stream, manifest_path))
            for first_line, block in line_blocks(stream, first_line=2):
                parsed = _manifest_columns(block) or _manifest_columns_line_by_line(block, first_line, manifest_path)
                block_rows = len(parsed[0])
                for name, values in zip(("labels", "keys", "sizes", "checksums"), parsed):
                    if name in arrays:
                        arrays[name][row : row + block_rows] = values
                total_bytes += int(parsed[2].sum())
                longest = max(longest, parsed[4])
                row += block_rows
        ends.append(row)
    arrays = {name: column[:row] for name, column in arrays.items()}
    return ManifestImages(
        list(manifest_paths),
        checksum_names,
        arrays["labels"],
        arrays["keys"],
        np.array(ends, np.int64),
        total_bytes,
        longest,
        arrays.get("sizes"),
        arrays.get("checksums"),
    )
