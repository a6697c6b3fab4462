"""Wall time and peak memory of one command, and of every job process of a Snakemake run.

A command's CPU time (its whole process tree) comes from ``wait4``; the machine's CPU
time from ``/proc/stat`` minus the command's gives the load of everything else during
the run. A watcher thread follows the command's process and every process below it,
such as Snakemake's jobs (``python .snakemake/scripts/tmpXXXX.<rule>.py``): their start
from ``/proc/<pid>/stat``, their end from a pidfd (exact), and their peak RSS from
``VmHWM`` sampled every ``interval`` seconds (the kernel's high-water mark, so only a
peak in the last ``interval`` before exit can be missed; a scan of ``/proc`` costs about
2 ms, so the watcher takes ~2 % of one core). ``wait4``'s own ``ru_maxrss`` is no use
here: a child forked from this (large) Python process keeps its parent's high-water
mark across ``exec``.

The runs become the records of ``results.json`` (``run_record``, ``workflow_record``), with
Snakemake's own benchmark files (``read_benchmarks``) and a listing of the tree a run made.
"""

import contextlib
import hashlib
import os
import re
import select
import signal
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from faceprep.ownership import OWNER_FILE

JOB_SCRIPT = re.compile(r"\.snakemake/scripts/tmp[^/.]+\.(\w+)\.py$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class JobProcess:
    pid: int
    rule: str | None
    start: float  # seconds since boot
    end: float | None = None
    peak_rss_kb: int = 0

    @property
    def seconds(self):
        return None if self.end is None else self.end - self.start


@dataclass
class Run:
    command: list
    wall: float
    max_rss_kb: int  # the largest peak RSS of any single process of the tree
    cpu_seconds: float  # user + system time of the command's process tree
    system_seconds: float  # of it, time in the kernel (creating files, page faults)
    background_cpus: float  # CPUs busy with other work during the run, on average
    stolen_cpus: float  # CPUs the hypervisor took away during the run, on average
    command_peak_rss_kb: int = 0  # the command's own process (for Snakemake: the scheduler)
    start: float = 0.0  # seconds since boot
    jobs: list = field(default_factory=list)
    # With write_back: page-cache data not yet on disk when the command exited, and how long
    # writing it back took.
    dirty_mb: float | None = None
    sync_seconds: float | None = None


def _busy_and_stolen_seconds():
    """CPU seconds since boot the machine has spent busy (user, nice, system, irq, softirq), and
    those the hypervisor ran something else on its virtual CPUs (steal), which no process sees."""
    with open("/proc/stat") as stream:
        fields = [int(value) for value in stream.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / CLOCK_TICKS, fields[7] / CLOCK_TICKS


def _boottime():
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    with open(f"/proc/{pid}/stat", "rb") as stream:
        return stream.read().rsplit(b")", 1)[1].split()


def _high_water_kb(pid):
    with open(f"/proc/{pid}/status", "rb") as stream:
        for line in stream:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return 0  # a zombie has no memory left to report


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as stream:
        return stream.read().replace(b"\0", b" ").decode(errors="replace").strip()


def _children_by_parent():
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parent = int(_stat_fields(name)[1])
            except (OSError, IndexError):
                continue  # exited while listing
            children.setdefault(parent, []).append(int(name))
    return children


class JobWatcher(threading.Thread):
    """Follows ``root_pid`` and every process below it until ``stop()``; see the module docstring."""

    def __init__(self, root_pid, interval=0.1):
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.processes = {}
        self.root_peak_rss_kb = 0
        self._pidfds = {}
        self._poll = select.poll()
        self._stopping = threading.Event()

    def stop(self):
        self._stopping.set()
        self.join()
        for descriptor in self._pidfds:
            os.close(descriptor)

    def run(self):
        while not self._stopping.is_set():
            self._discover()
            self._sample()
            for descriptor, _ in self._poll.poll(self.interval * 1000):
                process = self._pidfds[descriptor]
                if process.end is None:
                    process.end = _boottime()
                    self._poll.unregister(descriptor)

    def _discover(self):
        tree = _children_by_parent()
        pending = list(tree.get(self.root_pid, []))
        while pending:
            pid = pending.pop()
            pending.extend(tree.get(pid, []))
            if pid in self.processes:
                continue
            try:
                descriptor = os.pidfd_open(pid)
                start = int(_stat_fields(pid)[19]) / CLOCK_TICKS
            except (OSError, IndexError):
                continue  # gone already: shorter than one interval, nothing to measure
            self.processes[pid] = process = JobProcess(pid, None, start)
            self._pidfds[descriptor] = process
            self._poll.register(descriptor, select.POLLIN)

    def _sample(self):
        try:
            self.root_peak_rss_kb = max(self.root_peak_rss_kb, _high_water_kb(self.root_pid))
        except OSError:
            pass  # exited
        for process in self.processes.values():
            if process.end is not None:
                continue
            try:
                if process.rule is None:
                    # Read until the forked child has exec'd the job script. Until then its
                    # high-water mark is the Snakemake process's it was forked from: drop it.
                    match = JOB_SCRIPT.search(_cmdline(process.pid))
                    if match:
                        process.rule, process.peak_rss_kb = match.group(1), 0
                process.peak_rss_kb = max(process.peak_rss_kb, _high_water_kb(process.pid))
            except OSError:
                pass

    def jobs(self):
        return [process for process in self.processes.values() if process.rule is not None]

    def max_rss_kb(self):
        return max([self.root_peak_rss_kb] + [process.peak_rss_kb for process in self.processes.values()])


def meminfo_kb():
    """``/proc/meminfo`` as a dict of kB values."""
    return {name: int(value.split()[0]) for name, value in
            (line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())}


def run_measured(command, log_path, cwd=None, env=None, write_back=False):
    """Run ``command`` with its output in ``log_path``; raise with the log's tail if it fails.

    ``write_back``: then time a ``sync``, the rest of the work of putting the command's files
    on disk. The kernel writes dirty pages back in the background once they pass
    ``vm.dirty_background_ratio`` of memory, so a command may end with its files still in
    memory (a fast single process) or have paid for much of that writing already (a run that
    keeps every core busy while the writeback takes its share of them).
    """
    with open(log_path, "w") as log:
        started = time.monotonic()
        start_since_boot = _boottime()
        busy_before, stolen_before = _busy_and_stolen_seconds()
        # Its own process group, so an interrupted benchmark stops the whole run (Snakemake's jobs too).
        process = subprocess.Popen([str(part) for part in command], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=cwd, env=env, start_new_session=True)
        watcher = JobWatcher(process.pid)
        watcher.start()
        try:
            # wait4 instead of Popen.wait: the rusage of this child and its descendants.
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.monotonic() - started
            busy, stolen = _busy_and_stolen_seconds()
            busy, stolen = busy - busy_before, stolen - stolen_before
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            watcher.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        with open(log_path, errors="replace") as stream:
            tail = stream.read()[-3000:]
        raise RuntimeError(f"{' '.join(map(str, command))} exited {process.returncode}; log {log_path}:\n{tail}")
    cpu_seconds = usage.ru_utime + usage.ru_stime
    run = Run([str(part) for part in command], wall, watcher.max_rss_kb(), cpu_seconds, usage.ru_stime,
              max(0.0, busy - cpu_seconds) / wall, stolen / wall, watcher.root_peak_rss_kb, start_since_boot,
              watcher.jobs())
    if write_back:
        run.dirty_mb = meminfo_kb()["Dirty"] / 1024  # page-cache data not yet written to disk
        synced = time.monotonic()
        os.sync()
        run.sync_seconds = time.monotonic() - synced
    return run


def drop_tree(path):
    """Remove a directory tree and flush the file system."""
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--", str(path)], check=True)
    os.sync()


class RunDirectories:
    """A fresh, empty run directory for every run, without deleting files just before a timed run.

    On ext4 without a journal (as here) a deleted inode counts as "recently deleted" for
    60 s, or 360 s while its inode-table block is dirty, and every file creation scans
    past such inodes (``find_inode_bit``/``recently_deleted`` took 80-90 % of ``tar -x``'s
    time in ``perf``): ``tar -x`` of 60,000 files took 45-61 s right after deleting such a
    tree, 20-33 s a minute later and 2.9 s six minutes later. So the previous run
    directory is renamed into a trash directory,
    the trash is emptied only when it would outgrow ``trash_bytes``, and a run that
    follows a deletion first waits ``settle`` seconds from its end. The time of the last
    deletion is kept in a file, so a benchmark started right after another one waits too.
    """

    def __init__(self, root, trash_bytes, settle):
        self.root = Path(root)
        self.current = self.root / "run"
        self.trash = self.root / "trash"
        self.trash_bytes, self.settle_seconds = trash_bytes, settle
        self.stamp = self.root / "last_bulk_delete"
        self.in_trash = 0
        self.trash.mkdir(parents=True, exist_ok=True)
        if any(self.trash.iterdir()) or self.current.exists():
            self.empty()  # left by an interrupted benchmark

    def fresh(self, allocated_bytes=0):
        """Move the current run directory (``allocated_bytes`` on disk) to the trash; return a new empty one."""
        if self.current.exists():
            os.rename(self.current, self.trash / f"{len(os.listdir(self.trash)):04d}")
            self.in_trash += allocated_bytes
        os.sync()  # the previous run's dirty pages are not written back during the next run
        self.current.mkdir()
        return self.current

    def make_room(self, upcoming_bytes):
        """Empty the trash if ``upcoming_bytes`` more would outgrow the budget or the free space."""
        free = shutil.disk_usage(self.root).free
        if self.in_trash and (self.in_trash + upcoming_bytes > self.trash_bytes or upcoming_bytes > free - (5 << 30)):
            self.empty()

    def empty(self):
        drop_tree(self.trash)
        drop_tree(self.current)
        self.trash.mkdir()
        self.in_trash = 0
        self.stamp.write_text(f"{time.time()}\n")

    def settle(self):
        """Wait until ``settle`` seconds have passed since the last bulk deletion; return the seconds waited."""
        try:
            deleted_at = float(self.stamp.read_text())
        except FileNotFoundError:
            return 0.0
        wait = deleted_at + self.settle_seconds - time.time()
        if wait > 0:
            time.sleep(wait)
        return max(wait, 0.0)


def read_through(*paths):
    """Read files once, so every contender starts with its input in the page cache."""
    buffer = bytearray(8 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as stream:
            while stream.readinto(buffer):
                pass


def evict(*paths):
    """Drop files' pages from the page cache (POSIX_FADV_DONTNEED, no root needed), so the next
    contender reads them from disk; their directory entries and inodes stay cached."""
    os.sync()  # only clean pages can be dropped
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def say(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_benchmarks(root, earlier):
    """Snakemake's benchmark files below ``root``, but for those in ``earlier``, as ``[{rule, s, max_rss_mb}]``."""
    rules = ("extract_chunk", "write_shard", "reformat_bin", "verify_bin")
    entries = []
    for path in sorted(set(Path(root).rglob("*.tsv")) - earlier):
        rule = next((part for part in path.relative_to(root).parts if part in rules), "other")
        header, values = path.read_text().splitlines()[:2]
        row = dict(zip(header.split("\t"), values.split("\t")))
        entries.append({"rule": rule, "s": float(row["s"]), "max_rss_mb": float(row["max_rss"])})
    return entries


def run_record(run):
    return {"wall": run.wall, "max_rss_kb": run.max_rss_kb, "cpu_seconds": run.cpu_seconds,
            "system_seconds": run.system_seconds, "background_cpus": run.background_cpus,
            "stolen_cpus": run.stolen_cpus, "dirty_mb": run.dirty_mb, "sync_seconds": run.sync_seconds,
            # Until the files are on disk: the run, then the sync that writes back what it left in memory.
            "on_disk": None if run.sync_seconds is None else run.wall + run.sync_seconds}


def workflow_record(run, benchmarks, cores):
    jobs = [{"rule": job.rule, "seconds": job.seconds, "peak_rss_kb": job.peak_rss_kb,
             "start": job.start - run.start} for job in run.jobs]
    job_seconds = sum(job["seconds"] for job in jobs)
    return run_record(run) | {
        "cores": cores,
        "snakemake_peak_rss_kb": run.command_peak_rss_kb,
        "jobs": jobs,
        "benchmarks": benchmarks,
        # Time no job was using a core: start-up, DAG and checkpoint re-evaluation, scheduling gaps.
        "overhead": run.wall - job_seconds / cores,
        "first_job_after": min((job["start"] for job in jobs), default=None),
        # Snakemake's exit: the teardown of its modules, and the wait for the 1 s timer
        # (--max-jobs-per-timespan's smallest timespan) of its last scheduling pass.
        "exit_after_last_job": run.wall - max((job["start"] + job["seconds"] for job in jobs), default=0.0),
    }


def listing(root):
    """(file count, bytes, bytes allocated on disk, digest of the sorted 'label/name size' lines) of a tree,
    but the workflow's owner file, which tar's tree has not."""
    lines = []
    total = allocated = 0
    with os.scandir(root) as labels:
        for label in labels:
            if label.name == OWNER_FILE:
                continue
            allocated += label.stat().st_blocks * 512
            with os.scandir(label.path) as files:
                for entry in files:
                    stat = entry.stat()
                    total += stat.st_size
                    allocated += stat.st_blocks * 512
                    lines.append(f"{label.name}/{entry.name} {stat.st_size}\n")
    lines.sort()
    return len(lines), total, allocated, hashlib.sha256("".join(lines).encode()).hexdigest()
