"""Tests of scripts/faceprep/bincodec.py's reformat (and verify on the py2 fixtures) on bins generated here;
test_bin_verify.py tampers with its outputs, test_bin_rule_scripts.py runs the rule scripts."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import bin_samples
from bin_samples import (
    PLAIN_JPEG_KINDS,
    PY2_BIN_NAMES,
    PY2_BINS,
    REASONS,
    assert_measured,
    counts_from_bins,
    flags_for,
    load_output,
    mixed_bin,
    pillow_decoded,
    pixels_for,
)
from faceprep.bincodec import reformat_bin, verify_bin
from faceprep.binfile import load_bin, write_py2_bin
from faceprep.errors import BinError

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# Runs in a fresh interpreter where importing TensorFlow or numpy fails.
LOAD_WITHOUT_TENSORFLOW = r"""
import hashlib, importlib.abc, json, pickle, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "numpy", "keras"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Blocked())
with open(sys.argv[1], "rb") as file:
    bins, issame = pickle.load(file, encoding="bytes")
print(json.dumps({
    "container": [type(bins).__name__, type(issame).__name__],
    "image_types": sorted({type(image).__name__ for image in bins}),
    "flag_types": sorted({type(flag).__name__ for flag in issame}),
    "images_sha256": hashlib.sha256(b"".join(bins)).hexdigest(),
    "issame": issame,
}))
"""


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def decoded(tf, data):
    return tf.io.decode_jpeg(data, channels=3).numpy()


def no_temporaries(directory):
    return [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


# --- shapes of bins --------------------------------------------------------------------------


def test_py2_bin_of_jpegs_is_kept_byte_for_byte(tmp_path):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(10)]
    # A tiny PNG so the pickle holds SHORT_BINSTRING as well as BINSTRING opcodes.
    images[3] = bin_samples.encode(bin_samples.face_like(3, 4, 4), "png")
    assert len(images[3]) < 256 <= len(images[0])
    issame = flags_for(5)
    source, output = tmp_path / "lfw.bin", tmp_path / "out" / "lfw.bin"
    write_py2_bin(source, images, issame)
    before = sha256(source)

    summary = reformat_bin(source, output)

    assert sha256(source) == before
    bins, flags = load_output(output)
    assert bins == images and all(type(image) is bytes for image in bins)
    assert flags == issame and all(type(flag) is bool for flag in flags)
    total = sum(map(len, images))
    assert summary == {
        "source": str(source),
        "output": str(output),
        "pairs": 5,
        "same": sum(issame),
        "different": 5 - sum(issame),
        "images": 10,
        "kept": 10,
        "reencoded": 0,
        "reencode_reasons": {},
        "jpeg_quality": 95,
        "bytes_in": total,
        "bytes_out": total,
    }
    assert no_temporaries(output.parent)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_imencode_array_elements_become_bytes(tmp_path, protocol):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(4)]
    source = tmp_path / "cfp_fp.bin"
    bin_samples.write_pickled_bin(source, bin_samples.as_imencode_arrays(images), [True, False], protocol)

    assert load_bin(source) == (images, [True, False])
    reformat_bin(source, tmp_path / "out.bin")
    assert load_output(tmp_path / "out.bin") == [images, [True, False]]


def test_py2_bin_of_imencode_arrays(tmp_path):
    # Python 2 with numpy 1.x pickled cv2.imencode's arrays through numpy.core.multiarray.
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(4)]
    source = tmp_path / "cfp_fp.bin"
    write_py2_bin(source, bin_samples.as_imencode_arrays(images), [False, True])

    summary = reformat_bin(source, tmp_path / "out.bin")

    assert load_output(tmp_path / "out.bin") == [images, [False, True]]
    assert summary["kept"] == 4


@pytest.mark.parametrize("name", PY2_BIN_NAMES)
def test_py2_fixture_bins_reformat_and_verify(tmp_path, tf_reads, name):
    source, output = PY2_BINS / name, tmp_path / name
    before = sha256(source)
    images, issame = bin_samples.read_pickled_bin(source)

    summary = reformat_bin(source, output, threads=2)
    verified = verify_bin(source, output, threads=2)

    assert sha256(source) == before
    outputs, flags = load_output(output)
    assert flags == issame and all(type(flag) is bool for flag in flags)
    assert all(type(result) is bytes for result in outputs)
    counts = counts_from_bins(source, output)
    assert {key: summary[key] for key in counts} == counts
    assert {key: verified[key] for key in counts} == counts
    # Kept: what TF reads as it stands. Re-encoded: the BMPs, which it does not.
    kept = [index for index, (image, result) in enumerate(zip(images, outputs)) if image == result]
    bmps = [index for index, image in enumerate(images) if image.startswith(b"BM")]
    assert kept == [index for index, image in enumerate(images) if tf_reads(image)]
    assert sorted(set(range(len(images))) - set(kept)) == bmps != []
    assert summary["reencode_reasons"] == verified["reencode_reasons"] == {"bmp": len(bmps)}
    assert verified["verified"] is True
    assert [entry["image"] for entry in verified["reencoded_images"]] == bmps
    for entry in verified["reencoded_images"]:
        assert_measured(entry, pillow_decoded(images[entry["image"]]), outputs[entry["image"]])
        assert entry["psnr_db"] >= entry["psnr_floor_db"]


def test_bin_rewritten_by_the_original_script_loads_without_tensorflow(tmp_path, tf):
    # The original script pickled tf.image.encode_jpeg's EagerTensors in place of the images.
    tensors = [tf.io.encode_jpeg(pixels_for(index)) for index in range(4)]
    source = tmp_path / "lfw.bin"
    with open(source, "wb") as file:
        pickle.dump([tensors, [True, False]], file)
    jpegs = [tensor.numpy() for tensor in tensors]

    load_in_fresh_python = (
        "import sys, pickle; sys.modules['tensorflow'] = None;"
        f"sys.path.insert(0, {str(SCRIPTS)!r});"
        "from faceprep.binfile import load_bin;"
        "images, flags = load_bin(sys.argv[1]);"
        "sys.stdout.buffer.write(pickle.dumps((images, flags)))"
    )
    done = subprocess.run([sys.executable, "-c", load_in_fresh_python, source], capture_output=True, check=True)
    assert pickle.loads(done.stdout) == (jpegs, [True, False])

    summary = reformat_bin(source, tmp_path / "out.bin")
    assert load_output(tmp_path / "out.bin") == [jpegs, [True, False]]
    assert summary["kept"] == 4


# --- formats ---------------------------------------------------------------------------------


def test_mixed_formats_keep_what_tf_reads_and_reencode_the_rest(tmp_path, tf, tf_reads):
    source, output = tmp_path / "mixed.bin", tmp_path / "mixed.out.bin"
    kinds, images, issame = mixed_bin(source)
    before = sha256(source)

    summary = reformat_bin(source, output, threads=2)

    assert sha256(source) == before
    bins, flags = load_output(output)
    assert flags == issame
    unreadable = [index for index, image in enumerate(images) if not tf_reads(image)]
    # The sample set exercises both paths, and TF refuses exactly the kinds REASONS lists.
    assert sorted(kinds[index] for index in unreadable) == sorted(REASONS)
    for index, (kind, image, result) in enumerate(zip(kinds, images, bins)):
        assert type(result) is bytes
        if index not in unreadable:
            assert result == image, kind
            continue
        assert result != image, kind
        pixels, expected = decoded(tf, result), pixels_for(index)
        assert pixels.shape == expected.shape, kind
        if kind != "truncated":  # its lower part is filled in by the decoder
            # Small only if bit depths were scaled right (12-bit, 16-bit) and channels kept.
            assert np.abs(pixels.astype(float) - expected).mean() < 6, kind
    assert summary["kept"] == len(images) - len(unreadable)
    assert summary["reencoded"] == len(unreadable)
    assert summary["reencode_reasons"] == Counter(REASONS[kinds[index]] for index in unreadable)
    assert summary["bytes_in"] == sum(map(len, images)) and summary["bytes_out"] == sum(map(len, bins))


def test_bin_of_plain_jpegs_is_reformatted_without_importing_tensorflow(tmp_path):
    images = [bin_samples.encode(pixels_for(index), kind) for index, kind in enumerate(sorted(PLAIN_JPEG_KINDS) * 2)]
    source, output = tmp_path / "cfp_fp.bin", tmp_path / "out.bin"
    bin_samples.write_pickled_bin(source, bin_samples.as_imencode_arrays(images), flags_for(len(images) // 2))
    reformat_without_tensorflow = (
        "import json, sys; sys.modules['tensorflow'] = None; sys.path.insert(0, sys.argv[1]);"
        "from faceprep.bincodec import reformat_bin;"
        "print(json.dumps(reformat_bin(sys.argv[2], sys.argv[3], threads=2)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", reformat_without_tensorflow, SCRIPTS, source, output],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kept"] == len(images)
    assert load_output(output) == [images, flags_for(len(images) // 2)]


def test_tensorflow_is_imported_without_keras_and_keras_stays_importable():
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from faceprep.tf_ops import import_tensorflow; tf = import_tensorflow();"
        "skipped = sorted({'keras', 'matplotlib', 'pandas'} & set(sys.modules));"
        "shape = tf.io.decode_jpeg(tf.io.encode_jpeg(tf.zeros([4, 6, 3], tf.uint8))).shape.as_list();"
        "import keras.src.optimizers;"
        "print(json.dumps([skipped, shape]))"
    )
    done = subprocess.run([sys.executable, "-c", script, SCRIPTS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [[], [4, 6, 3]]


def test_truncated_cmyk_jpeg_is_recovered_in_colour(tmp_path, tf):
    pixels = pixels_for(0)
    whole = bin_samples.encode(pixels, "cmyk")
    images = [whole[: len(whole) * 9 // 10], bin_samples.encode(pixels_for(1), "baseline")]
    source = tmp_path / "cmyk.bin"
    write_py2_bin(source, images, [True])

    summary = reformat_bin(source, tmp_path / "out.bin")

    assert summary["reencode_reasons"] == {"truncated-jpeg": 1}
    recovered = decoded(tf, load_output(tmp_path / "out.bin")[0][0])
    # The top rows survive the cut: their colours must match, not come out inverted.
    assert np.abs(recovered[:40].astype(float) - pixels[:40]).mean() < 6


def test_reencode_all_reencodes_every_image(tmp_path, tf, tf_reads):
    source, output = tmp_path / "mixed.bin", tmp_path / "all.bin"
    kinds, images, issame = mixed_bin(source)

    summary = reformat_bin(source, output, reencode="all")

    bins, flags = load_output(output)
    assert flags == issame
    for index, (kind, result) in enumerate(zip(kinds, bins)):
        assert type(result) is bytes and result != images[index], kind
        assert decoded(tf, result).shape == pixels_for(index).shape, kind
    assert summary["kept"] == 0 and summary["reencoded"] == len(images)
    expected = Counter(REASONS.get(kind, "reencode-all") for kind in kinds)
    assert expected["reencode-all"] == sum(map(tf_reads, images))
    assert summary["reencode_reasons"] == expected


def test_output_does_not_depend_on_threads(tmp_path):
    source = tmp_path / "mixed.bin"
    mixed_bin(source)
    reformat_bin(source, tmp_path / "one.bin", threads=1)
    reformat_bin(source, tmp_path / "three.bin", threads=3)
    assert (tmp_path / "one.bin").read_bytes() == (tmp_path / "three.bin").read_bytes()


def test_output_loads_in_python_without_tensorflow_or_numpy(tmp_path):
    source, output = tmp_path / "mixed.bin", tmp_path / "out.bin"
    _, _, issame = mixed_bin(source)
    reformat_bin(source, output)

    done = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_WITHOUT_TENSORFLOW, output], capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout)
    bins, _ = load_output(output)
    assert loaded == {
        "container": ["list", "list"],
        "image_types": ["bytes"],
        "flag_types": ["bool"],
        "images_sha256": hashlib.sha256(b"".join(bins)).hexdigest(),
        "issame": issame,
    }


def test_undecodable_image_names_bin_index_and_pair_and_writes_nothing(tmp_path):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(8)]
    images[5] = bin_samples.garbage(5)
    source, output = tmp_path / "lfw.bin", tmp_path / "out.bin"
    write_py2_bin(source, images, flags_for(4))

    with pytest.raises(BinError, match=r"image 5 \(pair 2\)") as raised:
        reformat_bin(source, output, threads=2)

    assert str(source) in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["lfw.bin"]


def test_existing_output_is_replaced_whole(tmp_path):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(2)]
    source, output = tmp_path / "lfw.bin", tmp_path / "out.bin"
    write_py2_bin(source, images, [False])
    output.write_bytes(b"stale")

    reformat_bin(source, output)

    assert load_output(output) == [images, [False]]
    assert no_temporaries(tmp_path)


def test_refuses_to_write_over_the_source(tmp_path):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(2)]
    source = tmp_path / "lfw.bin"
    write_py2_bin(source, images, [True])
    before = sha256(source)
    (tmp_path / "link.bin").symlink_to(source)
    os.link(source, tmp_path / "hardlink.bin")

    for target in (source, tmp_path / "link.bin", tmp_path / "hardlink.bin", tmp_path / "." / "lfw.bin"):
        with pytest.raises(BinError, match="is the source bin"):
            reformat_bin(source, target)
    assert sha256(source) == before


def test_rejects_unknown_mode_thread_count_and_quality(tmp_path):
    with pytest.raises(ValueError, match="reencode"):
        reformat_bin(tmp_path / "a.bin", tmp_path / "b.bin", reencode="some")
    with pytest.raises(ValueError, match="threads"):
        reformat_bin(tmp_path / "a.bin", tmp_path / "b.bin", threads=0)
    for quality in (0, 101, 95.0):
        with pytest.raises(ValueError, match="jpeg_quality must be an integer from 1 to 100"):
            reformat_bin(tmp_path / "a.bin", tmp_path / "b.bin", jpeg_quality=quality)
        with pytest.raises(ValueError, match="jpeg_quality must be an integer from 1 to 100"):
            verify_bin(tmp_path / "a.bin", tmp_path / "b.bin", jpeg_quality=quality)


def test_invalid_bin_writes_no_output(tmp_path):
    source, output = tmp_path / "bad.bin", tmp_path / "out.bin"
    three_images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(3)]
    bin_samples.write_pickled_bin(source, three_images, [True])
    with pytest.raises(BinError, match="odd"):
        reformat_bin(source, output)
    assert not output.exists()
