"""Snakemake script: the rec's output order, ``(source row..., class)`` rows, and where each
record goes in train.rec (faceprep.outputs.rec.write_output_order)."""

import json

import numpy as np

from faceprep.atomic import temporaries
from faceprep.classes import ClassTable
from faceprep.outputs.rec import check_layout, write_output_order
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
rows = np.load(snakemake.input.rows)


def joined(paths):
    return np.concatenate([np.load(path) for path in paths] or [np.zeros(0, np.int64)])


classes = ClassTable.read(snakemake.input.classes)
row_classes = classes.classes_of(joined(snakemake.input.row_labels))  # the labels are not kept
record_bytes = joined(snakemake.input.record_bytes)
check_layout(snakemake.params.layout, snakemake.params.order, len(rows), len(classes))
with temporaries(snakemake.output.rows, snakemake.output.offsets) as streams:
    images, first, end = write_output_order(snakemake.params.layout, rows, row_classes, record_bytes,
                                            snakemake.params.order, snakemake.params.seed, *streams)
with open(snakemake.input.plan) as stream:
    chunks = len(json.load(stream)["chunks"])
log.info("%s rec, order %s: %d images of %d classes in %d parts, images at bytes %d..%d", snakemake.params.layout,
         snakemake.params.order, images, len(classes), chunks, first, end)
