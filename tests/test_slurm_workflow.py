"""The demo dataset through `--profile profiles/slurm` on a real single-node SLURM cluster:
chunk, rec part and bin jobs run as SLURM jobs, a cancelled chunk job and a rec part cancelled
with its records written but not its index are completed by rerunning the same command, and
the outputs (the rec byte for byte) equal a local `--cores 2` run."""

import json
import shutil
import subprocess
import time
from datetime import datetime

import numpy as np
import pytest

from faceprep.demo import encode_image
from interrupting import Barrier
from oracle import run_oracle
from workflow import REPO, run_workflow, snakemake_command, tree_digest, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

CHUNKS = 4
HEAVY_RULES = ("extract_chunk", "reformat_bin", "verify_bin")
# The index of the second rec part, which it writes after its records: a Barrier there holds
# the part, its records in place, until it is cancelled.
HELD_PART, HELD_CHUNK = "train.rec.part-00001.npz.tmp", "00001"


def demo_config(root):
    datasets = {
        "demo": {
            "demo": {"images": 400, "identities": 10, "seed": 5},
            "images": str(root / "out" / "images"),
            "bins_out": str(root / "out" / "bins"),
            "bins": ["lfw", "cfp_fp"],
            "outputs": ["folders", "rec"],
            "rec": str(root / "out" / "rec"),
        }
    }
    return write_config(root / "config.yaml", datasets, chunk_size=400 // CHUNKS)


def slurm_command(cluster, root, *args):
    # Test-only speed-ups: first status check after 1 s (not 40 s), and no automatic
    # resubmission, so that the cancelled job stays cancelled until the rerun.
    return snakemake_command(
        root / "work",
        root / "config.yaml",
        *cluster.snakemake_args(),
        "--slurm-init-seconds-before-status-checks", "1",
        "--seconds-between-status-checks", "2",
        "--retries", "0",
        *args,
    )


def cancel_first_running_job(cluster, root, run, rules=HEAVY_RULES, chunk="", timeout=240):
    """scancel the first job of ``rules`` (of ``chunk``, if given) SLURM reports RUNNING; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, (root / "first.log").read_text()[-3000:]
        running = [job for job in cluster.queued_jobs(root / "work")
                   if job.state == "RUNNING" and job.rule in rules and job.wildcards.endswith(chunk)]
        if running:
            cluster.run("scancel", running[0].job_id)
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no heavy job was seen running")


def test_demo_on_slurm_with_a_cancelled_job_matches_a_local_run(slurm, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "slurm_demo"  # one path for both runs: the index holds absolute paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    run_workflow(root / "work", demo_config(root))
    local = tree_digest(root / "out")
    shutil.rmtree(root)
    root.mkdir()
    demo_config(root)

    since = datetime.now()
    barrier = Barrier(root / "out" / "rec" / HELD_PART)
    try:
        with open(root / "first.log", "w") as log:
            run = subprocess.Popen(slurm_command(slurm, root), stdout=log, stderr=subprocess.STDOUT, env=slurm.env,
                                   cwd=REPO)
            cancelled = cancel_first_running_job(slurm, root, run)
            cancelled_part = cancel_first_running_job(slurm, root, run, rules=("write_rec_part",), chunk=HELD_CHUNK)
            assert run.wait(timeout=600) != 0
    finally:
        barrier.remove()
    rerun = subprocess.run(slurm_command(slurm, root), env=slurm.env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]

    assert tree_digest(root / "out") == local
    jobs = slurm.jobs(root / "work", since=since)
    states = {(job.rule, job.wildcards, job.state) for job in jobs}
    assert (cancelled.rule, cancelled.wildcards, "CANCELLED") in states
    assert (cancelled.rule, cancelled.wildcards, "COMPLETED") in states  # the rerun completed it
    assert (cancelled_part.rule, cancelled_part.wildcards, "CANCELLED") in states
    assert (cancelled_part.rule, cancelled_part.wildcards, "COMPLETED") in states
    assert len({job.wildcards for job in jobs if job.rule == "write_rec_part" and job.state == "COMPLETED"}) == CHUNKS
    assert {"assemble_rec", "verify_rec"} <= {job.rule for job in jobs if job.state == "COMPLETED"}
    completed = [job for job in jobs if job.state == "COMPLETED"]
    assert len({job.wildcards for job in completed if job.rule == "extract_chunk"}) == CHUNKS
    # Each bin's jobs completed once: the rerun redid only the cancelled job's work.
    assert sum(job.rule == "reformat_bin" for job in completed) == 2, jobs
    assert sum(job.rule == "verify_bin" for job in completed) == 2, jobs
    # The checkpoint and the demo generation are localrules: never submitted.
    assert not any(job.rule in ("plan_chunks", "make_demo_dataset") for job in jobs)


def test_a_folder_tree_on_slurm_then_an_image_added_deep_in_it(slurm, tmp_path):
    """A tree packed through the SLURM profile: the change stamp the Snakemake process writes
    at its start is an input the cluster's jobs find as it is; an image added two levels down
    is packed by the next run, whose rec MXNet reads whole."""
    tree = tmp_path / "tree"
    for number, identity in enumerate(["anna", "nested/bo"]):
        (tree / identity).mkdir(parents=True)
        for image in range(3):
            (tree / identity / f"{image}.jpg").write_bytes(encode_image(np.full((8, 8, 3), 10 * number + image, np.uint8)))
    rec = tmp_path / "out" / "rec"
    write_config(tmp_path / "config.yaml", {"t": {"source": str(tree), "outputs": ["rec"], "rec": str(rec), "bins": []}})
    since = datetime.now()
    for images in (6, 7):
        if images == 7:
            (tree / "nested" / "bo" / "new.jpg").write_bytes(encode_image(np.full((8, 8, 3), 99, np.uint8)))
        run = subprocess.run(slurm_command(slurm, tmp_path), env=slurm.env, cwd=REPO, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        records = json.loads(run_oracle("read_rec.py", rec / "train.rec", rec / "train.idx").stdout)
        assert len(records) == 1 + images + 2  # header, images, identity records
    completed = [job.rule for job in slurm.jobs(tmp_path / "work", since=since) if job.state == "COMPLETED"]
    assert completed.count("write_rec_part") == 2  # one part a run: the second run packed the tree again
