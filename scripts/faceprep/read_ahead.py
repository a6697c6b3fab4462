"""Reading files ahead of a reader that takes them one at a time, once its reads are slow.

A chunk job reads its files one at a time, and from disk (or a network filesystem) it waits on
each in turn. Once its reads are slow (``SlowReads``), a helper process asks the kernel to read
the next files (posix_fadvise WILLNEED), so that many reads are in flight: 50,000 files from
disk took 5.0-5.5 s alone and 1.5-2.0 s with it, on two cores. It starts only then: for files
in the page cache it would take CPU time for nothing (~20 % more for the reads). A thread does
not do it: holding the GIL between its calls, it left the reads as slow as without it.

A tree's plan reads each directory's files in its own worker processes; once a worker's reads
are slow, it asks for the files of the directory it reads ``FILES_AHEAD`` ahead of itself
(``FilesAhead``), no helper needed. The plan of 300,000 files (8 workers, two cores) took
3.9-5.1 s instead of 11.6-12.1 s with their data out of the page cache, 5.4 s instead of
13.6-15.3 s with every cache dropped. It too waits until reads are slow: asking for every
file from the start took 3.3-3.4 s instead of 2.9-3.1 s with the files in the page cache.
A chunk job re-packing a rec in another order does the same for its next records' byte ranges
(``RangesAhead``). Where the system has no posix_fadvise, nothing is read ahead, and the
readers' log lines say so (``slow_reads_remedy``).
"""

import logging
import multiprocessing
import os
import time

import numpy as np

log = logging.getLogger(__name__)

# Whether the kernel can be asked to read ahead at all (not on macOS).
CAN_ADVISE = hasattr(os, "posix_fadvise")
READ_AHEAD_BYTES = 64 << 20
# Files a plan worker asks for ahead of the one it reads: with 8 workers, ~500 reads in flight.
FILES_AHEAD = 64
# Records a chunk job re-packing a rec in another order asks for ahead of the one it reads:
# 20,000 random records of a rec out of the page cache took 122-132 us a record one at a time,
# 22-32 us with 64 asked for ahead and 19-22 us with 256 (pread, two cores).
RANGES_AHEAD = 256
# Reads are timed in windows of READS_PER_CHECK files; a window is slow when most of its reads
# are (a reader that lost its core in the middle of one read makes that one slow, not the
# window), and SLOW_WINDOWS slow ones in a row make the reads slow.
READS_PER_CHECK, SLOW_WINDOWS = 256, 2
# Slower than this is a read that waited on a disk: a file in the page cache takes ~10 us, and
# its bytes are copied at several GB/s.
SLOW_READ_SECONDS, SLOW_READ_BYTES_PER_SECOND = 50e-6, 1 << 30


def will_need(path):
    """Ask the kernel to start reading file ``path`` into the page cache, without waiting. A
    file that cannot be opened is its reader's to name; a FIFO is not waited for."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def slow_reads_remedy(asking):
    """What a reader does once its reads are slow, for its log line: ``asking`` (what it asks
    the kernel for ahead), or that this system cannot be asked (no posix_fadvise)."""
    return asking if CAN_ADVISE else "this system cannot be asked to read ahead (no posix_fadvise): it reads on as before"


class SlowReads:
    """Tells from a reader's timed reads (``read`` after each) whether its files come from a
    disk: ``slow`` once SLOW_WINDOWS windows of READS_PER_CHECK reads in a row were slow, and
    from then on; ``microseconds`` is the mean read of the last window. It is called for every
    record a part reads, so it keeps counts, not the times."""

    def __init__(self):
        self.slow = False
        self.microseconds = 0.0
        self._reads = self._slow_reads = self._slow_windows = 0
        self._seconds = 0.0

    def read(self, seconds, size):
        """A file of ``size`` bytes was read in ``seconds``; True if this read made the reads slow."""
        if self.slow:
            return False
        self._reads += 1
        self._seconds += seconds
        if seconds > SLOW_READ_SECONDS + size / SLOW_READ_BYTES_PER_SECOND:
            self._slow_reads += 1
        if self._reads < READS_PER_CHECK:
            return False
        slow = 2 * self._slow_reads > self._reads
        self.microseconds = self._seconds / self._reads * 1e6
        self._reads = self._slow_reads = 0
        self._seconds = 0.0
        self._slow_windows = self._slow_windows + 1 if slow else 0
        self.slow = self._slow_windows == SLOW_WINDOWS
        return self.slow


class _Ahead:
    """Asks for ``items`` a distance ahead of a reader taking them in order from number
    ``first`` on (``reached`` before each)."""

    def __init__(self, items, first=0):
        self._items, self._next = items, first

    def reached(self, number):
        """The reader is about to read item ``number``."""
        if not CAN_ADVISE:
            return
        end = min(number + self._distance(), len(self._items))
        while self._next < end:
            self._ask(self._items[self._next])
            self._next += 1


class FilesAhead(_Ahead):
    """Asks for files (``will_need``) FILES_AHEAD ahead of their reader; a None item is not a
    regular file and is left alone."""

    def _distance(self):
        return FILES_AHEAD

    def _ask(self, path):
        if path is not None:
            will_need(path)


class RangesAhead(_Ahead):
    """Asks for byte ranges of the open file ``descriptor`` (POSIX_FADV_WILLNEED) RANGES_AHEAD
    ahead of their reader: ``length`` bytes at each of ``offsets``."""

    def __init__(self, descriptor, offsets, length, first=0):
        super().__init__(offsets, first)
        self._descriptor, self._length = descriptor, length

    def _distance(self):
        return RANGES_AHEAD

    def _ask(self, offset):
        try:
            os.posix_fadvise(self._descriptor, offset, self._length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # only a request: the read itself names what is wrong


def _advise(paths, ends, position, parent):
    """Ask the kernel to read each of ``paths`` into the page cache, in order, keeping within
    READ_AHEAD_BYTES (by ``ends``, the running sum of their sizes) of the file at
    ``position.value``, where the reader is. Stops once its parent is gone; a file that
    cannot be opened is the reader's to name."""
    paths = iter(paths)
    for end in ends:
        while end - ends[position.value] > READ_AHEAD_BYTES:
            if os.getppid() != parent:
                return
            time.sleep(0.001)
        path = next(paths, None)
        if path is None:
            return
        will_need(path)


class ReadAhead:
    """Watches a reader taking files 0, 1, ... in order (``read`` after each). Once its reads
    are slow (``SlowReads``), a helper process reads ahead the files
    ``paths_from(first)`` yields, ``first`` being the next file, of ``sizes`` (bytes, about:
    they bound how far ahead it reads). ``close`` (or leaving the ``with``) stops it."""

    def __init__(self, paths_from, sizes):
        self._paths_from, self._sizes = paths_from, np.asarray(sizes)
        self._helper = self._position = None
        self._first = 0
        self._reads = SlowReads()

    def read(self, number, seconds, size):
        """File ``number`` was read, ``size`` bytes in ``seconds``."""
        if self._position is not None:
            self._position.value = number - self._first
            return
        if CAN_ADVISE and self._reads.read(seconds, size):
            self._start(number + 1)
            log.info("reads took %.0f us a file: reading the files from number %d on ahead",
                     self._reads.microseconds, number + 1)

    def _start(self, first):
        context = multiprocessing.get_context("fork")
        self._first, self._position = first, context.RawValue("q", 0)
        ends = np.cumsum(self._sizes[first:])
        self._helper = context.Process(target=_advise, daemon=True,
                                       args=(self._paths_from(first), ends, self._position, os.getpid()))
        self._helper.start()

    def close(self):
        if self._helper is not None:
            self._helper.kill()
            self._helper.join()
            self._helper = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
