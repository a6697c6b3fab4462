import functools
import json
import math
import os
import re
import sys
import threading

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The rule scripts' plain package; Snakemake puts scripts/ on the path of rule
# scripts itself, the Snakefile needs it for config checks and the chunk plan.
sys.path.insert(0, os.path.join(workflow.basedir, "scripts"))

from faceprep.changes import stamp_changes
from faceprep.chunking import scan_chunks
from faceprep.errors import ConfigError, OutputError
from faceprep.insightface import IDX_NAME, PROPERTY_NAME, REC_NAME
from faceprep.ownership import check_owner, check_unowned_files, claim_all, working_copy
from faceprep.outputs import SHARD_FORMATS
from faceprep.outputs.rec import LST_NAME
from faceprep.pair_lists import pairs_files
from faceprep.sources import TREE
from faceprep.workflow_config import (
    files_written,
    output_directories,
    resolve_audit_bins,
    resolve_datasets,
    resolve_evalsets,
)

# Datasets given on the command line (--configfile/--config) replace the default
# demo datasets instead of being merged into them, as a user running
# `--configfile config/faces_emore.yaml` means.
# A --configfile with evaluation sets and no datasets runs only those sets.
if "datasets" in workflow.config_settings.overwrite_config:
    config["datasets"] = workflow.config_settings.overwrite_config["datasets"]
elif "evalsets" in workflow.config_settings.overwrite_config:
    config["datasets"] = {}

validate(config, "../config/schema.yaml")

# The workflow's own files: a configured output may lie in a root but not hold it, and may
# neither hold nor lie in a bookkeeping directory.
WORKFLOW_ROOTS = [
    ("the working directory", "."),
    ("the workflow's directory", workflow.basedir),
    *((f"results/{name}", f"results/{name}") for name in config["datasets"]),
]
WORKFLOW_DIRS = [(name, name) for name in (".snakemake", "logs", "benchmarks")] + [
    (path, path)
    for name in config["datasets"]
    for path in (
        f"results/{name}/{own}"
        for own in ("manifests", "labels", "shards", "bins", "report", "audit")
    )
]
try:
    EVALSETS = resolve_evalsets(config.get("evalsets", {}))
    AUDIT_BINS = resolve_audit_bins(config["audit_bins"])
    DATASETS = resolve_datasets(
        config["datasets"],
        outputs=config["outputs"],
        shard_order=config["shard_order"],
        workflow_dirs=WORKFLOW_DIRS,
        workflow_roots=WORKFLOW_ROOTS,
        evalsets=EVALSETS,
        audit=config["audit"],
    )
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None

# Output directories another working copy owns, or that nobody owns but hold a file a run
# would overwrite, are refused here, even in a dry run; a run that starts jobs claims them
# first (onstart in the Snakefile).
OWNER = working_copy()
try:
    for key, output_dir in output_directories(DATASETS).items():
        check_owner(output_dir, OWNER, key)
    for key, output_dir, patterns in files_written(DATASETS):
        check_unowned_files(output_dir, patterns, OWNER, key)
except OutputError as error:
    raise WorkflowError(f"config: {error.strerror}") from None


def claim_output_directories():
    """Claim every output directory for this working copy before the first job."""
    try:
        claim_all(output_directories(DATASETS), OWNER)
    except OutputError as error:
        raise WorkflowError(f"config: {error.strerror}") from None


def stop_scheduler_timers():
    """Cancel the timers Snakemake's scheduler leaves behind once the run is over.

    Each scheduling pass starts a 1 s threading.Timer (the re-evaluation that
    --max-jobs-per-timespan needs), and Python waits for it at exit: after a last job
    shorter than a second, every run ended up to a second later than its work. Nothing
    is scheduled after onsuccess/onerror, so the timers have nothing left to do.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def _alternatives(values):
    """A wildcard constraint matching exactly ``values``; nothing at all when there are none
    (an empty constraint would match any path, a source's train.rec included)."""
    values = sorted(values)
    return "|".join(re.escape(value) for value in values) if values else "(?!)"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    chunk=r"\d+",
    bin=r"[A-Za-z0-9_][A-Za-z0-9_.-]*",
    images_dir=_alternatives(
        dataset.images for dataset in DATASETS.values() if dataset.folders
    ),
    bins_dir=_alternatives(
        dataset.bins_out for dataset in DATASETS.values() if dataset.bins
    ),
    rec_dir=_alternatives(dataset.rec for dataset in DATASETS.values() if dataset.rec),
    bin_images_dir=_alternatives(
        dataset.bin_images for dataset in DATASETS.values() if dataset.bin_images
    ),
    evalset=_alternatives(EVALSETS),
    shards_dir=_alternatives(
        dataset.shards for dataset in DATASETS.values() if dataset.shard_formats
    ),
    format=_alternatives(SHARD_FORMATS),


def dataset_by(attribute, value):
    return next(
        dataset for dataset in DATASETS.values() if getattr(dataset, attribute) == value
    )


def tree_change_stamp(dataset):
    """A tree dataset's change stamp: the time the tree last changed, for Snakemake
    (faceprep.changes; see stamp_source_changes)."""
    return f"results/{dataset.name}/tree_changed_last.txt"


def evalset_change_stamp(name):
    """An evaluation set's change stamp: the time an image it packed last changed, for
    Snakemake (faceprep.changes; see stamp_source_changes)."""
    return f"results/evalsets/{name}_images_changed.txt"


def stamp_source_changes():
    """Give each tree's and evaluation set's change stamp the time the paths its last run
    read changed last (faceprep.changes): Snakemake would judge a tree or an images directory
    by its top directory alone. Called by the Snakefile before the DAG is built, at each
    start, not in the jobs a cluster runs (they find the stamps as the start left them).
    """
    if not workflow.is_main_process:
        return
    for dataset in DATASETS.values():
        if dataset.source_kind == TREE:
            directories = rules.plan_chunks.output.directories.format(
                dataset=dataset.name
            )
            stamp_changes(dataset.source, directories, tree_change_stamp(dataset))
    for evalset in EVALSETS.values():
        images_read = rules.pack_evalset.output.images_read.format(evalset=evalset.name)
        stamp_changes(evalset.images, images_read, evalset_change_stamp(evalset.name))


def source_files(dataset):
    """train.rec, train.idx and (when there is one) property of a rec dataset; a tree's
    directory and its change stamp."""
    if dataset.source_kind == TREE:
        return {"tree": dataset.source, "tree_changed": tree_change_stamp(dataset)}
    files = {
        "rec": os.path.join(dataset.source, REC_NAME),
        "idx": os.path.join(dataset.source, IDX_NAME),
    }
    property_path = os.path.join(dataset.source, PROPERTY_NAME)
    if dataset.demo is not None or os.path.exists(property_path):
        files["property"] = property_path
    return files


def dataset_source(wildcards):
    """train.rec, train.idx and (when there is one) property of a dataset."""
    return source_files(DATASETS[wildcards.dataset])


def dataset_source_kind(wildcards):
    return DATASETS[wildcards.dataset].source_kind


# Threads of a folder tree's plan (scaled down to --cores), each with a few processes reading
# its files (faceprep.sources.tree.READERS_PER_THREAD); a rec's plan reads its idx in one.
TREE_PLAN_THREADS = 8


def plan_threads(wildcards):
    return TREE_PLAN_THREADS if dataset_source_kind(wildcards) == TREE else 1


def dataset_chunk_size(wildcards):
    """The dataset's chunk_size, or the top-level one: a number of images, or 'auto'."""
    return DATASETS[wildcards.dataset].chunk_size or config["chunk_size"]


def _parallel_jobs():
    """Jobs that run at once: --cores locally, --jobs with a cluster executor."""
    if not workflow.local_exec:
        return workflow.nodes
    try:
        return workflow.cores
    except WorkflowError:  # no --cores (e.g. a dry run without a profile)
        return 1


def planned_parallel_jobs(wildcards):
    """The parallel jobs that chunk_size 'auto' plans for: those of an existing plan if there
    is one, so that rerunning with another --cores keeps the chunks already extracted
    (a changed param would make Snakemake plan and extract everything again). None for
    an explicit chunk_size, whose plan does not depend on them, so --cores changes no
    param."""
    if dataset_chunk_size(wildcards) != "auto":
        return None
    return _planned_parallel_jobs(wildcards.dataset)


# Asked once a run: re-planning after a change of code or of input paths, Snakemake checks
# the params with the old plan in place and asks again once it is removed; a plan with
# other parallel jobs than Snakemake recorded would be made again by the next run.
@functools.cache
def _planned_parallel_jobs(dataset_name):
    plan_path = expand(rules.plan_chunks.output.plan, dataset=dataset_name)[0]
    if os.path.exists(plan_path):
        with open(plan_path) as stream:
            planned = json.load(stream).get("parallel_jobs")
        if planned is not None:
            return planned
    return _parallel_jobs()


def demo_settings(wildcards):
    return DATASETS[wildcards.dataset].demo


def dataset_images_dir(wildcards):
    return DATASETS[wildcards.dataset].images


def plan_of(dataset_name):
    """A dataset's chunk plan, as written by the checkpoint."""
    with open(checkpoints.plan_chunks.get(dataset=dataset_name).output.plan) as stream:
        return json.load(stream)


def chunk_wildcards(count):
    return [f"{chunk:05d}" for chunk in range(count)]


def chunks_of(dataset_name):
    """The chunk wildcards of a dataset, as planned by the checkpoint."""
    return chunk_wildcards(len(plan_of(dataset_name)["chunks"]))


def _chunk_manifests_of(dataset_name):
    return expand(
        rules.extract_chunk.output.manifest,
        dataset=dataset_name,
        chunk=chunks_of(dataset_name),
    )


def chunk_manifests(wildcards):
    """Every chunk manifest of a dataset, as planned by the checkpoint."""
    return _chunk_manifests_of(wildcards.dataset)


def index_chunk_manifests(wildcards):
    """The chunk manifests of the dataset whose images directory the index belongs to."""
    return _chunk_manifests_of(dataset_by("images", wildcards.images_dir).name)


def index_dataset_identities(wildcards):
    """The plan's identities of the dataset whose images directory the index belongs to."""
    dataset = dataset_by("images", wildcards.images_dir)
    return rules.plan_chunks.output.identities.format(dataset=dataset.name)


def input_rows_mem_mb(wildcards, input):
    """Memory of a job holding a row per image of the whole dataset in compact arrays: twice
    its inputs' size, on top of Python and one block. build_index and verify_extraction
    read manifests (24-32 bytes a row where a line takes 30-50); order_rec, the shard rows'
    shuffle, assemble_rec and verify_rec the plan's rows and the label scan's arrays."""
    return 500 + 2 * math.ceil(input.size_mb)


def dataset_source_dir(wildcards):
    return DATASETS[wildcards.dataset].source


def chunk_benchmarks(wildcards):
    """The benchmark file of every chunk job of a dataset, in chunk order.

    A param, not an input: a deleted benchmarks/ must not make Snakemake re-extract a
    dataset just to time it; the report says when timings are missing.
    """
    return [
        rules.extract_chunk.benchmark.format(dataset=wildcards.dataset, chunk=chunk)
        for chunk in chunks_of(wildcards.dataset)
    ]
