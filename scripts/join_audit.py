"""Snakemake script: a dataset's audit.json and exclude.txt from its chunks' audits
(faceprep.audit.join); a folder tree's entries get their paths."""

import numpy as np

from faceprep.audit.join import KINDS, excluded_keys, join_audit, write_audit
from faceprep.rule_logging import log_to
from faceprep.sources import TREE
from faceprep.sources.tree import image_names

log = log_to(snakemake.log[0])
paths_of = None
if snakemake.params.source_kind == TREE:
    plan_rows = np.load(snakemake.input.plan_rows, mmap_mode="r")
    # A tree's keys are 1..N in plan order.
    paths_of = lambda keys: image_names(snakemake.input.names, plan_rows[np.asarray(keys, np.int64) - 1])  # noqa: E731
audit = join_audit(snakemake.input.findings, snakemake.input.rows, paths_of)
write_audit(snakemake.output.audit, snakemake.output.exclude, snakemake.wildcards.dataset, audit)
for kind in KINDS:
    log.info("%s: %d", kind, audit["counts"].get(kind, len(audit[kind])))
log.info("%s: %d keys", snakemake.output.exclude, len(excluded_keys(audit)))
