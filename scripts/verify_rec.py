"""Snakemake script: read back every record of the assembled rec (faceprep.rec_check)."""

import os

import numpy as np

from faceprep.atomic import write_json
from faceprep.outputs.rec import image_sizes, size_names
from faceprep.rec_check import verify_rec
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
summary = verify_rec(
    os.path.dirname(snakemake.input.rec),
    snakemake.params.layout,
    np.load(snakemake.input.rows),
    snakemake.input.indexes,
    forget_damaged=True,
)
summary["image_sizes"] = size_names(image_sizes(snakemake.input.indexes))
write_json(snakemake.output.summary, summary)
log.info("verified %s: %d records, %d images of %d classes", snakemake.input.rec, summary["records"],
         summary["images"], summary["classes"])
