"""Snakemake script: sample pairs of a packed evaluation set's bin, decoded with tf.image.decode_jpeg."""

import json
import os

# TensorFlow's start-up chatter is not about this job.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faceprep.figures import draw_bin_pairs  # noqa: E402
from faceprep.rule_logging import log_to  # noqa: E402

log = log_to(snakemake.log[0])
with open(snakemake.input.summary) as stream:
    summary = json.load(stream)
# The bin is its own source: the pairs show the images as packed (re-encoded ones are counted
# in the header, from the summary).
shown = draw_bin_pairs(snakemake.params.bin, snakemake.params.bin, summary, snakemake.output.figure,
                       snakemake.wildcards.evalset, pairs=snakemake.params.pairs)
log.info("%s: pairs %s", snakemake.output.figure, ", ".join(map(str, shown)))
