"""Extraction of one chunk: the chunk's record stream fed to the output writers.

``iter_images`` reads the chunk's image records in file order from a mapping of the rec
whose pages are released behind the reader, so memory stays flat whatever the size of the
rec; every writer gets every ``(key, label, image)`` and is closed (committed) only when
the whole chunk has been written.
"""

import numpy as np

from faceprep.insightface import iter_images, iter_images_in_order

# Images between two calls of the progress callback.
PROGRESS_EVERY = 1000


def chunk_rows(rows_path, chunk):
    """The ``[key, offset]`` rows of the chunk ``[start, end)`` (positions) of a plan's image rows."""
    start, end = chunk
    return np.load(rows_path, mmap_mode="r")[start:end]


def extract_chunk(rec_path, idx_path, rows, writers, label_mode="first", progress=None, in_order=False):
    """Feed the image records at index ``rows`` to every writer, then close the writers.

    Records come in file order, or with ``in_order`` in the order of ``rows``. On any error
    every writer is aborted and none is closed, so nothing marks the chunk done.
    ``progress`` is called with the number of images written since its last call. Returns
    the number of images.
    """
    count = 0
    records = (iter_images_in_order if in_order else iter_images)(rec_path, idx_path, rows, label_mode)
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
