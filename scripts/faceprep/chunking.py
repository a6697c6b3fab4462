"""Chunks: the ``[start, end)`` positions of a dataset's images that one job each handles,
whatever the source (faceprep.sources).

Each chunk's outputs resume on their own, so a chunk is what a killed run redoes. A fixed
``chunk_size`` cuts the images into runs of that many; ``auto`` sizes them for the jobs that
run at once (``auto_chunks``).
"""

import math

# chunk_size 'auto'. Measured on a 2-core VM (make bench): a chunk job spends ~0.25 s
# starting and ~50 us per image (Python ~15 us, creating the file ~35 us), so 50,000 images
# (~2.5 s) keep the start-up near a tenth of a job. 200,000 bounds what a killed job redoes
# and the rows a job holds in memory.
SMALLEST_AUTO_CHUNK, LARGEST_AUTO_CHUNK = 50_000, 200_000
# Chunks per job slot: the last wave then holds about a quarter of a slot's work, so the
# slots finish within ~one chunk of each other.
AUTO_CHUNKS_PER_JOB = 4
# Rows a label scan job of a rec takes at most (it keeps 16 bytes a row: label, record size).
LARGEST_SCAN_CHUNK = 200_000


def auto_chunks(images, parallel_jobs):
    """The ``[start, end)`` chunks of ``chunk_size: auto``: AUTO_CHUNKS_PER_JOB chunks for each
    of the ``parallel_jobs`` that run at once, within [SMALLEST_AUTO_CHUNK, LARGEST_AUTO_CHUNK]
    images, then as many more as fill the last wave of jobs, all of one size (to an image).

    With every wave full and chunks equal, all job slots finish together: 75,000 images on 2
    slots are 2 chunks of 37,500, not 50,000 then 25,000 on one slot while the other idles.
    """
    if not images:
        return []
    wanted = max(AUTO_CHUNKS_PER_JOB * parallel_jobs, math.ceil(images / LARGEST_AUTO_CHUNK))
    count = math.ceil(images / max(SMALLEST_AUTO_CHUNK, math.ceil(images / wanted)))
    if count >= parallel_jobs:
        count = math.ceil(count / parallel_jobs) * parallel_jobs
    return _equal_chunks(images, count)


def _equal_chunks(images, count):
    """``count`` ``[start, end)`` chunks of ``images`` positions, in order, their sizes within one."""
    bounds = [images * part // count for part in range(count + 1)]
    return [list(chunk) for chunk in zip(bounds, bounds[1:])]


def plan_chunk_positions(images, chunk_size, parallel_jobs=1):
    """The plan's ``chunks`` (``[start, end)`` positions), ``chunk_size`` (the largest), the
    label scan's ``scan_chunks`` (scan_positions) and, for ``"auto"``, the ``parallel_jobs``
    it was planned for."""
    plan = {}
    if chunk_size == "auto":
        plan["parallel_jobs"] = parallel_jobs
        chunks = auto_chunks(images, parallel_jobs)
        chunk_size = max((end - start for start, end in chunks), default=0)
    else:
        chunks = [[start, min(start + chunk_size, images)] for start in range(0, images, chunk_size)]
    # Scanned by the job slots of an auto plan, which it records; a plan of an explicit
    # chunk_size must not depend on --cores: a rerun with other cores would rewrite it and
    # extract every chunk again.
    scans = scan_positions(images, plan.get("parallel_jobs", 1), len(chunks))
    return plan | {"chunk_size": chunk_size, "chunks": chunks, "scan_chunks": scans}


def scan_positions(images, parallel_jobs, chunks):
    """The ``scan_chunks`` of a dataset of ``chunks`` chunks: one per job slot, or as many more as
    keep each within LARGEST_SCAN_CHUNK rows, all of one size, and never more than the chunks.
    A scan job of 50,000 records takes ~0.3 s, most of it its start-up, so a scan per chunk
    (6 in 3 waves for 300,000 images) took 1.1 s on two cores where 2 take ~0.5 s."""
    if not images:
        return []
    count = max(parallel_jobs, math.ceil(images / LARGEST_SCAN_CHUNK))
    return _equal_chunks(images, min(chunks, math.ceil(count / parallel_jobs) * parallel_jobs))


def scan_chunks(plan):
    """The ``[start, end)`` positions each label scan job (scan_labels) takes: the plan's
    ``scan_chunks`` (scan_positions), else, in a plan written before they were, its chunks."""
    return plan.get("scan_chunks", plan["chunks"])
