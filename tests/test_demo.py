"""The synthetic demo dataset: insightface layout, bins as the real ones, determinism, faces."""

import io
import json
import os
import pickle
import pickletools
import struct
import subprocess

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from faceprep.demo import (
    BIN_NAMES,
    TF_READABLE_EXTRA_FORMATS,
    TF_UNREADABLE_FORMATS,
    make_demo_dataset,
)
from faceprep.faces import draw_face, random_face_traits
from faceprep.rec_reader import IndexedRecordReader
from oracle import mxnet_python, run_oracle

SMALL = dict(images=120, identities=6, seed=3)
DATASET_FILES = ("train.rec", "train.idx", "property", *(f"{name}.bin" for name in BIN_NAMES))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    formats = make_demo_dataset(out_dir, **SMALL)
    return out_dir, formats


def load_bin(path):
    with open(path, "rb") as stream:
        return pickle.load(stream, encoding="bytes")


def check_rec_layout(out_dir, images, identities):
    """The insightface layout: images 1..N by identity, identity records, header last."""
    assert (out_dir / "property").read_text().strip() == f"{identities},112,112"
    with IndexedRecordReader(out_dir / "train.rec", out_dir / "train.idx") as reader:
        assert reader.keys.tolist() == list(range(images + identities + 1))
        offsets = reader.index[:, 1]
        header, payload = reader.read_unpacked(0)
        assert (header.flag, header.label.tolist(), payload) == (2, [images + 1, images + 1 + identities], b"")
        image_offsets = offsets[1:images + 1]
        identity_offsets = offsets[images + 1:]
        assert identity_offsets.min() > image_offsets.max()
        assert offsets[0] == offsets.max()

        labels = {}
        for key in range(1, images + 1):
            header, jpeg = reader.read_unpacked(key)
            assert header.flag == 0
            labels[key] = header.label
            with Image.open(io.BytesIO(jpeg)) as image:
                assert (image.format, image.size, image.mode) == ("JPEG", (112, 112), "RGB")

        expected_start = 1
        for label in range(identities):
            header, payload = reader.read_unpacked(images + 1 + label)
            assert header.flag == 2 and payload == b""
            start, end = map(int, header.label)
            assert start == expected_start and end > start
            assert all(labels[key] == label for key in range(start, end))
            expected_start = end
        assert expected_start == images + 1


def test_small_rec_has_the_insightface_layout(small):
    check_rec_layout(small[0], SMALL["images"], SMALL["identities"])


def test_default_size_rec_has_the_insightface_layout(tmp_path):
    make_demo_dataset(tmp_path)
    check_rec_layout(tmp_path, 2000, 40)


@pytest.mark.mxnet
def test_mxnet_reads_the_rec(small):
    out_dir, _ = small
    records = json.loads(run_oracle("read_rec.py", out_dir / "train.rec", out_dir / "train.idx").stdout)
    by_key = {record["key"]: record for record in records}
    images, identities = SMALL["images"], SMALL["identities"]
    assert sorted(by_key) == list(range(images + identities + 1))
    assert by_key[0]["label"] == [images + 1, images + 1 + identities]
    with IndexedRecordReader(out_dir / "train.rec", out_dir / "train.idx") as reader:
        for key in (1, images // 2, images):
            header, jpeg = reader.read_unpacked(key)
            assert by_key[key]["label"] == [header.label]
            assert bytes.fromhex(by_key[key]["payload_hex"]) == jpeg


def test_bins_load_like_the_real_ones(small):
    out_dir, formats = small
    for name in BIN_NAMES:
        bins, issame = load_bin(out_dir / f"{name}.bin")
        assert len(bins) == 2 * len(issame) == len(formats[name])
        assert all(type(same) is bool for same in issame)
        assert 0 < sum(issame) < len(issame)
        for image in bins:
            if name == "lfw":
                assert type(image) is bytes
            else:
                assert isinstance(image, np.ndarray) and image.dtype == np.uint8
                assert image.ndim == 2 and image.shape[1] == 1


def test_lfw_images_are_python2_strings(small):
    out_dir, _ = small
    data = (out_dir / "lfw.bin").read_bytes()
    opcodes = [opcode.name for opcode, _, _ in pickletools.genops(data)]
    assert opcodes[0] == "PROTO" and data[1] == 2
    bins, _ = load_bin(out_dir / "lfw.bin")
    assert opcodes.count("BINSTRING") + opcodes.count("SHORT_BINSTRING") == len(bins)
    assert not {"BINBYTES", "SHORT_BINBYTES", "BINUNICODE", "SHORT_BINUNICODE"} & set(opcodes)


@pytest.mark.mxnet
def test_array_bins_load_with_numpy_1(small):
    """MXNet's venv has numpy 1.x, which cannot import numpy 2's ``numpy._core`` pickles
    (on Python 3.13, for which numpy 1 has no wheels, it has numpy 2)."""
    out_dir, _ = small
    script = (
        "import pickle, sys, numpy\n"
        "bins, issame = pickle.load(open(sys.argv[1], 'rb'), encoding='bytes')\n"
        "print('%d.%d' % sys.version_info[:2], numpy.__version__, len(bins), bins[0].dtype, bins[0].shape,"
        " bins[0].tobytes().hex())\n"
    )
    # As oracle.run_oracle: the pytest process's PYTHONPATH would hand numpy 2 to the MXNet venv.
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    python_version, numpy_version, *loaded = subprocess.run(
        [str(mxnet_python()), "-c", script, str(out_dir / "cfp_fp.bin")], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    bins, _ = load_bin(out_dir / "cfp_fp.bin")
    assert numpy_version.startswith("1.") or python_version == "3.13", (python_version, numpy_version)
    assert loaded == [str(len(bins)), "uint8", f"({bins[0].shape[0]},", "1)", bins[0].tobytes().hex()]


def jpeg_frame(data):
    """(start-of-frame marker, sample precision, components) of a JPEG stream."""
    position = 2
    while True:
        marker, length = struct.unpack(">HH", data[position:position + 4])
        if 0xFFC0 <= marker <= 0xFFCF and marker not in (0xFFC4, 0xFFC8, 0xFFCC):
            return marker, data[position + 4], data[position + 9]
        position += 2 + length


def test_planted_formats_are_what_they_claim(small):
    out_dir, formats = small
    expected_frames = {
        "jpeg": (0xFFC0, 8, 3), "jpeg_progressive": (0xFFC2, 8, 3), "jpeg_grayscale": (0xFFC0, 8, 1),
        "jpeg_cmyk": (0xFFC0, 8, 4), "jpeg_12bit": (0xFFC1, 12, 3), "jpeg_lossless": (0xFFC3, 8, 3),
    }
    for name in ("cfp_fp", "agedb_30"):
        assert set(formats[name]) == {"jpeg", *TF_READABLE_EXTRA_FORMATS, *TF_UNREADABLE_FORMATS}
        bins, _ = load_bin(out_dir / f"{name}.bin")
        for image, image_format in zip(bins, formats[name]):
            data = image.tobytes()
            if image_format == "png":
                assert data.startswith(b"\x89PNG\r\n\x1a\n")
            elif image_format == "bmp":
                assert data.startswith(b"BM")
            else:
                assert jpeg_frame(data) == expected_frames[image_format], image_format
    assert set(formats["lfw"]) == {"jpeg"}


def test_tf_fails_on_exactly_the_unreadable_images(small):
    import tensorflow as tf  # here, not at the top: importing it takes seconds

    out_dir, formats = small
    for name in BIN_NAMES:
        bins, _ = load_bin(out_dir / f"{name}.bin")
        for index, (image, image_format) in enumerate(zip(bins, formats[name])):
            data = bytes(image) if name == "lfw" else image.tobytes()
            try:
                decoded = tf.io.decode_jpeg(data, channels=3).numpy()
            except tf.errors.InvalidArgumentError:
                decoded = None
            if image_format in TF_UNREADABLE_FORMATS:
                assert decoded is None, f"{name} image {index} ({image_format}) decoded by TF"
                assert imagecodecs.imread(data).shape[:2] == (112, 112)
            else:
                assert decoded is not None, f"{name} image {index} ({image_format}) not decoded by TF"
                assert decoded.shape == (112, 112, 3)


def test_same_arguments_give_identical_files(small, tmp_path):
    out_dir, _ = small
    make_demo_dataset(tmp_path / "again", **SMALL)
    make_demo_dataset(tmp_path / "other_seed", **{**SMALL, "seed": SMALL["seed"] + 1})
    for name in DATASET_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out_dir / name).read_bytes(), name
    assert (tmp_path / "other_seed" / "train.rec").read_bytes() != (out_dir / "train.rec").read_bytes()
    assert not list(tmp_path.glob("*/*.tmp"))


def test_rejects_fewer_images_than_identities(tmp_path):
    with pytest.raises(ValueError, match="images=3, identities=5"):
        make_demo_dataset(tmp_path, images=3, identities=5)


def test_a_single_identity_still_gets_different_pairs(tmp_path):
    make_demo_dataset(tmp_path, images=4, identities=1)
    check_rec_layout(tmp_path, 4, 1)
    _, issame = load_bin(tmp_path / "lfw.bin")
    assert False in issame


def test_images_of_one_identity_look_alike_and_differ_from_others():
    """Nearest neighbours (mean absolute difference of the face area) mostly share the identity."""
    rng = np.random.default_rng(0)
    people, per_person = 8, 8
    traits = [random_face_traits(rng) for _ in range(people)]
    faces = np.array([draw_face(person, rng)[24:100, 28:84] for person in traits for _ in range(per_person)])
    assert faces.dtype == np.uint8
    flat = faces.reshape(len(faces), -1).astype(np.float32)
    distances = np.abs(flat[:, None] - flat[None]).mean(axis=-1)
    np.fill_diagonal(distances, np.inf)
    labels = np.repeat(np.arange(people), per_person)
    same = labels[:, None] == labels[None]
    within = distances[same & np.isfinite(distances)]
    assert within.min() > 0  # every image is a fresh draw, not a copy
    assert within.mean() < 0.6 * distances[~same].mean()
    assert (labels[distances.argmin(axis=1)] == labels).mean() >= 0.8
