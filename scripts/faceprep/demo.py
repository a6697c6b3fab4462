"""A small synthetic faces_emore-like dataset that the workflow builds for itself.

``make_demo_dataset`` writes ``train.rec``/``train.idx`` in insightface's layout, the
``property`` file and the evaluation bins ``lfw.bin``, ``cfp_fp.bin`` and
``agedb_30.bin`` (written as insightface's Python 2 tooling pickled them), with faces
drawn by ``faceprep.faces``.
"""

import io
import logging
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from faceprep.binfile import write_py2_bin
from faceprep.faces import IMAGE_SIZE, draw_face, random_face_traits
from faceprep.insightface import DatasetWriter

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
BIN_NAMES = ("lfw", "cfp_fp", "agedb_30")
BIN_PAIRS = 100
# Formats planted once in cfp_fp and agedb_30 (lfw is plain JPEG like the real one).
# tf.io.decode_jpeg reads the first group; the second needs another decoder.
TF_READABLE_EXTRA_FORMATS = ("png", "jpeg_progressive", "jpeg_grayscale", "jpeg_cmyk")
TF_UNREADABLE_FORMATS = ("bmp", "jpeg_12bit", "jpeg_lossless")


def _pillow_bytes(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def encode_image(pixels, image_format="jpeg"):
    """Encode an RGB uint8 image as ``image_format`` (``jpeg`` or one of the planted bin formats)."""
    image = Image.fromarray(pixels)
    if image_format == "jpeg":
        return _pillow_bytes(image, format="JPEG", quality=JPEG_QUALITY)
    if image_format == "jpeg_progressive":
        return _pillow_bytes(image, format="JPEG", quality=JPEG_QUALITY, progressive=True)
    if image_format == "jpeg_grayscale":
        return _pillow_bytes(image.convert("L"), format="JPEG", quality=JPEG_QUALITY)
    if image_format == "jpeg_cmyk":
        return _pillow_bytes(image.convert("CMYK"), format="JPEG", quality=JPEG_QUALITY)
    if image_format == "png":
        return _pillow_bytes(image, format="PNG")
    if image_format == "bmp":
        return _pillow_bytes(image, format="BMP")
    if image_format == "jpeg_12bit":
        # Spread 8 bits over 12 (v * 16 + v // 16) so that 4095 is white.
        wide = pixels.astype(np.uint16) * 16 + pixels // 16
        return bytes(imagecodecs.jpeg8_encode(wide, level=JPEG_QUALITY, bitspersample=12))
    if image_format == "jpeg_lossless":
        return bytes(imagecodecs.jpeg8_encode(pixels, lossless=True))
    raise ValueError(f"unknown demo image format {image_format!r}")


def _identity_sizes(images, identities, rng):
    """Images per identity: uneven, every identity at least one."""
    weights = rng.lognormal(0, 0.5, identities)
    return 1 + rng.multinomial(images - identities, weights / weights.sum())


def _write_rec(out_dir, traits, sizes, rng):
    """train.rec/train.idx/property in insightface's layout: image keys 1..N grouped by identity."""
    with DatasetWriter(out_dir, image_size=(IMAGE_SIZE, IMAGE_SIZE)) as writer:
        key = 1
        for label, (identity, count) in enumerate(zip(traits, sizes)):
            for _ in range(count):
                writer.add(key, float(label), encode_image(draw_face(identity, rng)))
                key += 1


def _write_demo_bin(path, traits, rng, planted_formats, as_arrays):
    """Write BIN_PAIRS pairs (half same identity) with ``planted_formats`` at random images."""
    issame = [index % 2 == 0 for index in range(BIN_PAIRS)]
    formats = ["jpeg"] * (2 * BIN_PAIRS)
    for position, image_format in zip(rng.choice(2 * BIN_PAIRS, len(planted_formats), replace=False),
                                      planted_formats):
        formats[position] = image_format
    images = []
    for pair, same in enumerate(issame):
        first, second = rng.choice(len(traits), 2, replace=False)
        for index, identity in ((2 * pair, first), (2 * pair + 1, first if same else second)):
            encoded = encode_image(draw_face(traits[identity], rng), formats[index])
            images.append(np.frombuffer(encoded, dtype=np.uint8).reshape(-1, 1) if as_arrays else encoded)
    write_py2_bin(path, images, issame)
    return formats


def make_demo_dataset(out_dir, images=2000, identities=40, seed=0):
    """Write a faces_emore-like dataset into ``out_dir``; the same arguments give identical bytes.

    Returns ``{bin name: [format of each image]}`` (formats as in ``encode_image``).
    """
    if identities < 1 or images < identities:
        raise ValueError(f"demo dataset needs at least one identity and one image per identity, "
                         f"got images={images}, identities={identities}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Independent streams, so that e.g. the number of images does not change the bins.
    traits_rng, sizes_rng, rec_rng, bins_rng = map(np.random.default_rng, np.random.SeedSequence(seed).spawn(4))
    traits = [random_face_traits(traits_rng) for _ in range(identities)]
    # Different-identity pairs need two people; a lone identity gets a stranger for them.
    bin_traits = traits if identities > 1 else traits + [random_face_traits(traits_rng)]
    sizes = _identity_sizes(images, identities, sizes_rng)

    _write_rec(out_dir, traits, sizes, rec_rng)
    log.info("%s: train.rec with %d images of %d identities", out_dir, images, identities)
    formats = {}
    for name in BIN_NAMES:
        planted = () if name == "lfw" else TF_READABLE_EXTRA_FORMATS + TF_UNREADABLE_FORMATS
        formats[name] = _write_demo_bin(out_dir / f"{name}.bin", bin_traits, bins_rng, planted, as_arrays=name != "lfw")
        log.info("%s: %s.bin with %d pairs, planted formats %s", out_dir, name, BIN_PAIRS, ", ".join(planted) or "none")
    return formats
