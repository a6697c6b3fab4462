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

from faceprep.chunking import scan_chunks
from faceprep.errors import ConfigError, OutputError
from faceprep.ownership import check_owner, claim_all, working_copy
from faceprep.outputs import SHARD_FORMATS
from faceprep.sources import TREE
from faceprep.workflow_config import (
    output_directories,
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

# Output directories another working copy owns are refused here, even in a dry run; a run
# that starts jobs claims them first (onstart in the Snakefile).
OWNER = working_copy()
try:
    for key, output_dir in output_directories(DATASETS).items():
        check_owner(output_dir, OWNER, key)
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


def _dataset_by(attribute, value):
    return next(
        dataset for dataset in DATASETS.values() if getattr(dataset, attribute) == value
    )


def _source_files(dataset):
    """train.rec, train.idx and (when there is one) property of a rec dataset; a tree's directory."""
    if dataset.source_kind == TREE:
        return {"tree": dataset.source}
    files = {
        "rec": os.path.join(dataset.source, "train.rec"),
        "idx": os.path.join(dataset.source, "train.idx"),
    }
    property_path = os.path.join(dataset.source, "property")
    if dataset.demo is not None or os.path.exists(property_path):
        files["property"] = property_path
    return files


def dataset_source(wildcards):
    """train.rec, train.idx and (when there is one) property of a dataset."""
    return _source_files(DATASETS[wildcards.dataset])


def dataset_source_kind(wildcards):
    return DATASETS[wildcards.dataset].source_kind


# Processes reading a folder tree's files to plan it (scaled down to --cores); a rec's plan
# reads its idx in one.
TREE_PLAN_THREADS = 8


def plan_threads(wildcards):
    return TREE_PLAN_THREADS if dataset_source_kind(wildcards) == TREE else 1


def dataset_shard_size(wildcards):
    """The dataset's shard_size, or the top-level one: images per shard, or 'auto'."""
    return DATASETS[wildcards.dataset].shard_size or config["shard_size"]


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
    (a changed param would make Snakemake plan and extract everything again)."""
    plan_path = expand(rules.plan_chunks.output.plan, dataset=wildcards.dataset)[0]
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


def _plan_of(dataset_name):
    """A dataset's chunk plan, as written by the checkpoint."""
    with open(checkpoints.plan_chunks.get(dataset=dataset_name).output.plan) as stream:
        return json.load(stream)


def _chunk_wildcards(count):
    return [f"{chunk:05d}" for chunk in range(count)]


def _chunks_of(dataset_name):
    """The chunk wildcards of a dataset, as planned by the checkpoint."""
    return _chunk_wildcards(len(_plan_of(dataset_name)["chunks"]))


def _chunk_manifests_of(dataset_name):
    return expand(
        rules.extract_chunk.output.manifest,
        dataset=dataset_name,
        chunk=_chunks_of(dataset_name),
    )


def chunk_manifests(wildcards):
    """Every chunk manifest of a dataset, as planned by the checkpoint."""
    return _chunk_manifests_of(wildcards.dataset)


def index_chunk_manifests(wildcards):
    """The chunk manifests of the dataset whose images directory the index belongs to."""
    return _chunk_manifests_of(_dataset_by("images", wildcards.images_dir).name)


def manifest_rows_mem_mb(wildcards, input):
    """Memory of a job holding every manifest row of a dataset in compact arrays
    (build_index, verify_extraction): 24-32 bytes a row where a manifest line takes
    30-50, so twice the manifests' size, on top of Python and one block's names."""
    return 500 + 2 * math.ceil(input.size_mb)


def source_bin(wildcards):
    dataset = _dataset_by("bins_out", wildcards.bins_dir)
    return os.path.join(dataset.source, f"{wildcards.bin}.bin")


def bin_pair(wildcards):
    """A dataset's source bin and its reformatted bin, for the verification."""
    dataset = DATASETS[wildcards.dataset]
    return {
        "source": os.path.join(dataset.source, f"{wildcards.bin}.bin"),
        "reformatted": os.path.join(dataset.bins_out, f"{wildcards.bin}.bin"),
    }


def dataset_source_dir(wildcards):
    return DATASETS[wildcards.dataset].source


def dataset_bins(wildcards):
    return list(DATASETS[wildcards.dataset].bins)


def bin_summary(dataset_name, bin_name):
    """The verification summary of a bin: verify_bin's output, its path written only there."""
    return rules.verify_bin.output.summary.format(dataset=dataset_name, bin=bin_name)


def dataset_bin_summaries(wildcards):
    """The verification summary of every bin of a dataset, in the order of dataset_bins."""
    return [
        bin_summary(wildcards.dataset, bin_name)
        for bin_name in DATASETS[wildcards.dataset].bins
    ]


def chunk_benchmarks(wildcards):
    """The benchmark file of every chunk job of a dataset, in chunk order.

    A param, not an input: a deleted benchmarks/ must not make Snakemake re-extract a
    dataset just to time it; the report says when timings are missing.
    """
    return [
        f"benchmarks/{wildcards.dataset}/extract_chunk/{chunk}.tsv"
        for chunk in _chunks_of(wildcards.dataset)
    ]


def chunk_scan_files(name):
    """An input function: scan_labels' output ``name`` of every scan chunk of a dataset
    (faceprep.chunking.scan_chunks), in order (``labels``: each scan chunk's distinct labels,
    ``row_labels``: each row's, ``record_bytes``: each row's record size in a rec)."""

    def files(wildcards):
        return expand(
            getattr(rules.scan_labels.output, name),
            dataset=wildcards.dataset,
            chunk=_chunk_wildcards(len(scan_chunks(_plan_of(wildcards.dataset)))),
        )

    return files


def shard_rows(wildcards):
    """The image rows a dataset's shards are cut from: the plan's, or their shuffle."""
    if DATASETS[wildcards.dataset].shard_order == "shuffled":
        return rules.shuffle_shard_rows.output.rows.format(dataset=wildcards.dataset)
    return rules.plan_chunks.output.rows.format(dataset=wildcards.dataset)


def dataset_shards_dir(wildcards):
    return DATASETS[wildcards.dataset].shards


def _shard_summaries_of(dataset_name, shard_format):
    return expand(
        rules.write_shard.output.summary,
        dataset=dataset_name,
        format=shard_format,
        chunk=_chunks_of(dataset_name),
    )


def format_shard_summaries(wildcards):
    """The shard jobs' summaries of one format of a dataset, by chunk."""
    return _shard_summaries_of(wildcards.dataset, wildcards.format)


def shard_metadata_inputs(wildcards):
    """Plan, class table and every shard summary of the dataset writing into shards_dir,
    one list per shard format on."""
    dataset = _dataset_by("shards", wildcards.shards_dir)
    inputs = {
        "plan": rules.plan_chunks.output.plan.format(dataset=dataset.name),
        "classes": rules.class_table.output.table.format(dataset=dataset.name),
    }
    for shard_format in dataset.shard_formats:
        inputs[shard_format] = _shard_summaries_of(dataset.name, shard_format)
    return inputs


def shards_dataset(wildcards):
    return _dataset_by("shards", wildcards.shards_dir).name


def shards_dataset_order(wildcards):
    return _dataset_by("shards", wildcards.shards_dir).shard_order


def dataset_shard_metadata(wildcards):
    return os.path.join(DATASETS[wildcards.dataset].shards, "metadata.json")


def dataset_shard_verifications(wildcards):
    return expand(
        rules.verify_shards.output.summary,
        dataset=wildcards.dataset,
        format=DATASETS[wildcards.dataset].shard_formats,
    )


def dataset_writes_rec(wildcards):
    return DATASETS[wildcards.dataset].rec is not None


def dataset_rec_setting(name):
    """An input function giving the dataset's rec setting ``name`` (rec_layout, ...)."""
    return lambda wildcards: getattr(DATASETS[wildcards.dataset], name)


def _rec_dataset(wildcards):
    return _dataset_by("rec", wildcards.rec_dir)


def rec_dir_setting(name):
    """An input function giving the rec setting ``name`` of the dataset writing rec_dir."""
    return lambda wildcards: getattr(_rec_dataset(wildcards), name)


def rec_dataset_source(wildcards):
    return _source_files(_rec_dataset(wildcards))


def rec_dataset_plan(wildcards):
    return rules.plan_chunks.output.plan.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_ordered_rows(wildcards):
    return rules.order_rec.output.rows.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_names(wildcards):
    return rules.plan_chunks.output.names.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_classes(wildcards):
    return rules.class_table.output.table.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_record_offsets(wildcards):
    return rules.order_rec.output.offsets.format(dataset=_rec_dataset(wildcards).name)


def _rec_part_indexes_of(dataset):
    return expand(
        rules.write_rec_part.output.index,
        rec_dir=dataset.rec,
        chunk=_chunks_of(dataset.name),
    )


def rec_part_indexes(wildcards):
    """The index of every part of the rec being assembled in rec_dir, in chunk order."""
    return _rec_part_indexes_of(_rec_dataset(wildcards))


def rec_outputs_and_part_indexes(wildcards):
    """A dataset's assembled rec and its parts' indexes (their checksums), to verify."""
    dataset = DATASETS[wildcards.dataset]
    outputs = {
        name: path.format(rec_dir=dataset.rec)
        for name, path in rules.assemble_rec.output.items()
    }
    return outputs | {"indexes": _rec_part_indexes_of(dataset)}


def rec_dir_source_property(wildcards):
    """The source's property file, whose image size the rec's property falls back on when no
    image is a JPEG or PNG; '' when there is none."""
    return _source_files(_rec_dataset(wildcards)).get("property", "")


def evalset_setting(name):
    """An input function giving the evaluation set's ``name`` (images, pairs, bin)."""
    return lambda wildcards: getattr(EVALSETS[wildcards.evalset], name)


def bin_of_images_dir(wildcards):
    """The reformatted bin a bin_images directory is written from."""
    dataset = _dataset_by("bin_images", wildcards.bin_images_dir)
    return rules.reformat_bin.output.bin.format(
        bins_dir=dataset.bins_out, bin=wildcards.bin
    )


def audit_evaluation_bins(wildcards):
    """``{name: bin}`` of the evaluation images a dataset is searched for: its own bins (by
    name) and every evalset's packed bin (as evalsets.<name>)."""
    dataset = DATASETS[wildcards.dataset]
    bins = {name: os.path.join(dataset.source, f"{name}.bin") for name in dataset.bins}
    return bins | {
        f"evalsets.{name}": evalset.bin for name, evalset in EVALSETS.items()
    }


def audit_evaluation_inputs(wildcards):
    """The dataset's bins, and each evalset's summary (its bin is written before it)."""
    dataset = DATASETS[wildcards.dataset]
    inputs = {
        name: os.path.join(dataset.source, f"{name}.bin") for name in dataset.bins
    }
    return inputs | {
        f"evalset_{name}": rules.pack_evalset.output.summary.format(evalset=name)
        for name in EVALSETS
    }


def chunk_audit_findings(wildcards):
    return expand(
        rules.audit_chunk.output.findings,
        dataset=wildcards.dataset,
        chunk=_chunks_of(wildcards.dataset),
    )


def chunk_audit_rows(wildcards):
    return expand(
        rules.audit_chunk.output.rows,
        dataset=wildcards.dataset,
        chunk=_chunks_of(wildcards.dataset),
    )


def report_targets(dataset):
    """The figures and tables of a dataset in `snakemake --report`."""
    figures = []
    if dataset.folders:
        figures += [
            f"results/{dataset.name}/report/{name}"
            for name in (
                "extraction.html",
                "images_per_identity.svg",
                "contact_sheet.png",
            )
        ]
    if dataset.shard_formats:
        figures.append(f"results/{dataset.name}/report/shards.html")
    if dataset.rec:
        figures.append(f"results/{dataset.name}/report/rec.html")
    if dataset.bins:
        figures.append(f"results/{dataset.name}/report/bins.html")
    for bin_name in dataset.bins:
        figures.append(f"results/{dataset.name}/report/{bin_name}_pairs.png")
    if dataset.audit:
        figures.append(f"results/{dataset.name}/report/audit.html")
    return figures


def all_targets(wildcards):
    """Every output of every dataset, each path as its rule writes it."""
    targets = []
    for dataset in DATASETS.values():
        if dataset.folders:
            targets.append(
                rules.build_index.output.index.format(images_dir=dataset.images)
            )
            targets.append(
                rules.verify_extraction.output.summary.format(dataset=dataset.name)
            )
        if dataset.shard_formats:
            targets.append(
                rules.shard_metadata.output.metadata.format(shards_dir=dataset.shards)
            )
            targets.extend(
                rules.verify_shards.output.summary.format(
                    dataset=dataset.name, format=shard_format
                )
                for shard_format in dataset.shard_formats
            )
        if dataset.rec:
            targets.append(rules.assemble_rec.output.rec.format(rec_dir=dataset.rec))
            targets.append(rules.verify_rec.output.summary.format(dataset=dataset.name))
        for bin_name in dataset.bins:
            targets.append(
                rules.reformat_bin.output.bin.format(
                    bins_dir=dataset.bins_out, bin=bin_name
                )
            )
            targets.append(bin_summary(dataset.name, bin_name))
            if dataset.bin_images:
                targets.append(
                    rules.export_bin_images.output.images.format(
                        bin_images_dir=dataset.bin_images, bin=bin_name
                    )
                )
        if dataset.audit:
            targets.extend(
                path.format(dataset=dataset.name) for path in rules.join_audit.output
            )
        targets.extend(report_targets(dataset))
    for name in EVALSETS:
        targets.append(rules.pack_evalset.output.summary.format(evalset=name))
        targets.append(rules.draw_evalset_pairs.output.figure.format(evalset=name))
    return targets
