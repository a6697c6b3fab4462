"""Test support for running Snakemake against the single-node SLURM cluster
that ``tests/slurm/cluster.sh`` brings up on this machine.

Typical use in a pytest module::

    from slurm.harness import slurm_cluster_for_tests

    @pytest.fixture(scope="session")
    def slurm():
        with slurm_cluster_for_tests() as cluster:
            yield cluster

    def test_x(slurm, tmp_path):
        since = datetime.now()
        subprocess.run([sys.executable, "-m", "snakemake", *slurm.snakemake_args(),
                        "--slurm-init-seconds-before-status-checks", "1"],
                       cwd=tmp_path, env=slurm.env, check=True)
        jobs = slurm.jobs(tmp_path, since=since)   # accounting records (sacct)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = Path(__file__).resolve().parent / "cluster.sh"
SLURM_PROFILE_DIR = REPO_ROOT / "profiles" / "slurm"

# Bounds the package install on a fresh machine plus the daemons' bring-up.
CLUSTER_START_TIMEOUT_S = 900


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster's daemons."""


@dataclass(frozen=True)
class SlurmJob:
    """One SLURM job (allocation) submitted by the Snakemake SLURM executor."""

    job_id: str
    # Snakemake rule, from the executor's job comment "rule_<rule>[_wildcards_<w>]".
    rule: str
    wildcards: str
    state: str
    alloc_cpus: int
    req_mem: str
    workdir: Path


@dataclass(frozen=True)
class SlurmCluster:
    state_dir: Path
    account: str
    partition: str
    # Environment for subprocesses that use the cluster (SLURM_CONF set).
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 60) -> str:
        """Runs a SLURM client command (sbatch, scancel, ...); returns stdout."""
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def snakemake_args(self, profile_dir: Path = SLURM_PROFILE_DIR) -> list[str]:
        """``--profile`` plus a ``--default-resources`` that keeps the profile's
        defaults but names this cluster's account and partition (a command-line
        ``--default-resources`` replaces the profile's whole block)."""
        profile = yaml.safe_load((profile_dir / "config.yaml").read_text())
        defaults = dict(profile.get("default-resources") or {})
        defaults["slurm_account"] = self.account
        defaults["slurm_partition"] = self.partition
        return [
            "--profile",
            str(profile_dir),
            "--default-resources",
            *(f"{name}={value}" for name, value in defaults.items()),
        ]

    def jobs(self, workdir: Path, since: datetime) -> list[SlurmJob]:
        """Jobs whose working directory is ``workdir`` and that were active from
        ``since`` on, from the accounting database (``sacct``): proof that they
        ran as SLURM jobs, and their states. ``since`` is required because the
        database outlives test runs: an earlier run that used the same path
        (pytest's numbered temp directories start again at 0 when they are
        cleaned away) would otherwise add its jobs to this one's."""
        start = since.strftime("%Y-%m-%dT%H:%M:%S")
        out = self.run(
            "sacct", "--allusers", "--allocations", "--parsable2", "--noheader",
            f"--starttime={start}",
            "--format=JobIDRaw,Comment,State,AllocCPUS,ReqMem,WorkDir",
        )
        return _jobs_in([tuple(line.split("|")) for line in out.splitlines()], workdir)

    def queued_jobs(self, workdir: Path) -> list[SlurmJob]:
        """Jobs pending or running right now whose working directory is
        ``workdir``, from the controller (``squeue``)."""
        out = self.run("squeue", "--noheader", "--format=%i|%k|%T|%C|%m|%Z")
        return _jobs_in([tuple(line.split("|")) for line in out.splitlines()], workdir)


def _jobs_in(records: list[tuple[str, ...]], workdir: Path) -> list[SlurmJob]:
    wanted = Path(workdir).resolve()
    jobs = []
    for job_id, comment, state, alloc_cpus, req_mem, job_workdir in records:
        if Path(job_workdir) != wanted or not comment.startswith("rule_"):
            continue
        rule, _, wildcards = comment.removeprefix("rule_").partition("_wildcards_")
        jobs.append(
            SlurmJob(
                job_id=job_id,
                rule=rule,
                wildcards=wildcards,
                # sacct says "CANCELLED by 0" for jobs scancel'ed by root.
                state=state.split()[0],
                alloc_cpus=int(alloc_cpus),
                req_mem=req_mem,
                workdir=Path(job_workdir),
            )
        )
    return jobs


def unavailable_reason() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    if os.name != "posix" or not Path("/proc/self").is_dir():
        return "the test SLURM cluster needs Linux"
    if os.geteuid() != 0:
        return "the test SLURM cluster needs root (it installs Debian packages and runs munged/slurmd)"
    if shutil.which("dpkg-query") is None:
        return "the test SLURM cluster needs a Debian-based system (dpkg, apt-get)"
    return None


def _cluster_script(command: str, state_dir: Path | None, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if state_dir is not None:
        env["SLURM_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


@contextmanager
def slurm_cluster(state_dir: Path | None = None) -> Iterator[SlurmCluster]:
    """Starts the cluster (installing packages if needed) and yields it; stops
    it on exit if this call started it. ``state_dir`` defaults to
    ``$SLURM_STATE_DIR`` or ``/tmp/faceprep-slurm``."""
    reason = unavailable_reason()
    if reason:
        raise ClusterUnavailable(reason)
    already_running = _cluster_script("status", state_dir, timeout=60).returncode == 0
    start = _cluster_script("start", state_dir, timeout=CLUSTER_START_TIMEOUT_S)
    if start.returncode != 0:
        raise RuntimeError(f"cluster.sh start failed:\n{start.stdout}{start.stderr}")
    settings = dict(
        line.split("=", 1)
        for line in _cluster_script("env", state_dir, timeout=60).stdout.splitlines()
    )
    cluster = SlurmCluster(
        state_dir=Path(settings["STATE_DIR"]),
        account=settings["ACCOUNT"],
        partition=settings["PARTITION"],
        env={**os.environ, "SLURM_CONF": settings["SLURM_CONF"]},
    )
    try:
        yield cluster
    finally:
        if not already_running:
            stop = _cluster_script("stop", state_dir, timeout=120)
            if stop.returncode != 0:
                raise RuntimeError(f"cluster.sh stop failed:\n{stop.stdout}{stop.stderr}")


@contextmanager
def slurm_cluster_for_tests(state_dir: Path | None = None) -> Iterator[SlurmCluster]:
    """``slurm_cluster()`` for pytest fixtures: machine.lacks() on machines
    that cannot run the daemons."""
    from machine import lacks

    reason = unavailable_reason()
    if reason:
        lacks(reason)
    with slurm_cluster(state_dir) as cluster:
        yield cluster
