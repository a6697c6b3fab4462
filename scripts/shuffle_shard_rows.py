"""Snakemake script: the plan's image rows in a permutation seeded with ``shard_seed``
(``shard_order: shuffled``), so that each shard chunk takes a random subset of the images
(faceprep.shards.write_shuffled_rows)."""

from faceprep.rule_logging import log_to
from faceprep.shards import write_shuffled_rows

log = log_to(snakemake.log[0])
write_shuffled_rows(snakemake.input.rows, snakemake.output.rows, snakemake.params.seed)
log.info("image rows shuffled with seed %d", snakemake.params.seed)
