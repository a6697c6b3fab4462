import numpy as np

from faceprep.classes import ClassTable, distinct_labels
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
table = ClassTable(distinct_labels(*(np.load(path) for path in snakemake.input)))
table.write(snakemake.output.table)
log.info("%d classes from %d chunks", len(table), len(snakemake.input))
