"""Image bytes without TensorFlow: JPEG structure checks, and decoders for what TF does not read.

``plain_jpeg`` tells, without importing TensorFlow (which takes seconds), that
``tf.io.decode_jpeg(x, channels=3)`` decodes an image: a well-formed 8-bit JPEG that
libjpeg-turbo decodes. ``fallback_decode`` reads the images TF refuses: imagecodecs for JPEG
(12-bit, lossless, truncated), Pillow for the rest (BMP, TIFF, 16-bit PNG, ...).
``unreadable_reason`` names, for the summary, why TF refused one. ``reencoding_psnr_floor``
is the worst a re-encode at a given quality can do to a picture, derived from the encoder's
quantisation tables.

Only numpy is imported up front; imagecodecs and Pillow when first needed.
"""

import io
import math
import re
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from faceprep.binfile import image_position
from faceprep.errors import BinError
from faceprep.image_header import JPEG_FRAME_MARKERS, JPEG_SOI, PNG_SIGNATURE, STANDALONE_MARKERS, image_format

# What TF's format sniffing recognises (JPEG, PNG, GIF, BMP, JPEG XL; WebP is checked
# apart). TF rejects other bytes outright, so they skip the TF call. The prefixes are loose
# on purpose: this only spares certain failures, TF itself decides everything else.
_TF_SNIFFED_PREFIXES = (JPEG_SOI, b"\x89PNG", b"GIF8", b"BM", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")
_FORMAT_SIGNATURES = ((b"BM", "bmp"), (b"GIF8", "gif"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
_JPEG_LOSSLESS_MARKERS = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
# JPEG frames libjpeg decodes at 8 bits with Huffman coding: baseline, extended, progressive.
_PLAIN_JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
# In scan data 0xFF is followed by 0x00 (a stuffed 0xFF) or a restart marker; anything else ends it.
_SCAN_DATA_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")


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
        if marker in STANDALONE_MARKERS or marker == 0xD9:
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


JpegHeader = namedtuple("JpegHeader", ["frame_marker", "precision", "adobe", "scan_start", "components"])


def jpeg_header(data):
    """What the markers before the first scan say: frame type, sample precision, Adobe APP14,
    where the scan data starts (None where the file ends or breaks off before it) and the
    number of components."""
    frame_marker = precision = scan_start = components = None
    adobe = False
    for marker, start, end in _jpeg_segments(data):
        if marker in JPEG_FRAME_MARKERS and end > start + 4:
            frame_marker, precision = marker, data[start + 4]
            components = data[start + 9] if end > start + 9 else None
        elif marker == 0xEE and data.startswith(b"Adobe", start + 4, end):
            adobe = True
        elif marker == 0xDA:
            scan_start = end
            break
    return JpegHeader(frame_marker, precision, adobe, scan_start, components)


# Frames coded arithmetically (SOF9-SOF15): libjpeg-turbo reads them, nvJPEG does not.
_JPEG_ARITHMETIC_MARKERS = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
PLAIN_JPEG = "jpeg"


def jpeg_format(header):
    """``jpeg`` for a plain 8-bit Huffman JPEG of 1 (gray) or 3 (YCbCr) components (baseline,
    extended or progressive), else what it is: ``jpeg-lossless`` (``jpeg-lossless-<n>bit``
    above 8 bits, such as ``jpeg-lossless-16bit``), ``jpeg-12bit``, ``jpeg-arithmetic``,
    ``jpeg-cmyk`` (4 components), ``jpeg-2-components``; None without a frame."""
    if header.frame_marker is None:
        return None
    if header.frame_marker in _JPEG_LOSSLESS_MARKERS:
        return "jpeg-lossless" if header.precision == 8 else f"jpeg-lossless-{header.precision}bit"
    if header.precision != 8:
        return f"jpeg-{header.precision}bit"
    if header.frame_marker in _JPEG_ARITHMETIC_MARKERS:
        return "jpeg-arithmetic"
    if header.components == 4:
        return "jpeg-cmyk"
    if header.components not in (1, 3):
        return f"jpeg-{header.components}-components"
    return PLAIN_JPEG


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
        if marker in STANDALONE_MARKERS:
            return 0
        length = end - start - 2
        if marker in JPEG_FRAME_MARKERS:
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


def tf_may_decode(data):
    return data.startswith(_TF_SNIFFED_PREFIXES) or image_format(data) == "webp"


def unreadable_reason(data):
    """Why TF does not read an image as HxWx3, judged from its bytes (for the summary)."""
    if data.startswith(JPEG_SOI):
        header = jpeg_header(data)
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
    if image_format(data) == "webp":
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
    header = jpeg_header(data)
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


def fallback_decode(path, index, data):
    """Decode an image TF cannot read into HxWx3 uint8, or raise BinError."""
    decode = _decode_jpeg_fallback if data.startswith(JPEG_SOI) else _decode_other_fallback
    try:
        return decode(data)
    # imagecodecs and Pillow raise assorted types for undecodable data.
    except Exception as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BinError(
            f"{image_position(path, index)}: neither tf.io.decode_jpeg nor the fallback decoder reads this"
            f" {len(data)}-byte image (starts {data[:8].hex()}; {detail})"
        ) from error


def plain_jpegs(images, threads):
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


# --- what re-encoding can lose -------------------------------------------------------------

# The JPEG standard's example tables (Annex K), which libjpeg, and so tf.io.encode_jpeg, scales
# by quality. Only their values matter here, not their order.
LUMA_QUANTISATION = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56]
    + [14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92]
    + [49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)
CHROMA_QUANTISATION = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99]
    + [47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32
)
# JFIF's YCbCr -> RGB: an error (dY, dCb, dCr) becomes this matrix times it in RGB, which
# multiplies its energy by at most the largest eigenvalue of M^T M (4.75).
_YCBCR_TO_RGB = np.array([[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
_COLOUR_GAIN = float(np.linalg.eigvalsh(_YCBCR_TO_RGB.T @ _YCBCR_TO_RGB).max())
# Rounding to whole levels, at most half a level per sample at each step: to YCbCr before the
# DCT and after the inverse DCT (both seen through the colour matrix), then to RGB. It also
# covers the integer DCTs' approximation (IEEE 1180: under 0.06 squared levels per sample):
# at quality 100, where every step is 1, random noise comes back within 0.8 levels RMS.
_ROUNDING_RMS = math.sqrt(_COLOUR_GAIN) * (0.5 + 0.5) + 0.5


def quantisation_table(base, quality):
    """libjpeg's table for ``quality`` (1-100): ``base`` scaled as jpeg_set_quality does,
    limited to 255 (baseline JPEG, which tf.io.encode_jpeg writes)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((np.asarray(base) * scale + 50) // 100, 1, 255)


def reencoding_psnr_floor(quality, height, width):
    """The lowest PSNR (dB, peak 255) an 8-bit RGB picture of ``height`` x ``width`` can have
    against its baseline JPEG at ``quality`` with 4:4:4 chroma, both decoded with the accurate
    integer IDCT (dct_method INTEGER_ACCURATE): a bound, not an estimate.

    Quantisation moves each DCT coefficient by at most half its step q. The 8x8 DCT is
    orthonormal, so an 8x8 block of one component moves by at most sum(q**2) / 4 squared
    levels: Y with the luma table, Cb and Cr with the chroma table, one block each per 8x8
    pixels of the picture padded to multiples of 8 (all of a block's error may fall on the
    picture's own pixels, none on the padding). YCbCr -> RGB multiplies that energy by at most
    _COLOUR_GAIN; rounding adds at most _ROUNDING_RMS to the RMS difference.

    Measured with tf.io.encode_jpeg at quality 95 on 112x112 pictures (tests/test_bin_fidelity.py):
    uniform random noise, the hardest content, comes back at 35.8 dB, a drawn face at 37.3 dB,
    flat colour at 52.9 dB; the floor is 26.7 dB (21.7 dB at quality 90, where noise gives
    29.9 dB). The two drawn faces of a same-identity pair, the nearest different pictures of
    a bin, are at most 19.2 dB apart (over 100 pairs), so swapping them falls below the floor.
    """
    luma, chroma = (
        quantisation_table(table, quality).astype(float) for table in (LUMA_QUANTISATION, CHROMA_QUANTISATION)
    )
    block_energy = (np.sum(luma**2) + 2 * np.sum(chroma**2)) / 4
    blocks = math.ceil(height / 8) * math.ceil(width / 8)
    quantisation_rms = math.sqrt(_COLOUR_GAIN * block_energy * blocks / (3 * height * width))
    return 20 * math.log10(255 / (quantisation_rms + _ROUNDING_RMS))
