"""Damaged sources: a non-zero exit, a message naming the file and the key or offset,
the source untouched and nothing marked complete. --keep-going finishes the rest."""

import math
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from faceprep.binfile import write_py2_bin
from faceprep.demo import encode_image
from faceprep.faces import draw_face, random_face_traits
from faceprep.ownership import OWNER_FILE
from faceprep.record_index import read_index
from workflow import (
    block_label,
    run_workflow,
    tree_digest,
    without_file_access_override,
    write_config,
    write_insightface_source,
)

IMAGES, IDENTITIES = 40, 4


def write_source(directory, image_label=None, header=None):
    """40 images of 4 identities; ``image_label(key)`` overrides an image's label."""
    return write_insightface_source(directory, IMAGES, IDENTITIES, image_label=image_label, header=header)


def rewrite_idx(source, change):
    lines = (source / "train.idx").read_text().splitlines()
    (source / "train.idx").write_text("".join(f"{line}\n" for line in change(lines)))


def patch_rec(source, key, position, data):
    offset = dict(read_index(source / "train.idx").tolist())[key]
    with open(source / "train.rec", "r+b") as rec:
        rec.seek(offset + position)
        rec.write(data)
    return offset


def record_offset(source, key):
    return dict(read_index(source / "train.idx").tolist())[key]


def truncate_in_record(source):
    """Cut into the last record, the header (insightface writes it at the end)."""
    offset = record_offset(source, 0)
    with open(source / "train.rec", "r+b") as rec:
        rec.truncate(offset + 30)
    return rf"train\.rec: record at byte offset {offset} \(key 0\).*file ends after 22\b.*truncated"


def truncate_before_header(source):
    """Cut mid-image: the header record and everything after key 25 are gone."""
    with open(source / "train.rec", "r+b") as rec:
        rec.truncate(record_offset(source, 25) + 100)
    return r"train\.idx: key 0 points to byte offset \d+, past the end of .*train\.rec"


def bad_magic(source):
    offset = patch_rec(source, 12, 0, b"JUNK")
    return rf"train\.rec: record at byte offset {offset} \(key 12\): expected record magic"


def idx_between_records(source):
    offset = record_offset(source, 9) + 8
    rewrite_idx(source, lambda lines: [f"9\t{offset}" if line.startswith("9\t") else line for line in lines])
    return rf"byte offset {offset} \(key 9\): expected record magic"


def idx_past_end(source):
    rewrite_idx(source, lambda lines: ["17\t99999999" if line.startswith("17\t") else line for line in lines])
    return r"train\.idx: key 17 points to byte offset 99999999, past the end of .*train\.rec"


def idx_keys_share_an_offset(source):
    """Key 9 points to key 10's record: key 10's record would be read twice, key 9's never."""
    offset = record_offset(source, 10)
    rewrite_idx(source, lambda lines: [f"9\t{offset}" if line.startswith("9\t") else line for line in lines])
    return rf"train\.idx: keys 9 and 10 both point to byte offset {offset}\b"


def idx_inside_a_record(source):
    """An offset 2 bytes into key 9's record, where no record can start."""
    offset = record_offset(source, 9) + 2
    rewrite_idx(source, lambda lines: [f"9\t{offset}" if line.startswith("9\t") else line for line in lines])
    return rf"train\.idx: key 9 points to byte offset {offset}, not a multiple of 4"


def idx_malformed_line(source):
    rewrite_idx(source, lambda lines: [*lines[:5], "6 and a half", *lines[6:]])
    return r"train\.idx: line 6: expected '<key>\\t<offset>'"


def idx_without_key_0(source):
    rewrite_idx(source, lambda lines: [line for line in lines if not line.startswith("0\t")])
    return r"train\.idx: has no insightface header record at key 0, .* key 44 holds none .*is key 0 missing"


def idx_without_image_key(source):
    rewrite_idx(source, lambda lines: [line for line in lines if not line.startswith("30\t")])
    return r"train\.idx: the header record promises image keys 1\.\.40, but 1 are missing .*first: key 30"


def empty_rec(source):
    (source / "train.rec").write_bytes(b"")
    return r"train\.idx: key 0 points to byte offset \d+, past the end of .*train\.rec \(0 bytes\)"


def empty_idx(source):
    (source / "train.idx").write_bytes(b"")
    return r"train\.idx: lists no records"


def property_disagrees(source):
    (source / "property").write_text("5,112,112")
    return r"property: says 5 identities, but the header record of .*train\.rec says 4"


DAMAGES = [
    truncate_in_record,
    truncate_before_header,
    bad_magic,
    idx_between_records,
    idx_past_end,
    idx_keys_share_an_offset,
    idx_inside_a_record,
    idx_malformed_line,
    idx_without_key_0,
    idx_without_image_key,
    empty_rec,
    empty_idx,
    property_disagrees,
]

BAD_LABELS = {
    "header-nan": dict(header=[math.nan, 45.0], expected=r"header record \(key 0\): label\[0\].* is nan"),
    "header-negative": dict(header=[-4.0, 45.0], expected=r"header record \(key 0\): label\[0\].* is -4\.0"),
    "header-end-below-1": dict(header=[0.0, 4.0], expected=r"header record \(key 0\): label\[0\] is 0, expected at least 1"),
    "header-beyond-idx": dict(header=[60.0, 64.0], expected=r"promises image keys 1\.\.59, but 15 are missing .*first: key 45"),
    "image-nan": dict(image_label=lambda key: math.nan if key == 23 else None, expected=r"image record key 23: label is nan"),
    "image-negative": dict(image_label=lambda key: -2.0 if key == 23 else None, expected=r"image record key 23: label is -2\.0"),
    "image-fraction": dict(image_label=lambda key: 1.5 if key == 23 else None, expected=r"image record key 23: label is 1\.5"),
}


def dataset(tmp_path, name, source):
    return {
        name: {
            "source": str(source),
            "images": str(tmp_path / f"{name}_images"),
            "bins_out": str(tmp_path / f"{name}_bins"),
            "bins": [],
        }
    }


def assert_fails_cleanly(tmp_path, source, expected, *args):
    before = tree_digest(source)
    config = write_config(tmp_path / "config.yaml", dataset(tmp_path, "bad", source), chunk_size=10)
    result = run_workflow(tmp_path / "work", config, *args, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(expected, output), output[-3000:]
    assert tree_digest(source) == before
    results = tmp_path / "work" / "results" / "bad"
    assert not (results / "extraction.json").exists()
    assert not (tmp_path / "bad_images_shuffle.npz").exists()
    return result


@pytest.mark.e2e
@pytest.mark.parametrize("damage", DAMAGES, ids=[damage.__name__ for damage in DAMAGES])
def test_damaged_source_fails_naming_the_place(tmp_path, damage):
    source = write_source(tmp_path / "src")
    expected = damage(source)
    assert_fails_cleanly(tmp_path, source, expected)


@pytest.mark.e2e
@pytest.mark.parametrize("case", BAD_LABELS, ids=list(BAD_LABELS))
def test_bad_labels_fail_naming_the_record(tmp_path, case):
    settings = dict(BAD_LABELS[case])
    expected = settings.pop("expected")
    source = write_source(tmp_path / "src", **settings)
    assert_fails_cleanly(tmp_path, source, expected)
    if case.startswith("image"):
        manifests = tmp_path / "work" / "results" / "bad" / "manifests"
        assert not (manifests / "chunk_00002.tsv").exists()  # key 23 is in the third chunk of 10


@pytest.mark.e2e
def test_keep_going_finishes_the_unaffected_dataset(tmp_path):
    bad = write_source(tmp_path / "bad_src")
    bad_magic(bad)
    good = write_source(tmp_path / "good_src")
    datasets = {**dataset(tmp_path, "bad", bad), **dataset(tmp_path, "good", good)}
    config = write_config(tmp_path / "config.yaml", datasets, chunk_size=10)
    result = run_workflow(tmp_path / "work", config, "--keep-going", check=False)
    assert result.returncode != 0
    assert (tmp_path / "work" / "results" / "good" / "extraction.json").exists()
    assert (tmp_path / "good_images_shuffle.npz").exists()
    assert not (tmp_path / "work" / "results" / "bad" / "extraction.json").exists()
    chunks = sorted(path.name for path in (tmp_path / "work" / "results" / "bad" / "manifests").glob("*.tsv"))
    assert chunks == ["chunk_00000.tsv", "chunk_00002.tsv", "chunk_00003.tsv"]  # key 12 is in chunk 1


def sample_faces(count=4):
    rng = np.random.default_rng(0)
    return [encode_image(draw_face(random_face_traits(rng), rng)) for _ in range(count)]


def write_bins(source):
    """One good bin and one bin per kind of damage; returns {bin name: expected message}."""
    faces = sample_faces()
    write_py2_bin(source / "good.bin", faces, [True, False])
    (source / "not_a_pickle.bin").write_bytes(b"\x89PNG definitely not a pickle")
    (source / "empty.bin").write_bytes(b"")
    for name, content in [
        ("wrong_structure", {"bins": faces}),
        ("odd_count", (faces[:3], [True])),
        ("pair_mismatch", (faces, [True, False, True])),
    ]:
        (source / f"{name}.bin").write_bytes(pickle.dumps(content, protocol=2))
    write_py2_bin(source / "unreadable_image.bin", [*faces[:3], b"\xff\xd8\xff\xe0" + b"\x00" * 40], [True, False])
    return {
        "not_a_pickle": r"not_a_pickle\.bin: not a readable pickle",
        "empty": r"empty\.bin: empty file",
        "wrong_structure": r"wrong_structure\.bin: expected a pickled pair \(bins, issame_list\)",
        "odd_count": r"odd_count\.bin: holds 3 images, an odd number",
        "pair_mismatch": r"pair_mismatch\.bin: .*4 images.*3|pair_mismatch\.bin: .*3.*4 images",
        "unreadable_image": r"unreadable_image\.bin: image 3 \(pair 1\): neither tf\.io\.decode_jpeg nor the fallback",
    }


@pytest.mark.e2e
def test_bad_bins_fail_naming_the_bin_and_image_while_the_rest_finishes(tmp_path):
    source = write_source(tmp_path / "src")
    expected = write_bins(source)
    before = tree_digest(source)
    settings = dataset(tmp_path, "d", source)
    settings["d"]["bins"] = ["good", *expected]
    config = write_config(tmp_path / "config.yaml", settings, chunk_size=10)
    result = run_workflow(tmp_path / "work", config, "--keep-going", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for name, message in expected.items():
        assert re.search(message, output), f"{name}: {message!r} not in output\n{output[-4000:]}"
        assert not (tmp_path / "d_bins" / f"{name}.bin").exists()
    assert tree_digest(source) == before
    assert (tmp_path / "d_bins" / "good.bin").exists()
    assert (tmp_path / "work" / "results" / "d" / "bins" / "good.json").exists()
    assert (tmp_path / "work" / "results" / "d" / "extraction.json").exists()
    assert sorted(path.name for path in (tmp_path / "d_bins").iterdir()) == [OWNER_FILE, "good.bin"]  # no temporaries


# Reads a file, or lists a directory, given as argv[1].
READ = "import os, sys; path = sys.argv[1]; os.listdir(path) if os.path.isdir(path) else open(path).close()"


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("unreadable", "key"),
    [("", "source"), ("train.rec", "source"), ("train.idx", "source"), ("property", "source"), ("lfw.bin", "bins")],
    ids=["source-dir", "train.rec", "train.idx", "property", "bin"],
)
def test_unreadable_source_fails_before_any_job_naming_the_path(tmp_path, unreadable, key):
    """Run without root's file access override (CI runs as root): chmod 000 then denies."""
    source = write_source(tmp_path / "src")
    write_py2_bin(source / "lfw.bin", sample_faces(), [True, False])
    before = tree_digest(source)
    settings = dataset(tmp_path, "bad", source)
    settings["bad"]["bins"] = ["lfw"]
    config = write_config(tmp_path / "config.yaml", settings, chunk_size=10)
    launcher = without_file_access_override()
    path = source / unreadable
    mode = path.stat().st_mode
    path.chmod(0)
    try:
        probe = subprocess.run([*launcher, sys.executable, "-c", READ, str(path)], capture_output=True, text=True)
        assert "PermissionError" in probe.stderr, f"the run could read {path} (or did not start): {probe.stderr}"
        result = run_workflow(tmp_path / "work", config, check=False, launcher=launcher)
    finally:
        path.chmod(mode)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(rf"config: datasets\.bad\.{key}: {re.escape(str(path))} is not readable", output), output[-3000:]
    assert not (tmp_path / "work" / "results").exists()  # stopped before any job
    assert tree_digest(source) == before


@pytest.mark.e2e
def test_nothing_is_written_outside_the_configured_directories(tmp_path):
    """Crafted sources, accepted and rejected: every file the run creates, changes or removes is
    in the working directory, an images directory, its index and class table or a bins_out (a symlink's target)."""
    far_labels = {1: [1.0, 1.0], 2: 2.0**40, 3: 2.0**62}  # by identity: a label array, labels far past the count
    accepted = write_insightface_source(
        tmp_path / "accepted_src", IMAGES, IDENTITIES, image_label=lambda key: far_labels.get(block_label(key, IMAGES, IDENTITIES))
    )
    write_py2_bin(accepted / "lfw..v2.bin", sample_faces(), [True, False])  # '..' inside one file name
    for hidden in ("._lfw.bin", "..bin"):  # skipped, not bins: macOS metadata, and a bin named '.'
        (accepted / hidden).write_bytes(b"not a bin")
    (tmp_path / "bins_target").mkdir()
    (tmp_path / "bins_link").symlink_to(tmp_path / "bins_target")
    rejected = write_source(tmp_path / "rejected_src", image_label={5: -2.0, 15: 1.5, 25: math.nan}.get)
    datasets = {**dataset(tmp_path, "accepted", accepted), **dataset(tmp_path, "rejected", rejected)}
    del datasets["accepted"]["bins"]  # found in the source
    datasets["accepted"]["bins_out"] = str(tmp_path / "bins_link")
    config = write_config(tmp_path / "config.yaml", datasets, chunk_size=10)
    before = tree_digest(tmp_path)

    result = run_workflow(tmp_path / "work", config, "--keep-going", check=False)

    output = result.stdout + result.stderr
    for key, label in ((5, r"-2\.0"), (15, r"1\.5"), (25, "nan")):
        assert re.search(rf"rejected_src/train\.rec: image record key {key}: label is {label}\b", output), output[-3000:]
    assert result.returncode != 0
    images = tmp_path / "accepted_images"
    assert {str(2**40), str(2**62)} <= {path.name for path in images.iterdir()}
    assert sorted(path.name for path in (tmp_path / "bins_target").iterdir()) == [OWNER_FILE, "lfw..v2.bin"]
    index_files = {"accepted_images_shuffle.npz", "accepted_images_classes.tsv"}
    assert all((tmp_path / name).exists() for name in index_files)
    after = tree_digest(tmp_path)
    touched = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    allowed = ("work/", "accepted_images/", "rejected_images/", "bins_target/", "rejected_bins/")
    outside = sorted(path for path in touched if not path.startswith(allowed) and path not in index_files)
    assert outside == [], f"written outside the configured directories: {outside}"
