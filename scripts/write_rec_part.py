"""Snakemake script: one chunk of the rec's output order written into its byte range of
train.rec.partial (faceprep.outputs.rec.RecPartWriter), its source records read in that order."""

import json
import os

import numpy as np

from faceprep.classes import ClassTable
from faceprep.extract import write_records
from faceprep.outputs.rec import PARTIAL, RecPartWriter, first_image_key
from faceprep.rule_logging import Progress, log_to
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    start, end = json.load(stream)["chunks"][int(snakemake.wildcards.chunk)]
ordered = np.load(snakemake.input.rows, mmap_mode="r")[start:end]
offsets = np.load(snakemake.input.offsets, mmap_mode="r")
writer = RecPartWriter(
    os.path.join(snakemake.wildcards.rec_dir, PARTIAL),
    snakemake.output.index,
    ordered,
    first_image_key(snakemake.params.layout) + start,
    ClassTable.read(snakemake.input.classes),
    offsets[start : end + 1],
)
log.info("part %s: images %d..%d of the output order", snakemake.wildcards.chunk, start, end - 1)
progress = Progress(log, len(ordered))
# The source's own rows (all but the class column), read in the output order.
write_records(job_records(snakemake, np.asarray(ordered[:, :-1]), in_order=True), [writer], progress=progress.update)
progress.close()
log.info("wrote %d records into bytes %d..%d of %s", writer.records, writer.begin, writer.end, writer.partial_path)
