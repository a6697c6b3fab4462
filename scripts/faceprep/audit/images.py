"""What the audit learns from one image's bytes: whether a full decode accepts it, its
format, its size, and a grayscale copy at the evaluation-overlap search's size.

The decoder is Pillow's libjpeg-turbo (and its PNG, BMP, GIF, WebP and TIFF readers), run
on the whole image with truncated images refused, as TF and DALI's decoders refuse them.
JPEGs Pillow does not read (12-bit, lossless) are decoded by libjpeg-turbo through
imagecodecs, so that they count as decodable but not plain. A JPEG whose image data has no
end marker is cut short even where a decoder would fill in the rest.
"""

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from faceprep.image_header import JPEG_SOI
from faceprep.jpeg import PLAIN_JPEG, jpeg_format, jpeg_header

# The training readers that fail on an image of each format that is not plain JPEG (those
# missing here, such as arithmetic-coded JPEG, were not tried): Keras_insightface's
# tf.io.decode_jpeg(channels=3), which raises, or for a WebP returns a batch of one frame (a
# 4-D tensor no batch of 3-D images takes); arcface_torch's DALI fn.decoders.image; and
# insightface's MXFaceDataset's mx.image.imdecode, which raises, or for a 12-bit JPEG gives
# wrong pixels without an error. tests/test_audit.py checks each with the readers themselves.
TENSORFLOW, DALI, MXNET = "tf.io.decode_jpeg", "DALI fn.decoders.image", "mx.image.imdecode"
FAILING_READERS = {
    "png": [], "jpeg-cmyk": [], "gif": [DALI, MXNET], "bmp": [TENSORFLOW], "tiff": [TENSORFLOW],
    "webp": [TENSORFLOW, MXNET], "jpeg-12bit": [TENSORFLOW, DALI, MXNET], "jpeg-lossless": [TENSORFLOW, MXNET],
    "jpeg-lossless-16bit": [TENSORFLOW, DALI, MXNET],
}
# Faces are compared at insightface's aligned size; images of other sizes are resized to it.
GRAY_SIZE = 112
_EOI = b"\xff\xd9"


@dataclass
class ImageFacts:
    """One image's audit: ``problem`` says why it is undecodable (None when it decodes);
    ``format`` is ``jpeg`` for a plain JPEG or what it is instead (``png``, ``jpeg-cmyk``, ...);
    ``size`` is ``(width, height)``; ``image`` the decoded picture (Pillow), for the overlap
    search, dropped once used."""

    problem: str = None
    format: str = None
    size: tuple = None
    image: Image.Image = None


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _decode_jpeg_with_imagecodecs(data, header):
    """Pillow reads only 8-bit JPEGs; libjpeg-turbo 3 (imagecodecs) reads 12-bit and lossless."""
    import imagecodecs

    pixels = imagecodecs.jpeg8_decode(data)
    if pixels.dtype != np.uint8:
        bits = header.precision or 8 * pixels.dtype.itemsize
        pixels = np.clip(np.rint(pixels * (255 / ((1 << bits) - 1))), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return Image.fromarray(pixels, "CMYK")
    return Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)


def _jpeg_facts(data):
    header = jpeg_header(data)
    found = jpeg_format(header)
    if found is None:
        return ImageFacts(problem="JPEG without a frame header (cut short or damaged)", format="jpeg")
    if header.scan_start is None:
        return ImageFacts(problem="truncated: the JPEG ends before its image data", format=found)
    # Searched from the end, where the marker is (a search from the start reads the whole file).
    if data.rfind(_EOI, header.scan_start) < 0:
        return ImageFacts(problem="truncated: the JPEG's image data has no end marker", format=found)
    try:
        if header.precision == 8 and found != "jpeg-lossless":
            image = Image.open(io.BytesIO(data))
            image.load()
        else:
            image = _decode_jpeg_with_imagecodecs(data, header)
    # Pillow and imagecodecs raise assorted types for data they refuse.
    except Exception as error:
        return ImageFacts(problem=_first_line(error), format=found)
    return ImageFacts(format=found, size=image.size, image=image)


def inspect_image(data):
    """The ``ImageFacts`` of an image's bytes."""
    if not data:
        return ImageFacts(problem="empty: no image bytes", format="empty")
    if data.startswith(JPEG_SOI):
        return _jpeg_facts(data)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        return ImageFacts(problem=f"not an image format the decoder knows (starts {data[:8].hex()})", format="unknown")
    except Exception as error:
        return ImageFacts(problem=_first_line(error), format="unknown")
    try:
        image.load()
    except Exception as error:
        return ImageFacts(problem=_first_line(error), format=image.format.lower())
    return ImageFacts(format=image.format.lower(), size=image.size, image=image)


def image_digest(data):
    """The 16-byte digest images are told apart by (SHA-256, which CPUs compute in hardware)."""
    return hashlib.sha256(data).digest()[:16]


def is_plain(facts):
    return facts.format == PLAIN_JPEG


def comparable(image):
    """``image`` as 8-bit gray or RGB at GRAY_SIZE x GRAY_SIZE: what the overlap search crops
    its thumbnails from and compares pixels of."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("L") if image.mode.startswith("I") or image.mode == "F" else image.convert("RGB")
    if image.size != (GRAY_SIZE, GRAY_SIZE):
        image = image.resize((GRAY_SIZE, GRAY_SIZE), Image.BILINEAR)
    return image
