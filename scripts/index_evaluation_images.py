"""Snakemake script: the images of a dataset's evaluation bins, of every evalset and of the
bins in audit_bins, indexed for the audit's search for them in the training set
(faceprep.audit.overlap)."""

from faceprep.audit.overlap import index_evaluation_images
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
bins = dict(snakemake.params.bins)
distinct = index_evaluation_images(bins, snakemake.output.grays, snakemake.output.features, snakemake.output.images)
log.info("%d distinct images in %s", distinct, ", ".join(bins) or "no bins")
