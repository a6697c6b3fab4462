"""Snakemake script: the rec's output order, ``(source row..., class)`` rows, and where each
record goes in train.rec (faceprep.outputs.rec.output_order)."""

import json

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.classes import ClassTable
from faceprep.outputs.rec import check_layout, output_order
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
rows = np.load(snakemake.input.rows)


def joined(paths):
    return np.concatenate([np.load(path) for path in paths] or [np.zeros(0, np.int64)])


labels, record_bytes = joined(snakemake.input.row_labels), joined(snakemake.input.record_bytes)
classes = ClassTable.read(snakemake.input.classes)
check_layout(snakemake.params.layout, snakemake.params.order, len(rows), len(classes))
ordered, offsets = output_order(snakemake.params.layout, rows, classes.classes_of(labels), record_bytes,
                                snakemake.params.order, snakemake.params.seed)
write_atomically(snakemake.output.rows, lambda stream: np.save(stream, ordered))
write_atomically(snakemake.output.offsets, lambda stream: np.save(stream, offsets))
with open(snakemake.input.plan) as stream:
    chunks = len(json.load(stream)["chunks"])
log.info("%s rec, order %s: %d images of %d classes in %d parts, images at bytes %d..%d", snakemake.params.layout,
         snakemake.params.order, len(ordered), len(classes), chunks, offsets[0], offsets[-1])
