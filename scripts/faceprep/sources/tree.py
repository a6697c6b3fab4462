"""Folder trees as sources: WebFace, CASIA-WebFace, VGGFace2 or a crawl, ``<identity>/<image>``.

An identity is a directory that directly holds image files, named by its path relative to the
source, so nested layouts (``m.01/a/001.jpg``) work. Image files are recognised by their
first bytes (JPEG, PNG, BMP, GIF, WebP), whatever their extension; other files (``.DS_Store``,
``Thumbs.db``, notes), empty ones and names holding a tab or line break are skipped, and the
plan names every one. Names need not be UTF-8: list files hold their bytes. Classes are
0..C-1 in the order of identity names: as integers when every name is one, else Python's
``sorted()``; within an identity, files go by name. Image keys are 1..N in that order.

Directory links are followed once: a directory reached again (a link cycle, or two links to
one place) is skipped and named. A file that cannot be read is an error naming it.

``plan_tree`` writes the image rows ``[key, class, offset of its name, record bytes]`` (the
last: the size of the image's record in a rec) and the names file (each image's path
relative to the source, one a line, in key order), which every chunk job reads its images
through (``iter_tree_images``).
"""

import contextlib
import multiprocessing
import os

import numpy as np

from faceprep.atomic import write_atomically, write_bytes
from faceprep.chunking import plan_chunk_positions
from faceprep.errors import DatasetError
from faceprep.recordio import image_record_bytes

TREE = "tree"
_SNIFF_BYTES = 12
_WHOLE_FILE_BYTES = 1 << 24
_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"))
# Skipped entries named in the plan itself; the skipped-files table lists them all.
SHOWN_SKIPPED = 20
# Characters a file or directory name cannot hold here: the names file, train.lst (im2rec's
# format, read line by line, also on '\r') and the skipped-files table are lines of
# tab-separated columns. Such an entry is skipped, a directory with all it holds.
_LINE_BREAKING = frozenset("\t\n\r")
_LINE_BREAKING_REASON = "a name with a tab or line break, which train.lst and the names file cannot hold"


def image_format(head):
    """The image format of a file from its first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((name for signature, name in _SIGNATURES if head.startswith(signature)), None)


def is_tree(source):
    """Whether ``source`` is a folder tree: it holds neither train.rec nor train.idx (a rec
    directory missing one of them is a damaged rec, not a tree)."""
    return not any(os.path.exists(os.path.join(source, name)) for name in ("train.rec", "train.idx"))


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
        data = os.read(descriptor, min(size, _WHOLE_FILE_BYTES) or _SNIFF_BYTES)
        if len(data) < size and not (images_only and image_format(data[:_SNIFF_BYTES]) is None):
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
    found = image_format(data[:_SNIFF_BYTES])
    return found, len(data), image_record_bytes(data) if found else 0


def _examine_directory(task):
    directory, names = task
    return [_examine(os.path.join(directory, name)) for name in names]


def _walk(root):
    """``(directories, skipped)``: ``[(relative path, [file names, sorted])]`` of every directory
    below ``root`` (links followed once) with the regular files it holds directly, and
    ``[(relative path, reason)]`` of the entries skipped on the way."""
    directories, skipped, visited, pending = [], [], set(), [""]
    while pending:
        relative = pending.pop()
        directory = _below(root, relative)
        try:
            status = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise DatasetError(f"{directory}: cannot be listed ({error.strerror})") from None
        if (status.st_dev, status.st_ino) in visited:
            skipped.append((relative, "a directory reached before (a link cycle, or a second link to it)"))
            continue
        visited.add((status.st_dev, status.st_ino))
        files = []
        for entry in entries:
            if _LINE_BREAKING.intersection(entry.name):
                skipped.append((_below(relative, entry.name), _LINE_BREAKING_REASON))
            elif entry.is_file():  # through links, as is_dir
                files.append(entry.name)
            elif entry.is_dir():
                pending.append(_below(relative, entry.name))
            else:
                broken = entry.is_symlink() and not os.path.exists(entry.path)
                skipped.append((_below(relative, entry.name), "a broken link" if broken else "not a regular file"))
        directories.append((relative, files))
    return directories, skipped


def scan_tree(root, workers=1):
    """``(identities, skipped, formats, image_bytes)``: ``{identity name: [(file name, record
    bytes)], by name}`` of the directories holding images, ``[(relative path, reason)]`` of
    what was skipped, the count of each image format and the images' total size. The files
    are read by ``workers`` processes, a directory at a time."""
    directories, skipped = _walk(root)
    identities, formats, image_bytes = {}, {}, 0
    tasks = [(_below(root, relative), files) for relative, files in directories]
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            examined = pool.imap(_examine_directory, tasks, chunksize=max(1, min(64, len(tasks) // (8 * workers))))
        else:
            examined = map(_examine_directory, tasks)
        for (relative, files), found_in_directory in zip(directories, examined):
            images = []
            for name, (found, size, record_bytes) in zip(files, found_in_directory):
                if not size:
                    skipped.append((_below(relative, name), "empty"))
                elif found is None:
                    skipped.append((_below(relative, name), "not an image (no JPEG, PNG, BMP, GIF or WebP signature)"))
                else:
                    images.append((name, record_bytes))
                    formats[found] = formats.get(found, 0) + 1
                    image_bytes += size
            if images:
                identities[relative] = images
    return identities, sorted(skipped), formats, image_bytes


def _table_cell(path):
    """A path's bytes as on disk, its tabs and line breaks written as ``\\t``, ``\\n``, ``\\r``."""
    return os.fsencode(path).replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _shown(path):
    """A path on one line, as the skipped-files table has it (bytes that are not UTF-8 as ``\\xNN``)."""
    return _table_cell(path).decode(errors="backslashreplace")


def identity_order(names):
    """Identity names in class order: as integers when every name is one, else ``sorted()``."""
    names = list(names)
    if names and all(name.isdecimal() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def plan_tree(root, chunk_size, rows_path, names_path, skipped_path, parallel_jobs=1, workers=1):
    """The chunk plan of a folder tree (see the module), writing its rows, names and skipped
    files; ``workers`` processes read the files."""
    identities, skipped, formats, image_bytes = scan_tree(root, workers)
    if "" in identities:
        raise DatasetError(
            f"{root}: holds images directly ({identities[''][0][0]}, ...): a folder tree's images lie in identity "
            "directories (<identity>/<image>), whose names are the classes"
        )
    names, classes, record_bytes = [], [], []
    for image_class, identity in enumerate(identity_order(identities)):
        for file_name, size in identities[identity]:
            names.append(f"{identity}/{file_name}")
            classes.append(image_class)
            record_bytes.append(size)
    if not names:
        raise DatasetError(f"{root}: holds no image files (JPEG, PNG, BMP, GIF or WebP) in identity directories")
    encoded = [os.fsencode(name) + b"\n" for name in names]
    offsets = np.cumsum([0] + [len(line) for line in encoded[:-1]], dtype=np.int64)
    rows = np.column_stack([np.arange(1, len(names) + 1, dtype=np.int64), np.array(classes, np.int64), offsets,
                            np.array(record_bytes, np.int64)])
    write_bytes(names_path, b"".join(encoded))
    write_atomically(rows_path, lambda stream: np.save(stream, rows))
    write_bytes(skipped_path, b"".join(b"%s\t%s\n" % (_table_cell(path), reason.encode()) for path, reason in skipped))
    plan = {
        "layout": TREE, "images": len(names), "identities": len(identities), "identities_from": "tree",
        "rec_bytes": image_bytes, "keys": [1, len(names)], "image_formats": formats,
        "skipped": {"count": len(skipped), "first": [f"{_shown(path)}: {reason}" for path, reason in skipped[:SHOWN_SKIPPED]]},
        # The rows hold each image's class and record size: the label scan reads nothing, so one job does it.
        "scan_chunks": [[0, len(names)]],
    }
    return plan | plan_chunk_positions(len(names), chunk_size, parallel_jobs)


def iter_tree_images(root, names_path, rows):
    """Yield ``(key, class, image bytes)`` of the tree images at ``rows`` (``[key, class,
    name offset]``), in the order of ``rows``."""
    with open(names_path, "rb") as names:
        for key, image_class, offset in np.asarray(rows)[:, :3].tolist():
            names.seek(offset)
            path = os.path.join(root, os.fsdecode(names.readline().rstrip(b"\n")))
            try:
                data = _read_file(path)
            except OSError as error:
                raise DatasetError(f"{path}: image key {key} cannot be read ({error.strerror})") from None
            if not data:
                raise DatasetError(f"{path}: image key {key} is empty now (it held an image when the tree was planned)")
            yield key, image_class, data


def image_names(names_path, rows):
    """The relative paths of the images at ``rows``, in their order (train.lst's path column)."""
    with open(names_path, "rb") as names:
        found = []
        for offset in np.asarray(rows)[:, 2].tolist():
            names.seek(offset)
            found.append(os.fsdecode(names.readline().rstrip(b"\n")))
        return found
