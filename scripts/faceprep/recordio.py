"""MXNet RecordIO (``.rec`` + ``.idx``) reading and writing without MXNet.

A record is ``uint32 magic``, ``uint32 lrec`` (``cflag << 29 | length``), the data
and zero padding to 4 bytes. The writer splits a payload wherever it holds the
magic at a 4-aligned offset (cflag 1 = first, 2 = middle, 3 = last part) and drops
that magic; the reader puts it back. This mirrors dmlc-core's RecordIOWriter and
RecordIOReader byte for byte, so files interchange with MXNet in both directions.
"""

import numbers
import os
import struct
from collections import namedtuple

import numpy as np

from faceprep.atomic import CommitOnExit, create_file
from faceprep.errors import RecordIOError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)
_IR_HEAD = struct.Struct(IR_FORMAT)
# A record's magic and lrec.
RECORD_HEAD = struct.Struct("<II")
# A record framed whole up to its image: the record's head, then the payload's IRHeader.
_IMAGE_RECORD_HEAD = struct.Struct(RECORD_HEAD.format + IR_FORMAT.removeprefix("<"))
IMAGE_RECORD_HEAD_SIZE = _IMAGE_RECORD_HEAD.size
IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])


def padded_length(length):
    return (length + 3) & ~3


def aligned_magic_positions(data):
    """The 4-aligned offsets of ``data`` holding the magic, where a writer splits it. As
    dmlc-core, only words lying wholly before the last partial word count."""
    search, aligned_end = 0, len(data) & ~3
    while (position := data.find(MAGIC_BYTES, search, aligned_end)) != -1:
        if position % 4:
            search = position + 1
            continue
        yield position
        search = position + 4


def encode_record(payload):
    """Frame one payload as dmlc-core's RecordIOWriter does (split at aligned magic)."""
    payload = bytes(payload)
    if len(payload) > LENGTH_MASK:
        raise ValueError(f"record of {len(payload)} bytes exceeds RecordIO's 2^29 limit")
    parts = []
    start = 0
    for position in aligned_magic_positions(payload):
        parts.append(_frame(2 if start else 1, payload[start:position]))
        start = position + 4
    last = payload[start:]
    parts.append(_frame(3 if start else 0, last))
    parts.append(b"\0" * (padded_length(len(last)) - len(last)))
    return b"".join(parts)


def framed_bytes(payload_bytes, splits):
    """The size of a framed record of ``payload_bytes`` split at ``splits`` magic words: each
    split trades its 4-byte magic word for an 8-byte part head; the parts between splits are
    4-aligned, so only the last is padded."""
    return 8 + payload_bytes + 4 * splits + (-payload_bytes % 4)


def aligned_magic_offsets(buffer, start=0, end=None):
    """Offsets in ``buffer`` (bytes, bytearray, mmap) of the magic words at the 4-aligned
    offsets of its bytes ``[start, end)`` (``start`` 4-aligned), all found at once without
    copying them; the buffer is no longer viewed once this returns."""
    end = len(buffer) if end is None else min(end, len(buffer))
    words = np.frombuffer(buffer, "<u4", max(0, end - start) >> 2, start)
    return start + 4 * np.flatnonzero(words == MAGIC)


def image_record_bytes(image):
    """The size of ``image``'s record as a writer frames ``pack_header(label, image, id)``
    with a scalar label, when its IRHeader holds no magic word (``header_magic_words``). The
    image starts at a 4-aligned offset of the payload, so its own aligned words are the
    payload's."""
    splits = np.count_nonzero(np.frombuffer(image, "<u4", len(image) >> 2) == MAGIC)
    return framed_bytes(IR_SIZE + len(image), int(splits))


def header_magic_words(labels, ids):
    """How many words of each scalar-label IRHeader ``(0, label, id, 0)`` are the magic, for
    arrays of float32 ``labels`` and uint64 ``ids``: 4 bytes more in its record for each."""
    label_words = np.asarray(labels, np.float32).view(np.uint32)
    ids = np.asarray(ids, np.uint64)
    return ((label_words == MAGIC).astype(np.int64) + (ids & np.uint64(0xFFFFFFFF) == MAGIC)
            + (ids >> np.uint64(32) == MAGIC))


def _frame(cflag, data):
    return RECORD_HEAD.pack(MAGIC, cflag << 29 | len(data)) + data


def pack_image_record_head_into(buffer, offset, label, image_bytes, id1):
    """Write at ``offset`` of ``buffer`` what precedes the image in a record framed whole
    (not split into parts) whose payload is ``pack_header(label, image, id1)`` with a scalar
    label: its magic, lrec and IRHeader. Writers framing records in a buffer they reuse copy
    each image once, after these bytes."""
    _IMAGE_RECORD_HEAD.pack_into(buffer, offset, MAGIC, IR_SIZE + image_bytes, 0, label, id1, 0)


def _record_where(path, offset, key):
    return f"{path}: record at byte offset {offset}" + ("" if key is None else f" (key {key})")


def read_record(buffer, offset, path="<rec>", key=None):
    """The payload of the record starting at byte ``offset`` of ``buffer``, parts re-joined.

    ``buffer`` is the whole file as bytes or an ``mmap``; the payload is returned as
    ``bytes`` (slices of an mmap are copies, so no view outlives the mapping).
    """
    size = len(buffer)
    parts = []
    position = offset
    while True:
        if position + 8 > size:
            where = _record_where(path, offset, key)
            raise RecordIOError(f"{where}: file ends at byte {size} inside a record header (truncated .rec?)")
        magic, lrec = RECORD_HEAD.unpack_from(buffer, position)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        body = position + 8
        if magic == MAGIC and cflag == 0 and not parts and body + padded_length(length) <= size:
            return buffer[body : body + length]  # the common case: an unsplit record
        where = _record_where(path, offset, key)
        if magic != MAGIC:
            raise RecordIOError(
                f"{where}: expected record magic 0x{MAGIC:08x} at byte {position}, found 0x{magic:08x}"
                " (.idx offset not at a record start, or .rec damaged)"
            )
        if (cflag in (2, 3)) != bool(parts):
            raise RecordIOError(
                f"{where}: part with continuation flag {cflag} at byte {position}"
                + (" where a record should start (.idx offset inside a split record?)" if not parts
                   else " where a continuation part was expected")
            )
        if cflag > 3:
            raise RecordIOError(f"{where}: invalid continuation flag {cflag} at byte {position}")
        if body + padded_length(length) > size:
            raise RecordIOError(
                f"{where}: record part at byte {position} declares {length} bytes, "
                f"file ends after {size - body} (truncated .rec?)"
            )
        parts.append(buffer[body : body + length])
        position = body + padded_length(length)
        if cflag == 3:
            return MAGIC_BYTES.join(parts)


def record_end(buffer, offset):
    """Where the record at byte ``offset`` (framing already checked by ``read_record``) ends,
    after its last part's padding."""
    position = offset
    while True:
        lrec = RECORD_HEAD.unpack_from(buffer, position)[1]
        position += 8 + padded_length(lrec & LENGTH_MASK)
        if lrec >> 29 in (0, 3):
            return position


def unpack_header(payload, where="<record>"):
    """Split a payload into its IRHeader and the image bytes (a view into ``payload``).

    With ``flag > 0`` the header's ``label`` is a float32 array of ``flag`` values read
    after the fixed header, as MXNet's ``recordio.unpack`` returns it; otherwise the
    scalar float label. This is the one IRHeader parser of the package.
    """
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{where}: payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id1, id2 = _IR_HEAD.unpack_from(payload)
    start = IR_SIZE
    if flag > 0:
        start += 4 * flag
        if len(payload) < start:
            raise RecordIOError(f"{where}: IRHeader announces {flag} float32 labels but the payload ends first")
        label = np.frombuffer(payload, np.float32, flag, IR_SIZE)
    return IRHeader(flag, label, id1, id2), memoryview(payload)[start:]


RecordHeads = namedtuple("RecordHeads", ["intact", "flag", "label", "id", "first_label", "image_start", "image_end"])
# The record head, the IRHeader and the first of its ``flag`` labels.
_HEADS_BYTES = 8 + IR_SIZE + 4


def read_heads(array, offsets):
    """The framing and IRHeader of the records at ``offsets`` (int64) of a rec viewed as a
    uint8 ``array``, read for all of them at once, as RecordHeads of arrays.

    ``intact`` marks the common records: unsplit, framed as ``read_record`` expects, with a
    payload that holds the IRHeader and its ``flag`` labels. For those, ``label`` is the
    IRHeader's scalar label, ``id`` its id, ``first_label`` the first of its array labels
    (meaningful when ``flag > 0``) and the image is bytes ``[image_start, image_end)``. Any
    other record is split or damaged: ``read_record`` and ``unpack_header`` read it, or say
    what is wrong.
    """
    offsets = np.asarray(offsets, np.int64)
    fits = offsets + _HEADS_BYTES <= len(array)
    at = np.where(fits, offsets, 0)
    words = array[at[:, None] + np.arange(_HEADS_BYTES)].view("<u4")
    magic, lrec, flag = words[:, 0], words[:, 1], words[:, 2].astype(np.int64)
    length = (lrec & LENGTH_MASK).astype(np.int64)
    image_start = offsets + 8 + IR_SIZE + 4 * flag
    image_end = offsets + 8 + length
    intact = (
        fits & (magic == MAGIC) & (lrec >> 29 == 0) & (image_start <= image_end)
        & (offsets + 8 + ((length + 3) & ~3) <= len(array))
    )
    ids = words[:, 4].astype(np.uint64) | words[:, 5].astype(np.uint64) << np.uint64(32)
    return RecordHeads(intact, flag, words[:, 3].view("<f4"), ids, words[:, 8].view("<f4"), image_start, image_end)


def pack_header(label, image, id1=0, id2=0):
    """Build a payload from a scalar label or a sequence of labels, as MXNet's ``recordio.pack``."""
    # numbers.Number, as MXNet's pack: numpy scalars (np.int64, np.float32) are scalar labels too.
    if isinstance(label, numbers.Number):
        return _IR_HEAD.pack(0, label, id1, id2) + bytes(image)
    labels = [float(value) for value in label]
    return _IR_HEAD.pack(len(labels), 0.0, id1, id2) + struct.pack(f"<{len(labels)}f", *labels) + bytes(image)


class RecordWriter(CommitOnExit):
    """Write ``.rec`` + ``.idx`` as MXNet's MXIndexedRecordIO does.

    Both files are written under temporary names and renamed on ``close()``, so an
    interrupted write leaves no file that looks complete.
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path)
        self._rec = open(create_file(self.rec_path + ".tmp"), "wb")
        self._idx = open(create_file(self.idx_path + ".tmp"), "w")

    def write(self, key, payload):
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_record(payload))

    def close(self):
        for stream in (self._rec, self._idx):
            stream.flush()
            os.fsync(stream.fileno())
            stream.close()
        os.replace(self.rec_path + ".tmp", self.rec_path)
        os.replace(self.idx_path + ".tmp", self.idx_path)

    def abort(self):
        for stream, path in ((self._rec, self.rec_path), (self._idx, self.idx_path)):
            stream.close()
            os.unlink(path + ".tmp")
