"""Unit tests of faceprep.insightface: both layouts written by DatasetWriter and read back."""

import os
import random
import struct

import numpy as np
import pytest

from faceprep import rec_reader
from faceprep.chunking import auto_chunks, scan_positions
from faceprep.errors import DatasetError, RecordIOError
from faceprep.insightface import (
    IM2REC,
    INSIGHTFACE,
    DatasetWriter,
    image_label,
    image_labels,
    iter_images,
    iter_images_in_order,
    plan_chunks,
)
from faceprep.record_index import read_index
from faceprep.rec_reader import MAPPED_AROUND_A_READ, IndexedRecordReader
from faceprep.recordio import unpack_header

MAGIC = struct.pack("<I", 0xCED7230A)


def image_bytes(rng, key):
    """Random bytes with the RecordIO magic at 4-aligned offsets, so records are split."""
    data = bytearray(rng.randbytes(4 * rng.randint(10, 60)))
    data[0:4] = MAGIC
    data[-8:-4] = MAGIC
    return bytes(data) + str(key).encode()


def plan(source, chunk_size=3, property_file=True):
    property_path = source / "property" if property_file else None
    result = plan_chunks(source / "train.rec", source / "train.idx", property_path, chunk_size, source / "rows.npy")
    return result, np.load(source / "rows.npy")


def read_all(source, result, rows, label_mode="first"):
    """``{key: (label, image)}`` over every chunk of the plan, chunk by chunk."""
    read = {}
    for start, end in result["chunks"]:
        for key, label, image in iter_images(source / "train.rec", source / "train.idx", rows[start:end], label_mode):
            assert key not in read
            read[key] = (label, bytes(image))
    return read


def test_insightface_round_trip_in_any_physical_order(tmp_path):
    rng = random.Random(1)
    labels = {key: [3, 3, 3, 8, 8, 20, 21, 21, 21, 21][key - 1] for key in range(1, 11)}
    images = {key: image_bytes(rng, key) for key in labels}
    physical = rng.sample(sorted(labels), len(labels))
    with DatasetWriter(tmp_path) as writer:
        for key in physical:
            writer.add(key, float(labels[key]), images[key])

    result, rows = plan(tmp_path)
    assert (result["layout"], result["images"], result["identities"], result["keys"]) == (INSIGHTFACE, 10, 4, [1, 10])
    assert result["chunks"] == [[0, 3], [3, 6], [6, 9], [9, 10]]
    assert rows[:, 0].tolist() == list(range(1, 11))
    assert read_all(tmp_path, result, rows) == {key: (labels[key], images[key]) for key in labels}
    assert (tmp_path / "property").read_text() == "4,112,112"

    with IndexedRecordReader(tmp_path / "train.rec", tmp_path / "train.idx") as reader:
        header, image = reader.read_unpacked(0)
        assert (header.flag, header.label.tolist(), bytes(image)) == (2, [11, 15], b"")
        identity_ranges = [reader.read_unpacked(key)[0].label.tolist() for key in range(11, 15)]
        assert identity_ranges == [[1, 4], [4, 6], [6, 7], [7, 11]]
        assert reader.index[0, 1] == reader.index[:, 1].max()  # the header record is stored last


def test_labels_come_from_the_images_never_from_identity_records(tmp_path):
    labels = [0.0, 0.0, [1.0, 1.0], [1.0, 0.0], 2.0]
    # Overlapping ranges, as float32 rounding leaves them past 2^24 in Glint360K.
    with DatasetWriter(tmp_path, identity_ranges=[[1, 4], [2, 6], [4, 6]]) as writer:
        for key, label in enumerate(labels, start=1):
            writer.add(key, label, b"jpeg %d" % key)
    result, rows = plan(tmp_path)
    assert {key: label for key, (label, _) in read_all(tmp_path, result, rows).items()} == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2}
    assert {key: label for key, (label, _) in read_all(tmp_path, result, rows, "sum").items()} == {1: 0, 2: 0, 3: 2, 4: 1, 5: 2}


@pytest.mark.parametrize("with_property", [True, False])
def test_im2rec_round_trip_with_sparse_huge_keys_and_array_labels(tmp_path, with_property):
    rng = random.Random(2)
    keys = [0, 7, 2**24 - 1, 2**24 + 1, 2**24 + 2, 2**32 + 5, 2**53 + 1, 2**63 - 1]
    labels = {key: ([float(index % 3), 1.0] if index % 2 else float(index % 3)) for index, key in enumerate(keys)}
    images = {key: image_bytes(rng, key) for key in keys}
    with DatasetWriter(tmp_path, IM2REC, image_size=(112, 112) if with_property else None) as writer:
        for key in rng.sample(keys, len(keys)):
            writer.add(key, labels[key], images[key])

    result, rows = plan(tmp_path, property_file=with_property)
    assert (result["layout"], result["images"], result["keys"]) == (IM2REC, len(keys), [0, 2**63 - 1])
    assert (result["identities"], result["identities_from"]) == ((3, "property file") if with_property else (None, None))
    np.testing.assert_array_equal(rows, read_index(tmp_path / "train.idx"))
    expected = {key: (int(label[0]) if isinstance(label, list) else int(label), images[key]) for key, label in labels.items()}
    assert read_all(tmp_path, result, rows) == expected


def test_scattered_reads_copy_plain_records_and_release_the_pages_split_ones_map(tmp_path, monkeypatch):
    """Re-packing in a chosen order reads each record where it lies. Plain records are
    copied with pread (nothing mapped, nothing to release), whatever their size against the
    reader's guess; split records are read through the mapping, each counted as the
    MAPPED_AROUND_A_READ its read maps toward a release, so a job's memory stays flat."""
    rng = random.Random(3)
    plain = {key: bytes([key % 256]) * rng.choice([100, 5000, 70_000]) for key in range(1, 401)}
    split = {key: image_bytes(rng, key) for key in range(401, 1201)}
    images = plain | split
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        for key, image in images.items():
            writer.add(key, 0.0, image)
    releases = []
    monkeypatch.setattr(IndexedRecordReader, "release", lambda reader: releases.append(True))
    index = read_index(tmp_path / "train.idx")
    rows = index[np.random.default_rng(0).permutation(len(plain))]
    read = {key: image for key, _, image in iter_images_in_order(tmp_path / "train.rec", tmp_path / "train.idx", rows)}
    assert read == plain and not releases
    rows = index[len(plain) + np.random.default_rng(0).permutation(len(split))]
    read = {key: image for key, _, image in iter_images_in_order(tmp_path / "train.rec", tmp_path / "train.idx", rows)}
    assert read == split
    assert len(releases) == len(split) * MAPPED_AROUND_A_READ // rec_reader.RELEASE_BYTES == 3


@pytest.mark.parametrize("damage", ["cut inside the last record", "a record's magic overwritten"])
def test_scattered_reads_name_damage_as_reads_in_file_order_do(tmp_path, damage):
    """A record read apart that its pread cannot take as plain is read through the mapping,
    which names what is wrong with it: the same error as reading the rec in file order."""
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        for key in range(20):
            writer.add(key, 0.0, bytes([key]) * 3000)
    rows = read_index(tmp_path / "train.idx")
    rec = tmp_path / "train.rec"
    if damage == "cut inside the last record":
        os.truncate(rec, rec.stat().st_size - 100)
    else:
        with open(rec, "r+b") as stream:
            stream.seek(int(rows[7, 1]))
            stream.write(b"\0\0\0\0")
    errors = []
    for read in (iter_images, iter_images_in_order):
        with pytest.raises(RecordIOError) as error:
            list(read(rec, tmp_path / "train.idx", rows[::-1] if read is iter_images_in_order else rows))
        errors.append(str(error.value))
    assert errors[0] == errors[1]
    assert ("file ends" if damage.startswith("cut") else "expected record magic") in errors[0]


@pytest.mark.parametrize("label_mode", ["first", "sum"])
def test_reading_a_window_at_a_time_equals_reading_record_by_record(tmp_path, monkeypatch, label_mode):
    # Windows of a page or so; plain records, read a window at a time, between split ones
    # (read one by one) in shuffled physical order; scalar and array labels, past 2^24 and
    # 2^53 (float32 rounds them), -0.0, and images of 1 byte and up.
    monkeypatch.setattr(rec_reader, "RELEASE_BYTES", 4096)
    rng = random.Random(5)
    keys = rng.sample(range(2**40), 400)
    label_forms = [
        lambda index: float(index % 7),
        lambda index: [float(index % 5), 1.0],
        lambda index: [float(2**24 + 2 * index + 1), 0.0, 3.0],
        lambda index: float(2**53 + index),
        lambda index: -0.0,
        lambda index: [float(index)],
    ]
    records = {}
    for index, key in enumerate(keys):
        image = image_bytes(rng, key) if index % 9 == 0 else rng.randbytes(rng.choice([1, 2, 3, 5, 700, 6000]))
        records[key] = (label_forms[index % len(label_forms)](index), image)
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        for key in rng.sample(keys, len(keys)):
            writer.add(key, *records[key])
    rows = read_index(tmp_path / "train.idx")

    with IndexedRecordReader(tmp_path / "train.rec", tmp_path / "train.idx") as reader:
        in_file_order = rows[np.argsort(rows[:, 1])][:, 0].tolist()
        one_by_one = []
        for key in in_file_order:
            header, image = unpack_header(reader.read(key))
            one_by_one.append((key, image_label(header, label_mode, "test"), bytes(image)))
        plain = reader.heads(rows[:, 1]).intact
    assert 0 < plain.sum() < len(keys)  # both kinds are there
    assert list(iter_images(tmp_path / "train.rec", tmp_path / "train.idx", rows, label_mode)) == one_by_one
    assert {key: image for key, _, image in one_by_one} == {key: image for key, (_, image) in records.items()}
    # The labels alone, from the heads, in the order of the rows asked for (by key, or shuffled).
    label_of = {key: label for key, label, _ in one_by_one}
    for asked in (rows, rows[rng.sample(range(len(rows)), len(rows))]):
        labels = image_labels(tmp_path / "train.rec", tmp_path / "train.idx", asked, label_mode)
        assert labels.tolist() == [label_of[key] for key in asked[:, 0].tolist()]


def test_an_image_at_key_0_with_a_label_array_is_im2rec(tmp_path):
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        writer.add(0, [4.0, 1.0], b"an image")
        writer.add(1, [4.0, 0.0], b"another")
    result, rows = plan(tmp_path, property_file=False)
    assert result["layout"] == IM2REC
    assert read_all(tmp_path, result, rows) == {0: (4, b"an image"), 1: (4, b"another")}


def test_key_0_without_image_or_label_array_is_refused(tmp_path):
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        writer.add(0, 7.0, b"")
        writer.add(1, 1.0, b"image")
    with pytest.raises(DatasetError, match=r"train\.rec: key 0 holds no image and the scalar label 7\.0"):
        plan(tmp_path, property_file=False)


def test_an_im2rec_record_with_a_label_array_and_no_image_is_named_and_an_empty_image_is_read(tmp_path):
    """An empty file im2rec packed (scalar label, no bytes) is an image, for the audit to name;
    a label array without an image is an identity record where images are, refused by key."""
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        writer.add(3, 1.0, b"image")
        writer.add(9, [1.0, 2.0], b"")
        writer.add(12, 1.0, b"")
    result, rows = plan(tmp_path, property_file=False)
    assert list(iter_images(tmp_path / "train.rec", tmp_path / "train.idx", rows[rows[:, 0] != 9])) == [
        (3, 1, b"image"), (12, 1, b"")]
    with pytest.raises(DatasetError, match=r"train\.rec: image record key 9: holds no image bytes and the label "
                                           r"array \[1\.0, 2\.0\]: a header or identity record among the images"):
        read_all(tmp_path, result, rows)


def write_counted(directory, images, header):
    with DatasetWriter(directory, header=header) as writer:
        for key in range(1, images + 1):
            writer.add(key, float(key // 3), b"image %d" % key)


def test_header_counting_too_few_images_is_caught_at_the_boundary(tmp_path):
    # Images 1..9 and identity records 10..13; a header one short (as float32 rounding past
    # 2^24 can make it) would leave key 9 out and take it for an identity record.
    write_counted(tmp_path, 9, header=[9, 13])
    with pytest.raises(DatasetError, match=r"label\[0\] = 9, but key 9, the first identity record by it, holds an image"):
        plan(tmp_path)


def test_header_counting_too_many_images_is_caught(tmp_path):
    write_counted(tmp_path, 9, header=[11, 14])
    with pytest.raises(DatasetError, match=r"key 10, the last image by it, holds no image"):
        plan(tmp_path)


@pytest.mark.parametrize(
    ("images", "parallel_jobs", "chunks", "sizes"),
    [
        (2_000, 2, 1, {2_000}),  # fewer images than the smallest chunk: one chunk
        (300_000, 2, 6, {50_000}),  # 8 chunks wanted, but not below 50,000 images
        (75_000, 2, 2, {37_500}),  # one 50,000 chunk and one of 25,000 would leave a slot idle
        (100_001, 2, 4, {25_000, 25_001}),  # 3 chunks of ~50,000 take two waves: 4 make them full
        (5_822_653, 2, 30, {194_088, 194_089}),  # MS1M-ArcFace: at most 200,000 a chunk
        (5_822_653, 32, 128, {45_489, 45_490}),  # 117 chunks of 50,000 fill 4 waves of 32 jobs
        (5_822_653, 8, 32, {181_957, 181_958}),  # 32 chunks
        (42_474_557, 32, 224, {189_618, 189_619}),  # WebFace42M: 213 chunks of 200,000 fill 7 waves
        (17_091_657, 1000, 342, {49_975, 49_976}),  # fewer chunks of 50,000 than a large cluster's jobs
        (0, 2, 0, set()),
    ],
)
def test_auto_chunks(images, parallel_jobs, chunks, sizes):
    planned = auto_chunks(images, parallel_jobs)
    assert len(planned) == chunks
    assert {end - start for start, end in planned} == sizes
    # The chunks cover every image once, in order.
    starts, ends = [start for start, _ in planned], [end for _, end in planned]
    assert starts == [0, *ends[:-1]] if planned else images == 0
    assert ends[-1:] == ([images] if images else [])


@pytest.mark.parametrize(
    ("images", "parallel_jobs", "chunks", "scans", "sizes"),
    [
        (300_000, 2, 6, 2, {150_000}),  # one scan job per core instead of one per chunk
        (401, 2, 5, 2, {200, 201}),
        (9, 16, 1, 1, {9}),  # never more scans than chunks
        (5_822_653, 2, 30, 30, {194_088, 194_089}),  # at most 200,000 rows a scan job
        (5_822_653, 32, 128, 32, {181_957, 181_958}),
        (0, 2, 0, 0, set()),
    ],
)
def test_scan_positions(images, parallel_jobs, chunks, scans, sizes):
    planned = scan_positions(images, parallel_jobs, chunks)
    assert len(planned) == scans
    assert {end - start for start, end in planned} == sizes
    starts, ends = [start for start, _ in planned], [end for _, end in planned]
    assert starts == [0, *ends[:-1]] if planned else images == 0
    assert ends[-1:] == ([images] if images else [])


def test_auto_plan_records_the_jobs_it_was_made_for(tmp_path):
    write_counted(tmp_path, 9, header=None)
    result = plan_chunks(tmp_path / "train.rec", tmp_path / "train.idx", None, "auto", tmp_path / "rows.npy", 16)
    assert (result["chunk_size"], result["parallel_jobs"], result["chunks"]) == (9, 16, [[0, 9]])
    assert result["scan_chunks"] == [[0, 9]]
