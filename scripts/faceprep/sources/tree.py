"""Folder trees as sources: WebFace, CASIA-WebFace, VGGFace2 or a crawl, ``<identity>/<image>``.

An identity is a directory that directly holds image files, named by its path relative to the
source, so nested layouts (``m.01/a/001.jpg``) work. Image files are recognised by their
first bytes (JPEG, PNG, BMP, GIF, WebP), whatever their extension; other files (``.DS_Store``,
``Thumbs.db``, notes) and empty ones are skipped, and the plan names every one. Classes are
0..C-1 in the order of identity names: as integers when every name is one, else Python's
``sorted()``; within an identity, files go by name. Image keys are 1..N in that order.

Directory links are followed once: a directory reached again (a link cycle, or two links to
one place) is skipped and named. A file that cannot be read is an error naming it.

``plan_tree`` writes the image rows ``[key, class, offset of its name]`` and the names file
(each image's path relative to the source, one a line, in key order), which every chunk job
reads its images through (``iter_tree_images``).
"""

import os

import numpy as np

from faceprep.atomic import write_atomically, write_bytes
from faceprep.chunking import plan_chunk_positions
from faceprep.errors import DatasetError

TREE = "tree"
_SNIFF_BYTES = 12
_SIGNATURES = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"))
# Skipped entries named in the plan itself; the skipped-files table lists them all.
SHOWN_SKIPPED = 20


def image_format(head):
    """The image format of a file from its first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((name for signature, name in _SIGNATURES if head.startswith(signature)), None)


def is_tree(source):
    """Whether ``source`` is a folder tree: it holds neither train.rec nor train.idx (a rec
    directory missing one of them is a damaged rec, not a tree)."""
    return not any(os.path.exists(os.path.join(source, name)) for name in ("train.rec", "train.idx"))


def _read_head(path):
    """``(first bytes, size)`` of a file; an error names it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(descriptor, _SNIFF_BYTES), os.fstat(descriptor).st_size
        finally:
            os.close(descriptor)
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read ({error.strerror})") from None


def scan_tree(root):
    """``(identities, skipped, formats, image_bytes)``: ``{identity name: [file names, sorted]}``
    of the directories holding images, ``[(relative path, reason)]`` of what was skipped, the
    count of each image format and the images' total size."""
    identities, skipped, formats, image_bytes = {}, [], {}, 0
    visited = set()
    pending = [""]
    while pending:
        relative = pending.pop()
        directory = os.path.join(root, relative) if relative else root
        try:
            status = os.stat(directory)
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise DatasetError(f"{directory}: cannot be listed ({error.strerror})") from None
        if (status.st_dev, status.st_ino) in visited:
            skipped.append((relative, "a directory reached before (a link cycle, or a second link to it)"))
            continue
        visited.add((status.st_dev, status.st_ino))
        images = []
        for entry in entries:
            path = os.path.join(relative, entry.name) if relative else entry.name
            if entry.is_dir():  # through links, as is_file
                pending.append(path)
            elif not entry.is_file():
                broken = entry.is_symlink() and not os.path.exists(entry.path)
                skipped.append((path, "a broken link" if broken else "not a regular file"))
            elif "\n" in entry.name:
                skipped.append((path, "a name with a line break"))
            else:
                head, size = _read_head(entry.path)
                found = image_format(head)
                if not head:
                    skipped.append((path, "empty"))
                elif found is None:
                    skipped.append((path, "not an image (no JPEG, PNG, BMP, GIF or WebP signature)"))
                else:
                    images.append(entry.name)
                    formats[found] = formats.get(found, 0) + 1
                    image_bytes += size
        if images:
            identities[relative] = images
    return identities, sorted(skipped), formats, image_bytes


def identity_order(names):
    """Identity names in class order: as integers when every name is one, else ``sorted()``."""
    names = list(names)
    if names and all(name.isdecimal() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def plan_tree(root, chunk_size, rows_path, names_path, skipped_path, parallel_jobs=1):
    """The chunk plan of a folder tree (see the module), writing its rows, names and skipped files."""
    identities, skipped, formats, image_bytes = scan_tree(root)
    if "" in identities:
        raise DatasetError(
            f"{root}: holds images directly ({identities[''][0]}, ...): a folder tree's images lie in identity "
            "directories (<identity>/<image>), whose names are the classes"
        )
    names, classes = [], []
    for image_class, identity in enumerate(identity_order(identities)):
        for file_name in identities[identity]:
            names.append(f"{identity}/{file_name}")
            classes.append(image_class)
    if not names:
        raise DatasetError(f"{root}: holds no image files (JPEG, PNG, BMP, GIF or WebP) in identity directories")
    encoded = [os.fsencode(name) + b"\n" for name in names]
    offsets = np.cumsum([0] + [len(line) for line in encoded[:-1]], dtype=np.int64)
    rows = np.column_stack([np.arange(1, len(names) + 1, dtype=np.int64), np.array(classes, np.int64), offsets])
    write_bytes(names_path, b"".join(encoded))
    write_atomically(rows_path, lambda stream: np.save(stream, rows))
    write_bytes(skipped_path, "".join(f"{path}\t{reason}\n" for path, reason in skipped).encode())
    plan = {
        "layout": TREE, "images": len(names), "identities": len(identities), "identities_from": "tree",
        "rec_bytes": image_bytes, "keys": [1, len(names)], "image_formats": formats,
        "skipped": {"count": len(skipped), "first": [f"{path}: {reason}" for path, reason in skipped[:SHOWN_SKIPPED]]},
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
                with open(path, "rb") as stream:
                    data = stream.read()
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
