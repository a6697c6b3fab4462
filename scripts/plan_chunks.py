from faceprep.atomic import write_json
from faceprep.insightface import plan_chunks
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
plan = plan_chunks(
    snakemake.input.rec,
    snakemake.input.idx,
    snakemake.input.get("property"),
    snakemake.params.chunk_size,
    snakemake.output.rows,
    snakemake.params.parallel_jobs,
)
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
