"""faceprep.changes on folder trees: a tree changed after its plan is planned again. The
directory changed last is found, and the workflow, which Snakemake would otherwise judge by
the tree's top directory alone, rewrites its outputs from the tree as it now is. (An
evaluation set's images rewritten in place: test_evalsets.)"""

import json
import os
import shutil

import numpy as np
import pytest

from faceprep.demo import encode_image
from faceprep.sources.tree import plan_tree
from faceprep.changes import newest_listed, stamp_changes
from oracle import run_oracle
from tree_samples import plan_files
from workflow import run_workflow, write_config

LATIN_1 = os.fsdecode(b"caf\xe9")  # not UTF-8: Linux names are bytes


def picture(seed):
    return encode_image(np.random.default_rng(seed).integers(0, 256, (10, 8, 3), dtype=np.uint8))


def make_tree(root, identities=("anna", "nested/bo", LATIN_1)):
    """Two images in each identity directory."""
    for number, identity in enumerate(identities):
        (root / identity).mkdir(parents=True)
        for image in range(2):
            (root / identity / f"{image}.jpg").write_bytes(picture(10 * number + image))


def age(root, seconds=100):
    """Set every directory's modification time ``seconds`` back, so that a change made now
    is newer than the plan whatever the file system's timestamp granularity."""
    for directory, _, _ in os.walk(root):
        status = os.stat(directory)
        os.utime(directory, ns=(status.st_atime_ns, status.st_mtime_ns - seconds * 10**9))


def newest(root, directories):
    found = newest_listed(root, directories)
    assert found[1] == os.stat(os.path.join(os.fsencode(root), found[0])).st_mtime_ns
    return os.fsdecode(found[0])


def test_the_newest_directory_is_where_the_tree_changed_last(tmp_path):
    root = tmp_path / "tree"
    make_tree(root)
    plan = tmp_path / "plan"
    plan.mkdir()
    directories = plan_files(plan)[-1]
    assert newest_listed(root, directories) is None  # not planned yet
    plan_tree(root, 4, *plan_files(plan))
    age(root)
    (root / LATIN_1 / "2.jpg").write_bytes(picture(99))  # a file added
    assert newest(root, directories) == LATIN_1
    age(root)
    (root / "nested" / "bo" / "0.jpg").unlink()  # a file removed, two levels down
    assert newest(root, directories) == "nested/bo"
    age(root)
    shutil.rmtree(root / "nested" / "bo")  # a directory removed: its parent changed
    assert newest(root, directories) == "nested"
    age(root)
    (root / "anna").rename(root / "anne")  # renamed: the root changed
    assert newest(root, directories) == "."


def test_the_stamp_takes_the_time_of_the_last_change_and_names_its_directory(tmp_path):
    root = tmp_path / "tree"
    make_tree(root)
    directories, stamp = plan_files(tmp_path)[-1], tmp_path / "results" / "stamp.txt"
    stamp_changes(root, directories, stamp)
    assert (stamp.read_bytes(), stamp.stat().st_mtime_ns) == (b"\t0\n", 0)  # before the plan
    plan_tree(root, 4, *plan_files(tmp_path))
    for path in plan_files(tmp_path):  # planned a while before the changes below, not within the same clock tick
        status = os.stat(path)
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns - 100 * 10**9))
    contents = []
    for image in (2, 3):  # twice in the same directory: the content changes all the same
        age(root)
        (root / LATIN_1 / f"{image}.jpg").write_bytes(picture(image))
        stamp_changes(root, directories, stamp)
        changed = (root / LATIN_1).stat().st_mtime_ns
        assert stamp.read_bytes() == b"caf\xe9\t%d\n" % changed and stamp.stat().st_mtime_ns == changed
        assert changed > (tmp_path / "rows.npy").stat().st_mtime_ns  # newer than the plan
        contents.append(stamp.read_bytes())
    assert contents[0] != contents[1]


def rec_images(rec):
    """``{train.lst path: image bytes}`` of the rec as MXNet reads it."""
    records = json.loads(run_oracle("read_rec.py", rec / "train.rec", rec / "train.idx").stdout)
    paths = {int(key): path for key, _, path in (line.split("\t") for line in (rec / "train.lst").read_text().splitlines())}
    return {paths[record["key"]]: bytes.fromhex(record["payload_hex"]) for record in records if record["key"] in paths}


def files_of(root):
    return {os.path.relpath(os.path.join(directory, name), root): open(os.path.join(directory, name), "rb").read()
            for directory, _, names in os.walk(root) for name in names}


@pytest.mark.e2e
def test_a_file_added_or_removed_deep_in_the_tree_is_packed_on_the_next_run(tmp_path):
    """Snakemake prints the directory that changed: here it is UTF-8, for the test to read its output."""
    root = tmp_path / "tree"
    make_tree(root, ("anna", "nested/bo", "Zoë"))
    dataset = {"source": str(root), "outputs": ["rec"], "rec": str(tmp_path / "rec"), "bins": []}
    config = write_config(tmp_path / "config.yaml", {"faces": dataset})
    run_workflow(tmp_path / "work", config)
    assert rec_images(tmp_path / "rec") == files_of(root)
    assert "Nothing to be done" in run_workflow(tmp_path / "work", config, "-n").stdout

    for count in (7, 8):  # twice in the same directory; the top directory does not change
        age(root)
        (root / "nested" / "bo" / f"{count}.jpg").write_bytes(picture(count))
        run_workflow(tmp_path / "work", config)
        assert rec_images(tmp_path / "rec") == files_of(root) and len(files_of(root)) == count

    age(root)
    (root / "Zoë" / "0.jpg").unlink()
    run_workflow(tmp_path / "work", config)
    assert rec_images(tmp_path / "rec") == files_of(root) and len(files_of(root)) == 7
    assert "Nothing to be done" in run_workflow(tmp_path / "work", config, "-n").stdout
