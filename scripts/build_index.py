"""Snakemake script: the Keras_insightface index of an extracted tree and its class table
(faceprep.folder_index), from the chunk manifests and, for a folder-tree source, its identities."""

from faceprep.folder_index import build_index
from faceprep.rule_logging import log_to
from faceprep.sources.tree import read_identities

log = log_to(snakemake.log[0])
images_dir = snakemake.wildcards.images_dir
images, classes = build_index(
    snakemake.input.manifests, images_dir, snakemake.output.index, snakemake.output.classes, snakemake.params.seed,
    identities=read_identities(snakemake.input.identities),
)
log.info("indexed %d images of %d classes in %s", images, classes, images_dir)
