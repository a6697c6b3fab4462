"""Checks of the workflow config that a JSON Schema cannot express (paths and their relations)."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from faceprep.errors import ConfigError, DatasetError
from faceprep.insightface import IDX_NAME, PROPERTY_NAME, REC_NAME
from faceprep.outputs import FOLDERS, OUTPUT_NAMES, SHARD_FORMATS
from faceprep.outputs import REC as REC_OUTPUT
from faceprep.outputs.rec import REC_FILES
from faceprep.pair_lists import pairs_files
from faceprep.shard_check import CLASSES_NAME, METADATA_NAME
from faceprep.shards import shard_file_pattern
from faceprep.sources import REC, TREE, source_kind

# What the demo generator writes (faceprep.demo.make_demo_dataset).
DEMO_BINS = ("lfw", "cfp_fp", "agedb_30")
DEMO_ROOT = "resources"
# A bin's name becomes a file name in bins_out: no separators, no leading dot.
BIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Directories a dataset writes into, by config key.
OUTPUT_KEYS = ("images", "bins_out", "shards", "rec", "bin_images")
# The index and class table written beside a dataset's images directory (rule build_index).
INDEX_SUFFIXES = ("_shuffle.npz", "_classes.tsv")


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str
    images: str  # None without 'folders' in outputs
    bins_out: str  # None when not given (no bins to reformat)
    bins: tuple
    outputs: tuple = (FOLDERS,)
    shards: str = None  # None without a shard format in outputs
    shard_order: str = "rec"
    demo: dict = field(default=None, hash=False, compare=False)
    # None: the top-level chunk_size and shard_size apply.
    chunk_size: object = None
    shard_size: object = None
    rec: str = None  # None without 'rec' in outputs
    bin_images: str = None  # None when not given
    rec_layout: str = "insightface"
    rec_order: str = "source"
    rec_seed: int = 0
    source_kind: str = "rec"  # faceprep.sources: 'rec' or 'tree'
    audit: bool = True

    @property
    def folders(self):
        return FOLDERS in self.outputs

    @property
    def shard_formats(self):
        return tuple(output for output in self.outputs if output in SHARD_FORMATS)

    def output_paths(self):
        """``{key: path}`` of every file and directory the dataset writes outside the
        working directory: its output directories, and the index beside ``images``."""
        paths = {key: getattr(self, key) for key in OUTPUT_KEYS if getattr(self, key) is not None}
        if self.images is not None:
            paths.update({f"images ({suffix} beside it)": f"{self.images}{suffix}" for suffix in INDEX_SUFFIXES})
        return paths


def _inside(path, directory):
    """Whether ``path`` is ``directory`` or lies below it (both absolute, resolved)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _resolved(path):
    return os.path.realpath(os.path.expanduser(path))


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set packed from images and pairs (faceprep.evalsets); paths absolute."""

    name: str
    images: str
    pairs: str
    bin: str


def resolve_evalsets(evalsets):
    """Validate the ``evalsets`` section (already schema-checked) and return ``{name: EvalSet}``."""
    resolved = {}
    for name, settings in evalsets.items():
        key = f"evalsets.{name}"
        if not os.path.isdir(settings["images"]):
            raise ConfigError(f"{key}.images: {settings['images']} is not a directory")
        _check_readable(settings["images"], f"{key}.images")
        if not os.path.exists(settings["pairs"]):
            raise ConfigError(f"{key}.pairs: {settings['pairs']} is not a file or a CFP split directory")
        try:
            for path in pairs_files(settings["pairs"]):
                _check_readable_file(path, f"{key}.pairs")
        except DatasetError as error:
            raise ConfigError(f"{key}.pairs: {error}") from None
        resolved[name] = EvalSet(name, _resolved(settings["images"]), _resolved(settings["pairs"]), _resolved(settings["bin"]))
    return resolved


def resolve_audit_bins(paths):
    """``{audit_bins.<name>: absolute path}`` of the ``audit_bins`` setting (already
    schema-checked): each a readable file, no two of one name (the file's, without .bin)."""
    resolved = {}
    for number, path in enumerate(paths):
        key = f"audit_bins[{number}]"
        _check_readable_file(path, key)
        name = f"audit_bins.{os.path.basename(path)[: -len('.bin')]}"
        if name in resolved:
            raise ConfigError(f"{key}: {path} and {resolved[name]} would both be {name} in the audit; "
                              "copy or link one under another name")
        resolved[name] = _resolved(path)
    return resolved


def _check_outputs(outputs, key):
    """Every name in ``outputs`` (the ``key`` setting) is an output of the registry."""
    for output in outputs:
        if output not in OUTPUT_NAMES:
            raise ConfigError(f"{key}: {output!r} is not an output; the outputs are {', '.join(OUTPUT_NAMES)}")


def resolve_datasets(datasets, outputs=(FOLDERS,), shard_order="rec", workflow_dirs=(), workflow_roots=(), evalsets=None, audit=True):
    """Validate the ``datasets`` section (already schema-checked) and return ``{name: Dataset}``.

    ``outputs``, ``shard_order`` and ``audit`` are the top-level defaults a dataset may override.
    ``images``, ``bins_out``, ``shards`` and ``rec`` become absolute paths, because the rules that
    write them match those paths as wildcards. A demo dataset's source is
    ``resources/<name>``, generated by the workflow. ``check_overlaps`` compares every
    path with every other, the ``evalsets``' (resolve_evalsets) included, and with
    ``workflow_dirs`` and ``workflow_roots``.
    """
    _check_outputs(outputs, "outputs")
    resolved = {}
    for name, settings in datasets.items():
        key = f"datasets.{name}"
        demo = settings.get("demo")
        source = os.path.join(DEMO_ROOT, name) if demo is not None else settings["source"]
        kind = REC if demo is not None else _check_source(source, key)
        if "bins" in settings:
            bins = tuple(settings["bins"])
        elif demo is not None:
            bins = DEMO_BINS
        else:
            # Hidden files (such as macOS's ._lfw.bin) are not bins.
            found = Path(source).glob("*.bin")
            bins = tuple(sorted(path.stem for path in found if not path.name.startswith(".")))
        for bin_name in bins:
            if not BIN_NAME.fullmatch(bin_name):
                raise ConfigError(
                    f"{key}.bins: {bin_name!r} cannot be used as a file name "
                    "(letters, digits, '_', '-' and '.' only, not starting with '.' or '-')"
                )
        if demo is None:
            for bin_name in bins:
                path = os.path.join(source, f"{bin_name}.bin")
                if not os.path.isfile(path):
                    raise ConfigError(f"{key}.bins: {bin_name}.bin is not in {key}.source ({source})")
                _check_readable(path, f"{key}.bins")
        elif not set(bins) <= set(DEMO_BINS):
            raise ConfigError(f"{key}.bins: a demo dataset only has {', '.join(DEMO_BINS)}")
        dataset_outputs = tuple(settings.get("outputs", outputs))
        _check_outputs(dataset_outputs, f"{key}.outputs")
        needed = {"images": FOLDERS in dataset_outputs, "shards": bool(set(dataset_outputs) & set(SHARD_FORMATS)),
                  "rec": REC_OUTPUT in dataset_outputs}
        for output_key, wanted in needed.items():
            if wanted and output_key not in settings:
                raise ConfigError(f"{key}.{output_key}: required with outputs {list(dataset_outputs)}")
        if ("bins_out" not in settings) and (bins or "bin_images" in settings):
            raise ConfigError(f"{key}.bins_out: required to reformat the bins {list(bins)} (or set bins: [])")
        rec_layout, rec_order = settings.get("rec_layout", "insightface"), settings.get("rec_order", "source")
        if rec_layout == "insightface" and rec_order == "shuffled":
            raise ConfigError(
                f"{key}.rec_order: 'shuffled' needs rec_layout 'im2rec': an insightface rec's identity records give "
                "each class one range of keys [start, end), so its images must lie class by class"
            )
        dataset = Dataset(
            name=name,
            source=os.path.normpath(source),
            images=_resolved(settings["images"]) if needed["images"] else None,
            bins_out=_resolved(settings["bins_out"]) if "bins_out" in settings else None,
            bins=bins,
            outputs=dataset_outputs,
            shards=_resolved(settings["shards"]) if needed["shards"] else None,
            shard_order=settings.get("shard_order", shard_order),
            demo=demo,
            chunk_size=settings.get("chunk_size"),
            shard_size=settings.get("shard_size"),
            rec=_resolved(settings["rec"]) if needed["rec"] else None,
            rec_layout=rec_layout,
            rec_order=rec_order,
            rec_seed=settings.get("rec_seed", 0),
            source_kind=kind,
            bin_images=_resolved(settings["bin_images"]) if "bin_images" in settings else None,
            audit=settings.get("audit", audit),
        )
        resolved[name] = dataset
    check_overlaps(resolved, workflow_dirs, workflow_roots, evalsets or {})
    return resolved


def _check_source(source, key):
    """The kind of the source (faceprep.sources), checked to be there and readable."""
    if not os.path.isdir(source):
        raise ConfigError(f"{key}.source: {source} is not a directory")
    _check_readable(source, f"{key}.source")
    if source_kind(source) == TREE:
        return TREE  # a tree's files are checked as it is planned
    for required in (REC_NAME, IDX_NAME):
        path = os.path.join(source, required)
        if not os.path.isfile(path):
            raise ConfigError(f"{key}.source: {source} has no {required}")
        _check_readable(path, f"{key}.source")
    property_path = os.path.join(source, PROPERTY_NAME)
    if os.path.exists(property_path):
        _check_readable(property_path, f"{key}.source")
    return REC


def _check_readable_file(path, key):
    """``path`` (the ``key`` setting's) is a file some job can read."""
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: {path} is not a file")
    _check_readable(path, key)


def _check_readable(path, key):
    """Every source file is read by some job: say which one cannot be, before any job runs."""
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        raise ConfigError(f"{key}: {path} is not readable (permission denied)")


def files_written(datasets):
    """``[(config key, directory, glob patterns)]``: the files the datasets' rec, shard, bin
    and bin image directories get under names fixed beforehand, which
    faceprep.ownership.check_unowned_files looks for in a directory nobody owns yet."""
    written = []
    for dataset in datasets.values():
        patterns = {
            "rec": REC_FILES,
            "shards": (METADATA_NAME, CLASSES_NAME, *(shard_file_pattern(dataset.name, name) for name in dataset.shard_formats)),
            "bins_out": tuple(f"{name}.bin" for name in dataset.bins),
            "bin_images": dataset.bins,
        }
        written += [(f"datasets.{dataset.name}.{key}", getattr(dataset, key), names)
                    for key, names in patterns.items() if getattr(dataset, key) is not None and names]
    return written


def output_directories(datasets):
    """``{config key: directory}`` of every output directory the datasets write into (a
    bins_out only with bins to write)."""
    return {
        f"datasets.{dataset.name}.{output_key}": directory
        for dataset in datasets.values()
        for output_key, directory in dataset.output_paths().items()
        if output_key in OUTPUT_KEYS and (output_key != "bins_out" or dataset.bins)
    }


def check_overlaps(datasets, workflow_dirs=(), workflow_roots=(), evalsets=None):
    """No output may equal, hold or lie inside any source (of any dataset) or another output.

    ``workflow_dirs`` (``(what, path)``: the workflow's own bookkeeping) may neither hold
    nor be held by an output; ``workflow_roots`` (the working directory, ``results``) may
    hold outputs but not be held by one. Paths are compared resolved (links, '..',
    trailing slashes); the error names both keys.
    """
    evalsets = (evalsets or {}).values()
    sources = [(f"datasets.{dataset.name}.source", _resolved(dataset.source)) for dataset in datasets.values()]
    sources += [(f"evalsets.{evalset.name}.{key}", getattr(evalset, key)) for evalset in evalsets for key in ("images", "pairs")]
    outputs = [
        (f"datasets.{dataset.name}.{output_key}", path)
        for dataset in datasets.values()
        for output_key, path in dataset.output_paths().items()
    ] + [(f"evalsets.{evalset.name}.bin", evalset.bin) for evalset in evalsets]
    workflow_dirs = [(what, _resolved(path)) for what, path in workflow_dirs]
    workflow_roots = [(what, _resolved(path)) for what, path in workflow_roots]
    for position, (key, path) in enumerate(outputs):
        for other_key, other_path in sources:
            if _inside(path, other_path) or _inside(other_path, path):
                raise ConfigError(
                    f"{key}: {path} overlaps {other_key} ({other_path}); "
                    "outputs must be outside every source, which is only read"
                )
        for other_key, other_path in outputs[:position]:
            if _inside(path, other_path) or _inside(other_path, path):
                raise ConfigError(f"{key}: {path} overlaps {other_key} ({other_path})")
        for what, workflow_path in workflow_dirs + workflow_roots:
            if _inside(workflow_path, path) or ((what, workflow_path) in workflow_dirs and _inside(path, workflow_path)):
                raise ConfigError(f"{key}: {path} overlaps {what} ({workflow_path}), where the workflow keeps its own files")
