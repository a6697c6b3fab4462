"""Interrupt the workflow at random moments and in each phase; the resumed result is identical to an uninterrupted run."""

import os
import random
import re
import shutil
import signal
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from faceprep.binfile import write_py2_bin
from faceprep.demo import encode_image
from faceprep.faces import draw_face, random_face_traits
from interrupting import (
    Barrier,
    WriteHold,
    continue_group,
    kill_group,
    kill_when,
    running_chunks,
    running_jobs,
    signal_while_waiting,
    start_workflow,
    wait_for_line,
)
from workflow import block_label, run_workflow, tree_digest, write_config, write_insightface_source

pytestmark = pytest.mark.e2e

DEMO = {"images": 600, "identities": 12, "seed": 3}
TEMPORARY = re.compile(r"\.tmp\b")


def demo_config(root):
    datasets = {
        "demo": {
            "demo": DEMO,
            "images": str(root / "out" / "images"),
            "bins_out": str(root / "out" / "bins"),
            "bins": ["cfp_fp"],  # the bin with images to re-encode
        }
    }
    return write_config(root / "config.yaml", datasets, chunk_size=50)


def outputs(root):
    """Everything the workflow delivers: image tree, index, bins (paths relative to out/)."""
    return tree_digest(root / "out")


def stray_temporaries(root):
    return [str(path) for path in root.rglob("*") if TEMPORARY.search(path.name)]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One directory for every run: the index holds absolute image paths."""
    return tmp_path_factory.getbasetemp() / "interrupted"


def emptied(directory):
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


@pytest.fixture
def root(shared_root):
    return emptied(shared_root)


@pytest.fixture(scope="module")
def uninterrupted(shared_root):
    run_workflow(emptied(shared_root) / "work", demo_config(shared_root))
    return outputs(shared_root)


def manifests(root, dataset="demo"):
    """``{manifest name: mtime}``: a chunk extracted again gets a new manifest."""
    return {path.name: path.stat().st_mtime_ns for path in (root / "work" / "results" / dataset / "manifests").glob("*.tsv")}


def assert_finished_chunks_kept(root, finished, dataset="demo"):
    now = manifests(root, dataset)
    assert {name: now.get(name) for name in finished} == finished, "a finished chunk was extracted again"
    return now


RANDOM_KILLS = 6


def test_sigkill_at_random_moments_then_resume(uninterrupted, root):
    """Kill after kill of the same command at random moments, each landing while a job runs,
    each followed by the documented resume; the final resume delivers what the uninterrupted
    run does."""
    config = demo_config(root)
    rng = random.Random(7)
    finished, kills = {}, []
    for attempt in range(3 * RANDOM_KILLS):
        if len(kills) == RANDOM_KILLS:
            break
        log = root / f"run{attempt}.log"
        run = start_workflow(root / "work", config, log_path=log)
        # At work: a rule script running, and out/ not yet what the uninterrupted run delivers.
        # A moment in Snakemake's start-up or between jobs lets the run go on.
        killed = kill_when(run, lambda jobs: jobs and outputs(root) != uninterrupted and sorted(job.script for job in jobs),
                           pause=lambda: rng.uniform(0, 0.5))
        if killed is None:
            # All the work was done before a moment found it (a fast machine): this resume is
            # checked now, and the next run starts from scratch, so that every kill lands mid-work.
            assert run.returncode == 0, log.read_text()[-3000:]
            assert outputs(root) == uninterrupted
            root = emptied(root)
            config = demo_config(root)
            finished = {}
            continue
        kills.append(killed[0])
        finished = assert_finished_chunks_kept(root, finished)
        run_workflow(root / "work", config, "--unlock")
    assert len(kills) == RANDOM_KILLS, f"only {len(kills)} kills landed mid-work: {kills}"
    run_workflow(root / "work", config)
    assert_finished_chunks_kept(root, finished)
    assert outputs(root) == uninterrupted
    assert stray_temporaries(root / "out") == [] and stray_temporaries(root / "work" / "results") == []


def wait_for_job(run, script, timeout=120):
    """The first process of ``run`` found running rule script ``script``."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = [job for job in running_jobs(run) if job.script == script]
        if jobs:
            return jobs[0]
        assert run.poll() is None and time.monotonic() < deadline, f"no {script} job was seen running"
        time.sleep(0.01)


# What snakemake logs when it has the signal: it then waits for its running jobs to end.
ACKNOWLEDGED = {
    signal.SIGTERM: "Will exit after finishing currently running jobs",
    signal.SIGINT: "Terminating processes on user request",
}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_graceful_stop_then_the_same_command_resumes(uninterrupted, root, sig):
    config = demo_config(root)
    log_path = root / "first.log"
    run = start_workflow(root / "work", config, log_path=log_path)
    try:
        # The stop comes while a chunk is being extracted and Snakemake waits for it, as it does
        # nearly all of a real run: the run's jobs are held (stopped) until Snakemake has the
        # signal, and it is sent when Snakemake is seen waiting for them (signal_while_waiting).
        # (Snakemake 9.27.1 can drop, or hang on, a signal that lands while it is busy logging
        # a finished job, a window of milliseconds that the demo's tiny chunks make frequent.)
        wait_for_job(run, "extract_chunk")
        # Ctrl-C in a terminal signals the whole foreground process group; SIGTERM (a
        # scheduler's or `kill`'s) reaches snakemake alone.
        signal_while_waiting(run, lambda: os.killpg(run.pid, sig) if sig == signal.SIGINT else run.send_signal(sig))
        wait_for_line(log_path, ACKNOWLEDGED[sig], run)
        continue_group(run)
        assert run.wait(timeout=120) != 0, log_path.read_text()
    finally:
        if run.poll() is None:
            kill_group(run)
    run_workflow(root / "work", config)  # no --unlock needed after a graceful stop
    assert outputs(root) == uninterrupted


# A source for the kills aimed at one phase each (PhaseHolds keep a run in each): four chunks,
# an index of 20,000 names and a bin of 40 MB, each far more than a write hold's pipe takes.
LARGE_IMAGES, LARGE_IDENTITIES, LARGE_CHUNK_SIZE = 20_000, 100, 5_000
LARGE_CHUNKS = LARGE_IMAGES // LARGE_CHUNK_SIZE
PADDED_BIN, PADDED_IMAGE_BYTES = "padded", 10_000_000


def large_label(key):
    return block_label(key, LARGE_IMAGES, LARGE_IDENTITIES)


def large_image(root, key):
    return root / "out" / "images" / str(large_label(key)) / f"{key}.jpg"


def padded_jpeg(jpeg, size):
    """``jpeg`` grown to about ``size`` bytes by comment segments, which decoders skip."""
    comment = b"\xff\xfe" + struct.pack(">H", 0xFFFF) + bytes(0xFFFF - 2)
    return jpeg[:2] + comment * (size // len(comment)) + jpeg[2:]


@pytest.fixture(scope="module")
def large_source(tmp_path_factory):
    """A face per identity as its images, and a bin of two pairs of padded faces."""
    rng = np.random.default_rng(5)
    faces = [encode_image(draw_face(random_face_traits(rng), rng)) for _ in range(LARGE_IDENTITIES)]
    source = write_insightface_source(
        tmp_path_factory.mktemp("large") / "src", LARGE_IMAGES, LARGE_IDENTITIES, image=lambda key: faces[large_label(key)]
    )
    pairs = [faces[0], faces[0], faces[1], faces[2]]
    write_py2_bin(source / f"{PADDED_BIN}.bin", [padded_jpeg(face, PADDED_IMAGE_BYTES) for face in pairs], [True, False])
    return source


def large_config(root, source):
    datasets = {
        "large": {
            "source": str(source),
            "images": str(root / "out" / "images"),
            "bins_out": str(root / "out" / "bins"),
            "bins": [PADDED_BIN],
        }
    }
    return write_config(root / "config.yaml", datasets, chunk_size=LARGE_CHUNK_SIZE)


@pytest.fixture(scope="module")
def uninterrupted_large(shared_root, large_source):
    run_workflow(emptied(shared_root) / "work", large_config(shared_root, large_source))
    return outputs(shared_root)


def phases(root, done_before, log):
    """``{phase: test}``; a test takes the running jobs and returns what shows the run is in
    that phase (it rereads the disk, so after the kill it must return the same), or None.

    ``done_before``: the chunk manifests there were when this run started; ``log``: the run's log.
    """
    work, out = root / "work", root / "out"
    manifest_dir = work / "results" / "large" / "manifests"

    def image(key):
        return large_image(root, key)

    def done():
        return {path.name for path in manifest_dir.glob("*.tsv")}

    def running(jobs, script):
        return [job for job in jobs if job.script == script]

    def checkpoint(jobs):
        if running(jobs, "plan_chunks") and not (work / "results" / "large" / "chunk_plan.json").exists():
            return "plan_chunks running, chunk_plan.json not written"

    def mid_chunk(jobs):
        for chunk in running_chunks(jobs, "large"):
            first, last = chunk * LARGE_CHUNK_SIZE + 1, (chunk + 1) * LARGE_CHUNK_SIZE
            manifest = manifest_dir / f"chunk_{chunk:05d}.tsv"
            if image(first).exists() and not image(last).exists() and not manifest.exists():
                return f"chunk {chunk} running: key {first} written, key {last} and {manifest.name} not"

    def recorded_chunks():
        """Chunk jobs Snakemake has logged as finished: it logs that once it has recorded the
        job's output as complete (before, a kill leaves the chunk to be extracted again)."""
        return len(re.findall(r"^Finished jobid: \d+ \(Rule: extract_chunk\)$", log.read_text(), re.MULTILINE))

    def between_chunks(jobs):
        finished_here = done() - done_before
        if (finished_here and recorded_chunks() >= len(finished_here) and len(done()) < LARGE_CHUNKS
                and not running(jobs, "extract_chunk")):
            return (f"no chunk job running; {sorted(finished_here)} finished and recorded in this run, "
                    f"{LARGE_CHUNKS - len(done())} to go")

    def writing(script, path):
        temporary = f"{path}.tmp"

        def test(jobs):
            holding = [job for job in running(jobs, script) if temporary in job.open_files]
            if holding and Path(temporary).exists() and not path.exists():
                return f"{script} has {temporary} open; it exists, {path.name} does not"

        return test

    return {
        "checkpoint": checkpoint,
        "mid-chunk": mid_chunk,
        "between chunks": between_chunks,
        "writing the bin": writing("reformat_bin", out / "bins" / f"{PADDED_BIN}.bin"),
        "writing the index": writing("build_index", out / "images_shuffle.npz"),
    }


class PhaseHolds:
    """What holds a run in each phase still waiting to be hit, so that the run cannot pass
    it, on a fast or a slow machine alike (interrupting.Barrier, interrupting.WriteHold):

    - checkpoint: chunk_plan.json.tmp is a barrier: plan_chunks stops before writing the plan;
    - mid-chunk: the middle image of every chunk not done is a barrier: a chunk stops halfway;
    - between chunks (once mid-chunk is hit, with the same barriers): the first chunk of the run
      to reach its barrier is let through after the source's property file, an input of every
      chunk job, is moved aside; the chunk ends, Snakemake records it and then waits for that
      input (--latency-wait) before it starts another chunk;
    - writing the bin, the index: their .tmp is a write hold: the job blocks mid-write.

    ``disarm()``, once the run is killed, leaves on disk what a kill at that point leaves: no
    file where a barrier held a job, the bytes a held writer had written, the property back.
    """

    def __init__(self, root, source, waiting):
        self.source = source
        self.barriers, self.writes = {}, []
        self.property_aside = None
        self.relay = "between chunks" in waiting and "mid-chunk" not in waiting
        work, out = root / "work", root / "out"
        if "checkpoint" in waiting:
            self.barriers["plan"] = Barrier(work / "results" / "large" / "chunk_plan.json.tmp")
        if "mid-chunk" in waiting or self.relay:
            done = manifests(root, "large")
            for chunk in range(LARGE_CHUNKS):
                if f"chunk_{chunk:05d}.tsv" not in done:
                    middle = large_image(root, chunk * LARGE_CHUNK_SIZE + 1 + LARGE_CHUNK_SIZE // 2)
                    assert not middle.exists(), f"{middle} exists: the chunk would not stop there"
                    self.barriers[chunk] = Barrier(middle)
        if "writing the bin" in waiting:
            self.writes.append(WriteHold(out / "bins" / f"{PADDED_BIN}.bin.tmp"))
        if "writing the index" in waiting:
            self.writes.append(WriteHold(out / "images_shuffle.npz.tmp"))

    def meanwhile(self, jobs):
        """The relay of 'between chunks': the first chunk job seen is let through its barrier."""
        chunks = running_chunks(jobs, "large")
        if self.relay and chunks and self.property_aside is None:
            # A chunk job runs, so Snakemake has its jobs' inputs: the property is not needed
            # again until it prepares the next chunk job.
            self.property_aside = self.source / "property.aside"
            (self.source / "property").rename(self.property_aside)  # a rename keeps its mtime
            self.barriers[chunks[0]].release()

    def disarm(self):
        for barrier in self.barriers.values():
            barrier.remove()
        for hold in self.writes:
            hold.settle()
        if self.property_aside is not None:
            self.property_aside.rename(self.source / "property")
            self.property_aside = None


def kill_in_first_phase(run, phases, holds):
    """SIGKILL ``run`` at the first moment one of ``phases`` holds (kill_when: with the run
    stopped); returns ``(phase, evidence, jobs killed)``, or None if the run ended first.
    ``holds`` (PhaseHolds) keep the run in a phase, so any pause between checks finds it."""

    def first_phase(jobs):
        for phase, test in phases.items():
            evidence = test(jobs)
            if evidence:
                return phase, evidence

    killed = kill_when(run, first_phase, pause=lambda: 0.05, screen=True, meanwhile=holds.meanwhile)
    return killed and (*killed[0], killed[1])


def test_sigkill_in_each_phase_then_resume(uninterrupted_large, root, large_source):
    """Run after run of the same command, each killed in a phase not hit before (held there,
    PhaseHolds), each followed by the documented resume. ``--cores 1`` runs one job at a time,
    so chunks have gaps."""
    config = large_config(root, large_source)
    hit = {}
    finished = {}
    while True:
        log = root / f"run{len(hit)}.log"
        waiting = {phase: test for phase, test in phases(root, set(manifests(root, "large")), log).items() if phase not in hit}
        if not waiting:
            break
        holds = PhaseHolds(root, large_source, waiting)
        try:
            run = start_workflow(root / "work", config, "--latency-wait", "600", cores=1, log_path=log)
            killed = kill_in_first_phase(run, waiting, holds)
            assert killed, f"hit {hit}, then a run ended without reaching {sorted(waiting)}:\n{log.read_text()[-3000:]}"
            phase, evidence, jobs = killed
            assert waiting[phase](jobs) == evidence, f"{phase}: not what the kill left on disk"
        finally:
            holds.disarm()
        hit[phase] = evidence
        finished = assert_finished_chunks_kept(root, finished, "large")
        run_workflow(root / "work", config, "--unlock")
    run_workflow(root / "work", config, cores=1)
    assert_finished_chunks_kept(root, finished, "large")
    assert outputs(root) == uninterrupted_large
    assert stray_temporaries(root / "out") == [] and stray_temporaries(root / "work" / "results") == []


def test_stopped_means_stopped_or_waiting_for_a_stopped_vfork_child():
    from interrupting import _frozen

    assert _frozen({10: ("T", 1), 11: ("t", 10), 12: ("Z", 10)})
    assert _frozen({10: ("D", 1), 11: ("T", 10)})  # a vfork parent of a child stopped before exec
    assert not _frozen({10: ("D", 1), 11: ("R", 10)})  # its child runs: the parent will go on
    assert not _frozen({10: ("D", 1)})  # in a system call, no stopped child: it will stop later
    assert not _frozen({10: ("S", 1), 11: ("T", 10)})
