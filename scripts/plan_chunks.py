"""Snakemake script: the dataset's chunk plan and image rows, from a rec or a folder tree (faceprep.sources)."""

from faceprep.atomic import write_bytes, write_json
from faceprep.insightface import plan_chunks
from faceprep.rule_logging import log_to
from faceprep.sources import TREE
from faceprep.sources.tree import READERS_PER_THREAD, plan_tree

log = log_to(snakemake.log[0])
if snakemake.params.source_kind == TREE:
    plan = plan_tree(
        snakemake.params.source_dir,
        snakemake.params.chunk_size,
        snakemake.output.rows,
        snakemake.output.names,
        snakemake.output.skipped,
        snakemake.output.identities,
        snakemake.output.directories,
        snakemake.params.parallel_jobs,
        workers=snakemake.threads * READERS_PER_THREAD,
    )
    skipped = plan["skipped"]
    if skipped["count"]:
        log.warning("skipped %d files and directories, each with its reason (all in %s): %s", skipped["count"],
                    snakemake.output.skipped, "; ".join(skipped["first"]))
else:
    plan = plan_chunks(
        snakemake.input.rec,
        snakemake.input.idx,
        snakemake.input.get("property"),
        snakemake.params.chunk_size,
        snakemake.output.rows,
        snakemake.params.parallel_jobs,
    )
    # A rec's images are named by their keys, its classes by their labels, and nothing is
    # skipped: these files stay empty.
    outputs = snakemake.output
    for path in (outputs.names, outputs.skipped, outputs.identities, outputs.directories):
        write_bytes(path, b"")
write_json(snakemake.output.plan, plan)
log.info(
    "%s layout: %d images (keys %s) of %s identities in %d chunks of up to %d",
    plan["layout"],
    plan["images"],
    "..".join(map(str, plan.get("keys", []))),
    plan["identities"] if plan["identities"] is not None else "(to be counted)",
    len(plan["chunks"]),
    plan["chunk_size"],
)
