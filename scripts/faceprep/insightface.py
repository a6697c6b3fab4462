"""insightface RecordIO datasets in their two layouts, read and written.

- ``insightface``: key 0 is a header record (flag > 0, no image) labelled ``[N+1, N+1+C]``;
  images are keys 1..N and keys N+1..N+C are identity records, stored last.
- ``im2rec``: no header; every key of the ``.idx`` is an image (keys from anywhere, gaps
  allowed), as MXNet's im2rec packs a list file. A record at key 0 that holds image bytes,
  or has flag 0, is such an image.

Labels always come from the image records themselves: identity records past 2^24 are off by
float32 rounding in Glint360K, so they are only counted, never used.
``plan_chunks`` finds the layout and splits the sorted image keys into chunks (faceprep.chunking);
``iter_images`` streams one chunk's ``(key, label, image)``, ``image_labels`` gives its labels
alone and ``scan_rows`` also the sizes of its records in a rec written from it;
``DatasetWriter`` writes both layouts (the demo, the benchmark and the tests make every
rec with it).
"""

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from faceprep.atomic import CommitOnExit, write_atomically
from faceprep.chunking import plan_chunk_positions
from faceprep.errors import DatasetError
from faceprep.read_ahead import SlowReads, slow_reads_remedy
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import IR_SIZE, RecordWriter, framed_bytes, image_record_bytes, pack_header, unpack_header

log = logging.getLogger(__name__)

INSIGHTFACE, IM2REC = "insightface", "im2rec"
# A rec dataset's files, named so by insightface's releases, MXNet's face loaders and the rec
# output alike.
REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"
LABEL_MODES = ("first", "sum")
# float32 holds every integer up to 2^24 exactly, and past it only some.
FLOAT32_EXACT = 2**24
# Labels and keys end up in int64 arrays (the index's image_classes).
_LARGEST_COUNT = 2**63 - 1


def _count(value, what, where):
    """``value`` as a non-negative integer that fits int64, or a DatasetError naming ``where``."""
    if not math.isfinite(value) or value < 0 or value != int(value) or value > _LARGEST_COUNT:
        raise DatasetError(f"{where}: {what} is {value!r}, expected a non-negative integer below 2**63")
    return int(value)


def image_label(header, label_mode, where):
    """The class of an image record from its IRHeader: ``'first'`` takes the scalar label or
    label[0] (insightface's loaders); ``'sum'`` the original script's ``int(np.sum(label))``
    (float32 sum, truncated)."""
    label = header.label
    if header.flag > 0:
        label = label.sum() if label_mode == "sum" else label[0]
    if label_mode == "sum":
        if not math.isfinite(label) or label < 0 or label > _LARGEST_COUNT:
            raise DatasetError(f"{where}: label sum is {label!r}, expected a non-negative number below 2**63")
        return int(label)
    return _count(float(label), "label", where)


def _is_header_record(header, image):
    return header.flag > 0 and len(image) == 0


def _present_between(keys, first, end):
    """How many of the sorted ``keys`` lie in ``[first, end)``."""
    return int(np.searchsorted(keys, end) - np.searchsorted(keys, first))


def _first_missing(keys, first, end):
    inside = keys[np.searchsorted(keys, first) : np.searchsorted(keys, end)]
    gaps = np.flatnonzero(inside != np.arange(first, first + len(inside)))
    return first + int(gaps[0]) if len(gaps) else first + len(inside)


def _float32_note(*values):
    if any(value > FLOAT32_EXACT for value in values):
        return f" (float32 holds integers past 2**24 only to the nearest even or coarser: the header's {values} may be rounded)"
    return ""


def _insightface_header(reader, header):
    """``(first image key, end, identities)`` of an insightface header, checked against the index."""
    where = f"{reader.rec_path}: header record (key 0)"
    if header.flag < 2:
        raise DatasetError(f"{where}: label is {list(header.label)}, expected the array [N+1, N+1+C] of an insightface dataset")
    images_end = _count(float(header.label[0]), "label[0] (one past the last image key)", where)
    identities_end = _count(float(header.label[1]), "label[1] (one past the last identity key)", where)
    if images_end < 1:
        raise DatasetError(f"{where}: label[0] is {images_end}, expected at least 1 (images are keys 1..label[0]-1)")
    if identities_end < images_end:
        raise DatasetError(f"{where}: label {[images_end, identities_end]} ends before it starts")
    note = _float32_note(images_end, identities_end)
    for first, end, what in ((1, images_end, "image"), (images_end, identities_end, "identity")):
        present = _present_between(reader.keys, first, end)
        if present != end - first:
            raise DatasetError(
                f"{reader.idx_path}: the header record promises {what} keys {first}..{end - 1}, but "
                f"{end - first - present} are missing from the index (first: key {_first_missing(reader.keys, first, end)}){note}"
            )
    # The boundary between images and identity records, read from the records themselves.
    if images_end > 1 and _is_header_record(*reader.read_unpacked(images_end - 1)):
        raise DatasetError(f"{where}: label[0] = {images_end}, but key {images_end - 1}, the last image by it, holds no image{note}")
    if images_end in reader and not _is_header_record(*reader.read_unpacked(images_end)):
        raise DatasetError(
            f"{where}: label[0] = {images_end}, but key {images_end}, the first identity record by it, holds an image"
            f" (the header counts fewer images than the rec has){note}"
        )
    return 1, images_end, identities_end - images_end


def read_layout(reader):
    """``(layout, image_rows, identities)``: the dataset's layout, the ``[key, offset]`` index
    rows of its images (sorted by key) and its identity count (None when only the images can
    tell, in an im2rec dataset)."""
    index = reader.index
    if not len(index):
        raise DatasetError(f"{reader.idx_path}: lists no records")
    if 0 in reader:
        header, image = reader.read_unpacked(0)
        if header.flag == 0 and not len(image):
            raise DatasetError(
                f"{reader.rec_path}: key 0 holds no image and the scalar label {header.label!r}; expected the array"
                " [N+1, N+1+C] of an insightface header record, or an image (as im2rec writes key 0)"
            )
        if _is_header_record(header, image):
            first, end, identities = _insightface_header(reader, header)
            start = int(np.searchsorted(reader.keys, first))
            return INSIGHTFACE, index[start : start + end - first], identities
    # insightface stores its identity records last: one there means key 0 was lost, not im2rec.
    last_key = int(reader.keys[-1])
    if _is_header_record(*reader.read_unpacked(last_key)):
        raise DatasetError(
            f"{reader.idx_path}: has no insightface header record at key 0, so every key should be an image, but "
            f"key {last_key} holds none (an identity record?): is key 0 missing from the idx?"
        )
    return IM2REC, index, None


def read_property(path):
    """``(num_identities, height, width)`` from an insightface ``property`` file."""
    text = Path(path).read_text().strip()
    try:
        identities, height, width = (int(field) for field in text.split(","))
    except ValueError:
        raise DatasetError(f"{path}: expected 'identities,height,width', got {text[:80]!r}") from None
    return identities, height, width


def plan_chunks(rec_path, idx_path, property_path, chunk_size, rows_path, parallel_jobs=1):
    """The chunk plan of a dataset: layout, sizes and the ``[start, end)`` positions of every
    chunk in the sorted image keys. ``chunk_size`` is a number of images or ``"auto"``
    (``auto_chunks`` for ``parallel_jobs``).

    Also saves the image records' ``[key, offset]`` index rows as ``rows_path`` (``.npy``),
    which chunk jobs memory-map instead of each parsing a multi-million-line ``.idx`` again.
    """
    with IndexedRecordReader(rec_path, idx_path) as reader:
        layout, rows, identities = read_layout(reader)
        write_atomically(rows_path, lambda stream: np.save(stream, rows))
    plan = {"layout": layout, "images": len(rows), "identities": identities,
            "identities_from": None if identities is None else "header record",
            "rec_bytes": os.path.getsize(rec_path)}
    if property_path is not None:
        property_identities, height, width = read_property(property_path)
        if identities is not None and property_identities != identities:
            raise DatasetError(
                f"{property_path}: says {property_identities} identities, but the header record of "
                f"{rec_path} says {identities}"
            )
        if identities is None:
            plan.update(identities=property_identities, identities_from="property file")
        plan["image_size"] = [height, width]
    if len(rows):
        plan["keys"] = [int(rows[0, 0]), int(rows[-1, 0])]
    return plan | plan_chunk_positions(len(rows), chunk_size, parallel_jobs)


def iter_images(rec_path, idx_path, rows, label_mode="first"):
    """Yield ``(key, label, image)`` of the image records at index ``rows``, in file order.

    ``image`` is a copy of the record's image bytes; a record without any is an error.
    Records are read a window at a time: the framing, IRHeader and label of every record
    in it at once, and one by one only for records that need more (split records, labels
    a float cannot hold, damage, which ``_image_record`` names).
    """
    with IndexedRecordReader(rec_path, idx_path, rows) as reader:
        for window, heads, labels, plain in _label_windows(reader, rows, label_mode):
            columns = (window[:, 0], window[:, 1], labels, heads.image_start, heads.image_end, plain)
            for key, offset, label, start, end, is_plain in zip(*(column.tolist() for column in columns)):
                if is_plain:
                    yield key, label, reader.bytes(start, end)
                else:
                    yield _image_record(reader.read_at(offset, key), reader.rec_path, key, label_mode)


def image_labels(rec_path, idx_path, rows, label_mode="first"):
    """The label of each image record at index ``rows``, in the order of ``rows``, as
    ``iter_images`` gives it (and with its errors), but without copying any image
    (``scan_rows``)."""
    return scan_rows(rec_path, idx_path, rows, label_mode, record_sizes=False)[0]


def scan_rows(rec_path, idx_path, rows, label_mode="first", record_sizes=True):
    """``(labels, record bytes)`` of each image record at index ``rows`` (``[key, offset]``),
    in the order of ``rows``: its label, as ``iter_images`` gives it (and with its errors),
    and the size of its image's record in a rec written from it (recordio.image_record_bytes;
    with ``record_sizes`` False, an empty array instead). Records are read a window at a
    time in file order, without copying any image: labels come from the IRHeaders and sizes
    from the magic words found in the mapping (``_record_sizes``); only records that need
    more are read one by one."""
    rows = np.asarray(rows)
    labels = np.zeros(len(rows), np.int64)
    sizes = np.zeros(len(rows) if record_sizes else 0, np.int64)
    # Windows come in file order: the rows sorted by offset, as iter_row_windows sorts them.
    positions = np.argsort(rows[:, 1], kind="stable")
    done = 0
    with IndexedRecordReader(rec_path, idx_path, rows) as reader:
        for window, heads, window_labels, plain in _label_windows(reader, rows, label_mode):
            for row in np.flatnonzero(~plain).tolist():
                key, offset = (int(value) for value in window[row, :2])
                window_labels[row] = _image_record(reader.read_at(offset, key), reader.rec_path, key, label_mode)[1]
            at = positions[done : done + len(window)]
            labels[at] = window_labels
            if record_sizes:
                sizes[at] = _record_sizes(reader, window, heads)
            done += len(window)
    return labels, sizes


def _record_sizes(reader, window, heads):
    """recordio.image_record_bytes of the image of each record of ``window`` (``heads``
    theirs). An image starting 4-aligned in the file has the file's 4-aligned words as its
    own, so the magic words of the window's intact records (unsplit, 4-aligned) are found at
    once and counted per image; other records (split ones, with their magic words taken out)
    are read one by one."""
    starts, ends = heads.image_start, heads.image_end
    counted = heads.intact & (starts < ends) & (window[:, 1] % 4 == 0)
    found = reader.aligned_magic(int(starts[counted].min()), int(ends[counted].max())) if counted.any() else []
    # A word lies in an image if it starts there and ends by its end.
    splits = np.searchsorted(found, ends - 3) - np.searchsorted(found, starts)
    sizes = np.where(counted, framed_bytes(IR_SIZE + ends - starts, splits), 0)
    for row in np.flatnonzero(~counted).tolist():
        key, offset = (int(value) for value in window[row, :2])
        sizes[row] = image_record_bytes(_image_record(reader.read_at(offset, key), reader.rec_path, key, "first")[2])
    return sizes


def _label_windows(reader, rows, label_mode):
    """``(window, heads, labels, plain)`` of each window of ``rows`` in file order
    (``IndexedRecordReader.iter_row_windows``): the records' heads, checked to lie apart, and
    the labels of the records ``_plain_image_labels`` finds plain."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, not {label_mode!r}")
    for window in reader.iter_row_windows(rows):
        heads = reader.heads(window[:, 1])
        reader.check_apart(window, heads)
        yield (window, heads, *_plain_image_labels(heads, label_mode))


def iter_images_in_order(rec_path, idx_path, rows, label_mode="first"):
    """Yield ``(key, label, image)`` of the image records at index ``rows`` in the order of
    ``rows`` (a chosen order, such as a rec being re-packed class by class or shuffled),
    reading each record where it lies (``IndexedRecordReader.read_apart``). Once those reads
    are slow (read_ahead.SlowReads: the rec is not in the page cache), the next records are
    asked for ahead of them (``IndexedRecordReader.ranges_ahead``)."""
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, not {label_mode!r}")
    listed = np.asarray(rows)[:, :2].tolist()
    reads, ahead = SlowReads(), None
    with IndexedRecordReader(rec_path, idx_path, rows) as reader:
        for number, (key, offset) in enumerate(listed):
            if offset >= reader.size:
                reader.offset(key)  # raises, naming the key and offset
            if ahead is not None:
                ahead.reached(number)
            started = time.perf_counter()
            payload = reader.read_apart(offset, key)
            if ahead is None and reads.read(time.perf_counter() - started, len(payload)):
                ahead = reader.ranges_ahead([offset for _, offset in listed], number + 1)
                log.info("%s: reads took %.0f us a record: %s", reader.rec_path, reads.microseconds,
                         slow_reads_remedy(f"asking for the records from number {number + 1} on ahead"))
            yield _image_record(payload, reader.rec_path, key, label_mode)


def _plain_image_labels(heads, label_mode):
    """``(labels, plain)``: the label of every record whose ``image_label`` needs no more than
    its IRHeader's first label (an integer-valued float32 from 0 to 2^63), and which holds
    image bytes. Other records are ``plain`` False."""
    value = heads.label if label_mode == "sum" else np.where(heads.flag > 0, heads.first_label, heads.label)
    value = value.astype(np.float64)
    with np.errstate(invalid="ignore"):
        plain = heads.intact & (heads.image_start < heads.image_end) & (value >= 0) & (value < 2.0**63)
    # 'sum' truncates, but its float32 sum of an array label is left to image_label.
    plain &= heads.flag == 0 if label_mode == "sum" else value == np.floor(value)
    return np.where(plain, value, 0).astype(np.int64), plain


def _image_record(payload, rec_path, key, label_mode):
    where = f"{rec_path}: image record key {key}"
    header, image = unpack_header(payload, where)
    # An empty image with a scalar label is an empty file im2rec packed: it is passed on, and the
    # audit names it. A label array without an image is a header or identity record out of place.
    if not len(image) and header.flag > 0:
        raise DatasetError(f"{where}: holds no image bytes and the label array {header.label.tolist()}: "
                           "a header or identity record among the images")
    return key, image_label(header, label_mode, where), bytes(image)


class DatasetWriter(CommitOnExit):
    """Write ``train.rec``, ``train.idx`` and ``property`` of a dataset in either layout.

    ``add(key, label, image)`` writes an image record (label a number or a sequence, the
    record's id is its key) in the order called. On ``close`` an insightface dataset gets its
    identity records after the largest image key (per distinct label[0], its ``[first key,
    last key + 1)``, in label order) and its header record ``[N+1, N+1+C]``, written last. ``header`` and
    ``identity_ranges`` replace the computed ones, ``identities`` the property's count;
    ``image_size=None`` writes no property file. Files are renamed into place on success.
    """

    def __init__(self, directory, layout=INSIGHTFACE, *, image_size=(112, 112), identities=None,
                 header=None, identity_ranges=None):
        if layout not in (INSIGHTFACE, IM2REC):
            raise ValueError(f"layout must be {INSIGHTFACE!r} or {IM2REC!r}, not {layout!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.layout, self.image_size, self.identities = layout, image_size, identities
        self._header, self._identity_ranges = header, identity_ranges
        self._records = RecordWriter(self.directory / REC_NAME, self.directory / IDX_NAME)
        self._key_ranges = {}
        self.images = self._largest_key = 0

    def add(self, key, label, image):
        self._records.write(key, pack_header(label, image, key))
        first = float(label if np.ndim(label) == 0 else label[0])
        low, high = self._key_ranges.get(first, (key, key))
        self._key_ranges[first] = (min(low, key), max(high, key))
        self.images += 1
        self._largest_key = max(self._largest_key, key)

    def close(self):
        identities = len(self._key_ranges)
        if self.layout == INSIGHTFACE:
            ranges = self._identity_ranges
            if ranges is None:
                ranges = [[low, high + 1] for _, (low, high) in sorted(self._key_ranges.items())]
            for position, key_range in enumerate(ranges):
                self._records.write(self._largest_key + 1 + position, pack_header(key_range, b""))
            self._records.write(0, pack_header(self._header or [self.images + 1, self.images + 1 + identities], b""))
        self._records.close()
        if self.image_size is not None:
            count = identities if self.identities is None else self.identities
            text = f"{count},{self.image_size[0]},{self.image_size[1]}"
            write_atomically(self.directory / PROPERTY_NAME, lambda stream: stream.write(text.encode()))

    def abort(self):
        self._records.abort()
