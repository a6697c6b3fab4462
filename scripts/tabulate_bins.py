"""Snakemake script: the HTML table of a dataset's reformatted evaluation bins."""

import json

from faceprep.report_tables import write_bins_table
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
summaries = {}
for bin_name, path in zip(snakemake.params.bins, snakemake.input.summaries, strict=True):
    with open(path) as stream:
        summaries[bin_name] = json.load(stream)
write_bins_table(snakemake.output.table, snakemake.wildcards.dataset, summaries)
log.info("%s: %d bins", snakemake.output.table, len(summaries))
