"""The rec output's tests' data and steps: a small im2rec source rec (sparse labels, keys with
gaps, shuffled physical order, a PNG and a split record among its images), the workflow's rec
jobs as plain calls, and what MXNet reads of a rec."""

import io
import json
import struct

import numpy as np

from faceprep.classes import ClassTable
from faceprep.demo import encode_image
from faceprep.insightface import IM2REC, DatasetWriter, iter_images_in_order, plan_chunks, scan_rows
from faceprep.outputs.rec import (
    PARTIAL,
    RecPartWriter,
    assemble_rec,
    check_layout,
    first_image_key,
    image_sizes,
    output_order,
    property_size,
)
from faceprep.rec_check import verify_rec
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import MAGIC
from oracle import run_oracle

# Sparse labels in shuffled physical order; 10 identities, three with a single image.
LABELS = [70, 3, 3, 1000, 42, 70, 70, 3, 42, 5, 1000, 8, 8, 8, 9, 9, 11, 12, 12, 12, 13]


PNG_POSITION, SPLIT_POSITION = 13, 7


def image(position):
    """A JPEG 16 wide and 20 high; at PNG_POSITION a PNG 40 wide and 30 high; at
    SPLIT_POSITION a JPEG whose payload holds the magic at a 4-aligned offset, so its record
    is split."""
    pixels = np.random.default_rng(position).integers(0, 256, (20, 16, 3), dtype=np.uint8)
    if position == PNG_POSITION:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.resize(pixels, (30, 40, 3))).save(buffer, format="PNG")
        return buffer.getvalue()
    data = encode_image(pixels)
    if position == SPLIT_POSITION:  # a comment segment after SOI holding the magic at image byte 8
        comment = b"\0\0" + struct.pack("<I", MAGIC) + b"\0\0"
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", 2 + len(comment)) + comment + data[2:]
    return data


def source_key(position):
    return 100 + 3 * position


def write_sparse_rec(directory):
    """An im2rec rec of the LABELS images in ``directory``, written in a shuffled physical
    order, keys 100.. with gaps."""
    order = np.random.default_rng(1).permutation(len(LABELS))
    with DatasetWriter(directory, IM2REC, image_size=None) as writer:
        for position in order.tolist():
            writer.add(source_key(position), float(LABELS[position]), image(position))
    return directory


def source_images(source):
    with IndexedRecordReader(source / "train.rec", source / "train.idx") as reader:
        return {key: (int(header.label), bytes(data)) for key in reader.keys.tolist()
                for header, data in [reader.read_unpacked(key)]}


def order_source(source, work, layout, order="source", chunk_size=6, seed=0):
    """The workflow's plan, label scan and order as plain calls: ``(plan, ordered rows, record
    offsets, class table)``."""
    work.mkdir(parents=True)
    plan = plan_chunks(source / "train.rec", source / "train.idx", None, chunk_size, work / "rows.npy")
    rows = np.load(work / "rows.npy")
    row_labels, record_bytes = scan_rows(source / "train.rec", source / "train.idx", rows)
    classes = ClassTable(np.unique(row_labels))
    check_layout(layout, order, len(rows), len(classes))
    ordered, offsets = output_order(layout, rows, classes.classes_of(row_labels), record_bytes, order, seed)
    return plan, ordered, offsets, classes


def write_part(source, rec_dir, layout, chunk, ordered, offsets, classes, start, end):
    """One part job: images ``start..end`` of the order into their range of train.rec.partial."""
    index = rec_dir / f"train.rec.part-{chunk:05d}.npz"  # as the workflow names it
    with RecPartWriter(rec_dir / PARTIAL, index, ordered[start:end], first_image_key(layout) + start, classes,
                       offsets[start : end + 1]) as writer:
        for record in iter_images_in_order(source / "train.rec", source / "train.idx", ordered[start:end, :2]):
            writer.write(*record)
    return index


def write_rec(source, out, layout, order="source", chunk_size=6, seed=0):
    """The workflow's rec jobs as plain calls: plan, label scan, order, parts, assembly, verification."""
    plan, ordered, offsets, classes = order_source(source, out / "work", layout, order, chunk_size, seed)
    (out / "rec").mkdir(exist_ok=True)
    indexes = [write_part(source, out / "rec", layout, chunk, ordered, offsets, classes, start, end)
               for chunk, (start, end) in enumerate(plan["chunks"])]
    sizes = image_sizes(indexes)
    summary = assemble_rec(out / "rec", layout, ordered, offsets, indexes, property_size(sizes, (0, 0)))
    verify_rec(out / "rec", layout, ordered, indexes)
    return summary, ordered, sizes


def mxnet_records(rec_dir):
    result = run_oracle("read_rec.py", rec_dir / "train.rec", rec_dir / "train.idx")
    return json.loads(result.stdout)
