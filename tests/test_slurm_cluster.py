"""The SLURM profile (profiles/slurm) against a real single-node SLURM cluster
(tests/slurm/cluster.sh): rules run as SLURM jobs with the resources they ask
for, and a run whose job was cancelled is completed by rerunning it."""

import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from slurm.harness import SlurmCluster

pytestmark = pytest.mark.slurm

SNAKEMAKE_TIMEOUT_S = 300
JOB_START_TIMEOUT_S = 120


def snakemake_command(cluster: SlurmCluster, *extra: str) -> list[str]:
    # The first status check 1 s after submission instead of the plugin's 40 s.
    return [
        sys.executable, "-m", "snakemake", *cluster.snakemake_args(),
        "--slurm-init-seconds-before-status-checks", "1", *extra,
    ]


def run_snakemake(cluster: SlurmCluster, workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        snakemake_command(cluster, *extra), cwd=workdir, env=cluster.env,
        capture_output=True, text=True, timeout=SNAKEMAKE_TIMEOUT_S,
    )


def write_snakefile(workdir: Path, text: str) -> None:
    (workdir / "Snakefile").write_text(textwrap.dedent(text))


def test_rules_run_as_slurm_jobs_with_requested_resources(slurm, tmp_path):
    write_snakefile(tmp_path, """
        rule all:
            input: "total.txt"

        rule make_numbers:
            output: "numbers.txt"
            shell: "seq 1 100 > {output}"

        rule add_up:
            input: "numbers.txt"
            output: "total.txt"
            threads: 2
            resources: mem_mb=100
            shell: "echo $SLURM_JOB_ID > {output}; awk '{{s += $1}} END {{print s}}' {input} >> {output}"
        """)
    since = datetime.now()

    run = run_snakemake(slurm, tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    job_id_inside, total = (tmp_path / "total.txt").read_text().split()
    assert int(total) == sum(range(1, 101))
    jobs = slurm.jobs(tmp_path, since=since)
    assert Counter(job.rule for job in jobs) == {"make_numbers": 1, "add_up": 1}
    assert {job.state for job in jobs} == {"COMPLETED"}
    (add_up,) = [job for job in jobs if job.rule == "add_up"]
    assert add_up.job_id == job_id_inside
    assert add_up.alloc_cpus == 2
    assert add_up.req_mem == "100M"


def wait_for_file(path: Path, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + JOB_START_TIMEOUT_S
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"snakemake exited early ({process.returncode}):\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {path.name} after {JOB_START_TIMEOUT_S}s:\n{log.read_text()}")
        time.sleep(0.5)


def test_rerun_completes_a_cancelled_job(slurm, tmp_path):
    # The job writes a complete-looking partial output, then waits for the
    # test's "release" file.
    write_snakefile(tmp_path, """
        rule all:
            input: "slow.txt"

        rule slow:
            output: "slow.txt"
            shell: "echo partial > {output}; touch started; until [ -e release ]; do sleep 1; done; echo done > {output}"
        """)
    # Without the profile's retry Snakemake itself would resubmit the
    # cancelled job; this test is about rerunning an interrupted workflow.
    since = datetime.now()
    first_log = tmp_path / "first_run.log"
    with first_log.open("w") as log:
        first = subprocess.Popen(snakemake_command(slurm, "--retries", "0"), cwd=tmp_path, env=slurm.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_file(tmp_path / "started", first, first_log)
            (running,) = [job for job in slurm.queued_jobs(tmp_path) if job.rule == "slow"]
            slurm.run("scancel", running.job_id)
            first.wait(timeout=SNAKEMAKE_TIMEOUT_S)
        finally:
            if first.poll() is None:
                first.kill()
                # The job would otherwise wait for "release" until the cluster stops.
                for job in slurm.queued_jobs(tmp_path):
                    slurm.run("scancel", job.job_id)
    assert first.returncode != 0, first_log.read_text()
    assert [job.state for job in slurm.jobs(tmp_path, since=since)] == ["CANCELLED"]

    (tmp_path / "release").touch()
    rerun = run_snakemake(slurm, tmp_path, "--retries", "0")

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (tmp_path / "slow.txt").read_text() == "done\n"
    jobs = slurm.jobs(tmp_path, since=since)
    assert [(job.rule, job.state) for job in jobs] == [("slow", "CANCELLED"), ("slow", "COMPLETED")]
