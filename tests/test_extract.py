"""Unit tests of the rec -> folder path (plan, chunk extraction, verification) on
insightface-layout sources written with DatasetWriter (extract_samples); the index is
test_folder_index's."""

import math
import struct
import zlib

import crc32c
import numpy as np
import pytest

from extract_samples import extract, extract_keys, extracted_in_two_chunks, plan, write_source
from faceprep import folder_check
from faceprep.folder_check import SHOWN_PROBLEMS, verify_extraction
from faceprep.folder_index import build_index
from faceprep.folders import read_manifest, read_manifest_images
from faceprep.errors import DatasetError, RecordIOError
from faceprep.insightface import image_labels, iter_images
from faceprep.record_index import read_index
from faceprep.recordio import MAGIC, pack_header


def test_plan_splits_image_keys_into_chunks_and_saves_the_index(tmp_path):
    source = write_source(tmp_path / "src", [0.0] * 5 + [1.0] * 6)
    result = plan(source)
    assert (result["images"], result["identities"]) == (11, 2)
    assert result["chunks"] == [[0, 4], [4, 8], [8, 11]]  # positions in the sorted image keys 1..11
    assert (result["layout"], result["keys"], result["image_size"]) == ("insightface", [1, 11], [112, 112])
    np.testing.assert_array_equal(np.load(tmp_path / "rows.npy"), read_index(source / "train.idx")[1:12])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([math.nan, 5.0], "label[0]"),
        ([-3.0, 5.0], "label[0]"),
        ([0.0, 3.0], "expected at least 1"),
        ([4.0, 2.0], "ends before it starts"),
        ([50.0, 52.0], "promises image keys 1..49"),
        ([4.0, 40.0], "promises identity keys 4..39"),
        (7.0, "expected the array [N+1, N+1+C]"),
    ],
)
def test_nonsense_header_labels_are_rejected(tmp_path, header, message):
    source = write_source(tmp_path / "src", [0.0, 0.0, 1.0], header=header)
    with pytest.raises(DatasetError, match=None) as error:
        plan(source)
    assert message in str(error.value) and "train." in str(error.value)


def test_missing_image_key_is_named(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 0.0, 1.0, 1.0], skip_keys={3})
    with pytest.raises(DatasetError, match=r"train\.idx.*first: key 3"):
        plan(source)


def test_property_disagreeing_with_header_is_rejected(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 1.0], property_identities=7)
    with pytest.raises(DatasetError, match=r"property: says 7 identities.*says 2"):
        plan(source)


def test_chunk_writes_images_by_label_and_a_manifest(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 0.0, [1.0, 1.0], [2.0, 0.0]], identities=3)
    count, manifest = extract(source, tmp_path, (2, 5))
    assert count == 3
    rows = read_manifest(manifest)
    assert [row[:2] for row in rows] == [("0/2.jpg", 0), ("1/3.jpg", 1), ("2/4.jpg", 2)]
    for path, _, size, crc in rows:
        data = (tmp_path / "images" / path).read_bytes()
        assert (len(data), crc32c.crc32c(data)) == (size, crc)
    assert not (tmp_path / "images" / "0" / "1.jpg").exists()


def test_label_sum_adds_label_arrays_as_the_original_does(tmp_path):
    source = write_source(tmp_path / "src", [[3.0, 1.0], [3.0, 0.0]], identities=1)
    _, manifest = extract(source, tmp_path, (1, 3), label="sum")
    assert [row[0] for row in read_manifest(manifest)] == ["4/1.jpg", "3/2.jpg"]


@pytest.mark.parametrize("label", [math.nan, -1.0, 2.5, [math.inf, 0.0], 2.0**63, 1e20])
def test_bad_image_labels_name_the_key_and_leave_no_manifest(tmp_path, label):
    source = write_source(tmp_path / "src", [0.0, label, 0.0], identities=2)
    with pytest.raises(DatasetError, match=r"train\.rec: image record key 2: label"):
        extract(source, tmp_path, (1, 4))
    assert not (tmp_path / "manifest.tsv").exists()
    with pytest.raises(DatasetError, match=r"train\.rec: image record key 2: label"):  # the label scan's own reading
        image_labels(source / "train.rec", source / "train.idx", read_index(source / "train.idx")[1:4])


def test_truncated_rec_names_the_key_and_offset(tmp_path):
    source = write_source(tmp_path / "src", [0.0] * 4, identities=1)
    plan(source)
    key, offset = read_index(source / "train.idx")[3]
    with open(source / "train.rec", "r+b") as rec:
        rec.truncate(int(offset) + 10)
    with pytest.raises(RecordIOError, match=rf"train\.rec: record at byte offset {offset} \(key {key}\).*truncated"):
        extract_keys(source, tmp_path, (1, 4), manifest_name="m.tsv")
    assert not (tmp_path / "m.tsv").exists()


def test_rerunning_a_chunk_rewrites_the_same_files(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 1.0, 1.0])
    extract(source, tmp_path, (1, 4))
    first = {path: path.read_bytes() for path in (tmp_path / "images").rglob("*.jpg")}
    (tmp_path / "images" / "1" / "2.jpg").write_bytes(b"half-writ")
    extract(source, tmp_path, (1, 4))
    assert {path: path.read_bytes() for path in (tmp_path / "images").rglob("*.jpg")} == first


def test_verify_and_index(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 1.0, 1.0, 0.0])
    the_plan = plan(source, chunk_size=10)
    _, manifest = extract(source, tmp_path, (1, 5))
    images = tmp_path / "images"
    summary = verify_extraction(the_plan, [manifest], images, check_crc=True)
    assert (summary["images"], summary["distinct_labels"], summary["chunks"]) == (4, 2, 1)

    assert build_index([manifest], images, tmp_path / "images_shuffle.npz", tmp_path / "images_classes.tsv", seed=3) == (4, 2)
    index = np.load(tmp_path / "images_shuffle.npz")
    assert sorted(zip(index["image_names"].tolist(), index["image_classes"].tolist())) == [
        (str(images / name), label) for name, label in [("0/1.jpg", 0), ("0/4.jpg", 0), ("1/2.jpg", 1), ("1/3.jpg", 1)]
    ]

    (images / "1" / "3.jpg").write_bytes(b"x" * len((images / "1" / "3.jpg").read_bytes()))
    with pytest.raises(DatasetError, match=r"3\.jpg: CRC32C differs"):
        verify_extraction(the_plan, [manifest], images, check_crc=True)
    (images / "1" / "2.jpg").write_bytes(b"cut")
    with pytest.raises(DatasetError, match=r"2\.jpg: 3 bytes, .* says \d+"):
        verify_extraction(the_plan, [manifest], images, check_crc=True)
    (images / "0" / "4.jpg").unlink()
    with pytest.raises(DatasetError, match=r"4\.jpg: listed in .* but missing"):
        verify_extraction(the_plan, [manifest], images)


def test_manifests_of_an_earlier_version_hold_crc32_and_still_verify(tmp_path):
    # Manifests written before the CRC-32C column held zlib's CRC32: a run resumed over
    # such chunks checks each manifest's files with the checksum its header names.
    source = write_source(tmp_path / "src", [0.0, 1.0, 1.0, 0.0])
    the_plan = plan(source, chunk_size=2)
    _, new_manifest = extract_keys(source, tmp_path, (1, 3), "first", "chunk_0.tsv")
    _, old_manifest = extract_keys(source, tmp_path, (3, 5), "first", "chunk_1.tsv")
    images = tmp_path / "images"
    old_rows = [f"{path}\t{label}\t{size}\t{zlib.crc32((images / path).read_bytes()):08x}\n"
                for path, label, size, _ in read_manifest(old_manifest)]
    old_manifest.write_text("path\tlabel\tbytes\tcrc32\n" + "".join(old_rows))
    assert verify_extraction(the_plan, [new_manifest, old_manifest], images, check_crc=True)["images"] == 4
    (images / "1" / "3.jpg").write_bytes(b"x" * len((images / "1" / "3.jpg").read_bytes()))
    with pytest.raises(DatasetError, match=r"3\.jpg: CRC32 differs from .*chunk_1\.tsv"):
        verify_extraction(the_plan, [new_manifest, old_manifest], images, check_crc=True)


def test_verification_of_a_deleted_tree_counts_every_file_and_names_the_first_few(tmp_path):
    images_count = SHOWN_PROBLEMS + 7
    source = write_source(tmp_path / "src", [0.0] * images_count)
    the_plan = plan(source, chunk_size=100)
    _, manifest = extract(source, tmp_path, (1, images_count + 1))
    for path in (tmp_path / "images" / "0").iterdir():
        path.unlink()
    (tmp_path / "manifest_copy.tsv").write_bytes(manifest.read_bytes())
    with pytest.raises(DatasetError) as failure:
        verify_extraction(the_plan, [manifest, tmp_path / "manifest_copy.tsv"], tmp_path / "images")
    message = str(failure.value)
    # Two overall problems (manifest and image counts) and every file of both manifests.
    assert f"failed ({2 + 2 * images_count} problems)" in message
    assert message.index("2 chunk manifests, the plan has 1 chunks") < message.index("but missing")
    assert message.count("but missing") == SHOWN_PROBLEMS
    assert message.endswith(f"... and {2 * images_count - SHOWN_PROBLEMS} more files")


def tree_entries(root):
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


def plant_unlisted(images):
    """Entries no manifest lists: a file and another label's directory at the top, a file
    and a directory inside a label directory. Returns their paths in the order named."""
    (images / "7" / "sub").mkdir()
    (images / "7" / "sub" / "old.jpg").write_bytes(b"old")
    (images / "7" / "99.jpg").write_bytes(b"other release")
    (images / "250").mkdir()
    (images / "250" / "1.jpg").write_bytes(b"other release")
    (images / "notes.txt").write_text("mine")
    return [images / "7" / "99.jpg", images / "7" / "sub", images / "250", images / "notes.txt"]


def test_verification_fails_on_files_no_manifest_lists_and_keeps_them(tmp_path):
    labels = [7.0, 7.0, 3.0, 7.0, 3.0, 7.0]  # label 7 in both chunks
    the_plan, manifests = extracted_in_two_chunks(tmp_path, labels)
    images = tmp_path / "images"
    assert verify_extraction(the_plan, manifests, images)["removed_unlisted"] == {"count": 0, "first": []}
    planted = plant_unlisted(images)
    before = tree_entries(images)

    with pytest.raises(DatasetError) as failure:
        verify_extraction(the_plan, manifests, images)

    message = str(failure.value)
    assert f"{len(planted)} files or directories in {images} that no chunk manifest lists" in message
    assert f"first: {', '.join(map(str, planted))};" in message
    assert "remove_unlisted=True" in message
    assert tree_entries(images) == before


def test_remove_unlisted_deletes_exactly_the_unlisted_entries(tmp_path):
    labels = [7.0, 7.0, 3.0, 7.0, 3.0, 7.0]
    the_plan, manifests = extracted_in_two_chunks(tmp_path, labels)
    images = tmp_path / "images"
    extracted = tree_entries(images)
    planted = plant_unlisted(images)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.jpg").write_bytes(b"not in the images directory")
    (images / "3" / "link").symlink_to(outside)
    planted.insert(0, images / "3" / "link")

    summary = verify_extraction(the_plan, manifests, images, remove_unlisted=True)

    assert summary["removed_unlisted"] == {"count": len(planted), "first": list(map(str, planted))}
    assert tree_entries(images) == extracted
    assert (outside / "keep.jpg").read_bytes() == b"not in the images directory"  # the link was not followed
    verify_extraction(the_plan, manifests, images)


def test_a_label_directory_that_is_a_symbolic_link_is_not_followed(tmp_path):
    the_plan, manifests = extracted_in_two_chunks(tmp_path, [0.0, 1.0, 1.0, 0.0])
    images = tmp_path / "images"
    (images / "1").rename(tmp_path / "elsewhere")
    (images / "1").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "5.jpg").write_bytes(b"not ours to remove")
    with pytest.raises(DatasetError, match=r"/1: not a directory \(a file, or a symbolic link, which is not followed\)"):
        verify_extraction(the_plan, manifests, images, remove_unlisted=True)
    assert (tmp_path / "elsewhere" / "5.jpg").exists()


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda row: row + "\tmore", r"expected 4 tab-separated fields"),
        (lambda row: "", r"expected 4 tab-separated fields"),
        (lambda row: row.replace("\t1\t", "\tone\t"), r"expected an integer label and size and a hex checksum, got \['one', "),
        (lambda row: row[:-2] + "zz", r"expected an integer label and size and a hex checksum, got \['1', '\d+', '[0-9a-f]{6}zz'\]"),
    ],
)
def test_damaged_manifest_rows_are_named_by_file_and_line(tmp_path, damage, expected):
    source = write_source(tmp_path / "src", [0.0, 1.0, 0.0])
    _, manifest = extract(source, tmp_path, (1, 4))
    header, first, second, third = manifest.read_text().splitlines()
    manifest.write_text("\n".join([header, first, damage(second), third]) + "\n")
    with pytest.raises(DatasetError, match=expected) as failure:
        read_manifest(manifest)
    assert str(failure.value).startswith(f"{manifest}: line 3: ")


def test_label_sum_too_large_for_int64_names_the_key(tmp_path):
    source = write_source(tmp_path / "src", [0.0, [6e18, 6e18]], identities=2)
    with pytest.raises(DatasetError, match=r"image record key 2: label sum is .*below 2\*\*63"):
        extract(source, tmp_path, (1, 3), label="sum")


@pytest.mark.parametrize("largest", [40, 2**32 - 1, 2**32, 2**62], ids=["small", "below-2^32", "2^32", "2^62"])
@pytest.mark.parametrize("block", [3, 1 << 20])
def test_label_groups_equal_a_stable_argsort(monkeypatch, largest, block):
    """Rows grouped by label in manifest order, whether the labels are packed with their
    rows in place (below 2^32) or argsorted, across scan blocks."""
    monkeypatch.setattr(folder_check, "_GROUP_BLOCK", block)
    rng = np.random.default_rng(largest % 1000)
    labels = rng.choice(np.array([0, 1, 5, largest // 3, largest], np.int64), 50)
    for shuffled in (labels, np.sort(labels)):
        images = read_manifest_images([])
        images.labels, images.keys = shuffled.copy(), np.arange(len(shuffled))
        order, starts, group_labels = folder_check._label_groups(images)
        rows = np.arange(len(shuffled)) if order is None else order
        expected = np.argsort(shuffled, kind="stable")
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_array_equal(group_labels, np.unique(shuffled))
        np.testing.assert_array_equal(starts, np.searchsorted(shuffled[expected], np.unique(shuffled)))


def test_verification_of_labels_shuffled_across_keys(tmp_path):
    labels = [2.0**33, 5.0, 2.0**33, 0.0, 5.0, 0.0, 7.0, 2.0**33]
    the_plan, manifests = extracted_in_two_chunks(tmp_path, labels)
    summary = verify_extraction(the_plan, manifests, tmp_path / "images", check_crc=True)
    assert (summary["images"], summary["distinct_labels"]) == (8, 4)
    (tmp_path / "images" / "5" / "5.jpg").unlink()
    (tmp_path / "images" / str(2**33) / "4.jpg").write_bytes(b"stale")
    with pytest.raises(DatasetError) as failure:
        verify_extraction(the_plan, manifests, tmp_path / "images")
    assert "5/5.jpg: listed in" in str(failure.value) and f"{2**33}/4.jpg" in str(failure.value)


def test_an_idx_pointing_into_a_record_names_both_keys(tmp_path):
    """A writer that does not split payloads at their magic words (unlike MXNet's) lets an
    idx point at a record-like run of bytes inside another record's image."""
    inner_payload = pack_header(2.0, b"inner image")
    inner = struct.pack("<II", MAGIC, len(inner_payload)) + inner_payload + bytes(-len(inner_payload) % 4)
    outer_payload = pack_header(1.0, b"imag" + inner)  # the inner record starts at byte 8 + 24 + 4
    outer = struct.pack("<II", MAGIC, len(outer_payload)) + outer_payload + bytes(-len(outer_payload) % 4)
    (tmp_path / "train.rec").write_bytes(outer)
    (tmp_path / "train.idx").write_text("1\t0\n2\t36\n")
    rows = read_index(tmp_path / "train.idx")
    with pytest.raises(RecordIOError, match=rf"the record of key 1 \(bytes 0\.\.{len(outer)}\) overlaps the record of key 2 "
                                            r"at byte offset 36"):
        list(iter_images(tmp_path / "train.rec", tmp_path / "train.idx", rows))
