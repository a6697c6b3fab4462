"""Snakemake script: the shards' metadata.json and classes.tsv, from the plan, the class table
and every chunk's shard summary of each format on."""

import json
import shutil

from faceprep.atomic import write_atomically, write_json
from faceprep.classes import ClassTable
from faceprep.rule_logging import log_to
from faceprep.shard_check import shard_metadata
from faceprep.outputs import SHARD_FORMATS


def read_json(path):
    with open(path) as stream:
        return json.load(stream)


log = log_to(snakemake.log[0])
classes = ClassTable.read(snakemake.input.classes)
summaries = {
    shard_format: [read_json(path) for path in snakemake.input[shard_format]]
    for shard_format in SHARD_FORMATS
    if shard_format in snakemake.input.keys()
}
metadata = shard_metadata(
    snakemake.params.dataset,
    read_json(snakemake.input.plan),
    classes,
    snakemake.params.label_mode,
    snakemake.params.shard_order,
    snakemake.params.shard_seed,
    summaries,
)
with open(snakemake.input.classes, "rb") as table:
    write_atomically(snakemake.output.classes, lambda stream: shutil.copyfileobj(table, stream))
write_json(snakemake.output.metadata, metadata)
log.info("%d images, %d classes, formats %s", metadata["num_images"], metadata["num_classes"], ", ".join(summaries))
