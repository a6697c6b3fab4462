"""The audit's evaluation index (faceprep.audit.overlap.index_evaluation_images), built a
batch of images at a time: the files are the same whatever the batch size, with images
repeated within a bin and across bins, and an undecodable one among them."""

import json

import numpy as np

from bin_samples import encode, face_like
from faceprep.audit import overlap
from faceprep.binfile import write_reformatted


def test_the_index_is_the_same_whatever_its_batch(tmp_path, monkeypatch):
    pictures = [encode(face_like(seed), "baseline") for seed in range(7)]
    broken = encode(face_like(9), "truncated")
    write_reformatted(tmp_path / "lfw.bin", pictures[:4] + [pictures[0], broken], [True, False, True])
    write_reformatted(tmp_path / "cfp_fp.bin", [pictures[3], *pictures[4:], pictures[5], pictures[0]], [True, False, True])
    bins = {"lfw": tmp_path / "lfw.bin", "audit_bins.cfp_fp": tmp_path / "cfp_fp.bin"}
    built = {}
    for batch in (2, 3, 1024):
        monkeypatch.setattr(overlap, "INDEX_BATCH", batch)
        files = [tmp_path / f"{batch}_{name}" for name in ("grays.npy", "features.npy", "images.json")]
        assert overlap.index_evaluation_images(bins, *files) == 8
        built[batch] = [path.read_bytes() for path in files]
    assert built[2] == built[3] == built[1024]
    images = json.loads(built[2][2])["images"]
    assert [entry["refs"] for entry in images] == [
        [["lfw", 0], ["lfw", 4], ["audit_bins.cfp_fp", 5]], [["lfw", 1]], [["lfw", 2]], [["lfw", 3], ["audit_bins.cfp_fp", 0]], [["lfw", 5]],
        [["audit_bins.cfp_fp", 1]], [["audit_bins.cfp_fp", 2], ["audit_bins.cfp_fp", 4]], [["audit_bins.cfp_fp", 3]]]
    assert [entry["decoded"] for entry in images] == [True] * 4 + [False] + [True] * 3
    grays = np.load(tmp_path / "2_grays.npy")
    assert grays.shape == (8, 112, 112) and not grays[4].any() and grays[[0, 1, 2, 3, 5, 6, 7]].std(axis=(1, 2)).min() > 10
    search = overlap.OverlapSearch(*(tmp_path / f"2_{name}" for name in ("grays.npy", "features.npy", "images.json")))
    assert search.exact(bytes.fromhex(images[6]["digest"])) == 6


def test_an_index_of_no_bins_is_empty(tmp_path):
    files = [tmp_path / name for name in ("grays.npy", "features.npy", "images.json")]
    assert overlap.index_evaluation_images({}, *files) == 0
    assert np.load(files[0]).shape == (0, 112, 112) and np.load(files[1]).shape == (0, 25, 15)
