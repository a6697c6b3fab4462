"""TensorFlow for the bins: imported without Keras, and batched graphs (sizes, re-encoding,
pixel comparisons) over string tensors, run over threads with failing images left out.

TensorFlow's decoder is the reference here because it is what evaluation code calls:
``tf.io.decode_jpeg(x, channels=3)``.
"""

import functools
import sys
from concurrent.futures import ThreadPoolExecutor

# Images per TensorFlow call: enough to hide the per-call overhead, few enough that
# bisecting a batch around an unreadable image stays cheap.
BATCH_SIZE = 256

# The import TF's __init__ makes only to register Keras optimizers for SavedModels; Keras's
# package imports matplotlib and pandas with it.
_KERAS_IMPORTED_BY_TF = "keras.src.optimizers"


def import_tensorflow():
    """``import tensorflow`` without the Keras that TF's ``__init__`` imports eagerly: about a
    second of the ~4 s the import takes on one core here, and nothing in this package uses Keras.

    A None entry in ``sys.modules`` makes that one import fail at once, which TF's ``__init__``
    catches (``except ImportError``); it is removed afterwards, so Keras stays importable.
    """
    blocked = _KERAS_IMPORTED_BY_TF not in sys.modules
    if blocked:
        sys.modules[_KERAS_IMPORTED_BY_TF] = None
    try:
        import tensorflow
    finally:
        if blocked and sys.modules.get(_KERAS_IMPORTED_BY_TF, 0) is None:
            del sys.modules[_KERAS_IMPORTED_BY_TF]
    return tensorflow


class TensorFlowOps:
    """Batched TF graphs over string tensors, built once (importing TF takes seconds).

    Each batch runs its images one after another (parallel_iterations=1), so ``threads``
    concurrent calls use ``threads`` cores; TF releases the GIL while they run.
    """

    def __init__(self):
        tf = import_tensorflow()
        self.tf = tf
        batch = tf.TensorSpec([None], tf.string)

        def each(function, images, output):
            return tf.map_fn(function, images, fn_output_signature=output, parallel_iterations=1)

        def decoded(contents, dct_method=""):
            # decode_jpeg promises rank 3 statically but returns [1, H, W, 3] for WebP; the
            # runtime check turns that into a failure, as for anything else not an HxWx3 image.
            return tf.ensure_shape(tf.io.decode_jpeg(contents, channels=3, dct_method=dct_method), [None, None, 3])

        # Pixels that are re-encoded or compared come from the accurate integer IDCT: the
        # default (fast) one is off by a few levels at quality 95 and by tens above it.
        def accurate(contents):
            return decoded(contents, "INTEGER_ACCURATE")

        def size(contents):
            return tf.shape(decoded(contents))[:2]

        def differences(source, output):
            difference = tf.cast(source, tf.float32) - tf.cast(output, tf.float32)
            return tf.stack([tf.reduce_mean(tf.abs(difference)), tf.reduce_mean(tf.square(difference))])

        def compared(pair):
            source, output = accurate(pair[0]), accurate(pair[1])
            # The size evaluation code sees: decode_jpeg as it calls it.
            source_size, output_size = tf.shape(source)[:2], size(pair[1])
            measured = tf.cond(
                tf.reduce_all(tf.equal(source_size, output_size)),
                lambda: differences(source, output),
                lambda: tf.constant([-1.0, -1.0]),
            )
            sizes = tf.cast(tf.concat([source_size, output_size], 0), tf.float32)
            return tf.concat([sizes, measured], 0)

        def reencoder(quality):
            def reencoded(contents):
                return self.encode_graph(accurate(contents), quality)

            return tf.function(
                lambda images: each(reencoded, images, tf.TensorSpec([], tf.string)), input_signature=[batch]
            )

        # [height, width] of each image.
        self.sizes = tf.function(
            lambda images: each(size, images, tf.TensorSpec([2], tf.int32)), input_signature=[batch]
        )
        # Each image decoded and encoded again at a quality: reencoder(quality)(images).
        self.reencoder = functools.cache(reencoder)
        # [source height, source width, output height, output width, mean |source - output|
        #  and mean (source - output)**2 per sample (-1 if the sizes differ)].
        self.compared = tf.function(
            lambda sources, outputs: each(compared, (sources, outputs), tf.TensorSpec([6], tf.float32)),
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

    def encode_graph(self, pixels, quality):
        """Baseline JPEG at ``quality`` with full chroma: 4:2:0, encode_jpeg's default, halves
        the chroma both ways and so wipes out the colour of fine detail (random noise at
        quality 95 comes back at 13 dB instead of 35 dB)."""
        return self.tf.io.encode_jpeg(pixels, quality=quality, chroma_downsampling=False)

    def encode(self, pixels, quality):
        return self.encode_graph(pixels, quality).numpy()

    def decode_accurately(self, contents):
        """HxWx3 pixels from the accurate integer IDCT; None if decode_jpeg fails or gives no
        HxWx3 image (WebP)."""
        try:
            pixels = self.tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE").numpy()
        except self.tf.errors.InvalidArgumentError:
            return None
        return pixels if pixels.ndim == 3 else None


@functools.cache
def tensorflow_ops():
    """The one TensorFlowOps of the process, built on first use."""
    return TensorFlowOps()
