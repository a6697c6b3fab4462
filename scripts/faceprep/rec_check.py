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
from faceprep.insightface import INSIGHTFACE
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
    rec_path, idx_path = os.path.join(directory, "train.rec"), os.path.join(directory, "train.idx")
    images = len(ordered_rows)
    classes = int(ordered_rows[:, -1].max()) + 1 if images else 0
    part_checksums = [np.load(path)["checksums"] for path in index_paths]
    checksums = np.concatenate(part_checksums or [np.zeros(0, np.uint32)])
    part_ends = np.cumsum([len(part) for part in part_checksums])
    damaged_parts = set()
    index = read_index(idx_path)
    expected = _expected_keys(layout, images, classes)
    if not np.array_equal(index[:, 0], expected):
        raise DatasetError(f"{idx_path}: lists {len(index)} keys, the {layout} layout of {images} images and "
                           f"{classes} classes has {len(expected)}, keys {int(expected[0])}..{int(expected[-1])}")
    rows = index[np.argsort(index[:, 1], kind="stable")]
    problems = []
    first = first_image_key(layout)
    image_classes = ordered_rows[:, -1].astype(np.int64)
    with open(rec_path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        buffer = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        position = released = 0
        try:
            # A window of records at a time: the framing and IRHeader of all of them read at
            # once, and the records that need more than their payload's CRC-32C (split ones,
            # header and identity records, anything wrong) read one by one.
            for window in np.split(rows, np.flatnonzero(np.diff(rows[:, 1] // RELEASE_BYTES)) + 1) if len(rows) else []:
                keys = window[:, 0]
                heads = read_heads(np.frombuffer(buffer, np.uint8), window[:, 1])
                is_image = (keys >= first) & (keys < first + images)
                positions = np.where(is_image, keys - first, 0)
                # Header and identity records are never plain: their class and checksum are placeholders.
                expected_classes = np.where(is_image, image_classes[positions], -1) if images else -np.ones_like(keys)
                expected_checksums = np.where(is_image, checksums[positions], 0) if images else np.zeros_like(keys)
                plain = (heads.intact & is_image & (heads.flag == 0) & (heads.id == keys.astype(np.uint64))
                         & (heads.image_start < heads.image_end)
                         & (heads.label.astype(np.float64) == expected_classes))
                columns = (keys, window[:, 1], plain, heads.image_end, expected_checksums)
                for key, offset, is_plain, payload_end, checksum in zip(*(column.tolist() for column in columns)):
                    where = f"{rec_path}: key {key}"
                    if position is not None and offset != position:
                        problems.append(f"{where} starts at byte {offset}, the record before it ends at {position}")
                    if is_plain:
                        position = (payload_end + 3) & ~3
                        problem = (None if crc32c.crc32c(buffer[offset + 8 : payload_end]) == checksum
                                   else f"{where}: payload CRC-32C differs from its part's")
                    else:
                        try:
                            payload = read_record(buffer, offset, rec_path, key)
                            position = record_end(buffer, offset)
                            problem = _record_problem(layout, key, payload, where, first, images, classes,
                                                      ordered_rows, checksums)
                        except (RecordIOError, DatasetError) as error:  # no record there (a lost part's bytes)
                            problem, position = str(error), None
                    if problem:
                        problems.append(problem)
                        if first <= key < first + images:
                            damaged_parts.add(int(np.searchsorted(part_ends, key - first, side="right")))
                    if len(problems) > SHOWN_PROBLEMS:
                        break
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


def _record_problem(layout, key, payload, where, first, images, classes, ordered_rows, checksums):
    header, image = unpack_header(payload, where)
    if first <= key < first + images:
        position = key - first
        image_class = int(ordered_rows[position, -1])
        if header.flag != 0 or header.label != image_class or header.id != key or not len(image):
            return f"{where}: IRHeader {tuple(header)[:4]} with {len(image)} image bytes, expected (0, {image_class}.0, {key}, 0)"
        if crc32c.crc32c(payload) != int(checksums[position]):
            return f"{where}: payload CRC-32C differs from its part's"
        return None
    if key == 0:
        wanted = [images + 1, images + 1 + classes]
    else:
        identity = key - images - 1
        classes_column = ordered_rows[:, -1]
        begin = int(np.searchsorted(classes_column, identity))
        end = int(np.searchsorted(classes_column, identity, side="right"))
        wanted = [first + begin, first + end]
    if header.flag != 2 or list(header.label) != wanted or len(image):
        return f"{where}: label {list(header.label) if header.flag else header.label} with {len(image)} bytes, expected {wanted}"
    return None
