"""Unit tests of scripts/faceprep/recordio.py and rec_reader.py against the RecordIO format itself (no MXNet)."""

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

# Spelled out from the format rather than imported, so the tests check the module's constants too.
MAGIC = struct.pack("<I", 0xCED7230A)
A, B, TAIL = b"AAAA", b"BBBBbbbb", b"tt"


def frames(data):
    """Parse RecordIO framing by the spec: ``[(cflag, data), ...]``; checks magic and zero padding."""
    parsed = []
    position = 0
    while position < len(data):
        assert data[position : position + 4] == MAGIC, f"no magic at byte {position}"
        (lrec,) = struct.unpack_from("<I", data, position + 4)
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        start, end = position + 8, position + 8 + length
        padded_end = start + (length + 3) // 4 * 4
        assert data[end:padded_end] == bytes(padded_end - end), f"non-zero padding after byte {end}"
        parsed.append((cflag, data[start:end]))
        position = padded_end
    assert position == len(data)
    return parsed


def expected_frames(payload):
    """The parts a payload must be framed into: split at every 4-aligned copy of the magic."""
    cuts = [p for p in range(0, len(payload) - 3, 4) if payload[p : p + 4] == MAGIC]
    if not cuts:
        return [(0, payload)]
    starts, ends = [0] + [cut + 4 for cut in cuts], cuts + [len(payload)]
    flags = [1] + [2] * (len(cuts) - 1) + [3]
    return [(flag, payload[start:end]) for flag, start, end in zip(flags, starts, ends)]


def random_payload(rng, max_length=300):
    """Random bytes with copies of the magic spliced in at aligned and unaligned offsets."""
    data = bytearray(rng.randbytes(rng.randint(0, max_length)))
    for _ in range(rng.randint(0, 6)):
        position = rng.randint(0, len(data))
        if rng.random() < 0.6:
            position -= position % 4
        data[position:position] = MAGIC
    return bytes(data)


def write_records(directory, records):
    """Write ``[(key, payload), ...]`` in list order with RecordWriter; returns (rec, idx) paths."""
    rec, idx = directory / "data.rec", directory / "data.idx"
    with RecordWriter(rec, idx) as writer:
        for key, payload in records:
            writer.write(key, payload)
    return rec, idx


def record_offset(idx, key):
    for line in idx.read_text().splitlines():
        line_key, offset = line.split("\t")
        if int(line_key) == key:
            return int(offset)
    raise KeyError(key)


def assert_message_names(error, *fragments):
    message = str(error.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"


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


# --- .idx parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_line",
    ["1\t2\t3", "a\t0", "1", "-1\t0", "1\t-5", "1\t0x10", "1.5\t0", "1\t2.0"],
)
def test_malformed_idx_line_names_the_file_and_line(tmp_path, bad_line):
    idx = tmp_path / "train.idx"
    idx.write_text(f"0\t0\n\n{bad_line}\n2\t16\n")
    with pytest.raises(RecordIOError) as error:
        read_index(idx)
    assert_message_names(error, idx, "line 3", repr(bad_line.encode())[2:-1])


def test_duplicate_idx_key_names_the_file_and_key(tmp_path):
    idx = tmp_path / "train.idx"
    idx.write_text("0\t0\n7\t8\n3\t16\n7\t24\n")
    with pytest.raises(RecordIOError) as error:
        read_index(idx)
    assert_message_names(error, idx, "key 7")


def test_idx_tolerates_blank_lines_and_crlf(tmp_path):
    idx = tmp_path / "train.idx"
    idx.write_bytes(b"2\t8\r\n\n0\t0\r\n")
    assert read_index(idx).tolist() == [[0, 0], [2, 8]]


def test_sparse_keys_past_2_to_the_32_are_exact_and_found(tmp_path):
    keys = [2**63 - 1, 5, 2**24 + 1, 2**32 + 3, 2**24 - 1]
    payloads = {key: f"record {key}".encode() for key in keys}
    rec, idx = write_records(tmp_path, list(payloads.items()))
    assert read_index(idx)[:, 0].tolist() == sorted(keys)
    with IndexedRecordReader(rec, idx) as reader:
        assert all(reader.read(key) == payloads[key] for key in keys)
        assert 2**24 not in reader and 2**32 + 3 in reader
        assert reader.missing_keys([2**24, 2**24 + 1, 6]).tolist() == [2**24, 6]
        assert dict(reader.iter_keys(keys)) == payloads


def test_keys_past_int64_are_refused_naming_the_line(tmp_path):
    idx = tmp_path / "train.idx"
    idx.write_text(f"0\t0\n{2**63}\t8\n")
    with pytest.raises(RecordIOError) as error:
        read_index(idx)
    assert_message_names(error, idx, "line 2", str(2**63))


# --- reading damaged or inconsistent files ----------------------------------------------------


def test_missing_key_names_the_idx_and_key(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (2, b"two")])
    with IndexedRecordReader(rec, idx) as reader:
        assert 1 not in reader and 2 in reader
        for key in (1, 3, 99):
            with pytest.raises(RecordIOError) as error:
                reader.read(key)
            assert_message_names(error, idx, f"key {key}")
        with pytest.raises(RecordIOError) as error:
            list(reader.iter_keys([0, 42]))
        assert_message_names(error, idx, "key 42")


@pytest.mark.parametrize("beyond", [0, 4, 1000])
def test_offset_past_the_end_names_file_key_and_offset(tmp_path, beyond):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"one")])
    offset = rec.stat().st_size + beyond
    idx.write_text(f"0\t0\n1\t{offset}\n")
    with pytest.raises(RecordIOError) as error:
        IndexedRecordReader(rec, idx)  # the whole idx is checked when it is read
    assert_message_names(error, idx, rec, "key 1", f"offset {offset}")
    # Given its index rows (as chunk jobs are), a reader finds the offset when it reads it.
    with IndexedRecordReader(rec, idx, read_index(idx)) as reader:
        assert reader.read(0) == b"zero"
        for read in (reader.read, lambda key: list(reader.iter_keys([0, key]))):
            with pytest.raises(RecordIOError) as error:
                read(1)
            assert_message_names(error, idx, rec, "key 1", f"offset {offset}")


@pytest.mark.parametrize("keep", [1, 4, 7, 12, 20], ids=lambda keep: f"keep{keep}")
def test_truncated_rec_names_file_key_and_offset(tmp_path, keep):
    # The last record is split (A, then B after the magic); cut it anywhere from its
    # first header to its last part.
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"one"), (2, A + MAGIC + B)])
    offset = record_offset(idx, 2)
    with open(rec, "r+b") as stream:
        stream.truncate(offset + keep)
    with IndexedRecordReader(rec, idx) as reader:
        assert reader.read(1) == b"one"
        with pytest.raises(RecordIOError) as error:
            reader.read(2)
    assert_message_names(error, rec, "key 2", f"offset {offset}", "truncated")


def test_bad_magic_names_file_key_and_offset(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"record one"), (2, b"two")])
    offset = record_offset(idx, 1)
    data = bytearray(rec.read_bytes())
    data[offset] ^= 0xFF
    rec.write_bytes(bytes(data))
    with IndexedRecordReader(rec, idx) as reader:
        assert reader.read(2) == b"two"
        with pytest.raises(RecordIOError) as error:
            reader.read(1)
    assert_message_names(error, rec, "key 1", f"offset {offset}", "magic")


def test_offset_off_a_record_start_names_file_key_and_offset(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"record one")])
    offset = record_offset(idx, 1) + 4
    idx.write_text(f"0\t0\n1\t{offset}\n")
    with IndexedRecordReader(rec, idx) as reader:
        with pytest.raises(RecordIOError) as error:
            reader.read(1)
    assert_message_names(error, rec, "key 1", f"offset {offset}", "magic")


@pytest.mark.parametrize("part", [1, 2], ids=["middle part (cflag 2)", "last part (cflag 3)"])
def test_offset_into_a_split_record_names_file_key_and_offset(tmp_path, part):
    payload = A + MAGIC + MAGIC + B  # parts: A (cflag 1), empty (cflag 2), B (cflag 3)
    rec, idx = write_records(tmp_path, [(0, payload), (1, b"one")])
    offset = [0, 8 + len(A), 8 + len(A) + 8][part]
    idx.write_text(f"0\t0\n1\t{offset}\n")
    with IndexedRecordReader(rec, idx) as reader:
        assert reader.read(0) == payload
        with pytest.raises(RecordIOError) as error:
            reader.read(1)
    assert_message_names(error, rec, "key 1", f"offset {offset}", f"continuation flag {part + 1}")


def test_split_record_without_its_last_part_is_an_error(tmp_path):
    first_part = MAGIC + struct.pack("<I", 1 << 29 | len(A)) + A
    rec = tmp_path / "data.rec"
    rec.write_bytes(first_part + encode_record(b"next record"))
    with pytest.raises(RecordIOError) as error:
        read_record(rec.read_bytes(), 0, str(rec), 4)
    assert_message_names(error, rec, "key 4", "offset 0", "continuation")


def test_invalid_continuation_flag_is_an_error(tmp_path):
    rec = tmp_path / "data.rec"
    rec.write_bytes(MAGIC + struct.pack("<I", 5 << 29 | 4) + A)
    with pytest.raises(RecordIOError) as error:
        read_record(rec.read_bytes(), 0, str(rec), 3)
    assert_message_names(error, rec, "key 3", "offset 0", "flag 5")


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
