"""Output directories are owned (faceprep.ownership): a run claims them, all or none; a
dry run names another working copy's claim and claims nothing. A directory no working copy
owns yet but that already holds a file a run would write there under a name it always
gives (a rec's train.rec, a shard directory's metadata.json or shards, a bin, a bin's image
directory) is refused before any job, naming the file; claimed as the refusal says, its
files are replaced. The files are the user's until then: byte-identical after a refused run.
(Two working copies started at once: test_output_safety.)"""

import fnmatch
import json
import os

import pytest

from faceprep.errors import OutputError
from faceprep.ownership import OWNER_FILE, check_unowned_files, claim, claim_all
from faceprep.outputs import SHARD_FORMATS
from faceprep.shards import shard_file_name
from faceprep.workflow_config import Dataset, files_written
from oracle import run_oracle
from workflow import run_workflow, write_config, write_insightface_source


def test_a_refused_claim_releases_the_claims_it_made(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    claim(second, "/copy/one", "datasets.d.shards")
    with pytest.raises(OutputError, match=r"datasets\.d\.shards: .* is owned by the working copy at /copy/one"):
        claim_all({"datasets.d.images": first, "datasets.d.shards": second}, "/copy/two")
    assert not (first / OWNER_FILE).exists()  # claimed by this call, released
    assert (second / OWNER_FILE).read_text() == "/copy/one\n"
    claim_all({"datasets.d.images": first, "datasets.d.shards": second}, "/copy/one")  # its owner: no error
    assert sorted(os.listdir(first)) == [OWNER_FILE]  # no temporary left


def test_a_dry_run_names_the_owner_and_claims_nothing(tmp_path):
    source = write_insightface_source(tmp_path / "src", 40, 4)
    dataset = {"source": str(source), "images": str(tmp_path / "images"), "bins": []}
    config = write_config(tmp_path / "config.yaml", {"d": dataset})
    run_workflow(tmp_path / "copy1", config, "--dry-run")
    assert not (tmp_path / "images").exists()
    run_workflow(tmp_path / "copy1", config, "--until", "plan_chunks")
    assert (tmp_path / "images" / OWNER_FILE).read_text() == f"{tmp_path / 'copy1'}\n"
    result = run_workflow(tmp_path / "copy2", config, "--dry-run", check=False)
    assert result.returncode != 0
    assert (f"config: datasets.d.images: {tmp_path / 'images'} is owned by the working copy at {tmp_path / 'copy1'}"
            in result.stdout + result.stderr)


def test_a_file_an_output_writes_refuses_the_directory_until_it_is_owned(tmp_path):
    rec = tmp_path / "rec"
    rec.mkdir()
    check_unowned_files(rec, ("train.rec",), "/copy", "datasets.d.rec")  # empty: nothing to overwrite
    check_unowned_files(tmp_path / "missing", ("train.rec",), "/copy", "datasets.d.rec")
    (rec / "notes.txt").write_text("the user's")
    check_unowned_files(rec, ("train.rec", "train.idx"), "/copy", "datasets.d.rec")  # not a name a run writes
    (rec / "train.idx").write_text("the user's")
    (rec / "train.rec").write_text("the user's")
    with pytest.raises(OutputError) as error:
        check_unowned_files(rec, ("train.rec", "train.idx"), "/copy", "datasets.d.rec")
    assert error.value.strerror == (
        f"datasets.d.rec: {rec} already holds {rec / 'train.idx'} and 1 more such files, which no run of this "
        f"workflow wrote there (it has no {OWNER_FILE}), and a run would overwrite it. Move it away or use another "
        f"directory; to replace it with this working copy's output, claim the directory: echo /copy > {rec / OWNER_FILE}")
    (rec / OWNER_FILE).write_text("/other/copy\n")  # owned: check_owner's to judge
    check_unowned_files(rec, ("train.rec",), "/copy", "datasets.d.rec")


def test_the_patterns_are_the_names_the_outputs_write(tmp_path):
    dataset = Dataset(name="web-face_4", source="/s", images=None, bins_out="/b", bins=("lfw", "cfp_fp"),
                      outputs=("webdataset", "tfrecord", "rec"), shards="/sh", rec="/r", bin_images="/bi")
    written = {key: (directory, patterns) for key, directory, patterns in files_written({"web-face_4": dataset})}
    assert written["datasets.web-face_4.rec"] == ("/r", ("train.rec", "train.idx", "train.lst", "property"))
    assert written["datasets.web-face_4.bins_out"] == ("/b", ("lfw.bin", "cfp_fp.bin"))
    assert written["datasets.web-face_4.bin_images"] == ("/bi", ("lfw", "cfp_fp"))
    directory, patterns = written["datasets.web-face_4.shards"]
    names = [shard_file_name("web-face_4", shard, name) for shard in (0, 7, 123456) for name in SHARD_FORMATS]
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in names)
    others = ["web-face_40-00001.tar", "web-face_4-notes.tar", "web-face_4-00001.tar.tmp", "README.md"]
    assert not any(fnmatch.fnmatch(name, pattern) for name in others for pattern in patterns)
    assert {"metadata.json", "classes.tsv"} <= set(patterns)


@pytest.mark.e2e
def test_a_users_rec_in_the_rec_directory_is_refused_then_replaced_once_claimed(tmp_path):
    source = write_insightface_source(tmp_path / "src", 40, 4)
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "train.rec").write_bytes(b"the user's own rec")
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "lfw.bin").write_bytes(b"the user's own bin")
    dataset = {"source": str(source), "outputs": ["rec"], "rec": str(rec), "bins": []}
    config = write_config(tmp_path / "config.yaml", {"d": dataset})
    for run in ([], ["--dry-run"]):
        result = run_workflow(tmp_path / "work", config, *run, check=False)
        assert result.returncode != 0
        assert f"config: datasets.d.rec: {rec} already holds {rec / 'train.rec'}" in result.stdout + result.stderr
    assert os.listdir(rec) == ["train.rec"] and (rec / "train.rec").read_bytes() == b"the user's own rec"

    demo = {"demo": {"images": 40, "identities": 4}, "bins_out": str(tmp_path / "bins"), "bins": ["lfw"],
            "images": str(tmp_path / "images")}
    result = run_workflow(tmp_path / "demo_work", write_config(tmp_path / "demo.yaml", {"demo": demo}), "--dry-run",
                          check=False)
    assert f"config: datasets.demo.bins_out: {tmp_path / 'bins'} already holds {tmp_path / 'bins' / 'lfw.bin'}" in (
        result.stdout + result.stderr)

    (rec / OWNER_FILE).write_text(f"{tmp_path / 'work'}\n")  # claimed, as the refusal says
    run_workflow(tmp_path / "work", config)
    records = json.loads(run_oracle("read_rec.py", rec / "train.rec", rec / "train.idx").stdout)
    assert len(records) == 1 + 40 + 4  # header, images, identity records
