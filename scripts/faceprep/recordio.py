"""MXNet RecordIO (``.rec`` + ``.idx``) reading and writing without MXNet.

A record is ``uint32 magic``, ``uint32 lrec`` (``cflag << 29 | length``), the data
and zero padding to 4 bytes. The writer splits a payload wherever it holds the
magic at a 4-aligned offset (cflag 1 = first, 2 = middle, 3 = last part) and drops
that magic; the reader puts it back. This mirrors dmlc-core's RecordIOWriter and
RecordIOReader byte for byte, so files interchange with MXNet in both directions.
"""

import mmap
import numbers
import os
import struct
from array import array
from collections import namedtuple

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)
_RECORD_HEAD = struct.Struct("<II")
# iter_keys drops the pages it has read from its mapping every this many bytes, so a
# job's resident memory does not grow with the part of the rec it reads.
RELEASE_BYTES = 16 << 20
# read_index stores offsets in an array indexed by key; an index whose keys are this
# much sparser than dense is not an insightface/im2rec index and would waste memory.
SPARSE_KEY_SLACK = 1 << 20

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])


class RecordIOError(ValueError):
    """Malformed RecordIO input; the message names the file and the key or offset."""


def _padded(length):
    return (length + 3) & ~3


def encode_record(payload):
    """Frame one payload as dmlc-core's RecordIOWriter does (split at aligned magic)."""
    payload = bytes(payload)
    if len(payload) > LENGTH_MASK:
        raise ValueError(f"record of {len(payload)} bytes exceeds RecordIO's 2^29 limit")
    parts = []
    start = search = 0
    # dmlc-core only looks at 4-aligned words that lie wholly before the last partial word.
    aligned_end = len(payload) & ~3
    while (position := payload.find(MAGIC_BYTES, search, aligned_end)) != -1:
        if position % 4:
            search = position + 1
            continue
        parts.append(_frame(2 if start else 1, payload[start:position]))
        start = search = position + 4
    last = payload[start:]
    parts.append(_frame(3 if start else 0, last))
    parts.append(b"\0" * (_padded(len(last)) - len(last)))
    return b"".join(parts)


def _frame(cflag, data):
    return struct.pack("<II", MAGIC, cflag << 29 | len(data)) + data


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
        magic, lrec = _RECORD_HEAD.unpack_from(buffer, position)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        body = position + 8
        if magic == MAGIC and cflag == 0 and not parts and body + _padded(length) <= size:
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
        if body + _padded(length) > size:
            raise RecordIOError(
                f"{where}: record part at byte {position} declares {length} bytes, "
                f"file ends after {size - body} (truncated .rec?)"
            )
        parts.append(buffer[body : body + length])
        position = body + _padded(length)
        if cflag == 3:
            return MAGIC_BYTES.join(parts)


def unpack_header(payload, where="<record>"):
    """Split a payload into its IRHeader and the image bytes.

    With ``flag > 0`` the header's ``label`` is a tuple of ``flag`` float32 values
    (read after the fixed header, as MXNet's ``recordio.unpack`` does).
    """
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{where}: payload of {len(payload)} bytes is shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, id1, id2 = struct.unpack_from(IR_FORMAT, payload)
    start = IR_SIZE
    if flag > 0:
        start += 4 * flag
        if len(payload) < start:
            raise RecordIOError(f"{where}: IRHeader announces {flag} float32 labels but the payload ends first")
        label = struct.unpack_from(f"<{flag}f", payload, IR_SIZE)
    return IRHeader(flag, label, id1, id2), payload[start:]


def pack_header(label, image, id1=0, id2=0):
    """Build a payload from a scalar label or a sequence of labels, as MXNet's ``recordio.pack``."""
    # numbers.Number, as MXNet's pack: numpy scalars (np.int64, np.float32) are scalar labels too.
    if isinstance(label, numbers.Number):
        return struct.pack(IR_FORMAT, 0, label, id1, id2) + bytes(image)
    labels = [float(value) for value in label]
    return struct.pack(IR_FORMAT, len(labels), 0.0, id1, id2) + struct.pack(f"<{len(labels)}f", *labels) + bytes(image)


def read_index(idx_path):
    """Parse a ``.idx`` file (``key<TAB>offset`` lines) into offsets indexed by key.

    Returns an int64 array ``offsets`` where ``offsets[key]`` is the byte offset of
    record ``key``, or -1 where the index has no such key. insightface keys are
    dense (0..N+C), so the array costs 8 bytes a record where a dict costs ~100.
    """
    keys, offsets = array("q"), array("q")
    with open(idx_path, "rb") as idx:
        for line_number, line in enumerate(idx, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 2:
                    raise ValueError
                key, offset = int(fields[0]), int(fields[1])
                if key < 0 or offset < 0:
                    raise ValueError
            except ValueError:
                raise RecordIOError(
                    f"{idx_path}: line {line_number}: expected '<key>\\t<offset>' with non-negative "
                    f"integers, got {line[:80]!r}"
                ) from None
            keys.append(key)
            offsets.append(offset)
    keys = np.frombuffer(keys, dtype=np.int64)
    if len(keys) and keys.max() >= 2 * len(keys) + SPARSE_KEY_SLACK:
        raise RecordIOError(
            f"{idx_path}: largest key {int(keys.max())} with only {len(keys)} entries: "
            "keys are not the dense 0..N numbering of an insightface/im2rec index"
        )
    by_key = np.full(int(keys.max()) + 1 if len(keys) else 0, -1, dtype=np.int64)
    by_key[keys] = np.frombuffer(offsets, dtype=np.int64)
    if np.count_nonzero(by_key >= 0) != len(keys):
        sorted_keys = np.sort(keys)
        duplicate = int(sorted_keys[np.flatnonzero(np.diff(sorted_keys) == 0)[0]])
        raise RecordIOError(f"{idx_path}: key {duplicate} appears more than once")
    return by_key


class IndexedRecordReader:
    """Random and sequential access to a ``.rec`` through its ``.idx``; opens both read-only.

    ``offsets`` (as returned by ``read_index``) saves re-parsing a large ``.idx``.
    """

    def __init__(self, rec_path, idx_path, offsets=None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path)
        self.offsets = read_index(self.idx_path) if offsets is None else offsets
        with open(self.rec_path, "rb") as stream:
            self.size = os.fstat(stream.fileno()).st_size
            # Records are read in place from a read-only mapping: no read() per record. An
            # empty file cannot be mapped, and has no record to read anyway.
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None

    def close(self):
        if self._map is not None:
            self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __contains__(self, key):
        return 0 <= key < len(self.offsets) and self.offsets[key] >= 0

    def missing_keys(self, keys):
        """The subset of ``keys`` (an int array) that the index lacks."""
        keys = np.asarray(keys, dtype=np.int64)
        present = (keys >= 0) & (keys < len(self.offsets))
        present[present] = self.offsets[keys[present]] >= 0
        return keys[~present]

    def offset(self, key):
        if key not in self:
            raise RecordIOError(f"{self.idx_path}: no entry for key {key}")
        offset = int(self.offsets[key])
        if offset >= self.size:
            raise RecordIOError(
                f"{self.idx_path}: key {key} points to byte offset {offset}, "
                f"past the end of {self.rec_path} ({self.size} bytes)"
            )
        return offset

    def read(self, key):
        """The payload of record ``key``."""
        return read_record(self._map, self.offset(key), self.rec_path, key)

    def read_unpacked(self, key):
        return unpack_header(self.read(key), f"{self.rec_path}: key {key}")

    def iter_keys(self, keys):
        """Yield ``(key, payload)`` for ``keys`` in file-offset order, so the rec is read sequentially."""
        keys = np.asarray(keys, dtype=np.int64)
        missing = self.missing_keys(keys)
        if len(missing):
            raise RecordIOError(f"{self.idx_path}: no entry for key {int(missing[0])}")
        offsets = self.offsets[keys]
        beyond = np.flatnonzero(offsets >= self.size)
        if len(beyond):
            self.offset(int(keys[beyond[0]]))  # raises, naming the key and offset
        order = np.argsort(offsets, kind="stable")
        released = int(offsets[order[0]]) - int(offsets[order[0]]) % mmap.PAGESIZE if len(order) else 0
        for position in order:
            key, offset = int(keys[position]), int(offsets[position])
            yield key, read_record(self._map, offset, self.rec_path, key)
            if offset - released >= RELEASE_BYTES:
                # Mapped pages count as the process's memory until dropped; the page cache keeps them.
                end = offset - offset % mmap.PAGESIZE
                self._map.madvise(mmap.MADV_DONTNEED, released, end - released)
                released = end


class RecordWriter:
    """Write ``.rec`` + ``.idx`` as MXNet's MXIndexedRecordIO does.

    Both files are written under temporary names and renamed on ``close()``, so an
    interrupted write leaves no file that looks complete.
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path)
        self._rec = open(self.rec_path + ".tmp", "wb")
        self._idx = open(self.idx_path + ".tmp", "w")

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

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.close()
        else:
            self.abort()

