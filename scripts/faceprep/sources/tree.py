"""Folder trees as sources: WebFace, CASIA-WebFace, VGGFace2 or a crawl, ``<identity>/<image>``.

An identity is a directory that directly holds image files, named by its path relative to the
source, so nested layouts (``m.01/a/001.jpg``) work. Image files are recognised by their
first bytes (JPEG, PNG, BMP, GIF, WebP), whatever their extension; other files (``.DS_Store``,
``Thumbs.db``, notes), empty ones and names holding a tab or line break are skipped, and the
plan names every one; so are hidden and system directories (``@eaDir``, ``__MACOSX``,
``lost+found``, trash), whose pictures would each make an identity. Names need not be UTF-8:
list files hold their bytes. Classes are 0..C-1 in the order of identity names: as integers
when every name is one, else ``sorted()``; within an identity, files go by name. Keys: 1..N.

Directories are read level by level, in name order, following links once: a directory
reached again (a link cycle, or a second way to one place) is skipped and named, so of two
ways to a directory the one nearer the root is kept. A file that cannot be read is an error
naming it. Memory holds a few numbers per identity directory, none per image or skipped
file (TreeScan): a set with a sidecar per image (MegaFace's ``.json``) skips millions.

``plan_tree`` writes the image rows ``[key, class, offset of its name, record bytes]`` (the
last: the size of the image's record in a rec) and the names file (each image's path
relative to the source, one a line, in key order), which every chunk job reads its images
through (``iter_tree_images``), and the identities file (each class's directory, one a line,
in class order), which the class tables beside the outputs carry (faceprep.classes).
"""

import contextlib
import logging
import multiprocessing
import os
import time
from array import array
from collections import Counter

import numpy as np

from faceprep.atomic import commit_temporary, discard_temporary, open_temporary, temporaries
from faceprep.chunking import plan_chunk_positions
from faceprep.classes import identity_positions
from faceprep.errors import DatasetError
from faceprep.image_header import SIGNATURE_BYTES, image_format
from faceprep.insightface import IDX_NAME, REC_NAME
from faceprep.read_ahead import FilesAhead, ReadAhead, SlowReads, slow_reads_remedy
from faceprep.recordio import image_record_bytes

log = logging.getLogger(__name__)

TREE = "tree"
_WHOLE_FILE_BYTES = 1 << 24
# Processes reading the files, per thread of the plan's job. A tree that is not in memory is
# read from disk, and more reads in flight shorten that wait: 300,000 files from disk took
# 21.6 s with 2 processes, 14 s with 4, 12.2 s with 8, 10.3 s with 16; the same tree in the
# page cache 2.5-2.6 s with 2 and 2.7-2.8 s with 8 (two cores, bench/README.md). Since each
# process also asks for its directory's next files once its reads are slow (_examine_directory),
# the same files from disk took 5.6-6.3 s with 2, 3.9-4.6 s with 4 and 4.0-4.5 s with 8.
READERS_PER_THREAD = 4
# Skipped entries named in the plan itself; the skipped-files table lists them all.
SHOWN_SKIPPED = 20
# Characters a file or directory name cannot hold here: the names file, train.lst (im2rec's
# format, read line by line, also on '\r') and the skipped-files table are lines of
# tab-separated columns. Such an entry is skipped, a directory with all it holds.
_LINE_BREAKING = frozenset("\t\n\r")
_LINE_BREAKING_REASON = "a name with a tab or line break, which train.lst and the names file cannot hold"


def is_tree(source):
    """Whether ``source`` is a folder tree: it holds neither train.rec nor train.idx (a rec
    directory missing one of them is a damaged rec, not a tree)."""
    return not any(os.path.exists(os.path.join(source, name)) for name in (REC_NAME, IDX_NAME))


def _below(directory, name):
    """The path of ``name`` inside ``directory``; an empty one of the two (the source's own
    relative path, or no name) leaves the other as it is."""
    return os.path.join(directory, name) if directory and name else directory or name


def _read_file(path, images_only=False):
    """The bytes of file ``path``, read in one call up to 16 MB; with ``images_only`` just the
    first ones of a file that is no image. An OSError is the caller's to name."""
    descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(descriptor).st_size
        data = os.read(descriptor, min(size, _WHOLE_FILE_BYTES) or SIGNATURE_BYTES)
        if len(data) < size and not (images_only and image_format(data) is None):
            pieces = [data]
            while piece := os.read(descriptor, _WHOLE_FILE_BYTES):
                pieces.append(piece)
            data = b"".join(pieces)
        return data
    finally:
        os.close(descriptor)


def _examine(path):
    """``(image format or None, size, record bytes)`` of a file. An image is read
    whole, for the size of its record in a rec (recordio.image_record_bytes), so that rec
    parts know where they go before any is written; an error names the file."""
    try:
        data = _read_file(path, images_only=True)
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror})") from None
    found = image_format(data)
    return found, len(data), image_record_bytes(data) if found else 0


_NOT_AN_IMAGE = "not an image (no JPEG, PNG, BMP, GIF or WebP signature)"
# Directories a system or a tool keeps beside the images, whose pictures would each make an
# identity: hidden ones (.Trash-1000, .thumbnails), Synology's @eaDir (a directory of
# thumbnails per image) and #recycle, macOS's __MACOSX (an unzipped archive's resource
# forks), Windows' $RECYCLE.BIN and a file system's lost+found (fragments named by number).
_SYSTEM_DIRECTORIES = frozenset({"@eaDir", "#recycle", "__MACOSX", "$RECYCLE.BIN", "lost+found"})
_SYSTEM_DIRECTORY = "a hidden or system directory (thumbnails, trash, resource forks), not an identity"
_REACHED_BEFORE = "a directory reached before (a link cycle, or a second link to it)"
# Directories a worker process is given at a time, and how many are handed out before the
# results are taken in: the scan's memory stays flat, whatever the directory count.
_DIRECTORIES_PER_TASK, _DIRECTORIES_IN_FLIGHT = 64, 1 << 14


def _directory_key(status):
    """A directory's identity on the machine, as one int (a tuple of two takes three times
    the memory, for each of millions of identity directories)."""
    return status.st_dev << 64 | status.st_ino


# How this process's reads of the scan went: once they are slow, it asks for each directory's
# files ahead of its reads (faceprep.read_ahead). A fresh one for every scan, inherited by its workers.
_reads = SlowReads()


def _examine_directory(root, relative):
    """List directory ``relative`` of ``root`` and read the files it holds directly, by name:
    ``(subdirectories [relative path], their identities [_directory_key], skipped [(relative
    path, reason)], image names [bytes], their record sizes (int64 array), image formats
    (Counter), image bytes)``. Links are followed; an error names the directory or file."""
    directory = _below(root, relative)
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as error:
        raise DatasetError(f"{directory}: cannot be listed ({error.strerror})") from None
    subdirectories, keys, skipped, names, record_sizes, formats, image_bytes = [], [], [], [], [], Counter(), 0
    ahead = None
    for number, entry in enumerate(entries):
        # Its relative path is formed only for what is not an image: not once per image.
        if _LINE_BREAKING.intersection(entry.name):
            skipped.append((_below(relative, entry.name), _LINE_BREAKING_REASON))
        elif entry.is_file():  # through links, as is_dir
            if _reads.slow:
                if ahead is None:
                    ahead = FilesAhead([other.path if other.is_file() else None for other in entries], number)
                ahead.reached(number)
            started = time.perf_counter()
            found, size, record_bytes = _examine(entry.path)
            if _reads.read(time.perf_counter() - started, size):
                log.info("plan process %d: reads took %.0f us a file, from disk (after %s): %s", os.getpid(),
                         _reads.microseconds, entry.path,
                         slow_reads_remedy("it asks for each directory's next files before reading them"))
            if found is not None and size:
                names.append(os.fsencode(entry.name))
                record_sizes.append(record_bytes)
                formats[found] += 1
                image_bytes += size
            else:
                skipped.append((_below(relative, entry.name), _NOT_AN_IMAGE if size else "empty"))
        elif entry.is_dir():
            if entry.name.startswith(".") or entry.name in _SYSTEM_DIRECTORIES:
                skipped.append((_below(relative, entry.name), _SYSTEM_DIRECTORY))
                continue
            try:
                status = entry.stat()  # through links
            except OSError as error:
                raise DatasetError(f"{entry.path}: cannot be listed ({error.strerror})") from None
            subdirectories.append(_below(relative, entry.name))
            keys.append(_directory_key(status))
        else:
            broken = entry.is_symlink() and not os.path.exists(entry.path)
            skipped.append((_below(relative, entry.name), "a broken link" if broken else "not a regular file"))
    return subdirectories, keys, skipped, names, np.array(record_sizes, np.int64), formats, image_bytes


def _examine_directories(task):
    root, relatives = task
    return [_examine_directory(root, relative) for relative in relatives]


def _examine_batch(pool, root, batch):
    """``_examine_directory`` of each directory of ``batch``, in order; by the pool's workers,
    ``_DIRECTORIES_PER_TASK`` at a time, if there is a pool."""
    step = _DIRECTORIES_PER_TASK
    tasks = [(root, batch[at : at + step]) for at in range(0, len(batch), step)]
    examined = pool.imap(_examine_directories, tasks) if pool and len(tasks) > 1 else map(_examine_directories, tasks)
    return (result for results in examined for result in results)


class TreeScan:
    """What a scan of a tree found. The image names and record sizes go to two scratch streams
    as the directories are read (each directory's names, a line each; the sizes as int64),
    and the skipped entries to the skipped-files table, so memory holds only a few numbers
    per identity: ``identities`` (relative paths of the directories holding images, in the
    order read), and per identity its first image in the scratch files (``first``), image
    count (``count``) and names' byte offset (``names_at``); ``skipped`` (how many) and
    ``first_skipped`` (the first SHOWN_SKIPPED, ``(relative path, reason)``), ``formats``
    (count of each image format), ``images`` and ``image_bytes``."""

    def __init__(self, names_scratch, sizes_scratch, skipped_out):
        self._names_scratch, self._sizes_scratch, self._skipped_out = names_scratch, sizes_scratch, skipped_out
        self.identities, self.first_skipped, self.formats = [], [], Counter()
        self.first, self.count, self.names_at = array("q"), array("q"), array("q")
        self.images = self.image_bytes = self.names_bytes = self.skipped = 0

    def skip(self, entries):
        """Record skipped ``(relative path, reason)`` entries, a line each in the table."""
        self._skipped_out.write(b"".join(b"%s\t%s\n" % (_table_cell(path), reason.encode()) for path, reason in entries))
        self.first_skipped += entries[: SHOWN_SKIPPED - len(self.first_skipped)]
        self.skipped += len(entries)

    def add(self, relative, names, record_sizes):
        """Record directory ``relative``'s images (its names and record sizes, in name order)."""
        lines = b"\n".join(names) + b"\n"
        self.identities.append(relative)
        self.first.append(self.images)
        self.count.append(len(names))
        self.names_at.append(self.names_bytes)
        self._names_scratch.write(lines)
        self._sizes_scratch.write(record_sizes.tobytes())
        self.images += len(names)
        self.names_bytes += len(lines)

    def identity_images(self, identity, names_file, sizes_file):
        """``(names [bytes], record sizes)`` of the images of identity number ``identity``."""
        count, first, start = self.count[identity], self.first[identity], self.names_at[identity]
        end = self.names_at[identity + 1] if identity + 1 < len(self.names_at) else self.names_bytes
        names = os.pread(names_file.fileno(), end - start, start)[:-1].split(b"\n")
        sizes = np.frombuffer(os.pread(sizes_file.fileno(), 8 * count, 8 * first), np.int64)
        return names, sizes


def scan_tree(root, names_scratch, sizes_scratch, skipped_out, directories_out, workers=1):
    """Read every directory below ``root`` (links followed once: a directory reached again is
    skipped and named), level by level, ``workers`` processes reading the files, into a
    TreeScan whose names and sizes go to the streams ``names_scratch`` and ``sizes_scratch``
    and the skipped entries to ``skipped_out`` (directory by directory, each one's by name);
    each directory read goes to ``directories_out`` (its relative path a line, the root's
    ``.``), for faceprep.changes."""
    try:
        status = os.stat(root)
    except OSError as error:
        raise DatasetError(f"{root}: cannot be listed ({error.strerror})") from None
    global _reads
    _reads = SlowReads()
    scan = TreeScan(names_scratch, sizes_scratch, skipped_out)
    visited, level = {_directory_key(status)}, [""]
    directories_out.write(b".\n")
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers)) if workers > 1 else None
        while level:
            following = []
            for start in range(0, len(level), _DIRECTORIES_IN_FLIGHT):
                batch = level[start : start + _DIRECTORIES_IN_FLIGHT]
                for relative, examined in zip(batch, _examine_batch(pool, root, batch)):
                    subdirectories, keys, skipped, names, record_sizes, formats, image_bytes = examined
                    for path, key in zip(subdirectories, keys):
                        if key in visited:
                            skipped.append((path, _REACHED_BEFORE))
                        else:
                            visited.add(key)
                            following.append(path)
                            directories_out.write(os.fsencode(path) + b"\n")
                    scan.skip(sorted(skipped))
                    scan.formats.update(formats)
                    scan.image_bytes += image_bytes
                    if names:
                        scan.add(relative, names, record_sizes)
            level = following
    return scan


def _table_cell(path):
    """A path's bytes as on disk, its tabs and line breaks written as ``\\t``, ``\\n``, ``\\r``."""
    return os.fsencode(path).replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _shown(path):
    """A path on one line, as the skipped-files table has it (bytes that are not UTF-8 as ``\\xNN``)."""
    return _table_cell(path).decode(errors="backslashreplace")


def _write_plan_files(scan, names_in, sizes_in, names_out, rows_out, identities_out):
    """The names file (each image's relative path, a line each), the rows (an .npy of
    ``[key, class, name offset, record bytes]``), identity by identity in class order, and
    the identities file (each class's directory, a line each)."""
    np.lib.format.write_array_header_1_0(rows_out, {"descr": "<i8", "fortran_order": False, "shape": (scan.images, 4)})
    key, offset = 1, 0
    for image_class, identity in enumerate(identity_positions(scan.identities)):
        directory = os.fsencode(scan.identities[identity])
        identities_out.write(directory + b"\n")
        prefix = directory + b"/"
        names, record_sizes = scan.identity_images(identity, names_in, sizes_in)
        lines = [prefix + name + b"\n" for name in names]
        line_ends = offset + np.cumsum([len(line) for line in lines])
        rows = np.empty((len(names), 4), np.int64)
        rows[:, 0] = np.arange(key, key + len(names))
        rows[:, 1] = image_class
        rows[:, 2] = np.concatenate([[offset], line_ends[:-1]])
        rows[:, 3] = record_sizes
        names_out.write(b"".join(lines))
        rows_out.write(rows.tobytes())
        key += len(names)
        offset = int(line_ends[-1])


def plan_tree(root, chunk_size, rows_path, names_path, skipped_path, identities_path, directories_path,
              parallel_jobs=1, workers=1):
    """The chunk plan of a folder tree (see the module), writing its rows, names, skipped files,
    identities (``_write_plan_files``) and the directories it read; ``workers`` processes read
    the files. Memory holds a few numbers per identity, not per image: the scan's names and
    sizes wait in scratch files beside the names file."""
    scratch = [f"{names_path}.scan", f"{rows_path}.scan"]
    streams = [open_temporary(path) for path in scratch]
    skipped_out, directories_out = open_temporary(skipped_path), open_temporary(directories_path)
    try:
        scan = scan_tree(root, *streams, skipped_out, directories_out, workers=workers)
        for stream in streams:
            stream.flush()
        with open(f"{scratch[0]}.tmp", "rb") as names_in, open(f"{scratch[1]}.tmp", "rb") as sizes_in:
            if scan.identities and scan.identities[0] == "":
                first = scan.identity_images(0, names_in, sizes_in)[0][0]
                raise DatasetError(
                    f"{root}: holds images directly ({os.fsdecode(first)}, ...): a folder tree's images lie in "
                    "identity directories (<identity>/<image>), whose names are the classes"
                )
            if not scan.images:
                raise DatasetError(f"{root}: holds no image files (JPEG, PNG, BMP, GIF or WebP) in identity directories")
            with temporaries(names_path, rows_path, identities_path) as outputs:
                _write_plan_files(scan, names_in, sizes_in, *outputs)
        commit_temporary(skipped_out, skipped_path)
        commit_temporary(directories_out, directories_path)
    except BaseException:
        discard_temporary(skipped_out, skipped_path)
        discard_temporary(directories_out, directories_path)
        raise
    finally:
        for stream, path in zip(streams, scratch):
            discard_temporary(stream, path)
    plan = {
        "layout": TREE, "images": scan.images, "identities": len(scan.identities), "identities_from": "tree",
        "rec_bytes": scan.image_bytes, "keys": [1, scan.images], "image_formats": dict(scan.formats),
        "skipped": {"count": scan.skipped, "first": [f"{_shown(path)}: {reason}" for path, reason in scan.first_skipped]},
    }
    # The rows hold each image's class and record size, all its label scan reads, in scan chunks
    # as a rec's: the scan's memory does not grow with the tree.
    return plan | plan_chunk_positions(scan.images, chunk_size, parallel_jobs)


def _names_at(names_path, offsets):
    """The relative paths named at ``offsets`` of the names file, in their order, as bytes
    (as on disk)."""
    with open(names_path, "rb") as names:
        for offset in offsets:
            names.seek(offset)
            yield names.readline().rstrip(b"\n")


def _paths_at(root, names_path, offsets):
    """The paths of the files named at ``offsets``, as bytes: joined without decoding each
    name and calling os.path.join, which took a rec part 0.1 s of 50,000 files."""
    prefix = os.path.join(os.fsencode(root), b"")
    return (prefix + name for name in _names_at(names_path, offsets))


def iter_tree_images(root, names_path, rows):
    """Yield ``(key, class, image bytes)`` of the tree images at ``rows`` (the plan's ``[key,
    class, name offset, record bytes]``), in the order of ``rows``; once reads are slow, the
    next files are read ahead (faceprep.read_ahead)."""
    rows = np.asarray(rows)
    with ReadAhead(lambda first: _paths_at(root, names_path, rows[first:, 2].tolist()), rows[:, 3]) as ahead:
        paths = _paths_at(root, names_path, rows[:, 2].tolist())
        for number, (path, (key, image_class)) in enumerate(zip(paths, rows[:, :2].tolist())):
            started = time.perf_counter()
            try:
                data = _read_file(path)
            except OSError as error:
                raise DatasetError(f"{os.fsdecode(path)}: image key {key} cannot be read ({error.strerror})") from None
            if not data:
                raise DatasetError(f"{os.fsdecode(path)}: image key {key} is empty now (it held an image when "
                                   "the tree was planned)")
            ahead.read(number, time.perf_counter() - started, len(data))
            yield key, image_class, data


def read_identities(identities_path):
    """The identity of each class (its directory's relative path, bytes as on disk), from the
    plan's identities file; None for a rec's plan, whose file is empty."""
    with open(identities_path, "rb") as stream:
        lines = stream.read().splitlines()
    return lines or None


def image_names(names_path, rows):
    """The relative paths of the images at ``rows``, in their order (train.lst's path column)."""
    return [os.fsdecode(name) for name in _names_at(names_path, np.asarray(rows)[:, 2].tolist())]
