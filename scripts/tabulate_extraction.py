"""Snakemake script: the HTML table of a dataset's extraction for the report."""

import json

from faceprep.report_tables import extraction_speed, write_extraction_table
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
with open(snakemake.input.summary) as stream:
    summary = json.load(stream)
with open(snakemake.input.plan) as stream:
    plan = json.load(stream)
speed = extraction_speed(snakemake.input.manifests, snakemake.params.benchmarks)
images_dir = snakemake.params.images_dir
write_extraction_table(
    snakemake.output.table,
    snakemake.wildcards.dataset,
    summary,
    plan,
    speed,
    {"source": snakemake.params.source, "images": images_dir, "index": f"{images_dir}_shuffle.npz"},
)
log.info("%s: %d of %d chunk jobs timed", snakemake.output.table, speed[2], len(snakemake.input.manifests))
