"""Reading files ahead of a reader that takes them one at a time, once its reads are slow.

A chunk job reads its files one at a time, and from disk (or a network filesystem) it waits on
each in turn. Once its reads are slow, a helper process asks the kernel to read the next files
(posix_fadvise WILLNEED), so that many reads are in flight: 50,000 files from disk took 5.0-5.5 s
alone and 1.5-2.0 s with it, on two cores. It starts only then: for files in the page cache it
would take CPU time for nothing (~20 % more for the reads). A thread does not do it: holding
the GIL between its calls, it left the reads as slow as without it.
"""

import logging
import multiprocessing
import os
import time

import numpy as np

log = logging.getLogger(__name__)

READ_AHEAD_BYTES = 64 << 20
# Reads are timed in windows of READS_PER_CHECK files; SLOW_WINDOWS slow ones in a row start the
# helper (one could be a job that lost its core for a while).
READS_PER_CHECK, SLOW_WINDOWS = 256, 2
# Slower than this is a read that waited on a disk: a file in the page cache takes ~10 us, and
# its bytes are copied at several GB/s.
SLOW_READ_SECONDS, SLOW_READ_BYTES_PER_SECOND = 50e-6, 1 << 30


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
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(descriptor)


class ReadAhead:
    """Watches a reader taking files 0, 1, ... in order (``read`` after each). Once its reads
    were slow in SLOW_WINDOWS windows in a row, a helper process reads ahead the files
    ``paths_from(first)`` yields, ``first`` being the next file, of ``sizes`` (bytes, about:
    they bound how far ahead it reads). ``close`` (or leaving the ``with``) stops it."""

    def __init__(self, paths_from, sizes):
        self._paths_from, self._sizes = paths_from, np.asarray(sizes)
        self._helper = self._position = None
        self._first = self._slow_windows = 0
        self._seconds = self._bytes = 0

    def read(self, number, seconds, size):
        """File ``number`` was read, ``size`` bytes in ``seconds``."""
        if self._position is not None:
            self._position.value = number - self._first
            return
        if not hasattr(os, "posix_fadvise"):
            return
        self._seconds += seconds
        self._bytes += size
        if (number + 1) % READS_PER_CHECK:
            return
        slow = self._seconds > READS_PER_CHECK * SLOW_READ_SECONDS + self._bytes / SLOW_READ_BYTES_PER_SECOND
        self._slow_windows = self._slow_windows + 1 if slow else 0
        if self._slow_windows == SLOW_WINDOWS:
            self._start(number + 1)
            log.info("reads took %.0f us a file: reading the files from number %d on ahead",
                     self._seconds / READS_PER_CHECK * 1e6, number + 1)
        self._seconds = self._bytes = 0

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
