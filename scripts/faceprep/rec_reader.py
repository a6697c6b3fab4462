"""Reading a ``.rec`` through its ``.idx`` (faceprep.recordio frames the records): by key,
in file order a window at a time, or apart (records read out of file order), with the pages
read dropped from the process as it goes."""

import mmap
import os

import numpy as np

from faceprep.errors import RecordIOError
from faceprep.read_ahead import RangesAhead
from faceprep.record_index import read_index
from faceprep.recordio import (
    LENGTH_MASK,
    MAGIC,
    RECORD_HEAD,
    aligned_magic_offsets,
    padded_length,
    read_heads,
    read_record,
    unpack_header,
)

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
        data = os.pread(self._read_descriptor(), self._read_guess, offset)
        if len(data) >= 8:
            magic, lrec = RECORD_HEAD.unpack_from(data)
            length = lrec & LENGTH_MASK
            needed = 8 + padded_length(length)
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

    def ranges_ahead(self, offsets, first):
        """A read_ahead.RangesAhead over the records at ``offsets``, which ``read_apart``
        reads in that order, from number ``first`` on: each asked for as long as the longest
        record read so far (a longer one is read the rest of the way when reached)."""
        return RangesAhead(self._read_descriptor(), offsets, self._read_guess, first)

    def _read_descriptor(self):
        """The rec opened for ``read_apart``'s preads, on first use."""
        if self._descriptor is None:
            self._descriptor = os.open(self.rec_path, os.O_RDONLY)
        return self._descriptor

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

    def aligned_magic(self, start, end):
        """File offsets of the magic words at the 4-aligned offsets of bytes ``[start, end)``
        (``start`` 4-aligned), found without copying them (recordio.aligned_magic_offsets)."""
        return aligned_magic_offsets(self._map, start, end)

    def bytes(self, start, end):
        """Bytes ``[start, end)`` of the rec (a copy)."""
        return self._map[start:end]
