from faceprep.folder_index import build_index
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
images_dir = snakemake.wildcards.images_dir
images, classes = build_index(
    snakemake.input, images_dir, snakemake.output.index, snakemake.output.classes, snakemake.params.seed
)
log.info("indexed %d images of %d classes in %s", images, classes, images_dir)
