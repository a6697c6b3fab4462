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

Each chunk of the output order is written by its own job to a part file of framed records
(``RecPartWriter``); ``assemble_rec`` then writes the header, copies the parts in with
``copy_file_range`` (in the kernel, a reflink where the file system has them; never through
Python's memory), appends the identity records and writes the index, list and property
files. ``train.rec`` is renamed into place last: it exists only complete.
"""

import os
from collections import Counter

import crc32c
import numpy as np

from faceprep.atomic import (
    CommitOnExit,
    commit_temporary,
    create_file,
    discard_temporary,
    naming,
    open_temporary,
    refuse_foreign,
    write_atomically,
    write_bytes,
)
from faceprep.errors import DatasetError
from faceprep.insightface import FLOAT32_EXACT, INSIGHTFACE
from faceprep.jpeg import image_dimensions
from faceprep.recordio import encode_record, pack_header

WRITE_BUFFER = 1 << 20


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


def output_order(rows, row_classes, order, seed):
    """``(key, offset, class)`` rows of the images in output order: ``rows`` are the plan's
    ``[key, offset]`` image rows (sorted by key), ``row_classes`` their classes."""
    if order == "shuffled":
        positions = np.random.default_rng(seed).permutation(len(rows))
    else:
        positions = np.argsort(row_classes, kind="stable")  # class by class, keys ascending in each
    return np.column_stack([rows[positions], row_classes[positions]])


class RecPartWriter(CommitOnExit):
    """One chunk of the output order as a part file of framed records (``<part>.tmp``, renamed
    on ``close``), with its index ``.npz``: every record's offset in the part and payload
    CRC-32C, and the images' sizes. ``write`` takes the chunk's images in output order, the
    image at position ``p`` getting key ``first_key + p``; its class must be the planned one."""

    def __init__(self, part_path, index_path, ordered_rows, first_key, classes):
        self.part_path, self.index_path = os.fspath(part_path), index_path
        self.rows, self.first_key, self.classes = ordered_rows, first_key, classes
        self.offsets = np.zeros(len(ordered_rows), np.int64)
        self.checksums = np.zeros(len(ordered_rows), np.uint32)
        self.sizes = Counter()
        self.records = self.size = 0
        self._stream = open_temporary(self.part_path, WRITE_BUFFER)

    def write(self, key, label, image):
        position = self.records
        source_key, image_class = int(self.rows[position, 0]), int(self.rows[position, -1])
        if key != source_key or self.classes.class_of(label) != image_class:
            raise DatasetError(f"{self.part_path}: record {position} is source key {key} of label {label}, "
                               f"the order planned key {source_key} of class {image_class}")
        payload = pack_header(float(image_class), image, self.first_key + position)
        framed = encode_record(payload)
        try:
            self._stream.write(framed)
        except OSError as error:
            raise naming(error, self.part_path) from None
        self.offsets[position] = self.size
        self.checksums[position] = crc32c.crc32c(payload)
        dimensions = image_dimensions(image)
        self.sizes["x".join(map(str, dimensions)) if dimensions else "unknown"] += 1
        self.size += len(framed)
        self.records += 1

    def close(self):
        if self.records != len(self.rows):
            raise DatasetError(f"{self.part_path}: {self.records} records written, {len(self.rows)} planned")
        # Not fsynced: a part lives until its rec is assembled and verified, usually less than
        # the kernel waits before writing it back, so its bytes need not reach the disk at all;
        # the verification checks every payload against the CRC-32C recorded here, and forgets
        # a part whose bytes were lost in a crash (verify_rec).
        commit_temporary(self._stream, self.part_path, fsync=False)

        names, counts = zip(*sorted(self.sizes.items())) if self.sizes else ((), ())
        write_atomically(self.index_path, lambda stream: np.savez(
            stream, offsets=self.offsets, checksums=self.checksums, bytes=np.int64(self.size),
            size_names=np.array(names, str), size_counts=np.array(counts, np.int64)))

    def abort(self):
        discard_temporary(self._stream, self.part_path)


def _copy_into(source_path, destination, offset):
    """Copy file ``source_path`` into open ``destination`` at ``offset`` with copy_file_range:
    the bytes move inside the kernel (or are shared, on a file system with reflinks)."""
    with open(source_path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        copied = 0
        while copied < size:
            done = os.copy_file_range(source.fileno(), destination.fileno(), size - copied, copied, offset + copied)
            if done == 0:
                raise OSError(f"{source_path}: copy_file_range stopped at byte {copied} of {size}")
            copied += done
    return size


# Lines of train.idx and train.lst formatted at a time: their text stays small at any count.
LINES_BLOCK = 1 << 20


def _index_lines(keys, offsets):
    return "".join(f"{key}\t{offset}\n" for key, offset in zip(keys.tolist(), offsets.tolist())).encode()


def _write_blocks(path, count, block_text):
    """Write ``path`` atomically as ``block_text(start, end)`` for blocks of LINES_BLOCK lines."""
    def write(stream):
        for start in range(0, count, LINES_BLOCK):
            stream.write(block_text(start, min(start + LINES_BLOCK, count)))
    write_atomically(path, write)


def assemble_rec(directory, layout, ordered_rows, part_paths, index_paths, image_size, source_names=None):
    """Write ``directory``'s train.rec, train.idx, train.lst and property from the parts.

    ``ordered_rows``: the source's rows in output order, key first and class last;
    ``image_size``: ``(height, width)`` for the property file; ``source_names(rows)``: the
    list file's path column for some of those rows (default: their source keys). Every file
    goes to a temporary name first; train.rec is renamed last, so it exists only complete.
    Returns a summary.
    """
    directory = os.fspath(directory)
    images = len(ordered_rows)
    classes = ordered_rows[:, -1]
    class_count = int(classes.max()) + 1 if images else 0
    first_key = first_image_key(layout)
    rec_path = os.path.join(directory, "train.rec")
    refuse_foreign(rec_path)
    offsets = np.zeros(images, np.int64)
    extra_keys, extra_offsets = [], []
    with open(create_file(f"{rec_path}.tmp"), "wb") as rec:
        try:
            position = 0
            if layout == INSIGHTFACE:
                extra_keys.append(0)
                extra_offsets.append(0)
                position += rec.write(encode_record(pack_header([images + 1, images + 1 + class_count], b"")))
                rec.flush()
            start = 0
            for part_path, index_path in zip(part_paths, index_paths):
                with np.load(index_path) as index:
                    part_offsets = index["offsets"]
                offsets[start : start + len(part_offsets)] = part_offsets + position
                start += len(part_offsets)
                position += _copy_into(part_path, rec, position)
            if start != images:
                raise DatasetError(f"{rec_path}: the parts hold {start} records, the order {images}")
            rec.seek(position)
            if layout == INSIGHTFACE:
                # Each class's [first key, last key + 1): its images are together (output_order).
                ends = np.searchsorted(classes, np.arange(class_count), side="right")
                begins = np.concatenate([[0], ends[:-1]])
                for identity, (begin, end) in enumerate(zip(begins.tolist(), ends.tolist())):
                    extra_keys.append(first_key + images + identity)
                    extra_offsets.append(position)
                    position += rec.write(encode_record(pack_header([first_key + begin, first_key + end], b"")))
            rec.flush()
            os.fsync(rec.fileno())
        except BaseException as error:
            os.unlink(f"{rec_path}.tmp")
            raise naming(error, rec_path) from None
    head = 1 if layout == INSIGHTFACE else 0
    # In file order: the header, the images, the identity records.
    extra_keys, extra_offsets = np.array(extra_keys, np.int64), np.array(extra_offsets, np.int64)
    all_keys = np.concatenate([extra_keys[:head], np.arange(first_key, first_key + images), extra_keys[head:]])
    all_offsets = np.concatenate([extra_offsets[:head], offsets, extra_offsets[head:]])
    _write_blocks(os.path.join(directory, "train.idx"), len(all_keys),
                  lambda start, end: _index_lines(all_keys[start:end], all_offsets[start:end]))
    # im2rec's list format: key, label as '%f', path (the source's path, or key, of each record).
    source_names = source_names or (lambda rows: rows[:, 0].tolist())

    def list_lines(start, end):
        names = source_names(ordered_rows[start:end])
        return "".join(f"{first_key + position}\t{float(image_class):f}\t{name}\n" for position, image_class, name
                       in zip(range(start, end), classes[start:end].tolist(), names)).encode()

    _write_blocks(os.path.join(directory, "train.lst"), images, list_lines)
    write_bytes(os.path.join(directory, "property"), f"{class_count},{image_size[0]},{image_size[1]}".encode())
    os.replace(f"{rec_path}.tmp", rec_path)
    return {"layout": layout, "images": images, "classes": class_count, "records": images + len(extra_keys),
            "bytes": position, "first_image_key": first_key}


def image_sizes(index_paths):
    """``Counter`` of the images' ``HxW`` sizes over the parts (``unknown``: not JPEG or PNG)."""
    sizes = Counter()
    for index_path in index_paths:
        with np.load(index_path) as index:
            sizes.update(dict(zip(index["size_names"].tolist(), index["size_counts"].tolist())))
    return sizes


def property_size(sizes, fallback):
    """``(height, width)`` for the property file: the most common known size, else ``fallback``."""
    known = [(count, name) for name, count in sizes.items() if name != "unknown"]
    if not known:
        return fallback
    height, width = max(known)[1].split("x")
    return int(height), int(width)
