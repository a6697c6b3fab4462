import json
import os

from faceprep.classes import ClassTable
from faceprep.extract import chunk_rows, extract_chunk
from faceprep.rule_logging import Progress, log_to
from faceprep.shards import SHARD_WRITERS, shard_file_name

log = log_to(snakemake.log[0])
chunk_number = int(snakemake.wildcards.chunk)
with open(snakemake.input.plan) as stream:
    chunk = json.load(stream)["chunks"][chunk_number]
rows = chunk_rows(snakemake.input.rows, chunk)
os.makedirs(snakemake.params.shards_dir, exist_ok=True)
path = os.path.join(
    snakemake.params.shards_dir, shard_file_name(snakemake.wildcards.dataset, chunk_number, snakemake.wildcards.format)
)
writer = SHARD_WRITERS[snakemake.wildcards.format](path, snakemake.output.summary, ClassTable.read(snakemake.input.classes))
log.info("chunk %s: %d images -> %s", snakemake.wildcards.chunk, len(rows), path)
progress = Progress(log, len(rows))
extract_chunk(
    snakemake.input.rec,
    snakemake.input.idx,
    rows,
    [writer],
    label_mode=snakemake.params.label_mode,
    progress=progress.update,
)
progress.close()
log.info("wrote %s: %d images, %d bytes", path, writer.images, writer.size)
