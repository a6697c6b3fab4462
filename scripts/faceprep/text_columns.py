"""Fast parsing of the tab-separated text files of the workflow (``.idx``, chunk manifests).

Whole blocks of lines are parsed with array operations instead of a Python loop per line
(~1-2 µs a line, the larger part of the jobs that read every row of a 42 M-image
dataset). Only the strict form that the writers produce is parsed here: exactly
``count`` tab-separated fields a line, every line ending in a newline, canonical decimal
integers (no sign, no leading zero, at most 18 digits). Anything else makes these
functions return None, and the caller parses that block with its line-by-line reader,
which accepts the lenient forms and names the line of an error.
"""

import numpy as np

# Bytes of text parsed at a time (whole lines): the index arrays of a block's fields take
# ~10 times its size at the peak, so ~10 MB whatever the file's size.
BLOCK_BYTES = 1 << 20
# Canonical decimals of at most 18 digits are below 2^63: int64 without overflow checks.
MOST_DIGITS = 18
_TAB, _NEWLINE, _ZERO = 9, 10, ord("0")
_HEX_VALUES = np.full(256, 255, np.uint8)
for _digit, _character in enumerate(b"0123456789abcdef"):
    _HEX_VALUES[_character] = _HEX_VALUES[bytes([_character]).upper()[0]] = _digit


def line_blocks(stream, first_line=1):
    """Yield ``(line number of the block's first line, bytes)`` blocks of whole lines read
    from binary ``stream``, BLOCK_BYTES at a time; every block ends with a newline (one is
    added to a last line that lacks it)."""
    carry = b""
    while data := stream.read(BLOCK_BYTES):
        data = carry + data
        end = data.rfind(b"\n") + 1
        if end:
            yield first_line, data[:end]
            first_line += data.count(b"\n", 0, end)
        carry = data[end:]
    if carry:
        yield first_line, carry + b"\n"


def tab_fields(block, count):
    """``(buffer, starts, ends)`` of a block of lines of exactly ``count`` tab-separated
    fields each: ``starts``/``ends`` are ``(lines, count)`` byte positions in the uint8
    ``buffer``. None if any line has another number of fields."""
    buffer = np.frombuffer(block, np.uint8)
    separators = np.flatnonzero((buffer == _TAB) | (buffer == _NEWLINE))
    if len(separators) % count:
        return None
    ends = separators.reshape(-1, count)
    if not (buffer[ends[:, -1]] == _NEWLINE).all() or not (buffer[ends[:, :-1]] == _TAB).all():
        return None
    starts = np.empty_like(ends)
    starts[:, 1:] = ends[:, :-1] + 1
    starts[0, 0] = 0
    starts[1:, 0] = ends[:-1, -1] + 1
    return buffer, starts, ends


def _field_bytes(buffer, starts, ends, width):
    """The last ``width`` bytes of each field as an ``(n, width)`` uint8 array, right-aligned,
    and the mask of the field's own bytes (the others, left of a shorter field, are junk)."""
    # int32: a block is far below 2 GB, and these arrays are the parse's largest.
    positions = ends.astype(np.int32)[:, None] - width + np.arange(width, dtype=np.int32)
    inside = positions >= starts[:, None]
    return buffer[np.where(inside, positions, 0)], inside


def decimals(buffer, starts, ends):
    """The int64 values of canonical decimal fields ``[starts, ends)`` of ``buffer``, or None
    if any field is empty, longer than MOST_DIGITS, signed, has a leading zero or a non-digit."""
    lengths = ends - starts
    if not len(lengths):
        return np.zeros(0, np.int64)
    if lengths.min() < 1 or lengths.max() > MOST_DIGITS:
        return None
    if ((buffer[starts] == _ZERO) & (lengths > 1)).any():
        return None
    characters, inside = _field_bytes(buffer, starts, ends, int(lengths.max()))
    digits = characters - np.uint8(_ZERO)  # wraps below '0': one comparison checks both ends
    digits[~inside] = 0  # leading zeros of the shorter fields
    if (digits > 9).any():
        return None
    values = np.zeros(len(lengths), np.int64)
    for column in digits.T:
        values *= 10
        values += column
    return values


def hex32(buffer, starts, ends):
    """The uint32 values of fields of exactly 8 hexadecimal digits, or None."""
    if not len(starts):
        return np.zeros(0, np.uint32)
    if not (ends - starts == 8).all():
        return None
    digits = _HEX_VALUES[_field_bytes(buffer, starts, ends, 8)[0]]
    if (digits > 15).any():
        return None
    values = np.zeros(len(starts), np.uint32)
    for column in digits.T:
        values <<= 4
        values |= column
    return values


def count_lines(path, block=1 << 20):
    """How many newline characters ``path`` holds: an upper bound of its lines of data, so that
    arrays of them can be allocated once (growing an array while parsing copies it, and for a
    moment holds it twice)."""
    count = 0
    with open(path, "rb", buffering=0) as stream:
        while data := stream.read(block):
            count += data.count(b"\n")
    return count + 1
