"""The rec output read by the training side's readers: DALI counts exactly the images of an
im2rec rec and decodes each, and the workflow's recs are read by MXFaceDataset and DALI, refuse
what their layout cannot hold and resume after a kill to the same bytes."""

import json

import pytest

from dali_reader import dali_reads_rec
from faceprep.insightface import IM2REC
from faceprep.ownership import OWNER_FILE
from interrupting import kill_job_held_at
from oracle import run_mxface_extraction
from rec_samples import LABELS, PNG_POSITION, source_images, source_key, write_rec
from workflow import run_workflow, write_config


def test_dali_counts_exactly_the_images_of_an_im2rec_rec_and_decodes_each(sparse_rec, tmp_path):
    """DALI's fn.readers.mxnet on the CPU (device_id=None): an insightface rec's header and
    identity records would count as samples (DALI #2806); an im2rec one holds only images."""
    _, ordered, _ = write_rec(sparse_rec, tmp_path, IM2REC)
    read = dali_reads_rec(tmp_path / "rec")
    assert read["samples"] == len(LABELS)
    for (shape, label), (key, _, image_class) in zip(read["decoded"], ordered.tolist()):
        assert label == image_class
        assert shape == ([30, 40, 3] if key == source_key(PNG_POSITION) else [20, 16, 3])


def rec_workflow_config(root, source, **settings):
    """A config in ``root`` packing ``source`` into ``root``/rec, in chunks of 8; the run's
    working directory is ``root``/work."""
    dataset = {"source": str(source), "outputs": ["rec"], "rec": str(root / "rec"), "bins": [], **settings}
    root.mkdir(parents=True, exist_ok=True)
    return write_config(root / "config.yaml", {"d": dataset}, chunk_size=8)


def run_rec_workflow(root, source, **settings):
    config = rec_workflow_config(root, source, **settings)
    return run_workflow(root / "work", config), config


@pytest.mark.e2e
def test_a_rec_repacked_by_the_workflow_is_read_by_mxface_dataset_and_dali(sparse_rec, tmp_path):
    """An im2rec source (shuffled physical order, sparse labels) re-packed with a header for
    MXFaceDataset, and shuffled without one for DALI; parts are gone, a rerun has nothing to do."""
    images = source_images(sparse_rec)
    class_of = {label: rank for rank, label in enumerate(sorted(set(LABELS)))}
    run_rec_workflow(tmp_path / "insightface", sparse_rec)
    rec = tmp_path / "insightface" / "rec"
    assert sorted(path.name for path in rec.iterdir()) == sorted([OWNER_FILE, "train.rec", "train.idx", "train.lst", "property"])
    extracted = run_mxface_extraction("insightface", rec, tmp_path / "mxface")
    read = {(int(path.parent.name), path.read_bytes()) for path in extracted.rglob("*.jpg")}
    assert read == {(class_of[label], data) for label, data in images.values()}
    summary = json.loads((tmp_path / "insightface" / "work" / "results" / "d" / "rec.json").read_text())
    assert (summary["images"], summary["classes"], summary["records"]) == (len(LABELS), 10, len(LABELS) + 11)
    table = (tmp_path / "insightface" / "work" / "results" / "d" / "report" / "rec.html").read_text()
    assert f"{len(LABELS)} of 10 classes, {len(LABELS) + 11} records" in table and "16x20: 20, 40x30: 1" in table

    _, config = run_rec_workflow(tmp_path / "dali", sparse_rec, rec_layout="im2rec", rec_order="shuffled", rec_seed=3)
    rec = tmp_path / "dali" / "rec"
    assert dali_reads_rec(rec)["samples"] == len(LABELS)
    lst = [line.split("\t") for line in (rec / "train.lst").read_text().splitlines()]
    assert sorted(int(source_key) for _, _, source_key in lst) == sorted(images)
    assert [int(source_key) for _, _, source_key in lst] != sorted(images)  # shuffled
    rerun = run_workflow(tmp_path / "dali" / "work", config, "--dry-run")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


@pytest.mark.e2e
def test_a_shuffled_insightface_rec_is_refused_before_any_job(sparse_rec, tmp_path):
    config = rec_workflow_config(tmp_path, sparse_rec, rec_order="shuffled")
    result = run_workflow(tmp_path / "work", config, check=False)
    assert result.returncode != 0
    assert "config: datasets.d.rec_order: 'shuffled' needs rec_layout 'im2rec'" in result.stdout + result.stderr
    assert not (tmp_path / "rec").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(("held", "script"), [("train.rec.part-00001.npz.tmp", "write_rec_part"),
                                              ("train.idx.tmp", "assemble_rec")])
def test_a_run_killed_while_writing_the_rec_resumes_to_the_same_bytes(sparse_rec, tmp_path, held, script):
    run_rec_workflow(tmp_path / "reference", sparse_rec)
    root = tmp_path / "killed"
    config = rec_workflow_config(root, sparse_rec)
    kill_job_held_at(root / "rec" / held, root / "work", config, script, root / "run.log")
    assert not (root / "rec" / "train.rec").exists()  # no train.rec until it is complete
    run_workflow(root / "work", config, "--unlock")
    run_workflow(root / "work", config)
    for name in ("train.rec", "train.idx", "train.lst", "property"):
        assert (root / "rec" / name).read_bytes() == (tmp_path / "reference" / "rec" / name).read_bytes(), name
    assert not list((root / "rec").glob("*.part*")) and not list((root / "rec").glob("*.tmp"))
