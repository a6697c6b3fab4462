"""insightface evaluation bins (``lfw.bin``, ``cfp_fp.bin``, ...): reformat for TensorFlow, verify.

An image that ``tf.io.decode_jpeg(x, channels=3)`` already decodes to an HxWx3 image is kept
byte for byte; the others are decoded by ``faceprep.jpeg.fallback_decode`` and re-encoded by
``tf.io.encode_jpeg``. The bin's pickle, read and written, is ``faceprep.binfile``.

Importing TensorFlow takes seconds, longer than checking a whole bin, so reformatting first
checks images without it (``plain_jpeg``): a well-formed 8-bit JPEG that libjpeg-turbo decodes
is one TF decodes. Only the images left over (other formats, damaged JPEGs) need TF's verdict,
and only re-encoding needs TF itself. verify_bin decodes every output image with TF.

Only numpy is imported up front; TensorFlow, imagecodecs and Pillow when first needed.
"""

import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from faceprep.binfile import image_position, load_bin, load_reformatted, write_reformatted
from faceprep.errors import BinError
from faceprep.jpeg import fallback_decode, plain_jpegs, reencoding_psnr_floor, tf_may_decode, unreadable_reason
from faceprep.tf_ops import tensorflow_ops

log = logging.getLogger(__name__)

REENCODE_MODES = ("needed", "all")
# tf.io.encode_jpeg's default quality, which the original reformat script used. Above it,
# decode_jpeg's default (fast integer) IDCT overflows on fine detail and loses more than the
# higher quality keeps: random noise comes back at 35 dB from quality 95, 24 dB from 100.
JPEG_QUALITY = 95
# Images either side of a misplaced image that verify_bin compares it with, to say where it
# came from: its pair partner and two pairs each way.
NEIGHBOURS = 4
REENCODED_IMAGES_NOTE = (
    "Re-encoded with tf.io.encode_jpeg at jpeg_quality, 4:4:4 (no chroma subsampling). Per re-encoded image:"
    " psnr_db (null: identical pixels) and mean_abs_diff (levels of 0-255 per sample) against its source,"
    " both decoded with the accurate integer IDCT; sources of more than 8 bits per sample (jpeg-12bit,"
    " png-16bit, 16-bit lossless JPEG or TIFF) are compared as rounded to 8 bits, so their loss is that"
    " rounding plus the JPEG step measured here. psnr_floor_db: the least PSNR re-encoding at jpeg_quality"
    " can give an image of that size, which every image must reach."
)


def _refuse_source_as_output(source_path, output_path):
    same = os.path.realpath(source_path) == os.path.realpath(output_path)
    if same or (os.path.exists(output_path) and os.path.samefile(source_path, output_path)):
        raise BinError(
            f"{output_path}: is the source bin {source_path} itself; the source is only read, never replaced"
        )


def _reencode_reasons(images, outputs, tf_readable):
    """{index: why} for every output image that is not its source; ``tf_readable`` holds the
    indices TF reads as HxWx3, re-encoded only because ``reencode`` is "all"."""
    return {
        index: "reencode-all" if index in tf_readable else unreadable_reason(image)
        for index, (image, output) in enumerate(zip(images, outputs))
        if image != output
    }


def _summary(source_path, output_path, images, outputs, issame, reasons, jpeg_quality):
    """Counts comparing source and output; ``reasons`` as ``_reencode_reasons`` returns them."""
    same = sum(issame)
    return {
        "source": os.fspath(source_path),
        "output": os.fspath(output_path),
        "pairs": len(issame),
        "same": same,
        "different": len(issame) - same,
        "images": len(images),
        "kept": len(images) - len(reasons),
        "reencoded": len(reasons),
        "reencode_reasons": dict(sorted(Counter(reasons.values()).items())),
        "jpeg_quality": jpeg_quality,
        # Encoded image bytes, without pickle framing.
        "bytes_in": sum(map(len, images)),
        "bytes_out": sum(map(len, outputs)),
    }


def _check_arguments(threads, jpeg_quality):
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if not (isinstance(jpeg_quality, int) and 1 <= jpeg_quality <= 100):
        raise ValueError(f"jpeg_quality must be an integer from 1 to 100, not {jpeg_quality!r}")


def reformat_bin(source_path, output_path, reencode="needed", threads=1, jpeg_quality=JPEG_QUALITY):
    """Write ``[bins, issame_list]`` of plain bytes and bools to ``output_path``; return a summary.

    ``reencode="needed"`` keeps every image ``tf.io.decode_jpeg(x, channels=3)`` decodes to
    HxWx3 byte for byte and re-encodes only the others; ``"all"`` re-encodes every image, as
    the original script did. Re-encoded images are baseline JPEGs at ``jpeg_quality`` with
    full chroma (4:4:4). TensorFlow is imported only for the images ``plain_jpeg`` turns
    down, and for ``"all"``. Raises BinError, writing nothing, if an image decodes nowhere or
    if ``output_path`` is the source. ``threads`` images are processed at once.
    """
    _check_reformat_arguments(reencode, threads, jpeg_quality)  # before reading a bin of any size
    _refuse_source_as_output(source_path, output_path)
    images, issame = load_bin(source_path)
    return reformat_images(images, issame, source_path, output_path, reencode, threads, jpeg_quality)


def _check_reformat_arguments(reencode, threads, jpeg_quality):
    if reencode not in REENCODE_MODES:
        raise ValueError(f"reencode must be one of {REENCODE_MODES}, not {reencode!r}")
    _check_arguments(threads, jpeg_quality)


def reformat_images(images, issame, source_path, output_path, reencode="needed", threads=1, jpeg_quality=JPEG_QUALITY):
    """``reformat_bin`` of the pairs' ``images`` (bytes, in pair order) and ``issame`` flags,
    from ``source_path`` (a bin, or a pairs file: it names the images in messages)."""
    _check_reformat_arguments(reencode, threads, jpeg_quality)
    log.info("%s: %d images in %d pairs", source_path, len(images), len(issame))
    plain = plain_jpegs(images, threads) if reencode == "needed" else set()
    reformatted = {index: images[index] for index in plain}
    left = [index for index in range(len(images)) if index not in plain]
    log.info("%s: %d images are plain JPEGs and kept; %d left for TensorFlow", source_path, len(plain), len(left))
    tf_readable = set(plain)
    if left:
        tf = tensorflow_ops()
        candidates = [index for index in left if tf_may_decode(images[index])]
        if reencode == "all":
            reformatted.update(tf.run(tf.reencoder(jpeg_quality), [images], candidates, threads))
        else:
            reformatted.update({index: images[index] for index in tf.run(tf.sizes, [images], candidates, threads)})
        tf_readable = set(reformatted)
        unreadable = [index for index in left if index not in tf_readable]
        for index in unreadable:
            log.info(
                "%s: TF does not read it (%s); re-encoding",
                image_position(source_path, index),
                unreadable_reason(images[index]),
            )
        with ThreadPoolExecutor(threads) as pool:
            encoded = pool.map(
                lambda index: tf.encode(fallback_decode(source_path, index, images[index]), jpeg_quality), unreadable
            )
            reformatted.update(zip(unreadable, encoded))
    outputs = [bytes(reformatted[index]) for index in range(len(images))]
    write_reformatted(output_path, outputs, issame)
    reasons = _reencode_reasons(images, outputs, tf_readable)
    summary = _summary(source_path, output_path, images, outputs, issame, reasons, jpeg_quality)
    log.info("%s: wrote %s (%d kept, %d re-encoded)", source_path, output_path, summary["kept"], summary["reencoded"])
    return summary


def _psnr(mean_square):
    """PSNR in dB (peak 255) of a mean squared difference; None for identical pixels."""
    return 10 * math.log10(255**2 / mean_square) if mean_square > 0 else None


def _psnr_text(mean_square):
    psnr = _psnr(mean_square)
    return "identical pixels" if psnr is None else f"PSNR {psnr:.1f} dB"


def _mean_square(first, second):
    return float(np.mean(np.square(first.astype(np.float32) - second)))


def _nearest_other_source(tf, source_path, images, index, output):
    """``(other, mean squared difference)`` of the source image near ``index`` (its pair
    partner, NEIGHBOURS either side) that ``output`` is closest to; None if none has its size."""
    nearby = {index ^ 1, *range(max(0, index - NEIGHBOURS), min(len(images), index + NEIGHBOURS + 1))} - {index}
    differences = {}
    for other in sorted(nearby):
        source = tf.decode_accurately(images[other]) if tf_may_decode(images[other]) else None
        if source is None:
            try:
                source = fallback_decode(source_path, other, images[other])
            except BinError:  # says nothing about where the output came from
                continue
        if source.shape == output.shape:
            differences[other] = _mean_square(source, output)
    return min(differences.items(), key=lambda item: item[1], default=None)


def verify_bin(source_path, output_path, threads=1, jpeg_quality=JPEG_QUALITY):
    """Check a reformatted bin against its source; return the reformat summary, verified.

    Every output element must be plain bytes that ``tf.image.decode_jpeg(x, channels=3)``
    decodes to the size of the source image, and the issame lists must be equal. An image
    that is not its source byte for byte must be within what re-encoding at ``jpeg_quality``
    can do to its source (``reencoding_psnr_floor``): a swapped, shifted or replaced image is
    not, unless it is as close to the one it replaces as a re-encode could be, in which case
    no check of pixels can tell them apart (two flat images of nearly one colour). Raises
    BinError naming the first mismatch and, for a misplaced image, the source image it
    matches. The summary adds ``verified`` and, per re-encoded image, the reason and the
    measured difference (see REENCODED_IMAGES_NOTE).
    """
    _check_arguments(threads, jpeg_quality)
    images, issame = load_bin(source_path)
    outputs, output_issame = load_reformatted(output_path)
    if len(outputs) != len(images):
        raise BinError(f"{output_path}: holds {len(outputs)} images, its source {source_path} {len(images)}")
    for pair, (flag, source_flag) in enumerate(zip(output_issame, issame)):
        if flag != source_flag:
            raise BinError(f"{output_path}: issame_list[{pair}] (pair {pair}) is {flag}, the source says {source_flag}")
    tf = tensorflow_ops()
    kept = [index for index in range(len(images)) if outputs[index] == images[index]]
    reencoded = [index for index in range(len(images)) if outputs[index] != images[index]]
    # A kept image is its source: that it decodes at all proves it decodes at the source's size.
    decodable = set(tf.run(tf.sizes, [outputs], kept, threads))
    # Re-encoded images are decoded with their source, whose size and pixels they must match.
    compared = tf.run(tf.compared, [images, outputs], [i for i in reencoded if tf_may_decode(images[i])], threads)
    tf_readable = set(compared)
    others = [index for index in reencoded if index not in tf_readable]
    decodable |= tf_readable | set(tf.run(tf.sizes, [outputs], others, threads))
    for index in range(len(outputs)):
        if index not in decodable:
            raise BinError(
                f"{image_position(output_path, index)}: tf.image.decode_jpeg(channels=3) does not decode it to an image"
            )

    def compare_fallback(index):
        source, output = fallback_decode(source_path, index, images[index]), tf.decode_accurately(outputs[index])
        if source.shape != output.shape:
            return (*source.shape[:2], *output.shape[:2], -1.0, -1.0)
        mean_abs_diff = float(np.mean(np.abs(source.astype(np.float32) - output)))
        return (*source.shape[:2], *output.shape[:2], mean_abs_diff, _mean_square(source, output))

    with ThreadPoolExecutor(threads) as pool:
        compared.update(zip(others, pool.map(compare_fallback, others)))
    reasons = _reencode_reasons(images, outputs, tf_readable)
    measured = []
    for index in reencoded:
        source_height, source_width, height, width, mean_abs_diff, mean_square = map(float, compared[index])
        if (source_height, source_width) != (height, width):
            raise BinError(
                f"{image_position(output_path, index)} decodes to {height:.0f}x{width:.0f} (height x width),"
                f" the source image to {source_height:.0f}x{source_width:.0f}"
            )
        floor = reencoding_psnr_floor(jpeg_quality, int(height), int(width))
        psnr = _psnr(mean_square)
        # Checking that an image is nearer its own source than its neighbours' would add
        # nothing: a neighbour further from the source than twice the bound's RMS difference
        # is (triangle inequality) further from a re-encode within the bound than the source
        # is, and a nearer one cannot be told from a re-encode. So the bound decides, and the
        # neighbours are compared only to name the image a misplaced one came from.
        if psnr is not None and psnr < floor:
            found = (
                f"{_psnr_text(mean_square)}, mean absolute difference {mean_abs_diff:.1f} levels per sample;"
                f" re-encoding at quality {jpeg_quality} keeps at least {floor:.1f} dB"
            )
            output = tf.decode_accurately(outputs[index])
            nearest = _nearest_other_source(tf, source_path, images, index, output)
            # A source image it matches as closely as a re-encode of it would.
            if nearest is not None and (nearest[1] == 0 or _psnr(nearest[1]) >= floor):
                other, other_mean_square = nearest
                raise BinError(
                    f"{image_position(output_path, index)} matches source image {other} (pair {other // 2},"
                    f" {_psnr_text(other_mean_square)}), not its own source image ({found}):"
                    " images swapped or out of order?"
                )
            raise BinError(
                f"{image_position(output_path, index)} differs from its source image more than re-encoding can"
                f" ({found}), and from every source image near it: image replaced?"
            )
        measured.append(
            {
                "image": index,
                "pair": index // 2,
                "reason": reasons[index],
                "psnr_db": None if psnr is None else round(psnr, 2),
                "mean_abs_diff": round(mean_abs_diff, 3),
                "psnr_floor_db": round(floor, 2),
            }
        )
    summary = _summary(source_path, output_path, images, outputs, issame, reasons, jpeg_quality)
    summary.update(verified=True, reencoded_images=measured, reencoded_images_note=REENCODED_IMAGES_NOTE)
    log.info("%s: verified against %s", output_path, source_path)
    return summary
