"""Unit tests of scripts/faceprep/recordio.py and rec_reader.py against the RecordIO format itself (no MXNet);
bad .idx lines and damaged recs are in test_recordio_bad_input.py."""

import random
import struct

import numpy as np
import pytest

from faceprep import rec_reader
from faceprep.errors import RecordIOError
from faceprep.record_index import read_index
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import (
    IRHeader,
    RecordWriter,
    encode_record,
    header_magic_words,
    image_record_bytes,
    pack_header,
    read_record,
    unpack_header,
)
from recordio_samples import (
    A,
    B,
    MAGIC,
    TAIL,
    assert_message_names,
    expected_frames,
    frames,
    random_payload,
    write_records,
)


# --- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("length", range(9))
def test_plain_record_is_magic_lrec_data_and_zero_padding(length):
    payload = bytes(range(1, length + 1))
    encoded = encode_record(payload)
    assert encoded[:4] == MAGIC
    assert struct.unpack_from("<I", encoded, 4)[0] == length  # cflag 0 in the top 3 bits
    assert encoded[8 : 8 + length] == payload
    assert len(encoded) % 4 == 0 and 0 <= len(encoded) - 8 - length < 4
    assert encoded[8 + length :] == bytes(len(encoded) - 8 - length)


def test_empty_payload_is_a_bare_header_and_reads_back_empty(tmp_path):
    assert encode_record(b"") == MAGIC + bytes(4)
    rec, idx = write_records(tmp_path, [(0, b""), (1, b"x"), (2, b"")])
    with IndexedRecordReader(rec, idx) as reader:
        assert [reader.read(key) for key in (0, 1, 2)] == [b"", b"x", b""]


SPLIT_CASES = {
    "magic in the middle": (A + MAGIC + B, [(1, A), (3, B)]),
    "magic at offset 0": (MAGIC + B, [(1, b""), (3, B)]),
    "consecutive magics": (A + MAGIC + MAGIC + B, [(1, A), (2, b""), (3, B)]),
    "magic at the very end": (A + MAGIC, [(1, A), (3, b"")]),
    "payload is only the magic": (MAGIC, [(1, b""), (3, b"")]),
    "three parts and an odd tail": (A + MAGIC + B + MAGIC + TAIL, [(1, A), (2, B), (3, TAIL)]),
    "magic before a partial word": (A + MAGIC + b"x", [(1, A), (3, b"x")]),
}
UNSPLIT_CASES = {
    "offset 1": b"x" + MAGIC + b"yyy",
    "offset 2": b"xx" + MAGIC + b"yy",
    "offset 3": b"xyz" + MAGIC,
    "offset 5, inside the last partial word": A + b"x" + MAGIC,
    "aligned but truncated magic": A + MAGIC[:3],
}


@pytest.mark.parametrize("payload, parts", SPLIT_CASES.values(), ids=SPLIT_CASES.keys())
def test_aligned_magic_splits_the_record_and_reading_rejoins_it(payload, parts):
    encoded = encode_record(payload)
    assert frames(encoded) == parts
    data = encoded + encode_record(b"next")
    assert read_record(data, 0) == payload
    assert read_record(data, len(encoded)) == b"next"


@pytest.mark.parametrize("payload", UNSPLIT_CASES.values(), ids=UNSPLIT_CASES.keys())
def test_unaligned_magic_does_not_split(payload):
    encoded = encode_record(payload)
    assert frames(encoded) == [(0, payload)]
    assert read_record(encoded, 0) == payload


@pytest.mark.parametrize("seed", range(5))
def test_random_payloads_split_exactly_at_aligned_magic(seed):
    rng = random.Random(seed)
    for _ in range(200):
        payload = random_payload(rng)
        encoded = encode_record(payload)
        assert frames(encoded) == expected_frames(payload)
        assert read_record(encoded, 0) == payload


@pytest.mark.parametrize("seed", range(3))
def test_a_records_size_is_known_before_it_is_written(seed):
    """Rec parts are written in place at offsets summed from these sizes before any record is
    framed: they must be what the writer writes, magic words in the image or the header too."""
    rng = random.Random(seed)
    magic_float = struct.unpack("<f", MAGIC)[0]
    for _ in range(200):
        image = random_payload(rng)
        label = rng.choice([3.0, magic_float])
        key = rng.choice([7, 0xCED7230A, 0xCED7230A << 32 | 0xCED7230A])
        expected = len(encode_record(pack_header(label, image, key)))
        extra = 4 * int(header_magic_words(np.array([label], np.float32), np.array([key], np.uint64))[0])
        assert image_record_bytes(image) + extra == expected


@pytest.mark.parametrize("seed", range(3))
def test_random_files_match_the_format_and_read_back(tmp_path, seed):
    rng = random.Random(seed)
    keys = rng.sample(range(400), 250)
    payloads = {key: random_payload(rng) for key in keys}
    rec, idx = write_records(tmp_path, [(key, payloads[key]) for key in keys])

    # The .rec is the framed records back to back; the .idx is MXNet's "key\toffset\n" lines.
    data = rec.read_bytes()
    offsets, position = {}, 0
    for key in keys:
        offsets[key] = position
        position += len(encode_record(payloads[key]))
    assert len(data) == position
    assert frames(data) == [part for key in keys for part in expected_frames(payloads[key])]
    assert idx.read_text() == "".join(f"{key}\t{offsets[key]}\n" for key in keys)
    index = read_index(idx)
    assert index.dtype == np.int64 and index[:, 0].tolist() == sorted(keys)
    assert dict(index.tolist()) == offsets

    with IndexedRecordReader(rec, idx) as reader:
        for key in rng.sample(keys, len(keys)):
            assert reader.read(key) == payloads[key]
        assert dict(reader.iter_keys(sorted(keys))) == payloads


def test_iter_keys_reads_on_after_releasing_the_pages_behind_it(tmp_path, monkeypatch):
    monkeypatch.setattr(rec_reader, "RELEASE_BYTES", 4096)  # release after every page or so
    rng = random.Random(5)
    payloads = {key: rng.randbytes(rng.randrange(500, 3000)) + MAGIC + b"tail" for key in range(200)}
    rec, idx = write_records(tmp_path, list(payloads.items()))
    with IndexedRecordReader(rec, idx) as reader:
        assert dict(reader.iter_keys(range(200))) == payloads
        assert dict(reader.iter_keys(range(150, 200))) == {key: payloads[key] for key in range(150, 200)}


# --- IRHeader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 7, 3.5, -2.25, 85741, np.int64(12), np.float32(2.5), np.float64(-1.5)])
def test_scalar_label_header(label):
    image = b"\xff\xd8image bytes"
    payload = pack_header(label, image, 123456789012, 2**64 - 1)
    assert struct.unpack_from("<IfQQ", payload) == (0, float(label), 123456789012, 2**64 - 1)
    assert payload[24:] == image
    assert unpack_header(payload) == (IRHeader(0, float(label), 123456789012, 2**64 - 1), image)


def test_scalar_label_is_stored_as_float32():
    header, _ = unpack_header(pack_header(0.1, b""))
    assert header.label == struct.unpack("<f", struct.pack("<f", 0.1))[0] != 0.1


@pytest.mark.parametrize(
    "labels",
    [[1.0, 0.0], (3, 4, 5.5), [9], np.array([85741, 1], dtype=np.float32), list(range(20))],
    ids=["pair", "tuple", "one", "numpy", "twenty"],
)
def test_label_array_header(labels):
    image = b"\x00\x01\x02"
    payload = pack_header(labels, image, 5, 6)
    count = len(labels)
    assert struct.unpack_from("<IfQQ", payload) == (count, 0.0, 5, 6)
    assert struct.unpack_from(f"<{count}f", payload, 24) == tuple(float(value) for value in labels)
    assert payload[24 + 4 * count :] == image
    header, unpacked_image = unpack_header(payload)
    # As MXNet's unpack: the labels as a float32 array.
    assert (header.flag, header.id, header.id2) == (count, 5, 6)
    assert header.label.dtype == np.float32
    assert header.label.tolist() == [float(value) for value in labels]
    assert unpacked_image == image


def test_header_with_magic_inside_survives_a_file_round_trip(tmp_path):
    magic_float = struct.unpack("<f", MAGIC)[0]
    payloads = {
        0: pack_header(magic_float, MAGIC + b"img"),  # magic at payload offsets 4 and 24
        1: pack_header([1.0, magic_float], b"", id1=0xCED7230A, id2=0xCED7230A << 32),
    }
    rec, idx = write_records(tmp_path, payloads.items())
    assert [flag for flag, _ in frames(rec.read_bytes())] == [1, 2, 3, 1, 2, 2, 3]
    with IndexedRecordReader(rec, idx) as reader:
        assert reader.read_unpacked(0) == (IRHeader(0, magic_float, 0, 0), MAGIC + b"img")
        header, image = reader.read_unpacked(1)
        assert (header.flag, header.label.tolist(), header.id, header.id2, image) == (
            2, [1.0, magic_float], 0xCED7230A, 0xCED7230A << 32, b""
        )


def test_payload_shorter_than_the_header_is_an_error(tmp_path):
    with pytest.raises(RecordIOError) as error:
        unpack_header(bytes(23), "some.rec: key 5")
    assert_message_names(error, "some.rec: key 5", "23")
    rec, idx = write_records(tmp_path, [(0, pack_header(1, b"")), (1, b"short")])
    with IndexedRecordReader(rec, idx) as reader:
        with pytest.raises(RecordIOError) as error:
            reader.read_unpacked(1)
    assert_message_names(error, rec, "key 1")


def test_label_count_beyond_the_payload_is_an_error():
    payload = pack_header([1.0, 2.0, 3.0], b"")[:-4]
    with pytest.raises(RecordIOError) as error:
        unpack_header(payload, "some.rec: key 8")
    assert_message_names(error, "some.rec: key 8", "3 float32 labels")

# --- sequential reading and writing -------------------------------------------------------------


def test_iter_keys_reads_in_file_order_whatever_the_key_order(tmp_path):
    physical_order = [5, 2, 9, 1, 7, 0, 3]
    payloads = {key: f"record {key}".encode() * key + (MAGIC * (key % 3)) for key in physical_order}
    rec, idx = write_records(tmp_path, [(key, payloads[key]) for key in physical_order])
    with IndexedRecordReader(rec, idx) as reader:
        read = list(reader.iter_keys(sorted(physical_order)))
        assert [key for key, _ in read] == physical_order
        assert all(payload == payloads[key] for key, payload in read)
        # A random read in between moves the stream; iter_keys must not depend on where it is.
        assert reader.read(7) == payloads[7]
        subset = list(reader.iter_keys(np.array([3, 9, 5, 1])))
        assert subset == [(key, payloads[key]) for key in (5, 9, 1, 3)]


def test_writer_exception_leaves_no_file(tmp_path):
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    with pytest.raises(RuntimeError, match="packing failed"):
        with RecordWriter(rec, idx) as writer:
            writer.write(0, b"first record")
            assert not rec.exists() and not idx.exists()
            raise RuntimeError("packing failed")
    assert list(tmp_path.iterdir()) == []


def test_writer_exception_keeps_a_previous_complete_file(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"old"), (1, b"data")])
    before = rec.read_bytes(), idx.read_bytes()
    with pytest.raises(RuntimeError):
        with RecordWriter(rec, idx) as writer:
            writer.write(0, b"new")
            raise RuntimeError("packing failed")
    assert (rec.read_bytes(), idx.read_bytes()) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.idx", "data.rec"]


def test_writer_success_leaves_only_the_final_files(tmp_path):
    write_records(tmp_path, [(0, b"zero")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.idx", "data.rec"]
