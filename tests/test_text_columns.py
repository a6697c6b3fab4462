"""The array parsers of the idx and the manifests give what a line-by-line reading gives,
for the writers' own form (parsed as arrays) and for lenient forms (parsed line by line)."""

import numpy as np
import pytest

from faceprep import text_columns
from faceprep.folders import FolderWriter, read_manifest, read_manifest_images
from faceprep.errors import DatasetError, RecordIOError
from faceprep.record_index import read_index


@pytest.fixture(params=[64, 1 << 20], ids=["many-blocks", "one-block"])
def block_bytes(request, monkeypatch):
    monkeypatch.setattr(text_columns, "BLOCK_BYTES", request.param)
    return request.param


def reference_index(text):
    rows = [tuple(int(field) for field in line.split()) for line in text.splitlines() if line.split()]
    return sorted(rows)


def test_idx_of_sparse_huge_shuffled_keys(tmp_path, block_bytes):
    rng = np.random.default_rng(5)
    keys = np.unique(np.concatenate([rng.integers(0, 10, 5), rng.integers(2**24, 2**33, 300),
                                     rng.integers(10**17, 10**18, 50), [10**18 - 1, 10**18, 2**63 - 1]]))
    rng.shuffle(keys)
    offsets = rng.integers(0, 2**40, len(keys))
    text = "".join(f"{key}\t{offset}\n" for key, offset in zip(keys.tolist(), offsets.tolist()))
    (tmp_path / "train.idx").write_text(text)
    index = read_index(tmp_path / "train.idx")
    assert index.dtype == np.int64
    assert index.tolist() == [list(row) for row in reference_index(text)]


@pytest.mark.parametrize("text", [
    "1 5\n2\t9\r\n",          # spaces and CRLF, as hand-made lists have them
    "3\t0\n\n  \n1\t7\n",     # blank lines
    "007\t1\n+8\t2\n",        # leading zero, sign
    "1\t5\n2\t9",             # no final newline
    "",
])
def test_idx_in_lenient_forms(tmp_path, block_bytes, text):
    (tmp_path / "train.idx").write_text(text)
    assert read_index(tmp_path / "train.idx").tolist() == [list(row) for row in reference_index(text)]


@pytest.mark.parametrize("bad", ["1\t5\t6", "-1\t5", "1\tx", "9223372036854775808\t1", "5"])
def test_idx_error_names_the_line_in_any_block(tmp_path, block_bytes, bad):
    lines = [f"{key}\t{key * 10}" for key in range(40)]
    lines[33] = bad
    (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordIOError, match=r"train\.idx: line 34: expected"):
        read_index(tmp_path / "train.idx")


def write_chunk(tmp_path, name, records):
    writer = FolderWriter(tmp_path / "images", tmp_path / name)
    for key, label, image in records:
        writer.write(key, label, image)
    writer.close()
    return tmp_path / name


def test_manifest_arrays_equal_the_rows(tmp_path, block_bytes):
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2**40, 30).tolist() + [0, 10**17]
    keys = rng.choice(2**34, 200, replace=False).tolist()
    records = [(key, labels[index % len(labels)], rng.bytes(int(rng.integers(1, 50))))
               for index, key in enumerate(keys)]
    manifests = [write_chunk(tmp_path, "chunk_0.tsv", records[:120]), write_chunk(tmp_path, "chunk_1.tsv", records[120:])]
    images = read_manifest_images(manifests, sizes_and_checksums=True)
    rows = read_manifest(manifests[0]) + read_manifest(manifests[1])
    assert images.labels.tolist() == [label for _, label, _, _ in rows] == [label for _, label, _ in records]
    assert images.keys.tolist() == keys
    assert images.sizes.tolist() == [size for _, _, size, _ in rows]
    assert images.checksums.tolist() == [crc for _, _, _, crc in rows]
    assert images.ends.tolist() == [120, 200]
    assert images.bytes == sum(len(image) for _, _, image in records)
    assert images.longest == max(len(path) for path, _, _, _ in rows)


def test_manifest_in_a_lenient_form(tmp_path, block_bytes):
    # Uppercase CRCs and a CRLF line (a manifest edited by hand) are read line by line.
    manifest = tmp_path / "chunk_0.tsv"
    manifest.write_bytes(b"path\tlabel\tbytes\tcrc32\n4/12.jpg\t4\t3\t0000ABCD\r\n40/7.jpg\t40\t9\t0a0b0c0d\n")
    images = read_manifest_images([manifest], sizes_and_checksums=True)
    assert images.labels.tolist() == [4, 40] and images.keys.tolist() == [12, 7]
    assert images.checksums.tolist() == [0xABCD, 0x0A0B0C0D] and images.bytes == 12


@pytest.mark.parametrize("line, error", [
    ("5/12.jpg\t4\t3\t0000abcd", r"path '5/12\.jpg' is not <label>/<key>\.jpg of label 4"),
    ("4/x.jpg\t4\t3\t0000abcd", r"path '4/x\.jpg' is not"),
    ("4/12.png\t4\t3\t0000abcd", r"path '4/12\.png' is not"),
    ("4/12.jpg\t4\tthree\t0000abcd", r"line 31: expected an integer label and size and a hex checksum"),
    ("4/12.jpg\t4\t3", r"line 31: expected 4 tab-separated fields"),
])
def test_manifest_error_names_the_file_and_line(tmp_path, block_bytes, line, error):
    rows = [f"{index % 3}/{index}.jpg\t{index % 3}\t10\t0000ffff" for index in range(40)]
    rows[29] = line
    manifest = tmp_path / "chunk_0.tsv"
    manifest.write_text("path\tlabel\tbytes\tcrc32\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"chunk_0\.tsv: .*" + error):
        read_manifest_images([manifest])


@pytest.mark.parametrize("field, value", [("0", 0), ("7", 7), ("999999999999999999", 10**18 - 1),
                                          ("00", None), ("-1", None), ("", None), ("1000000000000000000", None)])
def test_decimals_take_only_canonical_fields(field, value):
    block = f"{field}\n".encode()
    buffer, starts, ends = text_columns.tab_fields(block, 1)
    parsed = text_columns.decimals(buffer, starts[:, 0], ends[:, 0])
    assert (parsed is None) if value is None else parsed.tolist() == [value]
