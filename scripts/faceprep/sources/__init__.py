"""The registry of sources: what a dataset's ``source`` directory is, found by what it holds,
and how its image records are planned and read. Every chunk job reads its images through
``records``, as ``(key, label, image bytes)``, whatever the source.

- ``rec``: an MXNet RecordIO dataset, train.rec + train.idx in either layout
  (faceprep.insightface); labels come from the records.
- ``tree``: a folder tree of identity directories (faceprep.sources.tree); labels are the
  classes of the identities.
"""

import numpy as np

from faceprep.insightface import iter_images, iter_images_in_order, scan_rows
from faceprep.sources.tree import TREE, is_tree, iter_tree_images

REC = "rec"


def source_kind(source):
    """``tree`` for a folder tree, ``rec`` for a directory holding train.rec and train.idx."""
    return TREE if is_tree(source) else REC


def records(kind, rows, label_mode="first", in_order=False, *, rec=None, idx=None, tree=None, names=None):
    """The ``(key, label, image)`` records at ``rows`` of a ``kind`` source: a rec's
    (``rec``, ``idx``) in file order, or with ``in_order`` in the order of ``rows``; a tree's
    (its directory ``tree`` and the plan's ``names`` file) always in the order of ``rows``."""
    if kind == TREE:
        return iter_tree_images(tree, names, rows)
    return (iter_images_in_order if in_order else iter_images)(rec, idx, rows, label_mode)


def job_records(job, rows, in_order=False):
    """``records`` for a rule's job (Snakemake's ``snakemake`` object): its params give the
    source's kind and directory and the label mode, its input the rec or the plan's names."""
    kind = job.params.source_kind
    if kind == TREE:
        return records(kind, rows, tree=job.params.source_dir, names=job.input.names)
    return records(kind, rows, job.params.label_mode, in_order, rec=job.input.rec, idx=job.input.idx)


def job_row_scan(job, rows, record_sizes=True):
    """``(labels, record bytes)`` of each row: its label, and the size of its image's record
    in a rec (recordio.image_record_bytes; with ``record_sizes`` False, an empty array). A
    tree's rows carry both (its class is its label); a rec's records are read for them."""
    if job.params.source_kind == TREE:
        rows = np.asarray(rows)
        return rows[:, 1].astype(np.int64), (rows[:, 3].astype(np.int64) if record_sizes else np.zeros(0, np.int64))
    return scan_rows(job.input.rec, job.input.idx, rows, job.params.label_mode, record_sizes)
