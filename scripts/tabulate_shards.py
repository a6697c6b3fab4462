"""Snakemake script: the HTML table of a dataset's shards for the report."""

import json

from faceprep.report_tables import write_shards_table
from faceprep.rule_logging import log_to


def read_json(path):
    with open(path) as stream:
        return json.load(stream)


log = log_to(snakemake.log[0])
verifications = [read_json(path) for path in snakemake.input.verifications]
write_shards_table(snakemake.output.table, snakemake.wildcards.dataset, read_json(snakemake.input.metadata), verifications)
log.info("%s: %d formats", snakemake.output.table, len(verifications))
