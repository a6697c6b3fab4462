"""Snakemake script: an evaluation set's images and pairs packed into a bin (faceprep.evalsets),
then every image of it decoded with TensorFlow (faceprep.bincodec.verify_bin)."""

import json
import os

# TF warns on stderr about every decode that fails, and most failures are expected here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from faceprep.atomic import write_json  # noqa: E402
from faceprep.bincodec import verify_bin  # noqa: E402
from faceprep.evalsets import pack_evalset  # noqa: E402
from faceprep.rule_logging import log_to  # noqa: E402

log = log_to(snakemake.log[0])
summary = pack_evalset(
    snakemake.input.images,
    snakemake.params.pairs,
    snakemake.params.bin,
    snakemake.output.images_read,
    reencode=snakemake.params.reencode,
    threads=snakemake.threads,
    jpeg_quality=snakemake.params.jpeg_quality,
)
verified = verify_bin(snakemake.params.bin, snakemake.params.bin, threads=snakemake.threads,
                      jpeg_quality=snakemake.params.jpeg_quality)
summary["verified"] = verified["verified"]
write_json(snakemake.output.summary, summary)
log.info("summary: %s", json.dumps(summary, sort_keys=True))
