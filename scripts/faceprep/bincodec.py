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

import functools
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from faceprep.binfile import BinError, image_position, load_bin, load_reformatted, write_reformatted
from faceprep.jpeg import fallback_decode, plain_jpegs, tf_may_decode, unreadable_reason

log = logging.getLogger(__name__)

REENCODE_MODES = ("needed", "all")
# tf.io.encode_jpeg's default quality, which the original reformat script used.
JPEG_QUALITY = 95
# Images per TensorFlow call: enough to hide the per-call overhead, few enough that
# bisecting a batch around an unreadable image stays cheap.
BATCH_SIZE = 256
# Re-encoding moves samples by JPEG noise (a few levels on average); a different face, or
# the same face in another pose, moves them by tens.
MEAN_ABS_DIFF_LIMIT = 10.0


# --- TensorFlow ----------------------------------------------------------------------------


class _TensorFlowOps:
    """Batched TF graphs over string tensors, built once (importing TF takes seconds).

    Each batch runs its images one after another (parallel_iterations=1), so ``threads``
    concurrent calls use ``threads`` cores; TF releases the GIL while they run.
    """

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        batch = tf.TensorSpec([None], tf.string)

        def each(function, images, output):
            return tf.map_fn(function, images, fn_output_signature=output, parallel_iterations=1)

        def decoded(contents):
            # decode_jpeg promises rank 3 statically but returns [1, H, W, 3] for WebP; the
            # runtime check turns that into a failure, as for anything else not an HxWx3 image.
            return tf.ensure_shape(tf.io.decode_jpeg(contents, channels=3), [None, None, 3])

        def size(contents):
            return tf.shape(decoded(contents))[:2]

        def reencoded(contents):
            return tf.io.encode_jpeg(decoded(contents), quality=JPEG_QUALITY)

        def compared(pair):
            source, output = decoded(pair[0]), decoded(pair[1])
            source_size, output_size = tf.shape(source)[:2], tf.shape(output)[:2]
            difference = tf.cond(
                tf.reduce_all(tf.equal(source_size, output_size)),
                lambda: tf.reduce_mean(tf.abs(tf.cast(source, tf.float32) - tf.cast(output, tf.float32))),
                lambda: tf.constant(-1.0),
            )
            sizes = tf.cast(tf.concat([source_size, output_size], 0), tf.float32)
            return tf.concat([sizes, difference[None]], 0)

        # [height, width] of each image.
        self.sizes = tf.function(
            lambda images: each(size, images, tf.TensorSpec([2], tf.int32)), input_signature=[batch]
        )
        # Each image decoded and encoded again.
        self.reencoded = tf.function(
            lambda images: each(reencoded, images, tf.TensorSpec([], tf.string)), input_signature=[batch]
        )
        # [source height, source width, output height, output width,
        #  mean |source - output| per sample (-1 if the sizes differ)].
        self.compared = tf.function(
            lambda sources, outputs: each(compared, (sources, outputs), tf.TensorSpec([5], tf.float32)),
            input_signature=[batch, batch],
        )

    def run(self, function, columns, indices, threads):
        """``function`` over the images at ``indices`` (one list per argument in ``columns``).

        Returns {index: result} for the images TF processes and leaves out those it fails
        on, found by bisecting each failing batch.
        """
        tf = self.tf

        def run_batch(batch):
            try:
                values = function(*(tf.constant([column[index] for index in batch]) for column in columns))
            except tf.errors.InvalidArgumentError:
                if len(batch) == 1:
                    return []
                middle = len(batch) // 2
                return run_batch(batch[:middle]) + run_batch(batch[middle:])
            return list(zip(batch, values.numpy()))

        size = max(1, min(BATCH_SIZE, -(-len(indices) // threads)))
        batches = [indices[start : start + size] for start in range(0, len(indices), size)]
        with ThreadPoolExecutor(threads) as pool:
            return {index: value for done in pool.map(run_batch, batches) for index, value in done}

    def encode(self, pixels):
        return self.tf.io.encode_jpeg(pixels, quality=JPEG_QUALITY).numpy()

    def decode(self, contents):
        return self.tf.io.decode_jpeg(contents, channels=3).numpy()


@functools.cache
def _tensorflow():
    return _TensorFlowOps()


# --- reformat and verify -------------------------------------------------------------------


def _refuse_source_as_output(source_path, output_path):
    same = os.path.realpath(source_path) == os.path.realpath(output_path)
    if same or (os.path.exists(output_path) and os.path.samefile(source_path, output_path)):
        raise BinError(
            f"{output_path}: is the source bin {source_path} itself; the source is only read, never replaced"
        )


def _summary(source_path, output_path, images, outputs, issame, tf_readable):
    """Counts comparing source and output; ``tf_readable`` holds the indices TF reads as HxWx3."""
    reencoded = [index for index, (image, output) in enumerate(zip(images, outputs)) if image != output]
    reasons = Counter(
        "reencode-all" if index in tf_readable else unreadable_reason(images[index]) for index in reencoded
    )
    same = sum(issame)
    return {
        "source": os.fspath(source_path),
        "output": os.fspath(output_path),
        "pairs": len(issame),
        "same": same,
        "different": len(issame) - same,
        "images": len(images),
        "kept": len(images) - len(reencoded),
        "reencoded": len(reencoded),
        "reencode_reasons": dict(sorted(reasons.items())),
        # Encoded image bytes, without pickle framing.
        "bytes_in": sum(map(len, images)),
        "bytes_out": sum(map(len, outputs)),
    }


def reformat_bin(source_path, output_path, reencode="needed", threads=1):
    """Write ``[bins, issame_list]`` of plain bytes and bools to ``output_path``; return a summary.

    ``reencode="needed"`` keeps every image ``tf.io.decode_jpeg(x, channels=3)`` decodes to
    HxWx3 byte for byte and re-encodes only the others; ``"all"`` re-encodes every image, as
    the original script did. TensorFlow is imported only for the images ``plain_jpeg`` turns
    down, and for ``"all"``. Raises BinError, writing nothing, if an image decodes nowhere or
    if ``output_path`` is the source. ``threads`` images are processed at once.
    """
    if reencode not in REENCODE_MODES:
        raise ValueError(f"reencode must be one of {REENCODE_MODES}, not {reencode!r}")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    _refuse_source_as_output(source_path, output_path)
    images, issame = load_bin(source_path)
    log.info("%s: %d images in %d pairs", source_path, len(images), len(issame))
    plain = plain_jpegs(images, threads) if reencode == "needed" else set()
    reformatted = {index: images[index] for index in plain}
    left = [index for index in range(len(images)) if index not in plain]
    log.info("%s: %d images are plain JPEGs and kept; %d left for TensorFlow", source_path, len(plain), len(left))
    tf_readable = set(plain)
    if left:
        tf = _tensorflow()
        candidates = [index for index in left if tf_may_decode(images[index])]
        if reencode == "all":
            reformatted.update(tf.run(tf.reencoded, [images], candidates, threads))
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
            encoded = pool.map(lambda index: tf.encode(fallback_decode(source_path, index, images[index])), unreadable)
            reformatted.update(zip(unreadable, encoded))
    outputs = [bytes(reformatted[index]) for index in range(len(images))]
    write_reformatted(output_path, outputs, issame)
    summary = _summary(source_path, output_path, images, outputs, issame, tf_readable)
    log.info("%s: wrote %s (%d kept, %d re-encoded)", source_path, output_path, summary["kept"], summary["reencoded"])
    return summary


def verify_bin(source_path, output_path, threads=1, mean_abs_diff_limit=MEAN_ABS_DIFF_LIMIT):
    """Check a reformatted bin against its source; return the reformat summary, verified.

    Every output element must be plain bytes that ``tf.image.decode_jpeg(x, channels=3)``
    decodes to the size of the source image; a re-encoded image must also differ from its
    source by at most ``mean_abs_diff_limit`` levels per sample on average (catching images out
    of order), and the issame lists must be equal. Raises BinError naming the first mismatch.
    The summary adds ``verified``, the largest difference seen and the limit.
    """
    images, issame = load_bin(source_path)
    outputs, output_issame = load_reformatted(output_path)
    if len(outputs) != len(images):
        raise BinError(f"{output_path}: holds {len(outputs)} images, its source {source_path} {len(images)}")
    for pair, (flag, source_flag) in enumerate(zip(output_issame, issame)):
        if flag != source_flag:
            raise BinError(f"{output_path}: issame_list[{pair}] (pair {pair}) is {flag}, the source says {source_flag}")
    tf = _tensorflow()
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
        source, output = fallback_decode(source_path, index, images[index]), tf.decode(outputs[index])
        same_size = source.shape == output.shape
        difference = float(np.mean(np.abs(source.astype(np.float32) - output))) if same_size else -1.0
        return (*source.shape[:2], *output.shape[:2], difference)

    with ThreadPoolExecutor(threads) as pool:
        compared.update(zip(others, pool.map(compare_fallback, others)))
    largest_difference = 0.0
    for index in reencoded:
        source_height, source_width, height, width, difference = (float(value) for value in compared[index])
        if (source_height, source_width) != (height, width):
            raise BinError(
                f"{image_position(output_path, index)} decodes to {height:.0f}x{width:.0f} (height x width),"
                f" the source image to {source_height:.0f}x{source_width:.0f}"
            )
        if difference > mean_abs_diff_limit:
            raise BinError(
                f"{image_position(output_path, index)} differs from the source image by {difference:.1f} levels per"
                f" sample on average (limit {mean_abs_diff_limit}): images out of order or replaced?"
            )
        largest_difference = max(largest_difference, difference)
    summary = _summary(source_path, output_path, images, outputs, issame, tf_readable)
    summary.update(
        verified=True, max_mean_abs_diff=round(largest_difference, 3), mean_abs_diff_limit=mean_abs_diff_limit
    )
    log.info("%s: verified against %s", output_path, source_path)
    return summary
