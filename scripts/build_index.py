from faceprep.folder_index import build_index
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
images_dir = snakemake.wildcards.images_dir
count = build_index(snakemake.input, images_dir, snakemake.output.index, snakemake.params.seed)
log.info("indexed %d images of %s", count, images_dir)
