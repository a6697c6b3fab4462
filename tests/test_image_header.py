"""Tests of scripts/faceprep/image_header.py: image sizes read from header bytes, checked against Pillow."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

import bin_samples
from bin_samples import PLAIN_JPEG_KINDS, damaged, pixels_for
from faceprep.image_header import image_dimensions, image_format


def pillow_dimensions(data):
    with Image.open(io.BytesIO(data)) as image:
        return image.size[::-1]


def test_image_dimensions_are_pillows_for_every_format_a_tree_holds():
    """A rec's ``property`` and its report's sizes come from these (rec parts ask for every
    image's). TIFF is no tree image (image_format does not know it) and has none."""
    pixels = bin_samples.face_like(3, 70, 45)
    found = {kind: image_dimensions(bin_samples.encode(pixels, kind)) for kind in bin_samples.KINDS}
    for kind in ("baseline", "progressive", "cmyk", "grayscale", "png", "png16", "gif", "webp", "bmp", "jpeg12",
                 "jpeg-lossless", "jpeg-lossless16", "truncated"):
        assert found[kind] == (70, 45), kind
    assert found["tiff"] is None
    # A camera's EXIF thumbnail is a whole JPEG inside APP1: its frame is not the picture's.
    picture, thumbnail = bin_samples.encode(pixels, "baseline"), bin_samples.encode(pixels_for(0), "baseline")
    app1 = b"\xff\xe1" + (len(thumbnail) + 8).to_bytes(2, "big") + b"Exif\0\0" + thumbnail
    with_thumbnail = picture[:2] + app1 + picture[2:]
    assert image_dimensions(with_thumbnail) == (70, 45) == pillow_dimensions(with_thumbnail)
    # Fill bytes may pad the gap before a marker.
    assert image_dimensions(picture[:2] + b"\xff\xff\xff" + picture[2:]) == (70, 45)
    # Cut before its frame header ends: no size, whatever the cut.
    frame = picture.index(b"\xff\xc0")
    assert {image_dimensions(picture[:cut]) for cut in range(frame + 9)} == {None}
    assert image_dimensions(picture[: frame + 9 + 30]) == (70, 45)


def pillow_saved(mode, size, image_format, **options):
    pixels = np.random.default_rng(2).integers(0, 256, (size[1], size[0], len(mode)), np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode).save(stream, image_format, **options)
    return stream.getvalue()


def os2_bmp(width, height):
    """A BMP with OS/2's 12-byte BITMAPCOREHEADER (16-bit width and height), which Pillow reads
    but does not write: 24-bit rows padded to 4 bytes."""
    row = (3 * width + 3) // 4 * 4
    pixels = bytes(row * height)
    core = struct.pack("<IHHHH", 12, width, height, 1, 24)
    offset = 14 + len(core)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + core + pixels


def top_down(bmp):
    """The same BMP with its rows stored top down: a negative height."""
    height = struct.unpack_from("<i", bmp, 22)[0]
    return bmp[:22] + struct.pack("<i", -height) + bmp[26:]


@pytest.mark.parametrize("sample", [
    "webp lossy", "webp lossless", "webp with alpha", "webp wide", "gif87a", "gif89a", "bmp rgba",
    "bmp top down", "bmp os2", "png gray",
])
def test_image_dimensions_read_each_variant_of_a_format_as_pillow_does(sample):
    """WebP's three first chunks (VP8, VP8L, VP8X), both GIF versions, BMP's header kinds and
    row orders: odd sizes, so a swapped height and width shows."""
    data = {
        "webp lossy": lambda: pillow_saved("RGB", (37, 61), "WEBP", quality=80),
        "webp lossless": lambda: pillow_saved("RGB", (37, 61), "WEBP", lossless=True),
        "webp with alpha": lambda: pillow_saved("RGBA", (37, 61), "WEBP", quality=80),
        "webp wide": lambda: pillow_saved("RGB", (3001, 7), "WEBP", quality=80),
        "gif87a": lambda: pillow_saved("RGB", (300, 2), "GIF"),
        "gif89a": lambda: pillow_saved("L", (37, 61), "GIF", comment=b"a comment needs GIF89a"),
        "bmp rgba": lambda: pillow_saved("RGBA", (37, 61), "BMP"),
        "bmp top down": lambda: top_down(pillow_saved("RGB", (37, 61), "BMP")),
        "bmp os2": lambda: os2_bmp(37, 61),
        "png gray": lambda: pillow_saved("L", (37, 61), "PNG"),
    }[sample]()
    assert image_format(data) == ("gif" if sample.startswith("gif") else sample.split()[0])
    assert not sample.startswith("gif") or data[:6].decode().lower() == sample
    expected = pillow_dimensions(data)
    assert image_dimensions(data) == expected
    # Cut short anywhere in its first 64 bytes: the size or none, never a wrong one; none
    # before the 10th byte, where the earliest size field (GIF's) ends.
    cut_short = [image_dimensions(data[:cut]) for cut in range(64)]
    assert set(cut_short) <= {None, expected} and set(cut_short[:10]) == {None}


def test_image_dimensions_agree_with_pillow_on_damaged_jpegs():
    """Where Pillow still finds a size in a damaged JPEG's header, it is the one found here;
    where the walk finds one, Pillow finds the same (or refuses the file)."""
    rng = np.random.default_rng(5)
    originals = [bin_samples.encode(pixels_for(seed), kind) for seed in range(3) for kind in sorted(PLAIN_JPEG_KINDS)]
    compared = 0
    for _ in range(2000):
        data = damaged(originals[int(rng.integers(len(originals)))], rng)
        try:
            pillow = pillow_dimensions(data)
        except Exception:  # noqa: BLE001 - Pillow's refusals vary (OSError, SyntaxError, ...)
            continue
        assert image_dimensions(data) in (pillow, None), data[:40]
        compared += image_dimensions(data) == pillow
    assert compared > 1000
