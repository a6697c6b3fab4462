"""insightface evaluation bins (``lfw.bin``, ``cfp_fp.bin``, ...): load, reformat, verify.

A bin is a pickle ``(bins, issame_list)``: 2N encoded images forming pairs (2k, 2k+1) and
N flags saying whether pair k shows one person. Python 2 wrote the images as ``str`` (read
back as ``bytes`` with ``encoding='bytes'``); later bins hold uint8 numpy arrays as
``cv2.imencode`` returns them (shape ``(n, 1)``), which ``tf.image.decode_jpeg`` refuses.

The reformatted bin is ``[bins, issame_list]`` of plain ``bytes`` and plain ``bool``, so it
unpickles in any Python 3 without importing a module. An image that
``tf.io.decode_jpeg(x, channels=3)`` already decodes to an HxWx3 image is kept byte for byte;
the others are decoded by imagecodecs (JPEG: 12-bit, lossless, truncated) or Pillow (BMP,
TIFF, ...) and re-encoded by ``tf.io.encode_jpeg``.

Importing TensorFlow takes seconds, longer than checking a whole bin, so reformatting first
checks images without it (``plain_jpeg``): a well-formed 8-bit JPEG that libjpeg-turbo decodes
is one TF decodes. Only the images left over (other formats, damaged JPEGs) need TF's verdict,
and only re-encoding needs TF itself. verify_bin decodes every output image with TF.

Only numpy is imported up front; TensorFlow, imagecodecs and Pillow when first needed.
"""

import functools
import io
import logging
import os
import pickle
import re
import reprlib
from collections import Counter, namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from faceprep.atomic import write_atomically

log = logging.getLogger(__name__)

REENCODE_MODES = ("needed", "all")
# tf.io.encode_jpeg's default quality, which the original reformat script used.
JPEG_QUALITY = 95
# Protocol 4 loads in every Python >= 3.4 (protocol 5 would need 3.8).
PICKLE_PROTOCOL = 4
# Images per TensorFlow call: enough to hide the per-call overhead, few enough that
# bisecting a batch around an unreadable image stays cheap.
BATCH_SIZE = 256
# Re-encoding moves samples by JPEG noise (a few levels on average); a different face, or
# the same face in another pose, moves them by tens.
MEAN_ABS_DIFF_LIMIT = 10.0

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What TF's format sniffing recognises (JPEG, PNG, GIF, BMP, JPEG XL; WebP is checked
# apart). TF rejects other bytes outright, so they skip the TF call. The prefixes are loose
# on purpose: this only spares certain failures, TF itself decides everything else.
_TF_SNIFFED_PREFIXES = (JPEG_SOI, b"\x89PNG", b"GIF8", b"BM", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
_FORMAT_SIGNATURES = ((b"BM", "bmp"), (b"GIF8", "gif"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
# SOFn markers; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_LOSSLESS_MARKERS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})


class BinError(ValueError):
    """A bad evaluation bin; the message names the file and, where it applies, the image and pair."""


def _where(path, index):
    return f"{path}: image {index} (pair {index // 2})"


def _describe(value):
    if isinstance(value, (tuple, list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"{reprlib.repr(value)} (type {type(value).__name__})"


# --- loading -------------------------------------------------------------------------------


def _tensor_bytes(value):
    """Stands in for ``convert_to_tensor``: the original script pickled each EagerTensor as
    ``convert_to_tensor(<jpeg bytes>)``, so bins it rewrote load without TensorFlow."""
    if not isinstance(value, bytes):
        raise pickle.UnpicklingError(f"a pickled tensor holds {_describe(value)}, not image bytes")
    return value


_TENSOR_GLOBAL = ("tensorflow.python.framework.ops", "convert_to_tensor")
# Everything a bin's pickle refers to: numpy arrays and scalars (cv2.imencode output, numpy
# bools), bytes pickled by Python 3 at protocol <= 2 (_codecs.encode), bytearray, and the
# tensors above. Refusing the rest keeps a downloaded bin from running code while it loads.
_SOURCE_GLOBALS = frozenset(
    {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
    | {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
        ("builtins", "bytes"),
    }
    | {_TENSOR_GLOBAL}
)


class _BinUnpickler(pickle.Unpickler):
    def __init__(self, file, path, allowed_globals, refusal):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed_globals = allowed_globals
        self._refusal = refusal
        # Python 2 pickles name numpy's globals again for every array (three lookups an image).
        self._found = {}

    def find_class(self, module, name):
        try:
            return self._found[module, name]
        except KeyError:
            pass
        if (module, name) not in self._allowed_globals:
            raise BinError(f"{self._path}: the pickle refers to {module}.{name}; {self._refusal}")
        found = _tensor_bytes if (module, name) == _TENSOR_GLOBAL else super().find_class(module, name)
        self._found[module, name] = found
        return found


def _unpickle(path, allowed_globals, refusal):
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise BinError(f"{path}: empty file, not a pickled evaluation bin")
        try:
            return _BinUnpickler(file, path, allowed_globals, refusal).load()
        except BinError:
            raise
        # A damaged pickle fails with whatever its next opcode raises (EOFError, KeyError,
        # UnicodeDecodeError, ...); all of them mean the same thing here.
        except Exception as error:
            raise BinError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from error


def _is_sequence(value):
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _image_bytes(path, index, element):
    if isinstance(element, (bytes, bytearray, memoryview)):
        return bytes(element)
    if (
        isinstance(element, np.ndarray)
        and element.dtype == np.uint8
        and (element.ndim == 1 or (element.ndim == 2 and element.shape[1] == 1))
    ):
        return element.tobytes()
    raise BinError(
        f"{_where(path, index)} is {_describe(element)}; expected encoded image bytes"
        " (bytes, or a uint8 array of shape (n,) or (n, 1) as cv2.imencode returns)"
    )


def _issame_flag(path, pair, value):
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise BinError(
        f"{path}: issame_list[{pair}] (pair {pair}: images {2 * pair} and {2 * pair + 1}) is {value!r}; expected a bool"
    )


def load_bin(path):
    """Read an evaluation bin as ``(images, issame)``: a list of ``bytes`` and a list of ``bool``.

    Accepts what insightface's bins hold: Python 2 ``str``, bytes, bytearray, uint8 arrays of
    shape (n,) or (n, 1), tensors pickled by the original reformat script; bools, numpy bools
    or 0/1 as flags. The file is only read. Raises BinError naming the file (and the image
    index and pair) on anything else.
    """
    content = _unpickle(
        path,
        _SOURCE_GLOBALS,
        "no evaluation bin needs it, and unpickling it could run arbitrary code, so it is refused",
    )
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise BinError(f"{path}: expected a pickled pair (bins, issame_list), found {_describe(content)}")
    bins, issame = content
    if not _is_sequence(bins):
        raise BinError(f"{path}: bins (the first item) should be a list of encoded images, found {_describe(bins)}")
    images = [_image_bytes(path, index, element) for index, element in enumerate(bins)]
    if not images:
        raise BinError(f"{path}: holds no images")
    if len(images) % 2:
        raise BinError(f"{path}: holds {len(images)} images, an odd number; images come in pairs (2k, 2k+1)")
    if not _is_sequence(issame):
        raise BinError(f"{path}: issame_list (the second item) should be a list of bools, found {_describe(issame)}")
    if 2 * len(issame) != len(images):
        raise BinError(
            f"{path}: {len(images)} images make {len(images) // 2} pairs, but issame_list has {len(issame)} entries"
        )
    return images, [_issame_flag(path, pair, value) for pair, value in enumerate(issame)]


def _load_reformatted(path):
    """Read a reformatted bin, insisting on exactly what reformat_bin writes."""
    content = _unpickle(path, frozenset(), "a reformatted bin must load without importing any module")
    if type(content) is not list or len(content) != 2:
        raise BinError(f"{path}: expected a pickled list [bins, issame_list], found {_describe(content)}")
    bins, issame = content
    if type(bins) is not list:
        raise BinError(f"{path}: bins should be a list, found {_describe(bins)}")
    for index, element in enumerate(bins):
        if type(element) is not bytes:
            raise BinError(f"{_where(path, index)} is {_describe(element)}, not plain bytes")
    if type(issame) is not list:
        raise BinError(f"{path}: issame_list should be a list, found {_describe(issame)}")
    for pair, flag in enumerate(issame):
        if type(flag) is not bool:
            raise BinError(f"{path}: issame_list[{pair}] (pair {pair}) is {_describe(flag)}, not a plain bool")
    return bins, issame


# --- image formats -------------------------------------------------------------------------

# JPEG frames libjpeg decodes at 8 bits with Huffman coding: baseline, extended, progressive.
_PLAIN_JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
_RESTART_MARKERS = range(0xD0, 0xD8)
# In scan data 0xFF is followed by 0x00 (a stuffed 0xFF) or a restart marker; anything else ends it.
_SCAN_DATA_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# Marker codes that carry no length: stuffing, TEM, a second SOI, restart markers, and
# fill bytes (0xFF), which may pad the gap before a marker.
_STANDALONE_MARKERS = frozenset({0x00, 0x01, 0xD8, 0xFF}) | frozenset(_RESTART_MARKERS)


def _entropy_coded_end(data, position):
    """Where the scan data from ``position`` ends (at the next marker), or -1 if it runs to
    the end of ``data`` or holds fill bytes, which a decoder must resynchronise from."""
    found = _SCAN_DATA_END.search(data, position)
    if found is None or data[found.start() + 1] == 0xFF:
        return -1
    return found.start()


def _jpeg_segments(data):
    """Walk a JPEG from after SOI, yielding ``(marker, start, end)`` per marker: ``start``
    indexes its 0xFF, ``end`` its segment's end (``start + 2`` for a standalone marker, and
    one byte on for a fill byte). After a scan's header the walk goes on past its
    entropy-coded data. It ends after EOI, or where the bytes stop being markers and
    segments that fit in ``data``: a truncated or damaged file just yields fewer."""
    position = len(JPEG_SOI)
    while position + 2 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in _STANDALONE_MARKERS or marker == 0xD9:
            end = position + (1 if marker == 0xFF else 2)
            yield marker, position, end
            if marker == 0xD9:
                return
            position = end
            continue
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 2 + length
        if length < 2 or end > len(data):
            return
        yield marker, position, end
        position = _entropy_coded_end(data, end) if marker == 0xDA else end
        if position < 0:
            return


_JpegHeader = namedtuple("_JpegHeader", ["frame_marker", "precision", "adobe", "scan_start"])


def _jpeg_header(data):
    """What the markers before the first scan say: frame type, sample precision, Adobe APP14,
    and where the scan data starts (None where the file ends or breaks off before it)."""
    frame_marker = precision = scan_start = None
    adobe = False
    for marker, start, end in _jpeg_segments(data):
        if marker in _JPEG_FRAME_MARKERS and end > start + 4:
            frame_marker, precision = marker, data[start + 4]
        elif marker == 0xEE and data.startswith(b"Adobe", start + 4, end):
            adobe = True
        elif marker == 0xDA:
            scan_start = end
            break
    return _JpegHeader(frame_marker, precision, adobe, scan_start)


def _integral_sampling(frame):
    """Whether every component's sampling factors (1-4) divide the largest ones: libjpeg
    upsamples those to RGB, and refuses fractional ratios (3:2) whatever it decodes to."""
    factors = [(frame[offset] >> 4, frame[offset] & 15) for offset in range(7, len(frame), 3)]
    if not all(1 <= h <= 4 and 1 <= v <= 4 for h, v in factors):
        return False
    largest_h, largest_v = max(h for h, _ in factors), max(v for _, v in factors)
    return all(largest_h % h == 0 and largest_v % v == 0 for h, v in factors)


def _well_formed_jpeg(data):
    """The number of components if ``data`` is SOI, segments whose lengths stay inside the
    data, one 8-bit Huffman frame of 1, 3 or 4 components with integral sampling, scans that
    end at a marker, then EOI, with nothing between segments; else 0. Bytes after EOI are
    ignored, as decoders do."""
    if not data.startswith(JPEG_SOI):
        return 0
    components = scans = 0
    for marker, start, end in _jpeg_segments(data):
        if marker == 0xD9:
            return components if scans else 0
        if marker in _STANDALONE_MARKERS:
            return 0
        length = end - start - 2
        if marker in _JPEG_FRAME_MARKERS:
            count = data[start + 9] if length >= 8 else 0
            if components or marker not in _PLAIN_JPEG_FRAME_MARKERS or data[start + 4] != 8:
                return 0
            if count not in (1, 3, 4) or length != 8 + 3 * count:
                return 0
            if not _integral_sampling(data[start + 4 : end]):
                return 0
            components = count
        elif marker == 0xDA:
            if not components or length != 6 + 2 * data[start + 4]:
                return 0
            scans += 1
    return 0


def plain_jpeg(data):
    """Whether ``tf.io.decode_jpeg(data, channels=3)`` is sure to decode ``data``, judged without TF.

    TF decodes with libjpeg-turbo from memory and fails where libjpeg would read past the end
    of the data; other decoders pad with a fake EOI instead and only warn. A well-formed JPEG
    (above) never makes libjpeg read past its EOI, and decoding it with libjpeg-turbo
    (imagecodecs) catches the rest: bad tables, a frame its scans do not fit. Colour images
    are decoded to gray: every component is still entropy-decoded (that is where damage
    shows), only the chroma's inverse DCT, upsampling and colour conversion are skipped,
    which fail on nothing the structure check lets through. CMYK has no gray conversion.
    False means "ask TF", not "TF fails": TF reads damaged JPEGs this test turns down, and PNG.
    """
    components = _well_formed_jpeg(data)
    return bool(components) and _libjpeg_decodes(data, components)


def _libjpeg_decodes(data, components):
    import imagecodecs

    try:
        imagecodecs.jpeg8_decode(data, outcolorspace=None if components == 4 else "GRAY")
    # imagecodecs raises its JpegError, or ValueError/RuntimeError on data it refuses.
    except Exception:
        return False
    return True


def _tf_may_decode(data):
    return data.startswith(_TF_SNIFFED_PREFIXES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _unreadable_reason(data):
    """Why TF does not read an image as HxWx3, judged from its bytes (for the summary)."""
    if data.startswith(JPEG_SOI):
        header = _jpeg_header(data)
        if header.frame_marker in _JPEG_LOSSLESS_MARKERS:
            return "jpeg-lossless"
        if header.precision is not None and header.precision > 8:
            return f"jpeg-{header.precision}bit"
        # 0xFFD9 cannot occur inside entropy-coded data, so its absence after the first scan
        # means the file was cut short.
        if header.scan_start is None or data.find(b"\xff\xd9", header.scan_start) < 0:
            return "truncated-jpeg"
        return "jpeg-damaged"
    if data.startswith(PNG_SIGNATURE):
        # IHDR's bit depth sits at byte 24: signature, chunk length and type, width, height.
        return "png-16bit" if data[24:25] == b"\x10" else "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for signature, reason in _FORMAT_SIGNATURES:
        if data.startswith(signature):
            return reason
    return "unknown"


def _to_8bit(pixels, bits):
    scale = 255 / ((1 << bits) - 1)
    return np.clip(np.rint(pixels.astype(np.float32) * scale), 0, 255).astype(np.uint8)


def _rgb(pixels):
    """HxWx3 uint8 from gray, gray+alpha, RGB or RGBA, dropping alpha as decode_jpeg(channels=3) does."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] < 3:
        return np.ascontiguousarray(np.repeat(pixels[..., :1], 3, axis=2))
    return np.ascontiguousarray(pixels[..., :3])


def _decode_jpeg_fallback(data):
    import imagecodecs

    # libjpeg-turbo 3 reads 12-bit and lossless JPEG, and fills in what a truncated file lacks.
    pixels = imagecodecs.jpeg8_decode(data)
    header = _jpeg_header(data)
    if pixels.dtype != np.uint8:
        pixels = _to_8bit(pixels, header.precision or 8 * pixels.dtype.itemsize)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        # CMYK. Adobe writes it inverted (255 = no ink); TF converts it the same way.
        ink = pixels.astype(np.uint16) if header.adobe else 255 - pixels.astype(np.uint16)
        pixels = (ink[..., :3] * ink[..., 3:] // 255).astype(np.uint8)
    return _rgb(pixels)


def _decode_other_fallback(data):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode.startswith("I"):  # 16/32-bit gray (TIFF, PNG): scale as 16-bit samples
            return _rgb(_to_8bit(np.asarray(image), 16))
        return np.asarray(image.convert("RGB"))


def _fallback_decode(path, index, data):
    """Decode an image TF cannot read into HxWx3 uint8, or raise BinError."""
    decode = _decode_jpeg_fallback if data.startswith(JPEG_SOI) else _decode_other_fallback
    try:
        return decode(data)
    # imagecodecs and Pillow raise assorted types for undecodable data.
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BinError(
            f"{_where(path, index)}: neither tf.io.decode_jpeg nor the fallback decoder reads this"
            f" {len(data)}-byte image (starts {data[:8].hex()}; {detail})"
        ) from error


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
        "reencode-all" if index in tf_readable else _unreadable_reason(images[index]) for index in reencoded
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


def _plain_jpegs(images, threads):
    """Indices of the images plain_jpeg accepts. The structure checks run first, in this
    thread: interleaved with the decodes, each of them held the GIL while a decode that had
    finished waited for it, and two threads gained little over one. libjpeg releases the GIL."""
    components = {index: count for index, data in enumerate(images) if (count := _well_formed_jpeg(data))}
    candidates = list(components)
    size = -(-len(candidates) // threads) or 1
    slices = [candidates[start : start + size] for start in range(0, len(candidates), size)]
    with ThreadPoolExecutor(threads) as pool:
        found = pool.map(
            lambda indices: [index for index in indices if _libjpeg_decodes(images[index], components[index])], slices
        )
        return {index for indices in found for index in indices}


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
    plain = _plain_jpegs(images, threads) if reencode == "needed" else set()
    reformatted = {index: images[index] for index in plain}
    left = [index for index in range(len(images)) if index not in plain]
    log.info("%s: %d images are plain JPEGs and kept; %d left for TensorFlow", source_path, len(plain), len(left))
    tf_readable = set(plain)
    if left:
        tf = _tensorflow()
        candidates = [index for index in left if _tf_may_decode(images[index])]
        if reencode == "all":
            reformatted.update(tf.run(tf.reencoded, [images], candidates, threads))
        else:
            reformatted.update({index: images[index] for index in tf.run(tf.sizes, [images], candidates, threads)})
        tf_readable = set(reformatted)
        unreadable = [index for index in left if index not in tf_readable]
        for index in unreadable:
            log.info(
                "%s: TF does not read it (%s); re-encoding",
                _where(source_path, index),
                _unreadable_reason(images[index]),
            )
        with ThreadPoolExecutor(threads) as pool:
            encoded = pool.map(lambda index: tf.encode(_fallback_decode(source_path, index, images[index])), unreadable)
            reformatted.update(zip(unreadable, encoded))
    outputs = [bytes(reformatted[index]) for index in range(len(images))]
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    write_atomically(output_path, lambda file: pickle.dump([outputs, issame], file, protocol=PICKLE_PROTOCOL))
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
    outputs, output_issame = _load_reformatted(output_path)
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
    compared = tf.run(tf.compared, [images, outputs], [i for i in reencoded if _tf_may_decode(images[i])], threads)
    tf_readable = set(compared)
    others = [index for index in reencoded if index not in tf_readable]
    decodable |= tf_readable | set(tf.run(tf.sizes, [outputs], others, threads))
    for index in range(len(outputs)):
        if index not in decodable:
            raise BinError(
                f"{_where(output_path, index)}: tf.image.decode_jpeg(channels=3) does not decode it to an image"
            )

    def compare_fallback(index):
        source, output = _fallback_decode(source_path, index, images[index]), tf.decode(outputs[index])
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
                f"{_where(output_path, index)} decodes to {height:.0f}x{width:.0f} (height x width),"
                f" the source image to {source_height:.0f}x{source_width:.0f}"
            )
        if difference > mean_abs_diff_limit:
            raise BinError(
                f"{_where(output_path, index)} differs from the source image by {difference:.1f} levels per"
                f" sample on average (limit {mean_abs_diff_limit}): images out of order or replaced?"
            )
        largest_difference = max(largest_difference, difference)
    summary = _summary(source_path, output_path, images, outputs, issame, tf_readable)
    summary.update(
        verified=True, max_mean_abs_diff=round(largest_difference, 3), mean_abs_diff_limit=mean_abs_diff_limit
    )
    log.info("%s: verified against %s", output_path, source_path)
    return summary
