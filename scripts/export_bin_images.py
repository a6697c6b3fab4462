"""Snakemake script: a reformatted bin as ``<i>.jpg`` images and ``pairs.txt`` (faceprep.evalsets)."""

from faceprep.evalsets import export_bin_images
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
counts = export_bin_images(snakemake.input.bin, snakemake.output.images)
log.info("%s: %d images, %d pairs (%d same)", snakemake.output.images, counts["images"], counts["pairs"], counts["same"])
