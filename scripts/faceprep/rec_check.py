"""Verification of a written rec (faceprep.outputs.rec): every record read back.

The idx must list exactly the layout's keys, in file order, each record starting where the
one before it ends and the last ending at the end of the file. Every image record's IRHeader
must carry its key and class and its payload the CRC-32C its part recorded; the header and
identity records of an insightface rec must hold the counts and ranges of the images.
"""

import contextlib
import mmap
import os

import crc32c
import numpy as np

from faceprep.errors import DatasetError, RecordIOError
from faceprep.insightface import IDX_NAME, INSIGHTFACE, REC_NAME
from faceprep.outputs.rec import PARTIAL, first_image_key
from faceprep.record_index import read_index
from faceprep.rec_reader import RELEASE_BYTES
from faceprep.recordio import read_heads, read_record, record_end, unpack_header

SHOWN_PROBLEMS = 20


def _expected_keys(layout, images, classes):
    first = first_image_key(layout)
    keys = np.arange(first, first + images)
    if layout == INSIGHTFACE:
        keys = np.concatenate([[0], keys, np.arange(images + 1, images + 1 + classes)])
    return keys


def verify_rec(directory, layout, ordered_rows, index_paths, forget_damaged=False):
    """Check ``directory``'s train.rec and train.idx against the order (the source's rows in
    output order, class last) and the parts' checksums; return a summary or raise DatasetError.
    ``forget_damaged`` moves a rec found wrong back to train.rec.partial and deletes the
    indexes of the parts holding wrong records, so that the next run writes those parts
    again and assembles the rec again."""
    rec_path, idx_path = os.path.join(directory, REC_NAME), os.path.join(directory, IDX_NAME)
    part_checksums = [np.load(path)["checksums"] for path in index_paths]
    checksums = np.concatenate(part_checksums or [np.zeros(0, np.uint32)])
    part_ends = np.cumsum([len(part) for part in part_checksums])
    check = _RecordCheck(rec_path, layout, ordered_rows, checksums)
    images, classes = check.images, check.classes
    damaged_parts = set()
    index = read_index(idx_path)
    expected = _expected_keys(layout, images, classes)
    if not np.array_equal(index[:, 0], expected):
        raise DatasetError(f"{idx_path}: lists {len(index)} keys, the {layout} layout of {images} images and "
                           f"{classes} classes has {len(expected)}, keys {int(expected[0])}..{int(expected[-1])}")
    rows = index[np.argsort(index[:, 1], kind="stable")]
    problems = []
    with open(rec_path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        buffer = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        position = released = 0
        try:
            with memoryview(buffer) as view:
                for window in np.split(rows, np.flatnonzero(np.diff(rows[:, 1] // RELEASE_BYTES)) + 1) if len(rows) else []:
                    found, damaged, position = check.window(buffer, view, window, position)
                    problems += found
                    damaged_parts.update(np.searchsorted(part_ends, damaged, side="right").tolist())
                    if len(problems) > SHOWN_PROBLEMS:
                        break
                    if size and position is not None and position - released >= RELEASE_BYTES:
                        # Mapped pages count as this job's memory until dropped; the page cache keeps them.
                        end = position - position % mmap.PAGESIZE
                        buffer.madvise(mmap.MADV_DONTNEED, released, end - released)
                        released = end
        finally:
            if size:
                buffer.close()
    if not problems and position != size:
        problems.append(f"{rec_path}: the last record ends at byte {position}, the file at {size}")
    if problems:
        forgotten = ""
        if forget_damaged:
            for part in sorted(damaged_parts):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(index_paths[part])
            os.replace(rec_path, os.path.join(directory, PARTIAL))
            forgotten = (f"\n  moved train.rec back to {PARTIAL}"
                         + (f" and forgot the {len(damaged_parts)} parts holding them" if damaged_parts else "")
                         + ": the next run writes them again and assembles the rec again")
        raise DatasetError(f"verification of {rec_path} failed:\n  " + "\n  ".join(problems[:SHOWN_PROBLEMS]) + forgotten)
    return {"layout": layout, "images": images, "classes": classes, "records": len(index), "bytes": size,
            "checked": "every record's framing, key, class and payload CRC-32C; header and identity records"}


class _RecordCheck:
    """The checks of the records of a rec of ``layout`` written in the order ``ordered_rows``
    (class last), its images' payloads having the CRC-32Cs ``checksums``."""

    def __init__(self, rec_path, layout, ordered_rows, checksums):
        self.rec_path, self.ordered_rows, self.checksums = rec_path, ordered_rows, checksums
        self.first, self.images = first_image_key(layout), len(ordered_rows)
        self.classes = int(ordered_rows[:, -1].max()) + 1 if self.images else 0
        self.image_classes = ordered_rows[:, -1].astype(np.int64)

    def window(self, buffer, view, window, position):
        """Check the records of ``window`` (idx rows ``[key, offset]`` in file order) of the
        rec mapped as ``buffer`` (``view``, a memoryview of it), the first expected at byte
        ``position`` (None: unknown, after a record that could not be read). Returns
        ``(problems, image positions of the damaged records, where the last record ends or
        None)``.

        The framing and IRHeader of all records are read at once and checked as arrays, the
        places where they start too; each plain record's payload CRC-32C is taken, and the
        records that need more (split ones, header and identity records, anything wrong) are
        read one by one."""
        first, images = self.first, self.images
        keys, offsets = window[:, 0], window[:, 1]
        heads = read_heads(np.frombuffer(buffer, np.uint8), offsets)
        is_image = (keys >= first) & (keys < first + images)
        positions = np.where(is_image, keys - first, 0)
        # Header and identity records are never plain: their class and checksum are placeholders.
        expected_classes = np.where(is_image, self.image_classes[positions], -1) if images else -np.ones_like(keys)
        plain = (heads.intact & is_image & (heads.flag == 0) & (heads.id == keys.astype(np.uint64))
                 & (heads.image_start < heads.image_end) & (heads.label.astype(np.float64) == expected_classes))
        ends = np.where(plain, (heads.image_end + 3) & ~3, -1)  # -1: not known (yet)
        found, damaged = [], []  # found: (record in the window, order among its problems, message)
        for record in np.flatnonzero(~plain).tolist():
            key, offset = int(keys[record]), int(offsets[record])
            where = f"{self.rec_path}: key {key}"
            try:
                payload = read_record(buffer, offset, self.rec_path, key)
                ends[record] = record_end(buffer, offset)
                problem = self._record_problem(key, payload, where)
            except (RecordIOError, DatasetError) as error:  # no record there (a lost part's bytes)
                problem = str(error)
            if problem:
                found.append((record, 1, problem))
                damaged += [key - first] if is_image[record] else []
        previous_ends = np.concatenate([[-1 if position is None else position], ends[:-1]])
        for record in np.flatnonzero((previous_ends >= 0) & (offsets != previous_ends)).tolist():
            found.append((record, 0, f"{self.rec_path}: key {keys[record]} starts at byte {offsets[record]}, "
                                     f"the record before it ends at {previous_ends[record]}"))
        plain_records = np.flatnonzero(plain)
        spans = zip((offsets[plain_records] + 8).tolist(), heads.image_end[plain_records].tolist())
        sums = np.array([crc32c.crc32c(view[start:end]) for start, end in spans], np.int64)
        for record in plain_records[sums != self.checksums[positions[plain_records]]].tolist():
            found.append((record, 1, f"{self.rec_path}: key {keys[record]}: payload CRC-32C differs from its part's"))
            damaged.append(int(positions[record]))
        last_end = int(ends[-1])
        return [message for *_, message in sorted(found)], damaged, None if last_end < 0 else last_end

    def _record_problem(self, key, payload, where):
        first, images, ordered_rows = self.first, self.images, self.ordered_rows
        header, image = unpack_header(payload, where)
        if first <= key < first + images:
            position = key - first
            image_class = int(ordered_rows[position, -1])
            if header.flag != 0 or header.label != image_class or header.id != key:
                return f"{where}: IRHeader {tuple(header)[:4]} with {len(image)} image bytes, expected (0, {image_class}.0, {key}, 0)"
            if crc32c.crc32c(payload) != int(self.checksums[position]):
                return f"{where}: payload CRC-32C differs from its part's"
            return None
        if key == 0:
            wanted = [images + 1, images + 1 + self.classes]
        else:
            identity = key - images - 1
            classes_column = ordered_rows[:, -1]
            begin = int(np.searchsorted(classes_column, identity))
            end = int(np.searchsorted(classes_column, identity, side="right"))
            wanted = [first + begin, first + end]
        if header.flag != 2 or list(header.label) != wanted or len(image):
            return f"{where}: label {list(header.label) if header.flag else header.label} with {len(image)} bytes, expected {wanted}"
        return None
