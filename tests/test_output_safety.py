"""Nothing of the user's is written or deleted: overlapping config paths, links in the output
tree, two working copies on one directory, runs killed in verification, files deleted by hand.

Each case either fails before anything is written, or completes; every file outside the
outputs is hash-identical before and after.
"""

import json
import os
import re

import numpy as np
import pytest

from faceprep.atomic import temporaries, write_bytes
from faceprep.classes import ClassTable
from faceprep.errors import ConfigError, OutputError
from faceprep.folders import FolderWriter
from faceprep.ownership import OWNER_FILE
from faceprep.shards import ChunkShards
from faceprep.workflow_config import OUTPUT_KEYS, resolve_datasets
from interrupting import kill_job_held_at, start_workflow
from workflow import run_workflow, tree_digest, write_config, write_insightface_source

IMAGES, IDENTITIES, CHUNK_SIZE = 200, 10, 50
# Label 6 holds keys 121..140 (write_insightface_source's blocks of 20), all in chunk 2.
LINKED_LABEL, LINKED_KEY = 6, 121


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_insightface_source(tmp_path_factory.mktemp("safety") / "src", IMAGES, IDENTITIES)


def outside(tmp_path):
    """A directory of the user's that no output names, with a file in it."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    (directory / "keep.jpg").write_bytes(b"the user's own bytes")
    return directory


def folder_config(tmp_path, source, name="config.yaml", **settings):
    dataset = {"source": str(source), "images": str(tmp_path / "images"), "bins_out": str(tmp_path / "bins"), "bins": []}
    return write_config(tmp_path / name, {"d": dataset}, chunk_size=CHUNK_SIZE, **settings)


def jpegs(images):
    return sorted(path.relative_to(images).as_posix() for path in images.rglob("*.jpg"))


def expected_jpegs():
    return sorted(f"{(key - 1) * IDENTITIES // IMAGES}/{key}.jpg" for key in range(1, IMAGES + 1))


def assert_unchanged_outside(before, after, *outputs):
    """Every file of ``before`` / ``after`` (tree_digest of a test's directory) but those whose
    relative path starts with one of ``outputs`` ("images" covers the tree and the index
    beside it) is the same."""
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert sorted(path for path in changed if not path.startswith(outputs)) == []


# --- One overlap check over every path the config names -------------------------------------


def two_datasets(tmp_path):
    """Datasets a and b, each with every output key, their sources under data/."""
    datasets = {}
    for name in "ab":
        source_dir = tmp_path / "data" / f"{name}_src"
        write_insightface_source(source_dir, 4, 2)
        datasets[name] = {
            "source": str(source_dir), "outputs": ["folders", "webdataset", "rec"], "bins": [],
            **{key: str(tmp_path / "out" / f"{name}_{key}") for key in OUTPUT_KEYS},
        }
    return datasets


def overlap_error(datasets, **roots):
    with pytest.raises(ConfigError) as error:
        resolve_datasets(datasets, **roots)
    return str(error.value)


@pytest.mark.parametrize("relation", ["equal", "inside", "holding", "through a link", "with .. and a slash"])
@pytest.mark.parametrize("output_key", OUTPUT_KEYS)
def test_an_output_of_one_dataset_may_not_touch_another_datasets_source(tmp_path, output_key, relation):
    datasets = two_datasets(tmp_path)
    source_b = datasets["b"]["source"]
    (tmp_path / "link").symlink_to(tmp_path / "data")
    datasets["a"][output_key] = {
        "equal": source_b,
        "inside": f"{source_b}/sub",
        "holding": str(tmp_path / "data"),
        "through a link": str(tmp_path / "link" / "b_src") + "/",
        "with .. and a slash": f"{source_b}/../b_src/sub/",
    }[relation]
    message = overlap_error(datasets)
    assert re.search(rf"datasets\.a\.{output_key}: .* overlaps datasets\.[ab]\.source \(", message), message
    if relation != "holding":  # data/ holds both sources: a's own is found first
        assert "overlaps datasets.b.source" in message


@pytest.mark.parametrize("other_key", OUTPUT_KEYS)
@pytest.mark.parametrize("output_key", OUTPUT_KEYS)
def test_two_outputs_may_not_hold_each_other_across_datasets(tmp_path, output_key, other_key):
    datasets = two_datasets(tmp_path)
    datasets["b"][other_key] = datasets["a"][output_key] + "/nested"
    message = overlap_error(datasets)
    assert f"datasets.b.{other_key}: {datasets['b'][other_key]} overlaps datasets.a.{output_key} (" in message, message


def test_the_index_beside_an_images_directory_counts_as_an_output(tmp_path):
    datasets = two_datasets(tmp_path)
    datasets["b"]["shards"] = datasets["a"]["images"] + "_shuffle.npz"
    message = overlap_error(datasets)
    assert "datasets.b.shards" in message and "datasets.a.images (_shuffle.npz beside it)" in message, message


@pytest.mark.parametrize("workflow_path", ["work", "work/logs", "work/.snakemake/x", "work/results/a/manifests"])
def test_outputs_may_not_touch_the_workflows_own_files(tmp_path, workflow_path):
    datasets = two_datasets(tmp_path)
    datasets["a"]["images"] = str(tmp_path / workflow_path)
    work = tmp_path / "work"
    message = overlap_error(
        datasets,
        workflow_roots=[("the working directory", work)],
        workflow_dirs=[(name, work / name) for name in (".snakemake", "logs", "results/a/manifests")],
    )
    assert message.startswith(f"datasets.a.images: {tmp_path / workflow_path} overlaps "), message


@pytest.mark.e2e
@pytest.mark.parametrize("output_key", ["bins_out", "images"])
def test_a_dataset_writing_into_another_datasets_source_fails_before_any_job(tmp_path, source, output_key):
    """The reported cases: a's bins_out, or its images with remove_unlisted, is b's source."""
    datasets = two_datasets(tmp_path)
    datasets["b"]["source"] = str(source)
    datasets["b"]["bins"] = ["lfw"]
    (source / "lfw.bin").write_bytes(b"a bin of the user's")
    datasets["a"][output_key] = str(source)
    datasets["a"]["bins"] = []
    config = write_config(tmp_path / "config.yaml", datasets, remove_unlisted=True)
    before = tree_digest(tmp_path)
    try:
        result = run_workflow(tmp_path / "work", config, check=False)
    finally:
        (source / "lfw.bin").unlink()
    assert result.returncode != 0
    assert f"config: datasets.a.{output_key}: {source} overlaps datasets.b.source ({source})" in result.stdout + result.stderr
    assert not (tmp_path / "work" / "results").exists()
    assert_unchanged_outside(before, tree_digest(tmp_path), "work/")


# --- Writes never leave the output tree ---------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("remove_unlisted", [False, True])
def test_a_symlinked_label_directory_is_refused_before_anything_is_written_through_it(tmp_path, source, remove_unlisted):
    elsewhere = outside(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    (images / str(LINKED_LABEL)).symlink_to(elsewhere)
    config = folder_config(tmp_path, source, remove_unlisted=remove_unlisted)
    before = tree_digest(tmp_path)

    result = run_workflow(tmp_path / "work", config, check=False)

    assert result.returncode != 0
    assert re.search(rf"{re.escape(str(images / str(LINKED_LABEL)))}'?.*a symbolic link|a symbolic link.*"
                     rf"{re.escape(str(images / str(LINKED_LABEL)))}", result.stdout + result.stderr)
    assert sorted(os.listdir(elsewhere)) == ["keep.jpg"]
    assert_unchanged_outside(before, tree_digest(tmp_path), "work/", "images", "bins/")
    assert not (tmp_path / "work" / "results" / "d" / "extraction.json").exists()

    # Once the link is gone, the same command extracts what was missing and verifies.
    (images / str(LINKED_LABEL)).unlink()
    run_workflow(tmp_path / "work", config)
    assert jpegs(images) == expected_jpegs()
    assert sorted(os.listdir(elsewhere)) == ["keep.jpg"]


@pytest.mark.e2e
@pytest.mark.parametrize("remove_unlisted", [False, True])
def test_a_file_link_in_the_tree_is_never_written_through(tmp_path, source, remove_unlisted):
    elsewhere = outside(tmp_path)
    label_dir = tmp_path / "images" / str(LINKED_LABEL)
    label_dir.mkdir(parents=True)
    (label_dir / f"{LINKED_KEY}.jpg").symlink_to(elsewhere / "keep.jpg")  # where an image goes
    (label_dir / "9999.jpg").symlink_to(elsewhere / "keep.jpg")  # no image's name
    os.link(elsewhere / "keep.jpg", label_dir / f"{LINKED_KEY + 1}.jpg")  # a hard link where an image goes
    config = folder_config(tmp_path, source, remove_unlisted=remove_unlisted)
    before = tree_digest(tmp_path)

    result = run_workflow(tmp_path / "work", config, check=False)

    assert result.returncode != 0
    link = re.escape(str(label_dir / f"{LINKED_KEY}.jpg"))
    assert re.search(rf"a symbolic link where the workflow writes a file of its own.*{link}", result.stdout + result.stderr)
    assert_unchanged_outside(before, tree_digest(tmp_path), "work/", "images", "bins/")

    (label_dir / f"{LINKED_KEY}.jpg").unlink()
    result = run_workflow(tmp_path / "work", config, check=False)
    assert tree_digest(elsewhere) == {"keep.jpg": before["elsewhere/keep.jpg"]}  # the hard link was not written through
    if remove_unlisted:
        assert result.returncode == 0, result.stderr[-3000:]
        assert not os.path.lexists(label_dir / "9999.jpg")  # the link removed, not what it points to
        assert jpegs(tmp_path / "images") == expected_jpegs()
    else:
        assert result.returncode != 0
        assert f"first: {label_dir / '9999.jpg'}" in result.stdout + result.stderr


def test_atomic_writes_refuse_links_at_the_file_and_its_temporary(tmp_path):
    elsewhere = outside(tmp_path)
    (tmp_path / "lfw.bin").symlink_to(elsewhere / "keep.jpg")
    with pytest.raises(OutputError, match="a symbolic link where the workflow writes a file of its own") as error:
        write_bytes(tmp_path / "lfw.bin", b"new")
    assert error.value.filename == str(tmp_path / "lfw.bin")
    (tmp_path / "lfw.bin").unlink()
    (tmp_path / "lfw.bin.tmp").symlink_to(elsewhere / "keep.jpg")
    with pytest.raises(OutputError, match="a symbolic link"):
        write_bytes(tmp_path / "lfw.bin", b"new")
    assert (tmp_path / "lfw.bin.tmp").is_symlink() and not (tmp_path / "lfw.bin").exists()
    assert (elsewhere / "keep.jpg").read_bytes() == b"the user's own bytes"
    # A leftover regular temporary (a killed run's) is replaced, and a hard link to it keeps its bytes.
    (tmp_path / "lfw.bin.tmp").unlink()
    os.link(elsewhere / "keep.jpg", tmp_path / "lfw.bin.tmp")
    write_bytes(tmp_path / "lfw.bin", b"new")
    assert (tmp_path / "lfw.bin").read_bytes() == b"new" and not (tmp_path / "lfw.bin.tmp").exists()
    assert (elsewhere / "keep.jpg").read_bytes() == b"the user's own bytes"


def test_files_written_together_appear_together_or_not_at_all(tmp_path):
    with temporaries(tmp_path / "rows.npy", tmp_path / "offsets.npy") as (rows, offsets):
        rows.write(b"rows")
        offsets.write(b"offsets")
        assert not (tmp_path / "rows.npy").exists()
    assert [(tmp_path / name).read_bytes() for name in ("rows.npy", "offsets.npy")] == [b"rows", b"offsets"]
    with pytest.raises(RuntimeError, match="killed"):
        with temporaries(tmp_path / "rows.npy", tmp_path / "offsets.npy") as (rows, offsets):
            rows.write(b"new rows")
            raise RuntimeError("killed")
    assert [(tmp_path / name).read_bytes() for name in ("rows.npy", "offsets.npy")] == [b"rows", b"offsets"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["offsets.npy", "rows.npy"]


@pytest.mark.parametrize("link", ["images directory", "label directory", "image"])
def test_the_folder_writer_refuses_links_before_writing(tmp_path, link):
    elsewhere = outside(tmp_path)
    images = tmp_path / "images"
    if link == "images directory":
        images.symlink_to(elsewhere)
    elif link == "label directory":
        images.mkdir()
        (images / "3").symlink_to(elsewhere)
    else:
        (images / "3").mkdir(parents=True)
        (images / "3" / "7.jpg").symlink_to(elsewhere / "keep.jpg")
    with pytest.raises(OutputError, match="a symbolic link where the workflow writes") as refused:
        with FolderWriter(images, tmp_path / "manifest.tsv") as writer:
            writer.write(7, 3, b"image bytes")
    named = {"images directory": images, "label directory": images / "3", "image": images / "3" / "7.jpg"}[link]
    assert refused.value.filename == str(named)
    assert sorted(os.listdir(elsewhere)) == ["keep.jpg"]
    assert (elsewhere / "keep.jpg").read_bytes() == b"the user's own bytes"
    assert not (tmp_path / "manifest.tsv").exists()


@pytest.mark.parametrize("at", ["shard", "temporary"])
def test_a_shard_writer_refuses_a_link_at_its_shard(tmp_path, at):
    elsewhere = outside(tmp_path)
    (tmp_path / ("d-00000.tar" if at == "shard" else "d-00000.tar.tmp")).symlink_to(elsewhere / "keep.jpg")
    with pytest.raises(OutputError, match="a symbolic link"):
        with ChunkShards("webdataset", tmp_path, "d", 0, [1], ClassTable(np.array([3])), tmp_path / "summary.json") as writer:
            writer.write(7, 3, b"image bytes")
    assert (elsewhere / "keep.jpg").read_bytes() == b"the user's own bytes"


# --- Output directories are owned ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("remove_unlisted", [False, True])
def test_two_working_copies_started_at_once_on_one_images_directory(tmp_path, source, remove_unlisted):
    elsewhere = outside(tmp_path)
    config = folder_config(tmp_path, source, remove_unlisted=remove_unlisted)
    before = tree_digest(tmp_path)
    runs = {name: start_workflow(tmp_path / name, config, cores=1, log_path=tmp_path / f"{name}.log")
            for name in ("copy1", "copy2")}
    codes = {name: run.wait(timeout=600) for name, run in runs.items()}

    assert sorted(codes.values()) == [0, 1], codes
    winner = next(name for name, code in codes.items() if code == 0)
    loser = next(name for name in codes if name != winner)
    log = (tmp_path / f"{loser}.log").read_text()
    assert f"is owned by the working copy at {tmp_path / winner}" in log, log[-3000:]
    assert not (tmp_path / loser / "results" / "d" / "manifests").exists()  # refused before any job
    assert (tmp_path / "images" / OWNER_FILE).read_text() == f"{tmp_path / winner}\n"
    assert jpegs(tmp_path / "images") == expected_jpegs()
    assert sorted(os.listdir(elsewhere)) == ["keep.jpg"]
    assert_unchanged_outside(before, tree_digest(tmp_path), "copy1", "copy2", "images", "bins/")
    # The winner's verification still holds, and a rerun of it has nothing to do.
    rerun = run_workflow(tmp_path / winner, config, "--forcerun", "verify_extraction")
    assert "verified 200 images" in (tmp_path / winner / "logs" / "d" / "verify_extraction.log").read_text(), rerun.stdout

    # Released, the directory is the other copy's to take.
    (tmp_path / "images" / OWNER_FILE).unlink()
    run_workflow(tmp_path / loser, config)
    assert (tmp_path / "images" / OWNER_FILE).read_text() == f"{tmp_path / loser}\n"
    assert jpegs(tmp_path / "images") == expected_jpegs()


# --- A verified result stays true ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(("summary_name", "script"), [("extraction.json", "verify_extraction"),
                                                      ("shards_webdataset.json", "verify_shards")])
def test_a_run_killed_during_verification_leaves_no_summary_and_resumes(tmp_path, source, summary_name, script):
    dataset = {"source": str(source), "images": str(tmp_path / "images"), "bins_out": str(tmp_path / "bins"),
               "bins": [], "shards": str(tmp_path / "shards"), "outputs": ["folders", "webdataset"]}
    config = write_config(tmp_path / "config.yaml", {"d": dataset}, chunk_size=CHUNK_SIZE, remove_unlisted=True)
    summary = tmp_path / "work" / "results" / "d" / summary_name
    # Held at the summary's .tmp: the verification, once it has checked everything, waits where
    # it would write its summary, and is killed there (or earlier in its checks).
    kill_job_held_at(f"{summary}.tmp", tmp_path / "work", config, script, tmp_path / "run.log")
    assert not summary.exists()

    run_workflow(tmp_path / "work", config, "--unlock")
    run_workflow(tmp_path / "work", config)
    assert json.loads(summary.read_text())["images"] == IMAGES
    assert jpegs(tmp_path / "images") == expected_jpegs()


@pytest.mark.e2e
def test_files_deleted_by_hand_are_extracted_again_after_the_verification_finds_them(tmp_path, source):
    config = folder_config(tmp_path, source)
    run_workflow(tmp_path / "work", config)
    images = tmp_path / "images"
    complete = tree_digest(images)
    for path in (images / str(LINKED_LABEL)).iterdir():
        path.unlink()
    manifests = tmp_path / "work" / "results" / "d" / "manifests"

    # Checking again (the README's command after changing the tree by hand) finds the gap and
    # forgets the chunk that had those files ...
    result = run_workflow(tmp_path / "work", config, "--forcerun", "verify_extraction", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{images / str(LINKED_LABEL) / f'{LINKED_KEY}.jpg'}: listed in" in output
    assert "removed the 1 chunk manifests listing them" in output and "the next run extracts those chunks again" in output
    assert sorted(path.name for path in manifests.iterdir()) == ["chunk_00000.tsv", "chunk_00001.tsv", "chunk_00003.tsv"]
    assert not (tmp_path / "work" / "results" / "d" / "extraction.json").exists()

    # ... so the next run extracts that chunk alone, and the tree is whole again.
    result = run_workflow(tmp_path / "work", config)
    assert re.findall(r"rule extract_chunk:\n.*\n.*\n.*\n.*chunk=(\d+)", result.stdout + result.stderr) in ([], ["00002"])
    assert tree_digest(images) == complete
    assert json.loads((tmp_path / "work" / "results" / "d" / "extraction.json").read_text())["images"] == IMAGES


@pytest.mark.e2e
def test_a_shard_deleted_by_hand_is_written_again_after_the_verification_finds_it(tmp_path, source):
    dataset = {"source": str(source), "bins_out": str(tmp_path / "bins"), "bins": [], "shards": str(tmp_path / "shards"),
               "outputs": ["tfrecord"]}
    config = write_config(tmp_path / "config.yaml", {"d": dataset}, chunk_size=CHUNK_SIZE)
    run_workflow(tmp_path / "work", config)
    complete = tree_digest(tmp_path / "shards")
    (tmp_path / "shards" / "d-00001.tfrecord").unlink()

    result = run_workflow(tmp_path / "work", config, "--forcerun", "verify_shards", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{tmp_path / 'shards' / 'd-00001.tfrecord'}: listed in metadata.json but missing" in output
    assert "removed the summaries of the 1 chunks with those shards and metadata.json: the next run writes them again" in output

    run_workflow(tmp_path / "work", config)
    assert tree_digest(tmp_path / "shards") == complete
    assert json.loads((tmp_path / "work" / "results" / "d" / "shards_tfrecord.json").read_text())["images"] == IMAGES


@pytest.mark.e2e
def test_a_verified_tree_with_a_link_planted_later_fails_its_next_verification(tmp_path, source):
    elsewhere = outside(tmp_path)
    config = folder_config(tmp_path, source, verify_crc=True)
    run_workflow(tmp_path / "work", config)
    image = tmp_path / "images" / str(LINKED_LABEL) / f"{LINKED_KEY}.jpg"
    image.unlink()
    image.symlink_to(elsewhere / "keep.jpg")
    result = run_workflow(tmp_path / "work", config, "--forcerun", "verify_extraction", check=False)
    assert result.returncode != 0
    assert f"{image}: a symbolic link where the extracted image should be" in result.stdout + result.stderr
    assert sorted(os.listdir(elsewhere)) == ["keep.jpg"]
