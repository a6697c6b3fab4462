"""Tests of scripts/faceprep/jpeg.py: which JPEGs are plain enough to keep without asking TensorFlow."""

import io
from collections import Counter

import numpy as np
from PIL import Image

import bin_samples
from bin_samples import PLAIN_JPEG_KINDS, pixels_for
from faceprep.jpeg import image_dimensions, plain_jpeg


# Ways to damage a JPEG: cut it, overwrite bytes, drop a run, insert random bytes, append some.
DAMAGE = ("cut", "overwrite", "drop", "insert", "append")


def damaged(data, rng):
    data = bytearray(data)
    how = rng.choice(DAMAGE)
    where = int(rng.integers(2, len(data)))
    if how == "cut":
        del data[where:]
    elif how == "overwrite":
        for position in rng.integers(0, len(data), int(rng.integers(1, 12))):
            data[position] = int(rng.integers(256))
    elif how == "drop":
        del data[where : where + int(rng.integers(1, 40))]
    elif how == "insert":
        data[where:where] = rng.bytes(int(rng.integers(1, 40)))
    else:
        data += rng.bytes(int(rng.integers(1, 80)))
    return bytes(data)


def test_plain_jpeg_accepts_the_complete_8bit_jpegs_among_the_samples(tf, tf_reads):
    samples = {kind: bin_samples.encode(pixels_for(0), kind) for kind in bin_samples.KINDS}
    samples["tf.io.encode_jpeg"] = tf.io.encode_jpeg(pixels_for(1)).numpy()
    samples["tf.io.encode_jpeg progressive"] = tf.io.encode_jpeg(pixels_for(1), progressive=True).numpy()
    accepted = {kind for kind, data in samples.items() if plain_jpeg(data)}
    assert accepted == PLAIN_JPEG_KINDS | {"tf.io.encode_jpeg", "tf.io.encode_jpeg progressive"}
    assert all(tf_reads(samples[kind]) for kind in accepted)


def test_plain_jpeg_never_accepts_a_damaged_jpeg_tf_refuses(tf_reads):
    """TF keeps the last word on everything plain_jpeg turns down, so what matters is that it
    never accepts what TF refuses. Thousands of damaged JPEGs of each plain kind probe that."""
    rng = np.random.default_rng(11)
    originals = [bin_samples.encode(pixels_for(seed), kind) for seed in range(3) for kind in sorted(PLAIN_JPEG_KINDS)]
    verdicts = Counter()
    for _ in range(3000):
        data = damaged(originals[int(rng.integers(len(originals)))], rng)
        verdicts[plain_jpeg(data), tf_reads(data)] += 1
    assert verdicts[True, False] == 0, verdicts
    # Both sides were probed: damage TF refuses, and damage both accept.
    assert verdicts[False, False] > 500 and verdicts[True, True] > 500, verdicts


def test_image_dimensions_are_pillows_for_jpeg_and_png_and_none_for_the_rest():
    """A rec's ``property`` and its report's sizes come from these (rec parts ask for every image's)."""
    pixels = bin_samples.face_like(3, 70, 45)
    found = {kind: image_dimensions(bin_samples.encode(pixels, kind)) for kind in bin_samples.KINDS}
    for kind in ("baseline", "progressive", "cmyk", "grayscale", "png", "png16", "jpeg12", "jpeg-lossless",
                 "jpeg-lossless16", "truncated"):
        assert found[kind] == (70, 45), kind
    assert all(found[kind] is None for kind in ("gif", "webp", "bmp", "tiff"))
    # A camera's EXIF thumbnail is a whole JPEG inside APP1: its frame is not the picture's.
    picture, thumbnail = bin_samples.encode(pixels, "baseline"), bin_samples.encode(pixels_for(0), "baseline")
    app1 = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    with_thumbnail = picture[:2] + app1 + picture[2:]
    assert image_dimensions(with_thumbnail) == (70, 45) == Image.open(io.BytesIO(with_thumbnail)).size[::-1]
    # Fill bytes may pad the gap before a marker.
    assert image_dimensions(picture[:2] + b"\xff\xff\xff" + picture[2:]) == (70, 45)
    # Cut before its frame header ends: no size, whatever the cut.
    frame = picture.index(b"\xff\xc0")
    assert {image_dimensions(picture[:cut]) for cut in range(frame + 9)} == {None}
    assert image_dimensions(picture[: frame + 9 + 30]) == (70, 45)


def test_image_dimensions_agree_with_pillow_on_damaged_jpegs():
    """Where Pillow still finds a size in a damaged JPEG's header, it is the one found here;
    where the walk finds one, Pillow finds the same (or refuses the file)."""
    rng = np.random.default_rng(5)
    originals = [bin_samples.encode(pixels_for(seed), kind) for seed in range(3) for kind in sorted(PLAIN_JPEG_KINDS)]
    compared = 0
    for _ in range(2000):
        data = damaged(originals[int(rng.integers(len(originals)))], rng)
        try:
            pillow = Image.open(io.BytesIO(data)).size[::-1]
        except Exception:  # noqa: BLE001 - Pillow's refusals vary (OSError, SyntaxError, ...)
            continue
        assert image_dimensions(data) in (pillow, None), data[:40]
        compared += image_dimensions(data) == pillow
    assert compared > 1000
