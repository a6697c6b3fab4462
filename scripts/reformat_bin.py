"""Snakemake script: reformat one evaluation bin so tf.image.decode_jpeg reads every image."""

import json
import os

# TF warns on stderr about every decode that fails, and most failures are expected here
# (TF tries each image first); the codec logs what it re-encodes and why instead.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faceprep.bincodec import reformat_bin
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
summary = reformat_bin(
    snakemake.input.bin,
    snakemake.output.bin,
    reencode=snakemake.params.reencode,
    jpeg_quality=snakemake.params.jpeg_quality,
    threads=snakemake.threads,
)
log.info("summary: %s", json.dumps(summary, sort_keys=True))
