"""What an image's first bytes tell without decoding it: its format and its size.

``image_format`` recognises a folder tree's image files (faceprep.sources.tree) and names a
TFRecord Example's ``image/format``; ``image_dimensions`` gives every image's height and
width to a rec's ``property`` file and its report (faceprep.outputs.rec), which a rec part
asks for each record it writes, so both read a few header bytes and no more. The JPEG marker
sets are faceprep.jpeg's too. ``size_text`` names a size as every report and the audit do.
"""

import struct

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Image formats by their first SIGNATURE_BYTES (WebP: "RIFF", 4 bytes of size, "WEBP").
_IMAGE_SIGNATURES = ((JPEG_SOI + b"\xff", "jpeg"), (PNG_SIGNATURE, "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
                     (b"BM", "bmp"))
SIGNATURE_BYTES = 12
# SOFn markers; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Marker codes that carry no length: stuffing, TEM, a second SOI, restart markers (D0-D7), and
# fill bytes (0xFF), which may pad the gap before a marker.
STANDALONE_MARKERS = frozenset({0x00, 0x01, 0xD8, 0xFF}) | frozenset(range(0xD0, 0xD8))
# A frame header's height and width, after its marker, length and sample precision.
_FRAME_DIMENSIONS = struct.Struct(">HH")
_VP8_START_CODE = b"\x9d\x01\x2a"


def image_format(data):
    """The image format of ``data`` by its first SIGNATURE_BYTES: ``jpeg``, ``png``, ``gif``,
    ``bmp``, ``webp``, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for signature, name in _IMAGE_SIGNATURES if data.startswith(signature)), None)


def _little(data, start, length):
    return int.from_bytes(data[start : start + length], "little")


def _jpeg_dimensions(data):
    """The frame header's size. The walk is faceprep.jpeg's segment walk up to the first
    scan, in one loop: rec parts ask for every image's size, and the generator took a quarter
    of their time."""
    position, size = len(JPEG_SOI), len(data)
    while position + 2 <= size and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in STANDALONE_MARKERS:
            position += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA) or position + 4 > size:  # EOI, or a scan before any frame
            return None
        length = data[position + 2] << 8 | data[position + 3]
        if length < 2 or position + 2 + length > size:
            return None
        if marker in JPEG_FRAME_MARKERS and length >= 7:
            return _FRAME_DIMENSIONS.unpack_from(data, position + 5)
        position += 2 + length
    return None


def _bmp_dimensions(data):
    """From the DIB header after the 14-byte file header: 16-bit fields in OS/2's 12-byte
    one, else signed 32-bit ones, the height negative for rows stored top down."""
    if _little(data, 14, 4) == 12:
        return (_little(data, 20, 2), _little(data, 18, 2)) if len(data) >= 22 else None
    if len(data) < 26:
        return None
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(height), abs(width)


def _webp_dimensions(data):
    """From the first chunk: a lossy frame's (``VP8 ``, 14 bits each after the start code),
    a lossless one's (``VP8L``, 14 bits each, less one) or the extended canvas (``VP8X``, 24
    bits each, less one)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == _VP8_START_CODE and len(data) >= 30:
        return _little(data, 28, 2) & 0x3FFF, _little(data, 26, 2) & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f" and len(data) >= 25:
        bits = _little(data, 21, 4)
        return (bits >> 14 & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return _little(data, 27, 3) + 1, _little(data, 24, 3) + 1
    return None


def image_dimensions(data):
    """``(height, width)`` of a JPEG (its frame header), PNG (IHDR), GIF (the logical
    screen), BMP or WebP, read from the header bytes without decoding; None for anything
    else or a header cut short."""
    if data.startswith(JPEG_SOI):
        return _jpeg_dimensions(data)
    if data.startswith(PNG_SIGNATURE):
        return (int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")) if len(data) >= 24 else None
    found = image_format(data)
    if found == "gif":
        return (_little(data, 8, 2), _little(data, 6, 2)) if len(data) >= 10 else None
    if found == "bmp":
        return _bmp_dimensions(data)
    if found == "webp":
        return _webp_dimensions(data)
    return None


def size_text(width, height):
    """A size as the reports and the audit name it: ``WxH``."""
    return f"{width}x{height}"
