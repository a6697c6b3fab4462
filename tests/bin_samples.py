"""Sample images in every format an evaluation bin may hold, bins shaped as insightface wrote them,
and the checks the bin tests share.

Python 2 bins come from faceprep.binfile.write_py2_bin, which spells out py2's pickle opcodes,
or are the fixtures in fixtures/py2_bins, written by a real Python 2.7 pickler. Expected
counts are read from bins with plain ``pickle``, independently of faceprep.binfile.
"""

import io
import pickle
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from faceprep.binfile import write_py2_bin

PY2_BINS = Path(__file__).resolve().parent / "fixtures" / "py2_bins"
PY2_BIN_NAMES = ("lfw.bin", "cfp_fp.bin")

# Encodings from encode(); which of them TF reads is for the tests to find out.
KINDS = (
    "baseline",
    "progressive",
    "cmyk",
    "grayscale",
    "png",
    "png16",
    "gif",
    "webp",
    "bmp",
    "tiff",
    "jpeg12",
    "jpeg-lossless",
    "jpeg-lossless16",
    "truncated",
)
# Kinds that are complete 8-bit JPEGs, which reformat_bin keeps without asking TF.
PLAIN_JPEG_KINDS = {"baseline", "progressive", "cmyk", "grayscale"}
# The summary's reason for each sample kind TF does not read as an HxWx3 image.
REASONS = {
    "webp": "webp",
    "bmp": "bmp",
    "tiff": "tiff",
    "jpeg12": "jpeg-12bit",
    "jpeg-lossless": "jpeg-lossless",
    "jpeg-lossless16": "jpeg-lossless",
    "truncated": "truncated-jpeg",
}


def face_like(seed, height=112, width=112):
    """A smooth synthetic picture standing in for an aligned face crop.

    Shading and mild noise: re-encoding it as JPEG moves samples by a level or two, while
    pictures from two seeds differ by tens.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    frequencies, phases = rng.uniform(0.5, 2.5, (3, 2)), rng.uniform(0, 2 * np.pi, 3)
    channels = [
        128 + 90 * np.sin(2 * np.pi * (fy * y + fx * x) + phase) for (fy, fx), phase in zip(frequencies, phases)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 2, (height, width, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def pixels_for(index):
    """The picture behind image ``index``: pairs alternate between two sizes."""
    return face_like(index, 112, 112 if index % 4 < 2 else 96)


def flags_for(pairs):
    return [pair % 3 == 0 for pair in range(pairs)]


def _pillow(pixels, image_format, mode=None, **options):
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def encode(pixels, kind):
    """``pixels`` (HxWx3 uint8) encoded as ``kind``, one of KINDS."""
    wide = pixels.astype(np.uint16)
    if kind == "baseline":
        return _pillow(pixels, "JPEG", quality=90)
    if kind == "progressive":
        return _pillow(pixels, "JPEG", quality=90, progressive=True)
    if kind == "cmyk":  # Pillow writes Adobe (inverted) CMYK, as Photoshop does
        return _pillow(pixels, "JPEG", "CMYK", quality=90)
    if kind == "grayscale":
        return _pillow(pixels, "JPEG", "L", quality=90)
    if kind == "png":
        return _pillow(pixels, "PNG")
    if kind == "png16":
        return imagecodecs.png_encode(wide * 257)
    if kind == "gif":
        return _pillow(pixels, "GIF")
    if kind == "webp":
        return _pillow(pixels, "WEBP", quality=90)
    if kind == "bmp":
        return _pillow(pixels, "BMP")
    if kind == "tiff":
        return _pillow(pixels, "TIFF")
    if kind == "jpeg12":
        return imagecodecs.jpeg8_encode(wide * 16, bitspersample=12, level=90)
    if kind == "jpeg-lossless":
        return imagecodecs.jpeg8_encode(pixels, lossless=True)
    if kind == "jpeg-lossless16":
        return imagecodecs.jpeg8_encode(wide * 257, lossless=True, bitspersample=16)
    if kind == "truncated":
        whole = _pillow(pixels, "JPEG", quality=90)
        return whole[: len(whole) * 6 // 10]
    raise ValueError(f"unknown sample kind {kind!r}")


def garbage(seed, size=3000):
    """Bytes no image decoder reads."""
    return b"\x00garbage" + np.random.default_rng(seed).bytes(size)


def as_imencode_arrays(images):
    """Images as cv2.imencode returns them: uint8 arrays of shape (n, 1)."""
    return [np.frombuffer(image, np.uint8).reshape(-1, 1).copy() for image in images]


def write_pickled_bin(path, bins, issame, protocol=4):
    with open(path, "wb") as file:
        pickle.dump((bins, issame), file, protocol=protocol)


def read_pickled_bin(path):
    """``(images, issame)`` of a source bin as plain ``pickle`` reads it: each image's bytes
    (a py2 ``str`` as bytes, an array's ``tobytes()``) and the flags as pickled."""
    with open(path, "rb") as file:
        bins, issame = pickle.load(file, encoding="bytes")
    return [image if isinstance(image, bytes) else image.tobytes() for image in bins], list(issame)


def counts_from_bins(source, output):
    """The counts a reformat or verify summary must report, from the source bin and the
    reformatted one as plain ``pickle`` reads them: an image is kept if its bytes are unchanged."""
    images, issame = read_pickled_bin(source)
    outputs, _ = load_output(output)
    kept = sum(image == result for image, result in zip(images, outputs, strict=True))
    return {
        "pairs": len(issame),
        "same": issame.count(True),
        "different": issame.count(False),
        "images": len(images),
        "kept": kept,
        "reencoded": len(images) - kept,
        "bytes_in": sum(map(len, images)),
        "bytes_out": sum(map(len, outputs)),
    }


def load_output(path):
    """A reformatted bin as the evaluation code loads it."""
    with open(path, "rb") as file:
        return pickle.load(file, encoding="bytes")


def mixed_bin(path):
    """A py2-style bin holding every sample kind; returns (kinds, images, issame)."""
    kinds = list(KINDS)
    images = [encode(pixels_for(index), kind) for index, kind in enumerate(kinds)]
    issame = flags_for(len(images) // 2)
    write_py2_bin(path, images, issame)
    return kinds, images, issame


def pillow_decoded(data):
    """HxWx3 pixels; Pillow decodes JPEGs with libjpeg's accurate integer IDCT, as verify_bin asks TF to."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def assert_measured(entry, source_pixels, output):
    """``entry`` (one of verify_bin's reencoded_images) reports the difference computed here."""
    difference = source_pixels.astype(float) - pillow_decoded(output)
    assert entry["psnr_db"] == pytest.approx(10 * np.log10(255**2 / np.mean(difference**2)), abs=0.01)
    assert entry["mean_abs_diff"] == pytest.approx(np.abs(difference).mean(), abs=0.001)


# Ways to damage a JPEG: cut it, overwrite bytes, drop a run, insert random bytes, append some.
DAMAGE = ("cut", "overwrite", "drop", "insert", "append")


def damaged(data, rng):
    """``data`` damaged one of the DAMAGE ways, at a place ``rng`` picks."""
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
