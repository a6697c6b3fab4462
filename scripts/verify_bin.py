"""Snakemake script: check a reformatted evaluation bin against its source; write the summary JSON."""

import json
import os

# TF warns on stderr about every decode that fails; see reformat_bin.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faceprep.bincodec import verify_bin
from faceprep.atomic import write_json
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
summary = verify_bin(
    snakemake.input.source,
    snakemake.input.reformatted,
    threads=snakemake.threads,
    jpeg_quality=snakemake.params.jpeg_quality,
)
write_json(snakemake.output.summary, summary)
log.info("summary: %s", json.dumps(summary, sort_keys=True))
