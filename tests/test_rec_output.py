"""The rec output (faceprep.outputs.rec) written by plain calls and checked with MXNet: its
writer, re-writing the same payloads, gives the same bytes, and MXNet reads every record; the
parts refuse what was not planned, and the verification finds what changed. Expected values
come from the source rec read with faceprep.recordio."""

import struct
from collections import Counter

import numpy as np
import pytest

import faceprep.outputs.rec as rec_output
from faceprep.audit.join import most_common_size
from faceprep.classes import ClassTable
from faceprep.demo import encode_image
from faceprep.errors import DatasetError
from faceprep.insightface import IM2REC, INSIGHTFACE, DatasetWriter, scan_rows
from faceprep.outputs.rec import (PARTIAL, RecPartWriter, assemble_rec, check_layout, first_image_key, property_size,
                                  size_names)
from faceprep.rec_check import verify_rec
from faceprep.record_index import read_index
from faceprep.recordio import MAGIC, encode_record, pack_header
from oracle import make_rec_from_spec
from rec_samples import LABELS, mxnet_records, order_source, source_images, source_key, write_part, write_rec


@pytest.mark.parametrize("layout", [INSIGHTFACE, IM2REC])
def test_the_rec_is_what_mxnets_writer_writes_and_mxnet_reads_every_record(sparse_rec, tmp_path, layout):
    summary, ordered, sizes = write_rec(sparse_rec, tmp_path, layout)
    rec = tmp_path / "rec"
    images = source_images(sparse_rec)
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
    assert sizes == {(20, 16): len(LABELS) - 1, (30, 40): 1}  # (height, width)
    assert size_names(sizes) == {"16x20": len(LABELS) - 1, "40x30": 1}  # as the audit names them
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


def test_a_shuffled_im2rec_rec_holds_every_image_once_in_a_seeded_order(sparse_rec, tmp_path):
    _, ordered, _ = write_rec(sparse_rec, tmp_path / "a", IM2REC, "shuffled", seed=4)
    _, again, _ = write_rec(sparse_rec, tmp_path / "b", IM2REC, "shuffled", seed=4)
    assert (tmp_path / "a" / "rec" / "train.rec").read_bytes() == (tmp_path / "b" / "rec" / "train.rec").read_bytes()
    assert sorted(ordered[:, 0].tolist()) == sorted(source_images(sparse_rec))
    assert ordered[:, 0].tolist() != sorted(ordered[:, 0].tolist())
    records = mxnet_records(tmp_path / "a" / "rec")
    images = source_images(sparse_rec)
    assert [bytes.fromhex(record["payload_hex"]) for record in records] == [images[key][1] for key in ordered[:, 0].tolist()]


@pytest.mark.parametrize("buffer_bytes", [64, 2500])
def test_a_part_refilling_its_buffer_writes_the_same_bytes(sparse_rec, tmp_path, monkeypatch, buffer_bytes):
    """A part frames its records in one buffer that it refills in place. With a buffer smaller
    than every record (grown for each) or holding a few (refilled over the bytes of others),
    the rec is the one a buffer holding the whole part gives (the test above: MXNet's bytes)."""
    sizes = [len(data) for _, data in source_images(sparse_rec).values()]
    assert min(sizes) > 64 and max(sizes) < 2500 < 3 * min(sizes)
    write_rec(sparse_rec, tmp_path / "whole", INSIGHTFACE)
    monkeypatch.setattr(rec_output, "WRITE_BUFFER", buffer_bytes)
    write_rec(sparse_rec, tmp_path / "small", INSIGHTFACE)
    whole, small = tmp_path / "whole" / "rec", tmp_path / "small" / "rec"
    assert (small / "train.rec").read_bytes() == (whole / "train.rec").read_bytes()
    assert (small / "train.idx").read_bytes() == (whole / "train.idx").read_bytes()


def test_a_partial_rec_left_longer_by_an_earlier_run_is_overwritten_whole(sparse_rec, tmp_path):
    """A reused rec directory: the parts write in place into train.rec.partial, which an earlier,
    larger run left full of other bytes; the rec comes out as from an empty directory."""
    write_rec(sparse_rec, tmp_path / "clean", INSIGHTFACE)
    (tmp_path / "reused" / "rec").mkdir(parents=True)
    clean = (tmp_path / "clean" / "rec" / "train.rec").read_bytes()
    (tmp_path / "reused" / "rec" / PARTIAL).write_bytes(np.random.default_rng(0).bytes(3 * len(clean)))
    write_rec(sparse_rec, tmp_path / "reused", INSIGHTFACE)
    assert (tmp_path / "reused" / "rec" / "train.rec").read_bytes() == clean
    assert not (tmp_path / "reused" / "rec" / PARTIAL).exists()


def test_a_part_refuses_records_that_are_not_what_was_planned(sparse_rec, tmp_path):
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


@pytest.mark.parametrize("layout", [INSIGHTFACE, IM2REC])
def test_an_empty_image_record_is_carried_over_as_mxnets_writer_writes_it(tmp_path, layout):
    """im2rec packs an empty file (a failed download) as an image record with no bytes. The
    re-packed rec holds it the same way, among the others, and passes the verification: MXNet
    reads every record, and its own writer, given the same payloads, writes the same bytes."""
    source, images = tmp_path / "src", {5: encode_image(np.zeros((20, 16, 3), np.uint8)), 6: b"", 9: b"", 12: b"x" * 70}
    with DatasetWriter(source, IM2REC, image_size=None) as writer:
        for key, data in images.items():
            writer.add(key, float(key % 2), data)
    summary, _, sizes = write_rec(source, tmp_path, layout, chunk_size=2)
    assert summary["images"] == 4 and sizes == {(20, 16): 1, None: 3}
    records = mxnet_records(tmp_path / "rec")
    first = first_image_key(layout)
    assert [bytes.fromhex(record["payload_hex"]) for record in records[first : first + 4]] == [images[key] for key in (6, 12, 5, 9)]
    assert [(record["flag"], record["label"]) for record in records[first : first + 4]] == [(0, [0.0])] * 2 + [(0, [1.0])] * 2
    spec = [{"key": record["key"], "label": record["label"][0] if record["flag"] == 0 else record["label"],
             "id": record["id"], "id2": record["id2"], "payload_hex": record["payload_hex"]} for record in records]
    replay = make_rec_from_spec(spec, tmp_path / "replay")
    assert (replay / "train.rec").read_bytes() == (tmp_path / "rec" / "train.rec").read_bytes()


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


def test_the_property_size_is_the_audits_most_common_size_ties_included():
    """property's ``H,W`` and the report's ``WxH`` name the size the audit finds most common."""
    for sizes in (Counter({(20, 16): 3, (16, 20): 3, None: 9}), Counter({(16, 20): 3, (20, 16): 3}),
                  Counter({(112, 112): 2, (112, 96): 1, (96, 112): 2})):
        height, width = property_size(sizes, (0, 0))
        named = {name: count for name, count in size_names(sizes).items() if name != "unknown"}
        assert most_common_size(named) == f"{width}x{height}"
    assert property_size(Counter({None: 4}), (112, 112)) == (112, 112)


def test_layouts_refuse_what_they_cannot_hold():
    with pytest.raises(DatasetError, match="rec_order 'shuffled' needs rec_layout 'im2rec'"):
        check_layout(INSIGHTFACE, "shuffled", 10, 2)
    with pytest.raises(DatasetError, match=r"N\+1\+C = 16777217, past 2\*\*24 .*float32.*insightface #1589.*rec_layout 'im2rec'"):
        check_layout(INSIGHTFACE, "source", 2**24 - 10, 10)
    check_layout(INSIGHTFACE, "source", 2**24 - 11, 10)  # N+1+C = 2^24 exactly: held
    check_layout(IM2REC, "shuffled", 2**30, 10**6)


def test_verification_finds_a_changed_record(sparse_rec, tmp_path):
    _, ordered, _ = write_rec(sparse_rec, tmp_path, IM2REC)
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
def test_verification_finds_a_record_whose_irheader_names_another_class_or_key(sparse_rec, tmp_path, layout):
    """Records whose framing is intact are checked a window at a time; one whose IRHeader
    holds another class, another key or flag, with its payload's CRC unchanged or not, is
    still named."""
    _, ordered, _ = write_rec(sparse_rec, tmp_path, layout)
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
def test_verification_finds_records_that_do_not_follow_each_other(sparse_rec, tmp_path, layout):
    """Intact records with the right keys, classes and checksums, but a gap before one of
    them (the idx moved with it) and bytes after the last: both named."""
    _, ordered, _ = write_rec(sparse_rec, tmp_path, layout)
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


def test_a_part_whose_bytes_were_lost_is_written_again_and_the_rec_assembled_again(sparse_rec, tmp_path):
    """train.rec.partial lost after its parts' indexes were written (deleted, or a crash before
    the disk had it): those records are zeros. The verification names them, forgets their
    part and makes the rec partial again; that part written again and the rec assembled again
    give the same bytes."""
    write_rec(sparse_rec, tmp_path, IM2REC)
    rec_dir = tmp_path / "rec"
    good = (rec_dir / "train.rec").read_bytes()
    _, ordered, offsets, classes = order_source(sparse_rec, tmp_path / "order", IM2REC)
    indexes = sorted(rec_dir.glob("train.rec.part-*.npz"))
    (rec_dir / "train.rec").write_bytes(good[: offsets[6]] + bytes(offsets[12] - offsets[6]) + good[offsets[12]:])
    with pytest.raises(DatasetError, match=r"(?s)\(key 6\): expected record magic .*\(key 11\).*forgot the 1 parts holding them"):
        verify_rec(rec_dir, IM2REC, ordered, indexes, forget_damaged=True)
    assert [path.exists() for path in indexes] == [True, False, True, True]
    assert not (rec_dir / "train.rec").exists()
    write_part(sparse_rec, rec_dir, IM2REC, 1, ordered, offsets, classes, 6, 12)
    assemble_rec(rec_dir, IM2REC, ordered, offsets, indexes, (20, 16))
    verify_rec(rec_dir, IM2REC, ordered, indexes)
    assert (rec_dir / "train.rec").read_bytes() == good

