"""Snakemake script: the rec's output order, ``(source key, offset, class)`` rows (faceprep.outputs.rec)."""

import json

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.classes import ClassTable
from faceprep.outputs.rec import check_layout, output_order
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
rows = np.load(snakemake.input.rows)
labels = np.concatenate([np.load(path) for path in snakemake.input.row_labels] or [np.zeros(0, np.int64)])
classes = ClassTable.read(snakemake.input.classes)
check_layout(snakemake.params.layout, snakemake.params.order, len(rows), len(classes))
ordered = output_order(rows, classes.classes_of(labels), snakemake.params.order, snakemake.params.seed)
write_atomically(snakemake.output.rows, lambda stream: np.save(stream, ordered))
with open(snakemake.input.plan) as stream:
    chunks = len(json.load(stream)["chunks"])
log.info("%s rec, order %s: %d images of %d classes in %d parts", snakemake.params.layout, snakemake.params.order,
         len(ordered), len(classes), chunks)
