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
from collections import namedtuple

import numpy as np

from faceprep.atomic import CommitOnExit, create_file
from faceprep.errors import RecordIOError
from faceprep.record_index import read_index

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)
_IR_HEAD = struct.Struct(IR_FORMAT)
_RECORD_HEAD = struct.Struct("<II")
# Readers drop the pages they have read from their mapping every this many bytes, so a
# job's resident memory does not grow with the part of the rec it reads.
RELEASE_BYTES = 16 << 20
# A read from a mapped file maps the cached pages around it too (the kernel's fault-around,
# 16 pages), so scattered reads through the mapping count at least this much toward a release.
MAPPED_AROUND_A_READ = 64 << 10
# A record read apart (``IndexedRecordReader.read_apart``) is read with one pread of the
# largest record read before it, at least FIRST_READ_GUESS and at most LARGEST_READ_GUESS:
# a few records read twice, instead of every read copying more than its record.
FIRST_READ_GUESS, LARGEST_READ_GUESS = 4 << 10, 1 << 20

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])


def _padded(length):
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
    parts.append(b"\0" * (_padded(len(last)) - len(last)))
    return b"".join(parts)


def framed_bytes(payload_bytes, splits):
    """The size of a framed record of ``payload_bytes`` split at ``splits`` magic words: each
    split trades its 4-byte magic word for an 8-byte part head; the parts between splits are
    4-aligned, so only the last is padded."""
    return 8 + payload_bytes + 4 * splits + (-payload_bytes % 4)


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
    return _RECORD_HEAD.pack(MAGIC, cflag << 29 | len(data)) + data


def whole_record_head(length):
    """The 8 bytes before the payload of a record not split into parts (``length`` bytes)."""
    return _RECORD_HEAD.pack(MAGIC, length)


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


def record_end(buffer, offset):
    """Where the record at byte ``offset`` (framing already checked by ``read_record``) ends,
    after its last part's padding."""
    position = offset
    while True:
        lrec = _RECORD_HEAD.unpack_from(buffer, position)[1]
        position += 8 + _padded(lrec & LENGTH_MASK)
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


class IndexedRecordReader:
    """Random and sequential access to a ``.rec`` through its ``.idx``; opens both read-only.

    ``index`` (as returned by ``read_index``, or a memory-mapped copy) saves re-parsing a
    large ``.idx`` and checking its offsets again (``check_offsets``).
    """

    def __init__(self, rec_path, idx_path, index=None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = os.fspath(idx_path)
        with open(self.rec_path, "rb") as stream:
            self.size = os.fstat(stream.fileno()).st_size
            # Records are read in place from a read-only mapping: no read() per record. An
            # empty file cannot be mapped, and has no record to read anyway.
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        self.index = read_index(self.idx_path) if index is None else index
        if index is None:
            self.check_offsets()
        self._descriptor = None  # read_apart's, opened on its first read
        self._read_guess = FIRST_READ_GUESS
        self._mapped_since_release = 0

    def close(self):
        if self._map is not None:
            self._map.close()
        if self._descriptor is not None:
            os.close(self._descriptor)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_offsets(self):
        """Every key must point to a record of its own, inside the rec: a shared offset would
        read one record twice and the record the other key lost never. Offsets must also be
        multiples of 4, where records start (each is padded to 4 bytes). With the framing
        that ``read_record`` checks, records then cannot overlap: a writer splits a payload
        at every 4-aligned magic, so the only 4-aligned magic words are where records and
        their parts start.
        """
        offsets = self.index[:, 1]
        beyond = np.flatnonzero(offsets >= self.size)
        if len(beyond):
            self.offset(int(self.index[beyond[0], 0]))  # raises, naming the key and offset
        misaligned = np.flatnonzero(offsets.astype(np.uint8) & 3)  # the low byte: 1 byte a row, not 8
        if len(misaligned):
            key, offset = (int(value) for value in self.index[misaligned[0]])
            raise RecordIOError(
                f"{self.idx_path}: key {key} points to byte offset {offset}, not a multiple of 4, where records "
                "start: it points inside a record"
            )
        # Written in key order (im2rec), or with key 0 written last (insightface): no sort needed.
        if np.all(offsets[1:] > offsets[:-1]) or (np.all(offsets[2:] > offsets[1:-1]) and offsets[0] > offsets[-1]):
            return
        ordered = np.sort(offsets)
        shared = np.flatnonzero(ordered[1:] == ordered[:-1])
        if len(shared):
            offset = int(ordered[shared[0]])
            first, second = (int(key) for key in self.index[offsets == offset, 0][:2])
            raise RecordIOError(
                f"{self.idx_path}: keys {first} and {second} both point to byte offset {offset}: one record would "
                "be read twice and the other key's record never (an idx edited or merged by hand?)"
            )

    @property
    def keys(self):
        """Every key of the index, in ascending order."""
        return self.index[:, 0]

    def _positions(self, keys):
        """Row of each of ``keys`` (an int array) in the index, and which of them are present."""
        positions = np.searchsorted(self.keys, keys)
        present = positions < len(self.index)
        present[present] = self.keys[positions[present]] == keys[present]
        return positions, present

    def __contains__(self, key):
        return bool(self._positions(np.array([key], dtype=np.int64))[1][0])

    def missing_keys(self, keys):
        """The subset of ``keys`` (an int array) that the index lacks."""
        keys = np.asarray(keys, dtype=np.int64)
        return keys[~self._positions(keys)[1]]

    def rows(self, keys):
        """The ``[key, offset]`` rows of ``keys``; raises RecordIOError naming the first missing key."""
        keys = np.asarray(keys, dtype=np.int64)
        positions, present = self._positions(keys)
        if not present.all():
            raise RecordIOError(f"{self.idx_path}: no entry for key {int(keys[~present][0])}")
        return self.index[positions]

    def offset(self, key):
        offset = int(self.rows([key])[0, 1])
        if offset >= self.size:
            raise RecordIOError(
                f"{self.idx_path}: key {key} points to byte offset {offset}, "
                f"past the end of {self.rec_path} ({self.size} bytes)"
            )
        return offset

    def read(self, key):
        """The payload of record ``key``."""
        return self.read_at(self.offset(key), key)

    def read_at(self, offset, key):
        """The payload of the record at byte ``offset``, which the index gives ``key``."""
        return read_record(self._map, offset, self.rec_path, key)

    def read_apart(self, offset, key):
        """``read_at`` for records read out of file order (a rec re-packed in another order):
        one ``pread`` copies the record from the page cache, where a read through the mapping
        would fault in the pages around it, which then count as the job's memory until
        released. A record longer than the guess is read again whole; a split, damaged or cut
        record is left to ``read_at`` (which names what is wrong), its pages released every
        RELEASE_BYTES."""
        if self._descriptor is None:
            self._descriptor = os.open(self.rec_path, os.O_RDONLY)
        data = os.pread(self._descriptor, self._read_guess, offset)
        if len(data) >= 8:
            magic, lrec = _RECORD_HEAD.unpack_from(data)
            length = lrec & LENGTH_MASK
            needed = 8 + _padded(length)
            if magic == MAGIC and lrec >> 29 == 0 and offset + needed <= self.size:
                if needed > len(data):
                    self._read_guess = max(self._read_guess, min(needed, LARGEST_READ_GUESS))
                    data = os.pread(self._descriptor, needed, offset)
                if needed <= len(data):
                    return data[8 : 8 + length]
        payload = self.read_at(offset, key)
        self._mapped_since_release += max(len(payload), MAPPED_AROUND_A_READ)
        if self._mapped_since_release >= RELEASE_BYTES:
            self.release()
            self._mapped_since_release = 0
        return payload

    def read_unpacked(self, key):
        return unpack_header(self.read(key), f"{self.rec_path}: key {key}")

    def iter_keys(self, keys):
        """Yield ``(key, payload)`` for ``keys`` in file-offset order, so the rec is read sequentially."""
        return self.iter_rows(self.rows(keys))

    def iter_rows(self, rows):
        """Yield ``(key, payload)`` for index ``rows`` (``[key, offset]``) in file-offset order."""
        for window in self.iter_row_windows(rows):
            for key, offset in window.tolist():
                yield key, self.read_at(offset, key)

    def iter_row_windows(self, rows):
        """Index ``rows`` (``[key, offset]``) in file-offset order, in windows of the rows
        that start in the same RELEASE_BYTES of the rec.

        Before each window the pages read before it are dropped from the mapping, so a job's
        resident memory does not grow with the part of the rec it reads.
        """
        rows = np.asarray(rows)
        beyond = np.flatnonzero(rows[:, 1] >= self.size)
        if len(beyond):
            self.offset(int(rows[beyond[0], 0]))  # raises, naming the key and offset
        rows = rows[np.argsort(rows[:, 1], kind="stable")]
        if not len(rows):
            return
        released = int(rows[0, 1]) - int(rows[0, 1]) % mmap.PAGESIZE
        for window in np.split(rows, np.flatnonzero(np.diff(rows[:, 1] // RELEASE_BYTES)) + 1):
            start = int(window[0, 1]) - int(window[0, 1]) % mmap.PAGESIZE
            if start > released:
                # Mapped pages count as the process's memory until dropped; the page cache keeps them.
                self._map.madvise(mmap.MADV_DONTNEED, released, start - released)
                released = start
            yield window

    def release(self):
        """Drop every page read from the mapping (the page cache keeps them)."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)

    def heads(self, offsets):
        """``read_heads`` of the records at ``offsets``."""
        return read_heads(np.frombuffer(self._map, np.uint8), offsets)

    def check_apart(self, window, heads):
        """Raise RecordIOError naming both keys if a record of ``window`` (rows in offset
        order, ``heads`` theirs) runs into the next one: a rec whose payloads were not split
        at their magic words, with an idx pointing into one. Split records are left to
        ``read_record``."""
        ends = np.where(heads.intact, (heads.image_end + 3) & ~3, window[:, 1] + 8)
        overlapping = np.flatnonzero(ends[:-1] > window[1:, 1])
        if len(overlapping):
            (key, offset), (next_key, next_offset) = window[overlapping[0] : overlapping[0] + 2].tolist()
            raise RecordIOError(
                f"{self.rec_path}: the record of key {key} (bytes {offset}..{int(ends[overlapping[0]])}) overlaps "
                f"the record of key {next_key} at byte offset {next_offset} ({self.idx_path} points into a record)"
            )

    def bytes(self, start, end):
        """Bytes ``[start, end)`` of the rec (a copy)."""
        return self._map[start:end]


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
