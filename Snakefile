# insightface RecordIO datasets -> <label>/<record>.jpg folders and/or WebDataset/TFRecord shards,
# evaluation bins -> bins TF reads.
# Usage: snakemake --cores 32 [--configfile config/faces_emore.yaml]; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/common_outputs.smk"
include: "rules/demo.smk"
include: "rules/extract.smk"
include: "rules/shards.smk"
include: "rules/rec.smk"
include: "rules/bins.smk"
include: "rules/evalsets.smk"
include: "rules/audit.smk"
include: "rules/report.smk"
include: "rules/targets.smk"


stamp_source_changes()


# Run by the Snakemake process itself on a cluster: too small to be worth a queue slot.
localrules:
    all,
    make_demo_dataset,
    plan_chunks,


onstart:
    claim_output_directories()


onsuccess:
    stop_scheduler_timers()


onerror:
    stop_scheduler_timers()


rule all:
    default_target: True
    input:
        all_targets,
