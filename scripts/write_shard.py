"""Snakemake script: one chunk's images as its shards of one format (faceprep.shards.ChunkShards),
then the chunk's summary, the mark that they are done."""

import json
import os

from faceprep.classes import ClassTable
from faceprep.extract import chunk_rows, write_records
from faceprep.rule_logging import Progress, log_to
from faceprep.shards import ChunkShards, first_shard_of, plan_shards
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
chunk_number = int(snakemake.wildcards.chunk)
shard_format = snakemake.wildcards.format
with open(snakemake.input.plan) as stream:
    plan = json.load(stream)
rows = chunk_rows(snakemake.input.rows, plan["chunks"][chunk_number])
shard_sizes = plan_shards(plan, snakemake.params.shard_size, shard_format)
os.makedirs(snakemake.params.shards_dir, exist_ok=True)
writer = ChunkShards(
    shard_format,
    snakemake.params.shards_dir,
    snakemake.wildcards.dataset,
    first_shard_of(shard_sizes, chunk_number),
    shard_sizes[chunk_number],
    ClassTable.read(snakemake.input.classes),
    snakemake.output.summary,
)
log.info("chunk %s: %d images -> %d %s shards in %s", snakemake.wildcards.chunk, len(rows),
         len(writer.sizes), shard_format, snakemake.params.shards_dir)
progress = Progress(log, len(rows))
write_records(job_records(snakemake, rows), [writer], progress=progress.update)
progress.close()
log.info("wrote %d shards: %d images, %d bytes", len(writer.shards), writer.images, writer.size)
