"""Config checking: bad configs fail before any job runs, naming the key; --configfile replaces the demo."""

import shutil
from pathlib import Path

import pytest
import yaml

from faceprep.errors import ConfigError
from faceprep.insightface import DatasetWriter
from faceprep.workflow_config import resolve_audit_bins
from workflow import REPO, run_workflow, write_config


def write_source(directory, images=6, identities=2):
    """A minimal insightface source: images, identity records and the header record at the end."""
    directory.mkdir(parents=True)
    with DatasetWriter(directory) as writer:
        for key in range(1, images + 1):
            writer.add(key, float(key % identities), b"jpeg-bytes")
    return directory


def dataset(tmp_path, name="real", **settings):
    return {
        "source": str(tmp_path / f"{name}_src"),
        "images": str(tmp_path / f"{name}_images"),
        "bins_out": str(tmp_path / f"{name}_bins"),
        **settings,
    }


def dry_run(tmp_path, datasets, **settings):
    config = write_config(tmp_path / "config.yaml", datasets, **settings)
    return run_workflow(tmp_path / "work", config, "--dry-run", check=False)


@pytest.fixture
def source(tmp_path):
    return write_source(tmp_path / "real_src")


def schema_error(instance, *messages):
    """What Snakemake's config validation prints for ``instance``: the failure, then where."""
    return [*messages, f"On instance{instance}:"]


# Each case: the change to a valid dataset "real", and what the error says given the changed
# settings: the key path and the offending value.
BAD_SETTINGS = {
    "unknown-key": (
        lambda d: d.update(colour="red"),
        lambda d: schema_error("['datasets']['real']", "Additional properties are not allowed ('colour' was unexpected)",
                               "'colour': 'red'"),
    ),
    "no-source": (
        lambda d: d.pop("source"),
        lambda d: schema_error("['datasets']['real']", f"{ {'bins_out': d['bins_out'], 'images': d['images']} } is not valid "
                               "under any of the given schemas", "'oneOf': [{'required': ['source']}, {'required': ['demo']}]"),
    ),
    "missing-source": (
        lambda d: d.update(source=d["source"] + "_missing"),
        lambda d: [f"config: datasets.real.source: {d['source']} is not a directory"],
    ),
    "images-in-source": (
        lambda d: d.update(images=d["source"] + "/images"),
        lambda d: [f"config: datasets.real.images: {d['images']} overlaps datasets.real.source ({d['source']})"],
    ),
    "images-equal-bins": (
        lambda d: d.update(bins_out=d["images"]),
        lambda d: [f"config: datasets.real.bins_out: {d['bins_out']} overlaps datasets.real.images ({d['images']})"],
    ),
    "missing-bin": (
        lambda d: d.update(bins=["lfw"]),
        lambda d: [f"config: datasets.real.bins: lfw.bin is not in datasets.real.source ({d['source']})"],
    ),
    "bin-path": (
        lambda d: d.update(bins=["../escape"]),
        lambda d: schema_error("['datasets']['real']['bins'][0]", "'../escape' does not match '^[A-Za-z0-9_][A-Za-z0-9_.-]*$'"),
    ),
}


@pytest.mark.parametrize(("change", "expected"), BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_dataset_settings_fail_before_any_job(tmp_path, source, change, expected):
    settings = dataset(tmp_path)
    change(settings)
    result = dry_run(tmp_path, {"real": settings})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for message in expected(settings):
        assert message in output, f"{message!r} not in:\n{output[-3000:]}"
    assert "Job stats" not in result.stdout  # failed while checking, before planning jobs


def test_source_without_rec_fails(tmp_path, source):
    (source / "train.rec").unlink()
    result = dry_run(tmp_path, {"real": dataset(tmp_path)})
    assert result.returncode != 0
    assert f"config: datasets.real.source: {source} has no train.rec" in result.stdout + result.stderr


@pytest.mark.parametrize("chunk_size", [0, -5, "big"])
@pytest.mark.parametrize("where", ["top-level", "dataset"])
def test_chunk_size_must_be_positive_or_auto(tmp_path, source, chunk_size, where):
    if where == "top-level":
        result = dry_run(tmp_path, {"real": dataset(tmp_path)}, chunk_size=chunk_size)
    else:
        result = dry_run(tmp_path, {"real": dataset(tmp_path, chunk_size=chunk_size)})
    assert result.returncode != 0
    assert f"On instance{'' if where == 'top-level' else '[' + repr('datasets') + '][' + repr('real') + ']'}['chunk_size']" in result.stdout + result.stderr
    assert f"{chunk_size!r} is not valid" in result.stdout + result.stderr


def test_the_demo_chunk_size_does_not_reach_a_configfile_dataset(tmp_path, source):
    """A config naming only source/images/bins_out gets chunk_size auto, planned for --cores,
    and a rerun with other --cores keeps that plan instead of extracting again."""
    config = write_config(tmp_path / "config.yaml", {"real": dataset(tmp_path, bins=[])})
    run_workflow(tmp_path / "work", config, cores=2)
    plan_path = tmp_path / "work" / "results" / "real" / "chunk_plan.json"
    plan = yaml.safe_load(plan_path.read_text())
    # 6 images, fewer than the smallest auto chunk: one chunk, planned for the 2 jobs of --cores 2.
    assert (plan["chunk_size"], plan["parallel_jobs"], plan["chunks"]) == (6, 2, [[0, 6]])
    planned_at = plan_path.stat().st_mtime_ns
    rerun = run_workflow(tmp_path / "work", config, cores=1)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr
    assert plan_path.stat().st_mtime_ns == planned_at


def test_a_source_moved_and_rerun_with_other_cores_is_planned_once(tmp_path, source):
    """A source moved elsewhere (another set of input paths) is planned again in a run with
    other --cores, and the plan holds the parallel jobs that run recorded for it: the next run
    has nothing to do. Before, Snakemake checked the params with the old plan in place and
    ran the job with it removed, and the next run planned and extracted all again."""
    config = write_config(tmp_path / "config.yaml", {"real": dataset(tmp_path, bins=[])})
    run_workflow(tmp_path / "work", config, cores=2)
    plan_path = tmp_path / "work" / "results" / "real" / "chunk_plan.json"
    planned_at = plan_path.stat().st_mtime_ns
    moved = tmp_path / "moved_src"
    shutil.copytree(source, moved)
    config = write_config(tmp_path / "config.yaml", {"real": dataset(tmp_path, bins=[], source=str(moved))})
    run_workflow(tmp_path / "work", config, cores=1)
    assert plan_path.stat().st_mtime_ns > planned_at
    rerun = run_workflow(tmp_path / "work", config, "--dry-run", cores=1)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-2000:]


def test_an_explicit_chunk_size_is_planned_alike_for_any_cores(tmp_path, source):
    """A plan of a given chunk_size does not depend on --cores: a finished run has nothing to
    do whatever --cores the next one has (before, each other --cores planned again)."""
    config = write_config(tmp_path / "config.yaml", {"real": dataset(tmp_path, bins=[], chunk_size=4)})
    run_workflow(tmp_path / "work", config, cores=2)
    plan = yaml.safe_load((tmp_path / "work" / "results" / "real" / "chunk_plan.json").read_text())
    assert (plan["chunk_size"], plan["chunks"], "parallel_jobs" in plan) == (4, [[0, 4], [4, 6]], False)
    for cores in (1, 3):
        rerun = run_workflow(tmp_path / "work", config, "--dry-run", cores=cores)
        assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-2000:]


@pytest.mark.parametrize(
    ("jpeg_quality", "failure"),
    [(89, "89 is less than the minimum of 90"), (101, "101 is greater than the maximum of 100"),
     ("high", "'high' is not of type 'integer'")],
)
def test_jpeg_quality_must_be_an_integer_from_90_to_100(tmp_path, source, jpeg_quality, failure):
    result = dry_run(tmp_path, {"real": dataset(tmp_path)}, jpeg_quality=jpeg_quality)
    assert result.returncode != 0
    for message in schema_error("['jpeg_quality']", failure):
        assert message in result.stdout + result.stderr
    assert "Job stats" not in result.stdout


def test_two_datasets_cannot_share_an_images_dir(tmp_path, source):
    write_source(tmp_path / "other_src")
    other = dataset(tmp_path, "other", images=dataset(tmp_path)["images"])
    result = dry_run(tmp_path, {"real": dataset(tmp_path), "other": other})
    images = dataset(tmp_path)["images"]
    assert result.returncode != 0
    # The config file lists datasets sorted by name (yaml.safe_dump): "real" is checked after "other".
    assert f"config: datasets.real.images: {images} overlaps datasets.other.images ({images})" in result.stdout + result.stderr


def test_configfile_replaces_the_demo_datasets(tmp_path, source):
    result = dry_run(tmp_path, {"real": dataset(tmp_path, bins=[])})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plan_chunks" in result.stdout
    assert "make_demo_dataset" not in result.stdout and "results/demo" not in result.stdout


@pytest.mark.parametrize("shipped", ["faces_emore.yaml", "glint360k.yaml"])
def test_shipped_configs_dry_run_against_generated_sources(tmp_path, shipped):
    """The shipped real-data configs, with their paths moved to a generated source."""
    config = yaml.safe_load((REPO / "config" / shipped).read_text())
    ((name, settings),) = config["datasets"].items()
    source = write_source(tmp_path / "source")
    for bin_name in settings.get("bins", ["lfw"]):
        (source / f"{bin_name}.bin").write_bytes(b"")
    for key in ("source", "images", "bins_out"):
        settings[key] = str(tmp_path / Path(settings[key]).name) if key != "source" else str(source)
    configfile = tmp_path / shipped
    configfile.write_text(yaml.safe_dump(config))
    result = run_workflow(tmp_path / "work", configfile, "--dry-run", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plan_chunks" in result.stdout and "reformat_bin" in result.stdout


def test_bin_found_in_source_must_make_a_safe_file_name(tmp_path, source):
    (source / ".hidden.bin").write_bytes(b"")
    (source / "two words.bin").write_bytes(b"")
    result = dry_run(tmp_path, {"real": dataset(tmp_path)})
    assert result.returncode != 0
    assert "config: datasets.real.bins: 'two words' cannot be used as a file name" in result.stdout + result.stderr



BAD_OUTPUT_SETTINGS = {
    "shards-missing": ({"outputs": ["webdataset"]}, {}, lambda d: ["config: datasets.real.shards: required with outputs ['webdataset']"]),
    "shards-missing-top-level": (
        {}, {"outputs": ["folders", "tfrecord"]},
        lambda d: ["config: datasets.real.shards: required with outputs ['folders', 'tfrecord']"],
    ),
    "unknown-output": (
        {"outputs": ["folders", "parquet"]}, {},
        lambda d: ["config: datasets.real.outputs: 'parquet' is not an output; the outputs are folders, webdataset, tfrecord, rec"],
    ),
    "unknown-output-top-level": (
        {}, {"outputs": ["webdataset", "parquet"]},
        lambda d: ["config: outputs: 'parquet' is not an output; the outputs are folders, webdataset, tfrecord, rec"],
    ),
    "no-output": ({"outputs": []}, {}, lambda d: schema_error("['datasets']['real']['outputs']", "[] should be non-empty")),
    "shards-in-source": (
        {"outputs": ["webdataset"], "shards": "SRC/shards"}, {},
        lambda d: [f"config: datasets.real.shards: {d['shards']} overlaps datasets.real.source ({d['source']})"],
    ),
    "shards-are-images": (
        {"outputs": ["folders", "webdataset"], "shards": "IMAGES"}, {},
        lambda d: [f"config: datasets.real.shards: {d['shards']} overlaps datasets.real.images ({d['images']})"],
    ),
    "unknown-order": (
        {"shard_order": "random"}, {},
        lambda d: schema_error("['datasets']['real']['shard_order']", "'random' is not one of ['rec', 'shuffled']"),
    ),
}


@pytest.mark.parametrize(("settings", "top_level", "expected"), BAD_OUTPUT_SETTINGS.values(), ids=BAD_OUTPUT_SETTINGS.keys())
def test_bad_output_settings_fail_before_any_job(tmp_path, source, settings, top_level, expected):
    settings = {key: value.replace("SRC", str(source)).replace("IMAGES", dataset(tmp_path)["images"])
                if isinstance(value, str) else value for key, value in settings.items()}
    settings = dataset(tmp_path, **settings)
    result = dry_run(tmp_path, {"real": settings}, **top_level)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    for message in expected(settings):
        assert message in output, f"{message!r} not in:\n{output[-3000:]}"
    assert "Job stats" not in result.stdout


def test_audit_bins_are_named_by_their_file_and_checked_before_any_job(tmp_path, source):
    lfw, other = tmp_path / "lfw.bin", tmp_path / "other" / "lfw.bin"
    other.parent.mkdir()
    for path in (lfw, other, tmp_path / "cfp_fp.bin"):
        path.write_bytes(b"")
    assert resolve_audit_bins([str(lfw), str(tmp_path / "cfp_fp.bin")]) == {
        "audit_bins.lfw": str(lfw.resolve()), "audit_bins.cfp_fp": str((tmp_path / "cfp_fp.bin").resolve())}
    with pytest.raises(ConfigError, match=rf"audit_bins\[1\]: {other} and {lfw.resolve()} would both be audit_bins\.lfw"):
        resolve_audit_bins([str(lfw), str(other)])
    missing = tmp_path / "missing.bin"
    for bad, expected in (([str(missing)], [f"config: audit_bins[0]: {missing} is not a file"]),
                          (["pairs.txt"], schema_error("['audit_bins'][0]", "'pairs.txt' does not match '[.]bin$'"))):
        result = dry_run(tmp_path, {"real": dataset(tmp_path)}, audit_bins=bad)
        assert result.returncode != 0
        for message in expected:
            assert message in result.stdout + result.stderr, f"{message!r} not in:\n{(result.stdout + result.stderr)[-3000:]}"
        assert "Job stats" not in result.stdout


def test_shards_only_needs_no_images_directory(tmp_path, source):
    settings = dataset(tmp_path, bins=[], outputs=["webdataset"], shards=str(tmp_path / "shards"))
    del settings["images"]
    result = dry_run(tmp_path, {"real": settings})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "plan_chunks" in result.stdout and "extract_chunk" not in result.stdout

