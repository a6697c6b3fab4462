"""verify_bin (scripts/faceprep/bincodec.py) on reformatted bins and on copies tampered with:
it confirms the reformat's summary and names what differs from the source."""

import json
import pickle
from collections import Counter

import numpy as np
import pytest

import bin_samples
from bin_samples import REASONS, assert_measured, counts_from_bins, load_output, mixed_bin, pixels_for
from faceprep.bincodec import reformat_bin, verify_bin
from faceprep.errors import BinError


@pytest.fixture(scope="module")
def reformatted(tmp_path_factory):
    """A mixed bin and its reformatted output, shared by the verify tests (which copy it)."""
    directory = tmp_path_factory.mktemp("verify")
    source, output = directory / "mixed.bin", directory / "mixed.out.bin"
    mixed_bin(source)
    return source, output, reformat_bin(source, output)


def tampered(tmp_path, output, change, protocol=4):
    bins, issame = load_output(output)
    change(bins, issame)
    path = tmp_path / "tampered.bin"
    with open(path, "wb") as file:
        pickle.dump([bins, issame], file, protocol=protocol)
    return path


# Kinds whose source holds pixels_for(index) exactly, once scaled to 8 bits.
LOSSLESS_KINDS = {"png", "png16", "bmp", "tiff", "jpeg-lossless", "jpeg-lossless16"}


@pytest.mark.parametrize("reencode", ["needed", "all"])
def test_verify_confirms_reformat_summary(tmp_path, reencode):
    source, output = tmp_path / "mixed.bin", tmp_path / "out.bin"
    kinds, images, _ = mixed_bin(source)
    summary = reformat_bin(source, output, reencode=reencode)

    verified = verify_bin(source, output, threads=2)

    assert json.loads(json.dumps(verified)) == verified
    counts = counts_from_bins(source, output)
    assert {key: summary[key] for key in counts} == counts
    assert {key: verified[key] for key in counts} == counts
    assert verified["verified"] is True
    bins, _ = load_output(output)
    changed = [i for i, image in enumerate(images) if bins[i] != image]
    expected_reasons = Counter(REASONS.get(kinds[index], "reencode-all") for index in changed)
    assert summary["reencode_reasons"] == verified["reencode_reasons"] == expected_reasons
    entries = verified["reencoded_images"]
    assert [entry["image"] for entry in entries] == changed
    for entry in entries:
        index, kind = entry["image"], kinds[entry["image"]]
        assert entry["pair"] == index // 2 and entry["reason"] == REASONS.get(kind, "reencode-all"), kind
        assert entry["psnr_db"] >= entry["psnr_floor_db"], kind
        if kind in LOSSLESS_KINDS:
            assert_measured(entry, pixels_for(index), bins[index])


def test_verify_rejects_image_of_wrong_size(tmp_path, reformatted):
    source, output, _ = reformatted
    small = bin_samples.encode(bin_samples.face_like(0, 64, 64), "baseline")

    def shrink(bins, issame):
        bins[3] = small

    with pytest.raises(
        BinError, match=r"image 3 \(pair 1\) decodes to 64x64 \(height x width\), the source image to 112x96"
    ):
        verify_bin(source, tampered(tmp_path, output, shrink))


def test_verify_rejects_swapped_images(tmp_path, reformatted):
    source, output, _ = reformatted

    def swap(bins, issame):  # images 0 and 4 have the same size
        bins[0], bins[4] = bins[4], bins[0]

    with pytest.raises(BinError, match=r"image 0 \(pair 0\) matches source image 4 \(pair 2, identical pixels\)"):
        verify_bin(source, tampered(tmp_path, output, swap))


def test_verify_rejects_swapped_issame(tmp_path, reformatted):
    source, output, _ = reformatted

    def flip(bins, issame):
        issame[2] = not issame[2]

    with pytest.raises(BinError, match=r"issame_list\[2\] \(pair 2\)"):
        verify_bin(source, tampered(tmp_path, output, flip))


def test_verify_rejects_image_tf_cannot_read(tmp_path, reformatted):
    source, output, _ = reformatted

    def to_bmp(bins, issame):
        bins[4] = bin_samples.encode(pixels_for(4), "bmp")

    with pytest.raises(BinError, match=r"image 4 \(pair 2\): tf.image.decode_jpeg\(channels=3\) does not decode it"):
        verify_bin(source, tampered(tmp_path, output, to_bmp))


def test_verify_rejects_missing_images(tmp_path, reformatted):
    source, output, summary = reformatted

    def drop(bins, issame):
        del bins[2:], issame[1:]

    with pytest.raises(BinError, match=f"holds 2 images, its source {source} {summary['images']}"):
        verify_bin(source, tampered(tmp_path, output, drop))


@pytest.mark.parametrize(
    ("change", "protocol", "message"),
    [
        (lambda bins, issame: bins.__setitem__(1, np.frombuffer(bins[1], np.uint8)), 4, r"refers to numpy"),
        (
            lambda bins, issame: bins.__setitem__(1, bytearray(bins[1])),
            5,
            r"image 1 \(pair 0\) is bytearray\(.*\) \(type bytearray\), not plain bytes",
        ),
        (
            lambda bins, issame: issame.__setitem__(0, 1),
            4,
            r"issame_list\[0\] \(pair 0\) is 1 \(type int\), not a plain bool",
        ),
    ],
)
def test_verify_rejects_elements_that_are_not_plain(tmp_path, reformatted, change, protocol, message):
    source, output, _ = reformatted
    path = tampered(tmp_path, output, change, protocol)
    with pytest.raises(BinError, match=message) as raised:
        verify_bin(source, path)
    assert str(raised.value).startswith(f"{path}: ")
