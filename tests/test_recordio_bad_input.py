"""scripts/faceprep/record_index.py and rec_reader.py on bad input: malformed or duplicate .idx
lines, keys out of range, and recs that are truncated, misframed or disagree with their idx;
each error names the file and the line, key or offset."""

import struct

import pytest

from faceprep.errors import RecordIOError
from faceprep.record_index import read_index
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import encode_record, read_record
from recordio_samples import A, B, MAGIC, assert_message_names, record_offset, write_records


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


def assert_read_fails(rec, idx, key, *fragments, readable=None):
    """Reading ``key`` raises a RecordIOError naming the rec, the key and ``fragments``; the
    ``readable`` ``(key, payload)``, if given, reads back first from the same reader."""
    with IndexedRecordReader(rec, idx) as reader:
        if readable is not None:
            assert reader.read(readable[0]) == readable[1]
        with pytest.raises(RecordIOError) as error:
            reader.read(key)
    assert_message_names(error, rec, f"key {key}", *fragments)


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
    assert_read_fails(rec, idx, 2, f"offset {offset}", "truncated", readable=(1, b"one"))


def test_bad_magic_names_file_key_and_offset(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"record one"), (2, b"two")])
    offset = record_offset(idx, 1)
    data = bytearray(rec.read_bytes())
    data[offset] ^= 0xFF
    rec.write_bytes(bytes(data))
    assert_read_fails(rec, idx, 1, f"offset {offset}", "magic", readable=(2, b"two"))


def test_offset_off_a_record_start_names_file_key_and_offset(tmp_path):
    rec, idx = write_records(tmp_path, [(0, b"zero"), (1, b"record one")])
    offset = record_offset(idx, 1) + 4
    idx.write_text(f"0\t0\n1\t{offset}\n")
    assert_read_fails(rec, idx, 1, f"offset {offset}", "magic")


@pytest.mark.parametrize("part", [1, 2], ids=["middle part (cflag 2)", "last part (cflag 3)"])
def test_offset_into_a_split_record_names_file_key_and_offset(tmp_path, part):
    payload = A + MAGIC + MAGIC + B  # parts: A (cflag 1), empty (cflag 2), B (cflag 3)
    rec, idx = write_records(tmp_path, [(0, payload), (1, b"one")])
    offset = [0, 8 + len(A), 8 + len(A) + 8][part]
    idx.write_text(f"0\t0\n1\t{offset}\n")
    assert_read_fails(rec, idx, 1, f"offset {offset}", f"continuation flag {part + 1}", readable=(0, payload))


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
