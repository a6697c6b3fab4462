"""The rec output (faceprep.outputs.rec) checked with its readers: MXNet's writer re-writing the
same payloads gives the same bytes, MXNet reads every record, DALI's reader counts exactly the
images and decodes each; expected values come from the source rec read with faceprep.recordio."""

import errno
import fcntl
import io
import json
import logging
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from faceprep import atomic
from faceprep.classes import ClassTable
from faceprep.demo import encode_image
from faceprep.errors import DatasetError, OutputError
from faceprep.insightface import IM2REC, INSIGHTFACE, DatasetWriter, iter_images_in_order, plan_chunks, scan_rows
import faceprep.outputs.rec as rec_output
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
from faceprep.record_index import read_index
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import MAGIC, encode_record, pack_header
from faceprep.ownership import OWNER_FILE
from machine import lacks
from oracle import make_rec_from_spec, run_mxface_extraction, run_oracle
from workflow import REPO, kill_job_held_at, run_workflow, write_config

# Sparse labels in shuffled physical order; 10 identities, three with a single image.
LABELS = [70, 3, 3, 1000, 42, 70, 70, 3, 42, 5, 1000, 8, 8, 8, 9, 9, 11, 12, 12, 12, 13]


PNG_POSITION, SPLIT_POSITION = 13, 7


def image(position):
    """A 20x16 JPEG; at PNG_POSITION a 30x40 PNG; at SPLIT_POSITION a JPEG whose payload holds
    the magic at a 4-aligned offset, so its record is split."""
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


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """An im2rec rec written in a shuffled physical order, keys 100.. with gaps."""
    directory = tmp_path_factory.mktemp("rec_source") / "src"
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


@pytest.mark.parametrize("layout", [INSIGHTFACE, IM2REC])
def test_the_rec_is_what_mxnets_writer_writes_and_mxnet_reads_every_record(source, tmp_path, layout):
    summary, ordered, sizes = write_rec(source, tmp_path, layout)
    rec = tmp_path / "rec"
    images = source_images(source)
    class_of = {label: rank for rank, label in enumerate(sorted(set(LABELS)))}
    records = mxnet_records(rec)
    first = first_image_key(layout)
    image_records = [record for record in records if first <= record["key"] < first + len(LABELS)]
    # Class by class, each class's images in source key order; IRHeader (0, class, key, 0).
    expected = sorted(images, key=lambda key: (class_of[images[key][0]], key))
    assert [bytes.fromhex(record["payload_hex"]) for record in image_records] == [images[key][1] for key in expected]
    assert [(record["key"], record["flag"], record["label"], record["id"], record["id2"]) for record in image_records] == [
        (first + position, 0, [float(class_of[images[key][0]])], first + position, 0) for position, key in enumerate(expected)]
    if layout == INSIGHTFACE:
        assert [record["key"] for record in records] == list(range(len(LABELS) + 11))
        header, identities = records[0], records[len(LABELS) + 1:]
        assert (header["flag"], header["label"], header["payload_hex"]) == (2, [22.0, 32.0], "")
        starts = {}
        for position, key in enumerate(expected):
            starts.setdefault(class_of[images[key][0]], []).append(first + position)
        assert [record["label"] for record in identities] == [[float(keys[0]), float(keys[-1] + 1)] for _, keys in sorted(starts.items())]
    else:
        assert [record["key"] for record in records] == list(range(len(LABELS)))
    assert (summary["images"], summary["classes"]) == (len(LABELS), 10)
    assert sizes == {"20x16": len(LABELS) - 1, "30x40": 1}
    assert (rec / "property").read_text() == "10,20,16"
    lst = [line.split("\t") for line in (rec / "train.lst").read_text().splitlines()]
    assert lst == [[str(first + position), f"{class_of[images[key][0]]:f}", str(key)] for position, key in enumerate(expected)]

    # MXNet's own writer, given the same payloads in the file's order, writes the same bytes.
    spec = [{"key": record["key"], "label": record["label"][0] if record["flag"] == 0 else record["label"],
             "id": record["id"], "id2": record["id2"], "payload_hex": record["payload_hex"]} for record in records]
    replay = make_rec_from_spec(spec, tmp_path / "replay")
    assert (replay / "train.rec").read_bytes() == (rec / "train.rec").read_bytes()
    assert (replay / "train.idx").read_bytes() == (rec / "train.idx").read_bytes()


def test_a_source_whose_writer_did_not_split_its_records_is_split_as_mxnets_writer_splits(tmp_path):
    """Readers take a record framed whole with the magic inside its payload (a writer that
    does not split, as some hand-written packers do), so such a rec is a source: re-packed, its
    records are split where MXNet's writer splits them, byte for byte."""
    rng = np.random.default_rng(8)
    source, images, rec = tmp_path / "source", {}, bytearray()
    source.mkdir()
    with open(source / "train.idx", "w") as idx:
        for key in range(60):
            image = bytearray(encode_image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
            at = 4 * int(rng.integers(1, len(image) // 4 - 1))  # an aligned word of the payload too
            image[at : at + 4] = struct.pack("<I", MAGIC)
            images[key] = bytes(image)
            payload = pack_header(float(key % 4) if key % 5 else [float(key % 4), 9.0], images[key], key)
            idx.write(f"{key}\t{len(rec)}\n")
            rec += struct.pack("<II", MAGIC, len(payload)) + payload + bytes(-len(payload) % 4)
    (source / "train.rec").write_bytes(bytes(rec))
    write_rec(source, tmp_path, IM2REC, chunk_size=16)
    records = mxnet_records(tmp_path / "rec")
    expected = sorted(images, key=lambda key: (key % 4, key))
    assert [bytes.fromhex(record["payload_hex"]) for record in records] == [images[key] for key in expected]
    spec = [{"key": record["key"], "label": record["label"][0], "id": record["id"], "id2": record["id2"],
             "payload_hex": record["payload_hex"]} for record in records]
    replay = make_rec_from_spec(spec, tmp_path / "replay")
    written = (tmp_path / "rec" / "train.rec").read_bytes()
    assert (replay / "train.rec").read_bytes() == written
    assert (replay / "train.idx").read_bytes() == (tmp_path / "rec" / "train.idx").read_bytes()
    # Every image's record split once (4 bytes more); the 12 array labels (8 bytes each) gone.
    assert len(written) == len(rec) + 4 * 60 - 8 * 12


def test_a_shuffled_im2rec_rec_holds_every_image_once_in_a_seeded_order(source, tmp_path):
    _, ordered, _ = write_rec(source, tmp_path / "a", IM2REC, "shuffled", seed=4)
    _, again, _ = write_rec(source, tmp_path / "b", IM2REC, "shuffled", seed=4)
    assert (tmp_path / "a" / "rec" / "train.rec").read_bytes() == (tmp_path / "b" / "rec" / "train.rec").read_bytes()
    assert sorted(ordered[:, 0].tolist()) == sorted(source_images(source))
    assert ordered[:, 0].tolist() != sorted(ordered[:, 0].tolist())
    records = mxnet_records(tmp_path / "a" / "rec")
    images = source_images(source)
    assert [bytes.fromhex(record["payload_hex"]) for record in records] == [images[key][1] for key in ordered[:, 0].tolist()]


@pytest.mark.parametrize("buffer_bytes", [64, 2500])
def test_a_part_refilling_its_buffer_writes_the_same_bytes(source, tmp_path, monkeypatch, buffer_bytes):
    """A part frames its records in one buffer that it refills in place. With a buffer smaller
    than every record (grown for each) or holding a few (refilled over the bytes of others),
    the rec is the one a buffer holding the whole part gives (the test above: MXNet's bytes)."""
    sizes = [len(data) for _, data in source_images(source).values()]
    assert min(sizes) > 64 and max(sizes) < 2500 < 3 * min(sizes)
    write_rec(source, tmp_path / "whole", INSIGHTFACE)
    monkeypatch.setattr(rec_output, "WRITE_BUFFER", buffer_bytes)
    write_rec(source, tmp_path / "small", INSIGHTFACE)
    whole, small = tmp_path / "whole" / "rec", tmp_path / "small" / "rec"
    assert (small / "train.rec").read_bytes() == (whole / "train.rec").read_bytes()
    assert (small / "train.idx").read_bytes() == (whole / "train.idx").read_bytes()


def test_a_partial_rec_left_longer_by_an_earlier_run_is_overwritten_whole(source, tmp_path):
    """A reused rec directory: the parts write in place into train.rec.partial, which an earlier,
    larger run left full of other bytes; the rec comes out as from an empty directory."""
    write_rec(source, tmp_path / "clean", INSIGHTFACE)
    (tmp_path / "reused" / "rec").mkdir(parents=True)
    clean = (tmp_path / "clean" / "rec" / "train.rec").read_bytes()
    (tmp_path / "reused" / "rec" / PARTIAL).write_bytes(np.random.default_rng(0).bytes(3 * len(clean)))
    write_rec(source, tmp_path / "reused", INSIGHTFACE)
    assert (tmp_path / "reused" / "rec" / "train.rec").read_bytes() == clean
    assert not (tmp_path / "reused" / "rec" / PARTIAL).exists()


def test_a_part_refuses_records_that_are_not_what_was_planned(source, tmp_path):
    """The parts' ranges come from the sizes scanned before: an image that changed since then
    (in size, or now holding the RecordIO magic where a writer splits it) would shift every
    record after it, so the part stops, naming the file and record; so does a part that
    ends short of its range."""
    classes = ClassTable(np.array(sorted(LABELS[:2])))
    rows = np.array([[source_key(0), 0, classes.class_of(LABELS[0])], [source_key(1), 0, classes.class_of(LABELS[1])]])
    plain = bytes(range(256)) * 4  # 1,024 bytes: a 1,056-byte record, no aligned magic
    with_magic = plain[:100] + MAGIC.to_bytes(4, "little") + plain[104:]  # byte 124 of its payload
    partial, index = tmp_path / PARTIAL, tmp_path / "part.npz"
    with pytest.raises(DatasetError, match=rf"{PARTIAL}: record 0 \(source key 100\) is 1064 bytes framed, 1056 "
                       "planned: the source changed since it was planned"):
        with RecPartWriter(partial, index, rows, 0, classes, [0, 1056, 2112]) as writer:
            writer.write(source_key(0), LABELS[0], plain + b"12345678")
    with pytest.raises(DatasetError, match=rf"{PARTIAL}: record 1 \(source key 103\) holds the RecordIO magic at "
                       "byte 132 of its record, where a writer splits it; there was none when it was planned"):
        with RecPartWriter(partial, index, rows, 0, classes, [0, 1056, 2112]) as writer:
            writer.write(source_key(0), LABELS[0], plain)
            writer.write(source_key(1), LABELS[1], with_magic)
    with pytest.raises(DatasetError, match=r"1 records of 1056 bytes written, 2 of 2112 planned"):
        with RecPartWriter(partial, index, rows, 0, classes, [0, 1056, 2112]) as writer:
            writer.write(source_key(0), LABELS[0], plain)
    assert not index.exists()
    # Planned with its split, the same image is written as MXNet's writer frames it.
    with RecPartWriter(partial, index, rows[1:], 0, classes, [0, 1060]) as writer:
        writer.write(source_key(1), LABELS[1], with_magic)
    assert partial.read_bytes()[:1060] == encode_record(pack_header(float(rows[1, -1]), with_magic, 0))


# Another process taking a write lock on bytes [argv[2], argv[3]) of file argv[1]: exit 1 if
# it is held, else 0; with argv[4], it keeps the lock until its stdin closes.
LOCKER = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_WRONLY)
begin, end = int(sys.argv[2]), int(sys.argv[3])
try:
    fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, end - begin, begin)
except OSError:
    sys.exit(1)
if len(sys.argv) > 4:
    print("locked", flush=True)
    sys.stdin.read()
"""


def locked_elsewhere(path, begin, end):
    """Whether bytes [begin, end) of ``path`` are under a write lock that another process cannot take."""
    return subprocess.run([sys.executable, "-c", LOCKER, str(path), str(begin), str(end)]).returncode == 1


def test_each_writer_of_the_partial_rec_holds_a_lock_on_just_the_bytes_it_writes(source, tmp_path, monkeypatch):
    """Parts may run on several machines over NFS, whose client widens a write to the page
    around it unless the file holds byte-range locks: each part holds a write lock on its own
    range while it writes, the assembly on the header and identity records, and together the
    ranges cover the rec once. A range another process holds stops a part, naming it."""
    plan, ordered, offsets, classes = order_source(source, tmp_path / "work", INSIGHTFACE)
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    partial = rec_dir / PARTIAL
    start, end = plan["chunks"][1]
    begin, stop = int(offsets[start]), int(offsets[end])
    with RecPartWriter(partial, rec_dir / "part.npz", ordered[start:end], first_image_key(INSIGHTFACE) + start,
                       classes, offsets[start : end + 1]) as writer:
        assert locked_elsewhere(partial, begin, begin + 1) and locked_elsewhere(partial, stop - 1, stop)
        assert not locked_elsewhere(partial, begin - 1, begin) and not locked_elsewhere(partial, stop, stop + 1)
        for record in iter_images_in_order(source / "train.rec", source / "train.idx", ordered[start:end, :2]):
            writer.write(*record)
    assert not locked_elsewhere(partial, begin, stop)

    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(partial), str(stop - 8), str(stop + 8), "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputError, match=rf"bytes {begin}..{stop} are being written by another process"):
            RecPartWriter(partial, rec_dir / "part.npz", ordered[start:end], first_image_key(INSIGHTFACE) + start,
                          classes, offsets[start : end + 1])
    finally:
        holder.communicate("")

    locked = []
    lock_range = atomic._lock_range
    monkeypatch.setattr(atomic, "_lock_range", lambda descriptor, name, first, last: (
        locked.append((first, last)), lock_range(descriptor, name, first, last)))
    write_rec(source, tmp_path / "whole", INSIGHTFACE)
    rec_bytes = (tmp_path / "whole" / "rec" / "train.rec").stat().st_size
    assert len(locked) == len(plan["chunks"]) + 2  # the parts, the header, the identity records
    covered = 0
    for first, last in sorted(locked):
        assert first == covered < last
        covered = last
    assert covered == rec_bytes


@pytest.mark.parametrize("answer", [errno.ENOLCK, errno.ENOSYS])
def test_where_the_filesystem_cannot_lock_the_rec_is_written_alike_with_a_warning(source, tmp_path, monkeypatch,
                                                                                   caplog, answer):
    write_rec(source, tmp_path / "locked", IM2REC)

    def refuse(*args):
        raise OSError(answer, os.strerror(answer))

    monkeypatch.setattr(fcntl, "lockf", refuse)
    with caplog.at_level(logging.WARNING, "faceprep.atomic"):
        write_rec(source, tmp_path / "unlocked", IM2REC)
    assert (tmp_path / "unlocked" / "rec" / "train.rec").read_bytes() == (
        tmp_path / "locked" / "rec" / "train.rec").read_bytes()
    assert caplog.records and all("cannot lock bytes" in record.getMessage() and "NFS" in record.getMessage()
                                  for record in caplog.records)


def test_on_nfs_each_writer_drops_its_machines_cached_pages_of_the_rec_once_they_are_on_disk(source, tmp_path,
                                                                                              monkeypatch):
    """A machine that wrote part of a page over NFS may keep zeros in its cache where another
    machine wrote the rest: on NFS (by the filesystem's type) every part and the assembly drop
    the file's cached pages after syncing; elsewhere nothing is dropped."""
    advised = []
    advise = os.posix_fadvise

    def spy(descriptor, offset, length, advice):
        advised.append((offset, length, advice))
        advise(descriptor, offset, length, advice)

    monkeypatch.setattr(atomic.os, "posix_fadvise", spy)
    write_rec(source, tmp_path / "local", INSIGHTFACE)
    assert advised == []
    descriptor = os.open(tmp_path / "local" / "rec" / "train.rec", os.O_RDONLY)
    try:  # this machine's filesystem, read from fstatfs: a known type, not NFS
        assert atomic._filesystem_type(descriptor) not in (None, 0x6969)
    finally:
        os.close(descriptor)
    monkeypatch.setattr(atomic, "_filesystem_type", lambda descriptor: 0x6969)  # NFS_SUPER_MAGIC
    summary, ordered, sizes = write_rec(source, tmp_path / "nfs", INSIGHTFACE)
    chunks = len(order_source(source, tmp_path / "plan", INSIGHTFACE)[0]["chunks"])
    assert advised == [(0, 0, os.POSIX_FADV_DONTNEED)] * (chunks + 1)
    assert (tmp_path / "nfs" / "rec" / "train.rec").read_bytes() == (tmp_path / "local" / "rec" / "train.rec").read_bytes()


def test_record_sizes_are_what_a_writer_frames_whatever_wrote_the_source(tmp_path):
    """A rec's label scan sizes every image's record in the output from the source's bytes: a
    source whose writer framed records whole, magic words left inside (readers do not mind),
    at aligned and unaligned places, with array labels, listed out of file order, gives the
    sizes MXNet's framing (encode_record) gives those images; so does a source that split them."""
    rng = np.random.default_rng(4)
    magic = struct.pack("<I", MAGIC)
    images, offsets = {}, []
    rec = bytearray()
    for key in range(400):
        image = bytearray(rng.bytes(int(rng.integers(1, 200))))
        for _ in range(int(rng.integers(0, 3))):
            at = int(rng.integers(0, len(image)))
            image[at : at + 4] = magic
        images[key] = bytes(image)
        payload = pack_header(float(key % 9) if key % 3 else [float(key % 9)] * (key % 4 + 1), images[key], key)
        offsets.append(len(rec))
        rec += struct.pack("<II", MAGIC, len(payload)) + payload + bytes(-len(payload) % 4)
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    listed = rng.permutation(400)
    (tmp_path / "train.idx").write_text("".join(f"{key}\t{offsets[key]}\n" for key in listed.tolist()))
    rows = read_index(tmp_path / "train.idx")
    rows = rows[np.argsort(rows[:, 0])]
    expected = [len(encode_record(pack_header(0.0, images[key], 1))) for key in rows[:, 0].tolist()]
    labels, sizes = scan_rows(tmp_path / "train.rec", tmp_path / "train.idx", rows)
    assert sizes.tolist() == expected and labels.tolist() == [key % 9 for key in rows[:, 0].tolist()]
    assert sum(size != len(images[key]) + 32 + -len(images[key]) % 4 for key, size in enumerate(expected)) > 50
    with DatasetWriter(tmp_path / "split", IM2REC, image_size=None) as writer:  # splits at aligned magic words
        for key in listed.tolist():
            writer.add(key, float(key % 9), images[key])
    rows = read_index(tmp_path / "split" / "train.idx")
    rows = rows[np.argsort(rows[:, 0])]
    assert scan_rows(tmp_path / "split" / "train.rec", tmp_path / "split" / "train.idx", rows)[1].tolist() == expected


def test_layouts_refuse_what_they_cannot_hold():
    with pytest.raises(DatasetError, match="rec_order 'shuffled' needs rec_layout 'im2rec'"):
        check_layout(INSIGHTFACE, "shuffled", 10, 2)
    with pytest.raises(DatasetError, match=r"N\+1\+C = 16777217, past 2\*\*24 .*float32.*insightface #1589.*rec_layout 'im2rec'"):
        check_layout(INSIGHTFACE, "source", 2**24 - 10, 10)
    check_layout(INSIGHTFACE, "source", 2**24 - 11, 10)  # N+1+C = 2^24 exactly: held
    check_layout(IM2REC, "shuffled", 2**30, 10**6)


def test_verification_finds_a_changed_record(source, tmp_path):
    _, ordered, _ = write_rec(source, tmp_path, IM2REC)
    rec = tmp_path / "rec" / "train.rec"
    data = bytearray(rec.read_bytes())
    data[-20] ^= 1
    rec.write_bytes(bytes(data))
    indexes = sorted((tmp_path / "rec").glob("*.npz"))
    with pytest.raises(DatasetError, match=r"train\.rec: key 20: payload CRC-32C differs"):
        verify_rec(tmp_path / "rec", IM2REC, ordered, indexes)
    # As the workflow runs it: the rec is partial again and the part holding key 20 (the last of
    # 21 images in parts of 6) is forgotten, so that the next run writes it and assembles the rec.
    with pytest.raises(DatasetError, match=r"moved train.rec back to train.rec.partial and forgot the 1 parts"):
        verify_rec(tmp_path / "rec", IM2REC, ordered, indexes, forget_damaged=True)
    assert not rec.exists() and (tmp_path / "rec" / PARTIAL).read_bytes() == bytes(data)
    assert sorted(path.name for path in (tmp_path / "rec").glob("train.rec.part-*")) == [
        f"train.rec.part-{chunk:05d}.npz" for chunk in range(3)]


@pytest.mark.parametrize("layout", [INSIGHTFACE, IM2REC])
def test_verification_finds_a_record_whose_irheader_names_another_class_or_key(source, tmp_path, layout):
    """Records whose framing is intact are checked a window at a time; one whose IRHeader
    holds another class, another key or flag, with its payload's CRC unchanged or not, is
    still named."""
    _, ordered, _ = write_rec(source, tmp_path, layout)
    rec = tmp_path / "rec" / "train.rec"
    offsets = dict(read_index(tmp_path / "rec" / "train.idx").tolist())
    first = first_image_key(layout)
    with open(rec, "r+b") as stream:
        stream.seek(offsets[first + 3] + 8 + 4)  # key first+3: its label
        stream.write(struct.pack("<f", float(ordered[3, -1] + 1)))
        stream.seek(offsets[first + 5] + 8 + 8)  # key first+5: its id
        stream.write(struct.pack("<Q", first + 6))
    indexes = sorted((tmp_path / "rec").glob("*.npz"))
    with pytest.raises(DatasetError) as error:
        verify_rec(tmp_path / "rec", layout, ordered, indexes)
    assert f"key {first + 3}: IRHeader (0, {float(ordered[3, -1] + 1)}, {first + 3}, 0)" in str(error.value)
    assert f"key {first + 5}: IRHeader (0, {float(ordered[5, -1])}, {first + 6}, 0)" in str(error.value)
    assert str(error.value).count("IRHeader") == 2


@pytest.mark.parametrize("layout", [INSIGHTFACE, IM2REC])
def test_verification_finds_records_that_do_not_follow_each_other(source, tmp_path, layout):
    """Intact records with the right keys, classes and checksums, but a gap before one of
    them (the idx moved with it) and bytes after the last: both named."""
    _, ordered, _ = write_rec(source, tmp_path, layout)
    rec_dir = tmp_path / "rec"
    data, index = (rec_dir / "train.rec").read_bytes(), read_index(rec_dir / "train.idx")
    key = first_image_key(layout) + 7
    gap_at = int(index[index[:, 0] == key, 1][0])
    (rec_dir / "train.rec").write_bytes(data[:gap_at] + bytes(4) + data[gap_at:] + bytes(8))
    index[index[:, 1] >= gap_at, 1] += 4
    (rec_dir / "train.idx").write_text("".join(f"{k}\t{offset}\n" for k, offset in index.tolist()))
    indexes = sorted(rec_dir.glob("*.npz"))
    with pytest.raises(DatasetError) as error:
        verify_rec(rec_dir, layout, ordered, indexes)
    assert str(error.value).splitlines()[1:] == [
        f"  {rec_dir / 'train.rec'}: key {key} starts at byte {gap_at + 4}, the record before it ends at {gap_at}"]
    (rec_dir / "train.rec").write_bytes(data + bytes(8))
    index[index[:, 1] >= gap_at, 1] -= 4
    (rec_dir / "train.idx").write_text("".join(f"{k}\t{offset}\n" for k, offset in index.tolist()))
    with pytest.raises(DatasetError, match=rf"the last record ends at byte {len(data)}, the file at {len(data) + 8}"):
        verify_rec(rec_dir, layout, ordered, indexes)


def test_a_part_whose_bytes_were_lost_is_written_again_and_the_rec_assembled_again(source, tmp_path):
    """train.rec.partial lost after its parts' indexes were written (deleted, or a crash before
    the disk had it): those records are zeros. The verification names them, forgets their
    part and makes the rec partial again; that part written again and the rec assembled again
    give the same bytes."""
    write_rec(source, tmp_path, IM2REC)
    rec_dir = tmp_path / "rec"
    good = (rec_dir / "train.rec").read_bytes()
    _, ordered, offsets, classes = order_source(source, tmp_path / "order", IM2REC)
    indexes = sorted(rec_dir.glob("train.rec.part-*.npz"))
    (rec_dir / "train.rec").write_bytes(good[: offsets[6]] + bytes(offsets[12] - offsets[6]) + good[offsets[12]:])
    with pytest.raises(DatasetError, match=r"(?s)\(key 6\): expected record magic .*\(key 11\).*forgot the 1 parts holding them"):
        verify_rec(rec_dir, IM2REC, ordered, indexes, forget_damaged=True)
    assert [path.exists() for path in indexes] == [True, False, True, True]
    assert not (rec_dir / "train.rec").exists()
    write_part(source, rec_dir, IM2REC, 1, ordered, offsets, classes, 6, 12)
    assemble_rec(rec_dir, IM2REC, ordered, offsets, indexes, (20, 16))
    verify_rec(rec_dir, IM2REC, ordered, indexes)
    assert (rec_dir / "train.rec").read_bytes() == good


DALI_READS = """
import json, sys
from nvidia.dali import fn, pipeline_def, types

@pipeline_def(batch_size=1, num_threads=2, device_id=None)
def pipeline(rec, idx):
    jpegs, labels = fn.readers.mxnet(path=rec, index_path=idx, random_shuffle=False, name="reader")
    return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

pipe = pipeline(sys.argv[1], sys.argv[2])
pipe.build()
samples = pipe.reader_meta("reader")["epoch_size"]
decoded = []
for _ in range(samples):
    images, labels = pipe.run()
    decoded.append([list(images.at(0).shape), float(labels.at(0)[0])])
print(json.dumps({"samples": samples, "decoded": decoded}))
"""


def dali_python():
    python = REPO / ".venv-dali" / "bin" / "python"
    if not python.exists():
        lacks(f"DALI venv missing ({python} not found); create it with `make dali-venv`")
    return python


def test_dali_counts_exactly_the_images_of_an_im2rec_rec_and_decodes_each(source, tmp_path):
    """DALI's fn.readers.mxnet on the CPU (device_id=None): an insightface rec's header and
    identity records would count as samples (DALI #2806); an im2rec one holds only images."""
    _, ordered, _ = write_rec(source, tmp_path, IM2REC)
    result = subprocess.run([str(dali_python()), "-c", DALI_READS, str(tmp_path / "rec" / "train.rec"),
                             str(tmp_path / "rec" / "train.idx")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    read = json.loads(result.stdout.splitlines()[-1])
    assert read["samples"] == len(LABELS)
    for (shape, label), (key, _, image_class) in zip(read["decoded"], ordered.tolist()):
        assert label == image_class
        assert shape == ([30, 40, 3] if key == source_key(PNG_POSITION) else [20, 16, 3])


# --- Through the workflow -------------------------------------------------------------------------


def run_rec_workflow(root, source, **settings):
    dataset = {"source": str(source), "outputs": ["rec"], "rec": str(root / "rec"), "bins": [], **settings}
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root / "config.yaml", {"d": dataset}, chunk_size=8)
    return run_workflow(root / "work", config), config


@pytest.mark.e2e
def test_a_rec_repacked_by_the_workflow_is_read_by_mxface_dataset_and_dali(source, tmp_path):
    """An im2rec source (shuffled physical order, sparse labels) re-packed with a header for
    MXFaceDataset, and shuffled without one for DALI; parts are gone, a rerun has nothing to do."""
    images = source_images(source)
    class_of = {label: rank for rank, label in enumerate(sorted(set(LABELS)))}
    run_rec_workflow(tmp_path / "insightface", source)
    rec = tmp_path / "insightface" / "rec"
    assert sorted(path.name for path in rec.iterdir()) == sorted([OWNER_FILE, "train.rec", "train.idx", "train.lst", "property"])
    extracted = run_mxface_extraction("insightface", rec, tmp_path / "mxface")
    read = {(int(path.parent.name), path.read_bytes()) for path in extracted.rglob("*.jpg")}
    assert read == {(class_of[label], data) for label, data in images.values()}
    summary = json.loads((tmp_path / "insightface" / "work" / "results" / "d" / "rec.json").read_text())
    assert (summary["images"], summary["classes"], summary["records"]) == (len(LABELS), 10, len(LABELS) + 11)
    table = (tmp_path / "insightface" / "work" / "results" / "d" / "report" / "rec.html").read_text()
    assert f"{len(LABELS)} of 10 classes, {len(LABELS) + 11} records" in table and "20x16: 20, 30x40: 1" in table

    _, config = run_rec_workflow(tmp_path / "dali", source, rec_layout="im2rec", rec_order="shuffled", rec_seed=3)
    rec = tmp_path / "dali" / "rec"
    result = subprocess.run([str(dali_python()), "-c", DALI_READS, str(rec / "train.rec"), str(rec / "train.idx")],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["samples"] == len(LABELS)
    lst = [line.split("\t") for line in (rec / "train.lst").read_text().splitlines()]
    assert sorted(int(source_key) for _, _, source_key in lst) == sorted(images)
    assert [int(source_key) for _, _, source_key in lst] != sorted(images)  # shuffled
    rerun = run_workflow(tmp_path / "dali" / "work", config, "--dry-run")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


@pytest.mark.e2e
def test_a_shuffled_insightface_rec_is_refused_before_any_job(source, tmp_path):
    dataset = {"source": str(source), "outputs": ["rec"], "rec": str(tmp_path / "rec"), "bins": [],
               "rec_order": "shuffled"}
    config = write_config(tmp_path / "config.yaml", {"d": dataset})
    result = run_workflow(tmp_path / "work", config, check=False)
    assert result.returncode != 0
    assert "config: datasets.d.rec_order: 'shuffled' needs rec_layout 'im2rec'" in result.stdout + result.stderr
    assert not (tmp_path / "rec").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(("held", "script"), [("train.rec.part-00001.npz.tmp", "write_rec_part"),
                                              ("train.idx.tmp", "assemble_rec")])
def test_a_run_killed_while_writing_the_rec_resumes_to_the_same_bytes(source, tmp_path, held, script):
    run_rec_workflow(tmp_path / "reference", source)
    root = tmp_path / "killed"
    root.mkdir()
    dataset = {"source": str(source), "outputs": ["rec"], "rec": str(root / "rec"), "bins": []}
    config = write_config(root / "config.yaml", {"d": dataset}, chunk_size=8)
    kill_job_held_at(root / "rec" / held, root / "work", config, script, root / "run.log")
    assert not (root / "rec" / "train.rec").exists()  # no train.rec until it is complete
    run_workflow(root / "work", config, "--unlock")
    run_workflow(root / "work", config)
    for name in ("train.rec", "train.idx", "train.lst", "property"):
        assert (root / "rec" / name).read_bytes() == (tmp_path / "reference" / "rec" / name).read_bytes(), name
    assert not list((root / "rec").glob("*.part*")) and not list((root / "rec").glob("*.tmp"))
