"""End to end: MXNet-written recs through `snakemake`, compared with the original MXNet script."""

import glob
import json
import os

import numpy as np
import pytest

from oracle import make_insightface_source, run_original_extraction
from interrupting import Barrier, kill_when, running_chunks, start_workflow
from workflow import run_workflow, tree_digest, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.mxnet]


def dataset_config(tmp_path, source, name="mx"):
    return {
        name: {
            "source": str(source),
            "images": str(tmp_path / "out" / "images"),
            "bins_out": str(tmp_path / "out" / "bins"),
            "bins": [],
        }
    }


@pytest.fixture(scope="module")
def scalar_source(tmp_path_factory):
    """3,000 images of 60 identities, magic inside payloads, records physically shuffled."""
    root = tmp_path_factory.mktemp("scalar")
    source = make_insightface_source(root / "src", 3000, 60, seed=1, magic_every=7, shuffle_physical=True)
    return source, run_original_extraction(source, root / "reference")


@pytest.fixture(scope="module")
def array_source(tmp_path_factory):
    """Labels stored as [label, aligned], as some packers write them."""
    root = tmp_path_factory.mktemp("array")
    source = make_insightface_source(root / "src", 1500, 40, seed=2, label_style="array", magic_every=5)
    return source, run_original_extraction(source, root / "reference")


def test_tree_is_byte_identical_to_the_original_script(tmp_path, scalar_source):
    source, reference = scalar_source
    config = write_config(tmp_path / "config.yaml", dataset_config(tmp_path, source), chunk_size=700)
    run_workflow(tmp_path / "work", config)

    images = tmp_path / "out" / "images"
    assert tree_digest(images) == tree_digest(reference)
    manifests = sorted((tmp_path / "work" / "results" / "mx" / "manifests").glob("chunk_*.tsv"))
    assert len(manifests) == 5  # 3000 images in chunks of 700: the last one holds 200

    summary = json.loads((tmp_path / "work" / "results" / "mx" / "extraction.json").read_text())
    assert (summary["images"], summary["identities"], summary["distinct_labels"]) == (3000, 60, 60)

    index = np.load(tmp_path / "out" / "images_shuffle.npz")
    on_disk = sorted(str(path) for path in images.rglob("*.jpg"))
    assert sorted(index["image_names"].tolist()) == on_disk
    # Keras_insightface's class of a path: the rank of its folder among the folders (its glob
    # '*', which leaves out the hidden owner file) sorted as integers.
    folders = sorted((os.path.basename(path) for path in glob.glob(os.path.join(images, "*"))), key=int)
    assert index["image_classes"].tolist() == [folders.index(name.split("/")[-2]) for name in index["image_names"]]
    assert index["image_names"].tolist() != on_disk  # shuffled, as pre_process_folder's index is


def test_label_sum_reproduces_the_original_on_label_arrays(tmp_path, array_source):
    source, reference = array_source
    config = write_config(tmp_path / "config.yaml", dataset_config(tmp_path, source), chunk_size=400, label="sum")
    run_workflow(tmp_path / "work", config)
    assert tree_digest(tmp_path / "out" / "images") == tree_digest(reference)


def test_label_first_uses_label_zero_of_label_arrays(tmp_path, array_source):
    source, reference = array_source
    config = write_config(tmp_path / "config.yaml", dataset_config(tmp_path, source), chunk_size=400)
    run_workflow(tmp_path / "work", config)

    extracted = tree_digest(tmp_path / "out" / "images")
    original = tree_digest(reference)
    # Same files with the same bytes, but in label[0] folders: the original's folder is
    # label[0] + aligned, so it differs exactly where aligned is 1.
    by_key = {path.split("/")[1]: (path.split("/")[0], digest) for path, digest in extracted.items()}
    moved = 0
    for path, digest in original.items():
        original_label, name = path.split("/")
        label, extracted_digest = by_key[name]
        assert extracted_digest == digest
        assert int(original_label) - int(label) in (0, 1)
        moved += original_label != label
    assert len(by_key) == len(original) and moved > 0
    summary = json.loads((tmp_path / "work" / "results" / "mx" / "extraction.json").read_text())
    assert summary["distinct_labels"] == 40


def test_killed_run_resumes_only_the_missing_chunks(tmp_path, scalar_source):
    """Killed while a chunk is halfway, after three chunks are done. A chunk here takes a few
    milliseconds, too short to be caught between checks: a Barrier at the middle image of every
    chunk holds each one there, and the test lets the chunks it sees through until three are
    done, so the fourth waits halfway until the kill, on a fast or a slow machine alike."""
    source, reference = scalar_source
    config = write_config(tmp_path / "config.yaml", dataset_config(tmp_path, source), chunk_size=100)
    manifests_dir = tmp_path / "work" / "results" / "mx" / "manifests"
    barriers = {}
    for chunk in range(30):  # chunk c holds keys 100c+1..100c+100
        (middle,) = reference.glob(f"*/{chunk * 100 + 51}.jpg")
        barriers[chunk] = Barrier(tmp_path / "out" / "images" / middle.relative_to(reference))
    released = set()

    def done_manifests():
        return {path.name: path.stat().st_mtime_ns for path in manifests_dir.glob("chunk_*.tsv")}

    def let_three_chunks_through(jobs):
        for chunk in running_chunks(jobs, "mx"):
            if len(done_manifests()) < 3 and chunk not in released:
                released.add(chunk)
                barriers[chunk].release()

    def held_after_three(jobs):
        """With --cores 1 Snakemake starts a chunk only after it has recorded the others as done."""
        done = done_manifests()
        held = set(running_chunks(jobs, "mx")) - released
        if len(done) >= 3 and held and not {f"chunk_{chunk:05d}.tsv" for chunk in held} & set(done):
            return done

    run = start_workflow(tmp_path / "work", config, cores=1, log_path=tmp_path / "first.log")
    try:
        killed = kill_when(run, held_after_three, pause=lambda: 0.05, timeout=120, screen=True,
                           meanwhile=let_three_chunks_through)
    finally:
        for barrier in barriers.values():
            barrier.remove()
    assert killed, (tmp_path / "first.log").read_text()
    finished, _ = killed
    assert len(finished) == 3

    # The documented resume after a hard kill: drop the stale lock, rerun the same command.
    run_workflow(tmp_path / "work", config, "--unlock")
    run_workflow(tmp_path / "work", config)

    assert tree_digest(tmp_path / "out" / "images") == tree_digest(reference)
    after = {path.name: path.stat().st_mtime_ns for path in manifests_dir.glob("chunk_*.tsv")}
    assert len(after) == 30
    assert {name: after[name] for name in finished} == finished  # finished chunks were not redone
