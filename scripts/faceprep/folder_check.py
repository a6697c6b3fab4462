"""Verification of an extracted ``<images>/<label>/<key>.jpg`` tree against its plan and manifests."""

import contextlib
import os
import shutil
import stat

import numpy as np

from faceprep.errors import DatasetError
from faceprep.folders import CHECKSUMS, read_manifest_images
from faceprep.ownership import OWNER_FILE

# Problems named in a failed verification's message (all are counted).
SHOWN_PROBLEMS = 20
# Entries no manifest lists named in the message or the summary (all are counted).
SHOWN_UNLISTED = 5

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class _Findings:
    """The first few of many findings, how many there were, and the chunk manifests that
    list a file found missing or damaged (``stale``)."""

    def __init__(self, shown):
        self.first, self.count, self._shown = [], 0, shown
        self.stale = set()

    def add(self, finding, manifest=None):
        self.count += 1
        if len(self.first) < self._shown:
            self.first.append(finding)
        if manifest is not None:
            self.stale.add(manifest)


def verify_extraction(plan, manifest_paths, images_dir, label_mode="first", check_crc=False, remove_unlisted=False,
                      forget_damaged=False):
    """Check the tree against the plan and the manifests; return a summary or raise DatasetError.

    Every manifest row must name a file of its label directory, and every file and
    directory under ``images_dir`` must be named by a manifest row (an earlier run's or
    another dataset's files would be trained on). Each label directory is listed once,
    for both, with the rows of all manifests grouped by label; files are not stat'ed:
    extract_chunk already checked that every file was written whole. ``check_crc`` reads
    every file back and compares its size and checksum with the manifest.
    ``remove_unlisted`` deletes the entries no manifest lists instead (never following a
    symbolic link); the summary names them. ``forget_damaged`` deletes the manifests of
    chunks with a file missing or damaged, so that the next run extracts them again.
    """
    images = read_manifest_images(manifest_paths, sizes_and_checksums=check_crc)
    image_count = len(images.labels)
    # Only the first few problems are kept: a tree deleted by mistake would otherwise
    # hold one message per image in memory.
    file_problems = _Findings(SHOWN_PROBLEMS)
    unlisted = _Findings(SHOWN_UNLISTED)
    labels = _check_label_directories(images, images_dir, check_crc, remove_unlisted, file_problems, unlisted)
    problems = []
    if len(manifest_paths) != len(plan["chunks"]):
        problems.append(f"{len(manifest_paths)} chunk manifests, the plan has {len(plan['chunks'])} chunks")
    if image_count != plan["images"]:
        problems.append(f"{image_count} images extracted, the plan of the {plan['layout']} dataset has {plan['images']}")
    # With label sums, images of one identity may land in several folders.
    if label_mode == "first" and plan["identities"] is not None and labels != plan["identities"]:
        problems.append(f"{labels} distinct labels extracted, the {plan['identities_from']} says {plan['identities']} identities")
    if unlisted.count and not remove_unlisted:
        problems.append(
            f"{unlisted.count} files or directories in {images_dir} that no chunk manifest lists "
            f"(an earlier run's, another dataset's?), first: {', '.join(unlisted.first)}; "
            "training from the folder would read them: move them away, or rerun with "
            "`--config remove_unlisted=True` to delete exactly these"
        )
    summary = {
        "layout": plan["layout"],
        "images": image_count,
        "expected_images": plan["images"],
        "identities": plan["identities"],
        "distinct_labels": labels,
        "bytes": images.bytes,
        "chunks": len(manifest_paths),
        "crc_checked": check_crc,
        "removed_unlisted": {"count": unlisted.count if remove_unlisted else 0,
                             "first": unlisted.first if remove_unlisted else []},
    }
    if problems or file_problems.count:
        count = len(problems) + file_problems.count
        shown = "\n  ".join(problems + file_problems.first)
        unshown = file_problems.count - len(file_problems.first)
        more = f"\n  ... and {unshown} more files" if unshown else ""
        raise DatasetError(f"verification of {images_dir} failed ({count} problems):\n  {shown}{more}{_forget(file_problems.stale) if forget_damaged else ''}")
    return summary


def _forget(manifests):
    """Delete the chunk manifests that list missing or damaged files, so that the next run
    extracts those chunks again (a manifest marks a chunk done); say so."""
    for path in manifests:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if not manifests:
        return ""
    return (f"\n  removed the {len(manifests)} chunk manifests listing them ({', '.join(sorted(map(str, manifests))[:3])}"
            f"{', ...' if len(manifests) > 3 else ''}): the next run extracts those chunks again")


def _check_label_directories(images, images_dir, check_crc, remove_unlisted, file_problems, unlisted):
    """Check every label directory against the manifest rows of its label; return the number of labels.

    Rows are visited label by label, so beyond the per-row arrays only one directory's
    names are held at a time, and the root's. ``images.labels`` is consumed (see
    ``_label_groups``).
    """
    order, group_starts, group_labels = _label_groups(images)
    group_ends = np.append(group_starts[1:], len(images.keys))
    try:
        root = os.open(images_dir, _DIRECTORY_FLAGS | os.O_NOFOLLOW)
    except FileNotFoundError:
        root = None
    try:
        root_entries = set(os.listdir(root)) if root is not None else set()
        if OWNER_FILE in root_entries and stat.S_ISREG(os.stat(OWNER_FILE, dir_fd=root, follow_symlinks=False).st_mode):
            root_entries.remove(OWNER_FILE)  # the run's claim (faceprep.ownership), not an image
        for label, start, end in zip(group_labels, group_starts, group_ends):
            name = str(label)
            root_entries.discard(name)
            rows = np.arange(start, end) if order is None else order[start:end]
            _check_label_directory(images, images_dir, root, name, rows, check_crc, remove_unlisted, file_problems, unlisted)
        for entry in sorted(root_entries):
            _unlisted(root, entry, os.path.join(images_dir, entry), remove_unlisted, unlisted)
    finally:
        if root is not None:
            os.close(root)
    return len(group_labels)


# Rows of a block when the sorted labels are scanned for the starts of their groups.
_GROUP_BLOCK = 1 << 20
# An unsorted row's position takes the low bits of its sort key in _label_groups.
_ROW_BITS = 31


def _label_groups(images):
    """``(order, group_starts, group_labels)``: rows ``order[group_starts[g]:group_starts[g+1]]``
    (``order`` None: the rows themselves) are those of label ``group_labels[g]``, in
    manifest order, labels ascending.

    Manifests of a rec sorted by identity list the rows sorted by label: then no order is
    made at all. Otherwise, for labels below 2^32 (all real datasets), ``images.labels`` is
    turned in place into ``label << 31 | row`` and sorted: it becomes the order once the
    groups are found, so grouping takes no memory beyond the per-row arrays (an argsort
    and a sorted copy of the labels would add 16 bytes a row, 680 MB at 42.5 M images).
    ``images.labels`` is consumed either way.
    """
    labels, images.labels = images.labels, None
    packed = False  # whether labels holds label << _ROW_BITS | row
    if np.all(labels[1:] >= labels[:-1]):
        order = None
    elif len(labels) < 2**_ROW_BITS and labels.min() >= 0 and labels.max() < 2**32:
        for start in range(0, len(labels), _GROUP_BLOCK):
            block = labels[start : start + _GROUP_BLOCK]
            block <<= _ROW_BITS
            block |= np.arange(start, start + len(block))
        labels.sort()
        order, packed = labels, True
    else:
        order = np.argsort(labels, kind="stable")
        labels = labels[order]
    shift = _ROW_BITS if packed else 0
    group_starts, previous = [np.zeros(0, np.int64)], None
    for start in range(0, len(labels), _GROUP_BLOCK):
        block = labels[start : start + _GROUP_BLOCK] >> shift
        firsts = np.flatnonzero(block[1:] != block[:-1]) + 1 + start
        if previous is None or block[0] != previous:
            firsts = np.insert(firsts, 0, start)
        group_starts.append(firsts)
        previous = block[-1]
    group_starts = np.concatenate(group_starts)
    group_labels = labels[group_starts] >> shift
    if packed:
        labels &= (1 << _ROW_BITS) - 1  # the order: each row's own position
    return order, group_starts, group_labels


def _check_label_directory(images, images_dir, root, name, rows, check_crc, remove_unlisted, file_problems, unlisted):
    directory_path = os.path.join(images_dir, name)
    try:
        # O_NOFOLLOW: a label directory that is a symbolic link leads out of the images
        # directory, where removing files is not ours to do.
        directory = os.open(name, _DIRECTORY_FLAGS | os.O_NOFOLLOW, dir_fd=root) if root is not None else None
    except FileNotFoundError:
        directory = None
    except NotADirectoryError:
        file_problems.add(f"{directory_path}: not a directory (a file, or a symbolic link, which is not followed)")
        for manifest in {images.manifest_of(row) for row in rows.tolist()}:
            file_problems.stale.add(manifest)
        return
    try:
        listed, links = _entries(directory)
        names = [f"{key}.jpg" for key in images.keys[rows].tolist()]
        # Rows are looked at one by one only when some are missing, or to read them back.
        if check_crc or not listed.issuperset(names):
            for row, file_name in zip(rows.tolist(), names):
                path = os.path.join(directory_path, file_name)
                if file_name in links:
                    links.remove(file_name)
                    file_problems.add(f"{path}: a symbolic link where the extracted image should be", images.manifest_of(row))
                elif file_name not in listed:
                    file_problems.add(f"{path}: listed in {images.manifest_of(row)} but missing", images.manifest_of(row))
                elif check_crc:
                    problem = _content_problem(images, row, directory, file_name, path)
                    if problem:
                        file_problems.add(problem, images.manifest_of(row))
        for entry in sorted(listed.difference(names) | links):
            _unlisted(directory, entry, os.path.join(directory_path, entry), remove_unlisted, unlisted)
    finally:
        if directory is not None:
            os.close(directory)


def _entries(directory):
    """``(names, links)`` of open ``directory`` (None: missing): its entries other than
    symbolic links, and its symbolic links, told apart by the listing's entry types
    without a stat per file."""
    names, links = set(), set()
    if directory is not None:
        with os.scandir(directory) as entries:
            for entry in entries:
                (links if entry.is_symlink() else names).add(entry.name)
    return names, links


def _content_problem(images, row, directory, file_name, path):
    descriptor = os.open(file_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    with open(descriptor, "rb") as stream:
        data = stream.read()
    size, checksum = int(images.sizes[row]), int(images.checksums[row])
    if len(data) != size:
        return f"{path}: {len(data)} bytes, {images.manifest_of(row)} says {size}"
    checksum_name = images.checksum_name_of(row)
    if CHECKSUMS[checksum_name](data) != checksum:
        return f"{path}: {checksum_name.upper()} differs from {images.manifest_of(row)}"
    return None


def _unlisted(directory, entry, path, remove, unlisted):
    """Count entry ``entry`` of open ``directory`` (at ``path``) as unlisted; delete it if ``remove``."""
    unlisted.add(path)
    if remove:
        try:
            os.unlink(entry, dir_fd=directory)  # a file, or a symbolic link itself
        except IsADirectoryError:
            shutil.rmtree(entry, dir_fd=directory)  # does not follow symbolic links inside
