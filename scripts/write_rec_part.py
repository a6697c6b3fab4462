"""Snakemake script: one chunk of the rec's output order as a part of framed records
(faceprep.outputs.rec.RecPartWriter), its source records read in that order."""

import json

import numpy as np

from faceprep.classes import ClassTable
from faceprep.extract import write_records
from faceprep.outputs.rec import RecPartWriter, first_image_key
from faceprep.rule_logging import Progress, log_to
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    start, end = json.load(stream)["chunks"][int(snakemake.wildcards.chunk)]
ordered = np.load(snakemake.input.rows, mmap_mode="r")[start:end]
writer = RecPartWriter(
    snakemake.output.part,
    snakemake.output.index,
    ordered,
    first_image_key(snakemake.params.layout) + start,
    ClassTable.read(snakemake.input.classes),
)
log.info("part %s: images %d..%d of the output order", snakemake.wildcards.chunk, start, end - 1)
progress = Progress(log, len(ordered))
# The source's own rows (all but the class column), read in the output order.
write_records(job_records(snakemake, np.asarray(ordered[:, :-1]), in_order=True), [writer], progress=progress.update)
progress.close()
log.info("wrote %s: %d records, %d bytes", snakemake.output.part, writer.records, writer.size)
