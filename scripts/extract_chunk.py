"""Snakemake script: one chunk's images as ``<images>/<label>/<key>.jpg`` files and the chunk's manifest."""

import json

from faceprep.extract import chunk_rows, write_records
from faceprep.folders import FolderWriter
from faceprep.rule_logging import Progress, log_to
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    chunk = json.load(stream)["chunks"][int(snakemake.wildcards.chunk)]
rows = chunk_rows(snakemake.input.rows, chunk)
log.info("chunk %s: %d images, keys %d..%d", snakemake.wildcards.chunk, len(rows), rows[0, 0], rows[-1, 0])
writers = [FolderWriter(snakemake.params.images_dir, snakemake.output.manifest)]
progress = Progress(log, len(rows))
written = write_records(job_records(snakemake, rows), writers, progress=progress.update)
progress.close()
log.info("wrote %d images into %s", written, snakemake.params.images_dir)
