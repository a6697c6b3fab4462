"""Extraction of one chunk: the chunk's record stream fed to the output writers.

The records come from any source (faceprep.sources); for a rec, ``iter_images`` reads them in
file order from a mapping whose pages are released behind the reader, so memory stays flat
whatever the size of the rec. Every writer gets every ``(key, label, image)`` and is closed
(committed) only when the whole chunk has been written.
"""

import numpy as np

from faceprep.sources import REC, records

# Images between two calls of the progress callback.
PROGRESS_EVERY = 1000


def chunk_rows(rows_path, chunk):
    """The rows of the chunk ``[start, end)`` (positions) of a plan's image rows (``[key, offset]``
    of a rec, ``[key, class, name offset]`` of a tree)."""
    start, end = chunk
    return np.load(rows_path, mmap_mode="r")[start:end]


def extract_chunk(rec_path, idx_path, rows, writers, label_mode="first", progress=None, in_order=False):
    """``write_records`` of the rec's image records at index ``rows``: in file order, or with
    ``in_order`` in the order of ``rows``."""
    return write_records(records(REC, rows, label_mode, in_order, rec=rec_path, idx=idx_path), writers, progress)


def write_records(records, writers, progress=None):
    """Feed every ``(key, label, image)`` of ``records`` to every writer, then close the writers.

    On any error every writer is aborted and none is closed, so nothing marks the chunk
    done. ``progress`` is called with the number of images written since its last call.
    Returns the number of images.
    """
    count = 0
    try:
        for key, label, image in records:
            for writer in writers:
                writer.write(key, label, image)
            count += 1
            if progress is not None and count % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()
    if progress is not None and count % PROGRESS_EVERY:
        progress(count % PROGRESS_EVERY)
    return count
