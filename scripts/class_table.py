"""Snakemake script: the dataset's class table (faceprep.classes) from every scan chunk's
distinct labels, with each class's identity directory when the source is a folder tree."""

import numpy as np

from faceprep.classes import ClassTable, distinct_labels
from faceprep.rule_logging import log_to
from faceprep.sources.tree import read_identities

log = log_to(snakemake.log[0])
labels = distinct_labels(*(np.load(path) for path in snakemake.input.labels))
table = ClassTable(labels, snakemake.output.table, read_identities(snakemake.input.identities))
table.write(snakemake.output.table)
log.info("%d classes from %d chunks", len(table), len(snakemake.input.labels))
