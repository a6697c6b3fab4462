"""Snakemake script: the audit of one chunk of a dataset (faceprep.audit.chunk): each image
decoded once, its findings and its image rows written for join_audit."""

import json

from faceprep.audit.chunk import audit_records
from faceprep.audit.overlap import OverlapSearch
from faceprep.extract import chunk_rows
from faceprep.rule_logging import Progress, log_to
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    chunk = json.load(stream)["chunks"][int(snakemake.wildcards.chunk)]
rows = chunk_rows(snakemake.input.rows, chunk)
search = OverlapSearch(snakemake.input.grays, snakemake.input.features, snakemake.input.images)
log.info("chunk %s: %d images; searching for %d evaluation images", snakemake.wildcards.chunk, len(rows), len(search.images))
progress = Progress(log, len(rows))
findings = audit_records(job_records(snakemake, rows), snakemake.output.findings, snakemake.output.rows, search, progress.update)
progress.close()
log.info(
    "%d undecodable, %d not plain JPEG, %d evaluation-image matches",
    len(findings["undecodable"]), len(findings["not_plain_jpeg"]), len(findings["eval_overlap"]),
)
