"""RecordIO output: a dataset's images re-packed as ``train.rec``, ``train.idx``, ``train.lst``
and ``property``, byte for byte what MXNet's ``MXIndexedRecordIO.write_idx(key,
recordio.pack(header, image))`` writes for the same records in the same order.

Layouts (``rec_layout``):

- ``insightface``: key 0 is the header ``IRHeader(0, [N+1, N+1+C], 0, 0)`` (no image), images
  are keys 1..N, each ``IRHeader(0, float(class), key, 0)`` and the image's bytes untouched,
  and keys N+1..N+C are the identity records ``IRHeader(0, [start, end], 0, 0)``. float32
  holds these integers exactly only up to 2^24 (insightface #1589), so larger sets are refused.
- ``im2rec``: keys 0..N-1 are the images and nothing else, what DALI's ``fn.readers.mxnet``
  counts as samples (it counts header and identity records too) and what works past 2^24.

Order (``rec_order``): ``source`` puts the images class by class, each class's in source key
order; ``shuffled`` in a permutation seeded with ``rec_seed`` (im2rec only: insightface's
identity records need each class's images together), for DALI's small shuffle buffer.

Every record's place in ``train.rec`` is known before any is written: the plan (a tree) or
the label scan (a rec) gives each image's record size (recordio.image_record_bytes), and
``output_order`` turns them into offsets. Each chunk of the output order is then written by
its own job straight into its range of ``train.rec.partial`` (``RecPartWriter``), holding a
lock on that range (``atomic.open_in_place``: jobs may run on several machines over NFS), and
``assemble_rec`` writes the header and identity records around them and the index, list and
property files, and renames the rec into place last: ``train.rec`` exists only complete, and
no byte of it is copied twice.
"""

import bisect
import os
from collections import Counter

import crc32c
import numpy as np

from faceprep.atomic import (
    CommitOnExit,
    naming,
    open_in_place,
    refuse_foreign,
    start_writeback,
    sync_in_place,
    write_atomically,
    write_bytes,
)
from faceprep.errors import DatasetError
from faceprep.insightface import FLOAT32_EXACT, IDX_NAME, INSIGHTFACE, PROPERTY_NAME, REC_NAME
from faceprep.image_header import image_dimensions, size_text
from faceprep.recordio import (
    IMAGE_RECORD_HEAD_SIZE,
    IR_SIZE,
    RECORD_HEAD,
    aligned_magic_offsets,
    aligned_magic_positions,
    encode_record,
    framed_bytes,
    header_magic_words,
    pack_header,
    pack_image_record_head_into,
)

WRITE_BUFFER = 4 << 20
PADDING = bytes(3)
# What a rec directory gets, under these names always (faceprep.ownership refuses a
# directory nobody owns that already holds one of them).
LST_NAME = "train.lst"
REC_FILES = (REC_NAME, IDX_NAME, LST_NAME, PROPERTY_NAME)
PARTIAL = f"{REC_NAME}.partial"


def first_image_key(layout):
    return 1 if layout == INSIGHTFACE else 0


def check_layout(layout, order, images, classes):
    """Refuse what the layout cannot hold, saying why (a DatasetError)."""
    if layout == INSIGHTFACE and order == "shuffled":
        raise DatasetError(
            "rec_order 'shuffled' needs rec_layout 'im2rec': an insightface rec's identity records give each "
            "class one range of keys [start, end), so its images must lie class by class"
        )
    if layout == INSIGHTFACE and images + 1 + classes > FLOAT32_EXACT:
        raise DatasetError(
            f"{images} images and {classes} classes: the header record would hold N+1+C = {images + 1 + classes}, "
            f"past 2**24 ({FLOAT32_EXACT}). An insightface rec's header and identity records store keys as float32, "
            "which holds integers exactly "
            "only up to 2**24, so readers would get wrong ranges (insightface #1589). Use rec_layout 'im2rec' (no "
            "header, every key an image), which MXFaceDataset, DALI and im2rec's own readers take at any size"
        )


def _header_record(images, classes):
    """The insightface header record ``[N+1, N+1+C]``, framed."""
    return encode_record(pack_header([images + 1, images + 1 + classes], b""))


# Images of the output order formed and written at a time: order_rec's memory is then the
# order and its inputs, not several copies of every row.
ORDER_BLOCK = 1 << 18


def _output_order_blocks(layout, rows, row_classes, record_bytes, order, seed):
    """Yield ``output_order``'s two arrays a block of ORDER_BLOCK images at a time: ``(ordered
    rows, record offsets)``, the offsets of the records' starts, then a last block of none
    whose single offset is where the last record ends."""
    if order == "shuffled":
        positions = np.random.default_rng(seed).permutation(len(rows))
    else:
        positions = np.argsort(row_classes, kind="stable")  # class by class, keys ascending in each
    first_key = first_image_key(layout)
    class_count = int(row_classes.max()) + 1 if len(rows) else 0
    position = len(_header_record(len(rows), class_count)) if layout == INSIGHTFACE else 0
    for begin in range(0, len(rows), ORDER_BLOCK):
        chosen = positions[begin : begin + ORDER_BLOCK]
        classes = row_classes[chosen]
        keys = first_key + np.arange(begin, begin + len(chosen))
        sizes = record_bytes[chosen] + 4 * header_magic_words(classes.astype(np.float32), keys)
        ends = position + np.cumsum(sizes)
        yield np.column_stack([rows[chosen], classes]).astype(np.int64), np.concatenate([[position], ends[:-1]])
        position = int(ends[-1])
    yield np.zeros((0, np.shape(rows)[1] + 1), np.int64), np.array([position], np.int64)


def output_order(layout, rows, row_classes, record_bytes, order, seed):
    """``(ordered rows, record offsets)``: ``(source row..., class)`` rows of the images in
    output order, and where each image's record starts in train.rec, then where the last
    ends (N+1 offsets). ``rows`` are the plan's image rows (sorted by key), ``row_classes``
    their classes and ``record_bytes`` the size of each one's record without magic words in
    its IRHeader (recordio.header_magic_words adds those, for the key and class it gets)."""
    blocks = list(_output_order_blocks(layout, rows, row_classes, record_bytes, order, seed))
    return np.concatenate([ordered for ordered, _ in blocks]), np.concatenate([offsets for _, offsets in blocks])


def write_output_order(layout, rows, row_classes, record_bytes, order, seed, rows_stream, offsets_stream):
    """Write ``output_order``'s two arrays as ``.npy`` files to two binary streams, a block at
    a time; return ``(images, first record's offset, where the last record ends)``."""
    images = len(rows)
    for stream, shape in ((rows_stream, (images, np.shape(rows)[1] + 1)), (offsets_stream, (images + 1,))):
        np.lib.format.write_array_header_1_0(stream, {"descr": "<i8", "fortran_order": False, "shape": shape})
    starts = []  # each block's first offset; the last block's is where the last record ends
    for ordered, offsets in _output_order_blocks(layout, rows, row_classes, record_bytes, order, seed):
        rows_stream.write(ordered.astype("<i8").tobytes())
        offsets_stream.write(offsets.astype("<i8").tobytes())
        starts.append(int(offsets[0]))
    return images, starts[0], starts[-1]


def _write_at(descriptor, data, offset):
    """Write all of ``data`` at byte ``offset`` of the file (os.pwrite may write less)."""
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.pwrite(descriptor, view[done:], offset + done)


class RecPartWriter(CommitOnExit):
    """One chunk of the output order written into its byte range of the rec being assembled
    (``partial_path``, shared with the other parts' jobs), with its index ``.npz``: every
    record's payload CRC-32C, the images' sizes and the range. ``record_offsets`` are the
    chunk's N+1 planned record offsets (``output_order``). ``write`` takes the chunk's
    images in output order, the image at position ``p`` getting key ``first_key + p``; its
    class must be the planned one and its record the planned size. ``close`` waits until the
    range is on disk before writing the index, so an index exists only for bytes that a
    crash cannot lose.

    A record planned without split parts is framed whole; that its payload holds no
    4-aligned magic word (where a writer splits) is checked for a whole buffer at once: the
    only aligned magic words in it must be the heads of its records' parts."""

    def __init__(self, partial_path, index_path, ordered_rows, first_key, classes, record_offsets):
        self.partial_path, self.index_path = os.fspath(partial_path), index_path
        self.first_key, self.classes = first_key, classes
        self.planned = np.asarray(ordered_rows)[:, [0, -1]].tolist()  # [source key, class] of each record
        record_offsets = np.asarray(record_offsets, np.int64)
        self.planned_sizes = np.diff(record_offsets).tolist()
        self.begin, self.end = int(record_offsets[0]), int(record_offsets[-1])
        self.checksums = np.zeros(len(ordered_rows), np.uint32)
        self.dimensions = Counter()
        self.records = 0
        self.written = self.begin  # bytes up to here are in the file, the rest in the buffer
        # One buffer refilled in place: freeing it and growing it again at every flush cost
        # a part a page fault per 4 KB of its range.
        self._buffer = bytearray(WRITE_BUFFER)
        self._view = memoryview(self._buffer)
        self._length = 0  # bytes of the buffer in use
        self._heads = []  # where in the buffer each part of each record starts
        self._starts = []  # where in the buffer each record starts
        self._descriptor = open_in_place(self.partial_path, [(self.begin, self.end)])

    def write(self, key, label, image):
        number = self.records
        source_key, image_class = self.planned[number]
        if key != source_key or self.classes.class_of(label) != image_class:
            raise DatasetError(f"{self.partial_path}: record {number} is source key {key} of label {label}, "
                               f"the order planned key {source_key} of class {image_class}")
        planned = self.planned_sizes[number]
        if self._length + planned > len(self._buffer):
            self._flush()
            if planned > len(self._buffer):
                self._view.release()
                self._buffer = bytearray(planned)
                self._view = memoryview(self._buffer)
        at, record_class, record_key = self._length, float(image_class), self.first_key + number
        if planned == framed_bytes(IR_SIZE + len(image), 0):
            pack_image_record_head_into(self._buffer, at, record_class, len(image), record_key)
            image_at = at + IMAGE_RECORD_HEAD_SIZE
            image_end = image_at + len(image)
            self._view[image_at:image_end] = image
            self._view[image_end : at + planned] = PADDING[: at + planned - image_end]
            self._heads.append(at)
            payload = self._view[at + RECORD_HEAD.size : image_end]
        else:
            payload = pack_header(record_class, image, record_key)
            framed = encode_record(payload)
            if len(framed) != planned:
                raise DatasetError(f"{self.partial_path}: record {number} (source key {key}) is {len(framed)} bytes "
                                   f"framed, {planned} planned: the source changed since it was planned")
            self._view[at : at + planned] = framed
            self._heads.extend(at + position for position in aligned_magic_positions(framed))
        self._starts.append(at)
        self._length = at + planned
        self.checksums[number] = crc32c.crc32c(payload)
        self.dimensions[image_dimensions(image)] += 1
        self.records += 1

    @property
    def position(self):
        """Where the next record goes."""
        return self.written + self._length

    def _check_buffer(self):
        """Refuse a buffer holding a 4-aligned magic word that no record's part starts at: a
        record framed whole whose payload holds one changed since the plan counted them."""
        found = aligned_magic_offsets(self._buffer, 0, self._length).tolist()
        if found != self._heads:
            stray = next(position for position, head in zip(found, self._heads + [-1]) if position != head)
            record = bisect.bisect_right(self._starts, stray) - 1
            number = self.records - len(self._starts) + record
            key, at = self.planned[number][0], self._starts[record]
            raise DatasetError(f"{self.partial_path}: record {number} (source key {key}) holds the RecordIO magic at "
                               f"byte {stray - at} of its record, where a writer splits it; there was none when "
                               "it was planned: the source changed since it was planned")

    def _flush(self):
        self._check_buffer()
        try:
            _write_at(self._descriptor, self._view[: self._length], self.written)
        except OSError as error:
            raise naming(error, self.partial_path) from None
        start_writeback(self._descriptor, self.written, self._length)
        self.written += self._length
        self._length = 0
        self._heads.clear()
        self._starts.clear()

    def close(self):
        if self.records != len(self.planned) or self.position != self.end:
            raise DatasetError(f"{self.partial_path}: {self.records} records of {self.position - self.begin} bytes "
                               f"written, {len(self.planned)} of {self.end - self.begin} planned")
        self._flush()
        try:
            sync_in_place(self._descriptor)
        except OSError as error:
            raise naming(error, self.partial_path) from None
        finally:
            os.close(self._descriptor)
        sizes = Counter()
        for dimensions, count in self.dimensions.items():
            sizes["x".join(map(str, dimensions)) if dimensions else "unknown"] += count
        names, counts = zip(*sorted(sizes.items())) if sizes else ((), ())
        write_atomically(self.index_path, lambda stream: np.savez(
            stream, checksums=self.checksums, range=np.array([self.begin, self.end], np.int64),
            size_names=np.array(names, str), size_counts=np.array(counts, np.int64)))

    def abort(self):
        # What was written stays in its range; the rerun of this part writes it all again.
        os.close(self._descriptor)


# Lines of train.idx and train.lst formatted at a time: their text and names stay small at
# any count (a million lines at once took assemble_rec to 379 MB and 1.6 s, 65,536 to 121 MB and 1.3 s).
LINES_BLOCK = 1 << 16


def _index_lines(keys, offsets):
    return "".join(f"{key}\t{offset}\n" for key, offset in zip(keys.tolist(), offsets.tolist())).encode()


def _write_blocks(path, count, block_text):
    """Write ``path`` atomically as ``block_text(start, end)`` for blocks of LINES_BLOCK lines."""
    def write(stream):
        for start in range(0, count, LINES_BLOCK):
            stream.write(block_text(start, min(start + LINES_BLOCK, count)))
    write_atomically(path, write)


def assemble_rec(directory, layout, ordered_rows, record_offsets, index_paths, image_size, source_names=None):
    """Write ``directory``'s train.rec (from train.rec.partial, which holds the parts), train.idx,
    train.lst and property.

    ``ordered_rows``: the source's rows in output order, key first and class last, and
    ``record_offsets`` their records' places (``output_order``); ``index_paths``: the parts'
    indexes, in order; ``image_size``: ``(height, width)`` for the property file;
    ``source_names(rows)``: the list file's path column for some of those rows (default:
    their source keys). Every file goes to a temporary name first; train.rec is renamed last,
    so it exists only complete. Returns a summary.
    """
    directory = os.fspath(directory)
    images = len(ordered_rows)
    classes = ordered_rows[:, -1]
    class_count = int(classes.max()) + 1 if images else 0
    first_key = first_image_key(layout)
    rec_path, partial_path = os.path.join(directory, REC_NAME), os.path.join(directory, PARTIAL)
    refuse_foreign(rec_path)
    covered = int(record_offsets[0])
    for index_path in index_paths:
        with np.load(index_path) as index:
            begin, end = index["range"].tolist()
        if begin != covered:
            raise DatasetError(f"{index_path}: a part of bytes {begin}..{end} of {partial_path}, the parts before it "
                               f"end at byte {covered}: it was written for another order; delete it and rerun")
        covered = end
    images_end = int(record_offsets[-1])
    if covered != images_end:
        raise DatasetError(f"{partial_path}: its parts end at byte {covered}, the order's images at {images_end}")
    extra_keys, extra_offsets = [], []
    header, identity_records = b"", bytearray()
    if layout == INSIGHTFACE:
        header = _header_record(images, class_count)
        extra_keys.append(0)
        extra_offsets.append(0)
        # Each class's [first key, last key + 1): its images are together (output_order).
        ends = np.searchsorted(classes, np.arange(class_count), side="right")
        begins = np.concatenate([[0], ends[:-1]])
        for identity, (begin, end) in enumerate(zip(begins.tolist(), ends.tolist())):
            extra_keys.append(first_key + images + identity)
            extra_offsets.append(images_end + len(identity_records))
            identity_records += encode_record(pack_header([first_key + begin, first_key + end], b""))
    position = images_end + len(identity_records)
    try:
        descriptor = open_in_place(partial_path, [(0, len(header)), (images_end, position)])
        try:
            _write_at(descriptor, header, 0)
            _write_at(descriptor, identity_records, images_end)
            os.ftruncate(descriptor, position)  # a longer partial left by an earlier plan
            sync_in_place(descriptor)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise naming(error, partial_path) from None
    head = 1 if layout == INSIGHTFACE else 0
    # In file order: the header, the images, the identity records.
    extra_keys, extra_offsets = np.array(extra_keys, np.int64), np.array(extra_offsets, np.int64)
    all_keys = np.concatenate([extra_keys[:head], np.arange(first_key, first_key + images), extra_keys[head:]])
    all_offsets = np.concatenate([extra_offsets[:head], record_offsets[:-1], extra_offsets[head:]])
    _write_blocks(os.path.join(directory, IDX_NAME), len(all_keys),
                  lambda start, end: _index_lines(all_keys[start:end], all_offsets[start:end]))
    # im2rec's list format: key, label as '%f', path (the source's path, or key, of each
    # record). A path is written as its bytes on disk, UTF-8 or not, so that it opens the file.
    source_names = source_names or (lambda rows: rows[:, 0].tolist())

    def list_lines(start, end):
        names = source_names(ordered_rows[start:end])
        return b"".join(b"%d\t%f\t%s\n" % (first_key + position, image_class, os.fsencode(str(name))) for position,
                        image_class, name in zip(range(start, end), classes[start:end].tolist(), names))

    _write_blocks(os.path.join(directory, LST_NAME), images, list_lines)
    write_bytes(os.path.join(directory, PROPERTY_NAME), f"{class_count},{image_size[0]},{image_size[1]}".encode())
    os.replace(partial_path, rec_path)
    return {"layout": layout, "images": images, "classes": class_count, "records": images + len(extra_keys),
            "bytes": position, "first_image_key": first_key}


def image_sizes(index_paths):
    """``Counter`` of the images' ``(height, width)`` over the parts (None: a size no header
    told). The parts' indexes name each size ``HxW``."""
    sizes = Counter()
    for index_path in index_paths:
        with np.load(index_path) as index:
            for name, count in zip(index["size_names"].tolist(), index["size_counts"].tolist()):
                sizes[None if name == "unknown" else tuple(map(int, name.split("x")))] += count
    return sizes


def property_size(sizes, fallback):
    """``(height, width)`` for the property file: the most common known size (on a tie the
    wider, then the taller, as the audit's most common size), else ``fallback``."""
    known = [size for size in sizes if size is not None]
    return max(known, key=lambda size: (sizes[size], size[::-1])) if known else fallback


def size_names(sizes):
    """``{WxH: count}`` of ``image_sizes``, most common first (``unknown``: no header told),
    as the reports and the audit name sizes."""
    return {"unknown" if size is None else size_text(*size[::-1]): count for size, count in sizes.most_common()}
