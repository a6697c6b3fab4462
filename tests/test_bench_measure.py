"""The bench's measuring tools without a bench run: run directories and their trash, a job's
peak memory apart from the process it was forked from, and the scale preset's projection."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from measure import JobWatcher, RunDirectories  # noqa: E402


def test_removed_runs_go_to_a_trash_that_is_emptied_over_budget(tmp_path):
    directories = RunDirectories(tmp_path, trash_bytes=100, settle=0)
    (directories.fresh() / "a").write_text("first run")
    (directories.fresh(allocated_bytes=60) / "b").write_text("second run")
    assert [path.name for path in directories.current.iterdir()] == ["b"]
    assert len(list(directories.trash.iterdir())) == 1
    directories.make_room(upcoming_bytes=30)  # 60 + 30 fits in 100
    assert len(list(directories.trash.iterdir())) == 1
    directories.make_room(upcoming_bytes=50)
    assert not any(directories.trash.iterdir()) and not directories.current.exists()
    assert float(directories.stamp.read_text()) > 0
    assert directories.settle() == 0


def wait_until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.01)


def test_a_job_peak_is_its_own_not_the_process_it_was_forked_from(tmp_path):
    """Snakemake forks each job from its own large process; until the exec the child's
    high-water mark is the parent's, and must not count as the job's. The child waits for
    barrier files, so the watcher is seen sampling it before the exec and after."""
    script = tmp_path / ".snakemake" / "scripts" / "tmpabc.some_rule.py"
    script.parent.mkdir(parents=True)
    may_exec, may_exit = tmp_path / "may_exec", tmp_path / "may_exit"
    script.write_text("import os, time\nwhile not os.path.exists(os.environ['MAY_EXIT']): time.sleep(0.01)\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import os, sys, time\n"
        "ballast = bytearray(300 << 20)  # touched: 300 MB resident, like a big scheduler\n"
        "if os.fork() == 0:\n"
        "    while not os.path.exists(os.environ['MAY_EXEC']): time.sleep(0.01)\n"
        "    os.execv(sys.executable, [sys.executable, os.environ['JOB_SCRIPT']])\n"
        "os.wait()\n"
    )
    # The script is not on the parent's command line, which the forked child shows until the exec.
    process = subprocess.Popen([sys.executable, str(parent)],
                               env=os.environ | {"JOB_SCRIPT": str(script), "MAY_EXEC": str(may_exec), "MAY_EXIT": str(may_exit)})
    watcher = JobWatcher(process.pid, interval=0.01)
    watcher.start()
    try:
        def child():  # the watcher follows the processes below the parent: the forked child
            return next(iter(list(watcher.processes.values())), None)

        wait_until(lambda: child() and child().peak_rss_kb > 300 << 10, "the forked child sampled with the parent's mark")
        may_exec.touch()
        wait_until(lambda: child().rule == "some_rule", "the child sampled after its exec")
        may_exit.touch()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        watcher.stop()
    [job] = watcher.jobs()
    assert job.rule == "some_rule"
    assert 0 < job.peak_rss_kb < 100 << 10
    assert watcher.root_peak_rss_kb > 300 << 10


def test_scale_projection_is_the_line_through_the_two_counts():
    import scale

    small = {"images": 1_000_000, "rules": {"build_index": {"peak_rss_mb": 100.0}}}
    large = {"images": 5_000_000, "rules": {"build_index": {"peak_rss_mb": 180.0}}}
    projected, per_million = scale.projection(small, large, "build_index", 42_000_000)
    assert per_million == pytest.approx(20.0)
    assert projected == pytest.approx(180.0 + 20.0 * 37)
