"""Snakemake script: check one format's shards against their metadata and the plan (faceprep.shard_check)."""

import json
import os

from faceprep.atomic import write_json
from faceprep.rule_logging import log_to
from faceprep.shard_check import verify_shards
from faceprep.shards import plan_shards

log = log_to(snakemake.log[0])
with open(snakemake.input.metadata) as stream:
    metadata = json.load(stream)
with open(snakemake.input.plan) as stream:
    plan = json.load(stream)
shards_dir = os.path.dirname(snakemake.input.metadata)
shard_format = snakemake.wildcards.format
summary = verify_shards(
    metadata,
    shards_dir,
    plan,
    shard_format,
    plan_shards(plan, snakemake.params.shard_size, shard_format),
    list(snakemake.input.chunk_summaries),
    workers=snakemake.threads,
    remove_unlisted=snakemake.params.remove_unlisted,
)
if summary["removed_unlisted"]:
    log.info("removed %d shards %s does not list: %s", len(summary["removed_unlisted"]), snakemake.input.metadata,
             ", ".join(summary["removed_unlisted"]))
write_json(snakemake.output.summary, summary)
log.info("verified %d %s shards, %d images", summary["shards"], summary["format"], summary["images"])
