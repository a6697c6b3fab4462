"""Snakemake script: the HTML table of a dataset's rec for the report."""

import json

from faceprep.report_tables import write_rec_table
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
with open(snakemake.input.summary) as stream:
    summary = json.load(stream)
write_rec_table(snakemake.output.table, snakemake.wildcards.dataset, snakemake.params.rec_dir, summary)
log.info("%s: %d images", snakemake.output.table, summary["images"])
