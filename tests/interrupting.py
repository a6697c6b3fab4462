"""Interrupting workflow runs from tests: a run started in its own process group, stopped whole
to look at its jobs in /proc, killed or signalled at a chosen point, and jobs held before or
inside a write by named pipes (Barrier, WriteHold), on a fast or a slow machine alike."""

import contextlib
import fcntl
import os
import platform
import re
import select
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from workflow import REPO, snakemake_command


def _interruptible():
    # A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored
    # across exec: restore the default, so Ctrl-C reaches snakemake as from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_workflow(workdir, configfile, *args, cores=2, log_path=None):
    """Start snakemake in its own process group (so a test can kill the whole run)."""
    output = open(log_path, "w") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        snakemake_command(workdir, configfile, *args, cores=cores),
        cwd=REPO,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_interruptible,
    )


def kill_group(process, sig=signal.SIGKILL, timeout=60):
    """Send ``sig`` to the whole run and wait for snakemake; after a SIGKILL, also until no
    process of the run is left alive, so that none still holds a file the test looks at."""
    os.killpg(process.pid, sig)
    process.wait()
    if sig != signal.SIGKILL:
        return
    deadline = time.monotonic() + timeout
    while any(state not in "ZX" for state in _group_states(process.pid).values()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the killed run still has processes after {timeout} s: {_group_states(process.pid)}")
        time.sleep(0.001)


# Snakemake runs a rule's script as `python <workdir>/.snakemake/scripts/tmp<random>.<script name>`.
RULE_SCRIPT = re.compile(rb"/\.snakemake/scripts/tmp\w+\.(\w+)\.py\b")


@dataclass(frozen=True)
class JobProcess:
    """A process of a snakemake run that executes a rule script, and the files it holds open."""

    pid: int
    script: str  # the script's name without .py; the rules here name their scripts after themselves
    open_files: frozenset


def _group_processes(pgid):
    """``{pid: (state letter, parent pid)}`` of every process in process group ``pgid`` (from /proc)."""
    processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stream:
                    # The command name in parentheses may hold spaces: split after it.
                    state, parent, group = stream.read().rsplit(")", 1)[1].split()[:3]
            except OSError:  # it exited meanwhile
                continue
            if int(group) == pgid:
                processes[int(entry.name)] = (state, int(parent))
    return processes


def _group_states(pgid):
    """``{pid: state letter}`` of every process in process group ``pgid``."""
    return {pid: state for pid, (state, _) in _group_processes(pgid).items()}


def _frozen(processes):
    """Whether no process of ``processes`` (``_group_processes``) can run any more: each is
    stopped, or waits uninterruptibly (D) for a child that is stopped. CPython starts
    subprocesses with vfork: a parent whose child was stopped before its exec waits in D
    until the child goes on, so it never reaches the stopped state itself."""
    stopped = {pid for pid, (state, _) in processes.items() if state in "TtZX"}
    parents_of_stopped = {parent for pid, (_, parent) in processes.items() if pid in stopped}
    return all(pid in stopped or (state == "D" and pid in parents_of_stopped) for pid, (state, _) in processes.items())


def _open_files(pid):
    paths = set()
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            paths.add(os.readlink(f"/proc/{pid}/fd/{descriptor}"))
    return frozenset(paths)


def running_jobs(process):
    """The rule-script processes alive in the process group of ``process`` (a start_workflow run)."""
    jobs = []
    for pid, state in _group_states(process.pid).items():
        if state in "ZX":
            continue
        try:
            match = RULE_SCRIPT.search(Path(f"/proc/{pid}/cmdline").read_bytes())
            if match:
                jobs.append(JobProcess(pid, match.group(1).decode(), _open_files(pid)))
        except OSError:  # it exited meanwhile
            continue
    return jobs


def running_chunks(jobs, dataset):
    """The chunk numbers of ``dataset``'s extract_chunk jobs among ``jobs`` (running_jobs()),
    from the chunk log each holds open."""
    log = re.compile(rf"/logs/{re.escape(dataset)}/extract_chunk/(\d+)\.log$")
    return sorted(
        int(match.group(1))
        for job in jobs if job.script == "extract_chunk"
        for match in filter(None, map(log.search, job.open_files))
    )


def kill_when(run, evidence, pause, timeout=300, screen=False, meanwhile=None):
    """SIGKILL ``run`` (a start_workflow run) at the first check that finds ``evidence``;
    return ``(what evidence returned, the jobs killed)``, or None if the run ended first.

    Before each check the test waits ``pause()`` seconds; the check stops the whole run
    (stop_group), so ``evidence(jobs)`` (running_jobs()) sees exactly what the kill hits,
    and continues the run when it returns None. ``screen``: first test ``evidence`` on the
    running run and stop it only when it holds, for checks too frequent to stop the run at each.
    ``meanwhile(jobs)``: called before each check with the run going; it may act on the run
    (e.g. release a Barrier).
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            time.sleep(pause())
            assert time.monotonic() < deadline, f"the run neither ended nor showed the evidence in {timeout} s"
            if run.poll() is not None:
                return None
            if meanwhile is not None:
                meanwhile(running_jobs(run))
            if screen and not evidence(running_jobs(run)):
                continue
            stop_group(run)
            jobs = running_jobs(run)
            found = evidence(jobs)
            if found:
                kill_group(run)
                return found, jobs
            continue_group(run)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            kill_group(run)  # a failed test leaves no run behind, stopped or not
        raise


def stop_group(process, timeout=60):
    """SIGSTOP the whole run and wait until every process of it has stopped.

    From then on nothing of the run changes, so what a test sees on disk and in /proc
    is exactly what a SIGKILL sent now hits (a process inside a system call, e.g.
    fsync, stops when the call returns, before its next instruction).
    """
    os.killpg(process.pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not _frozen(_group_processes(process.pid)):
        if time.monotonic() > deadline:
            raise AssertionError(f"the run did not stop within {timeout} s: {_group_states(process.pid)}")
        time.sleep(0.001)


def continue_group(process):
    os.killpg(process.pid, signal.SIGCONT)


# futex(2), the system call a thread waiting on a Python lock or semaphore blocks in.
FUTEX = {"x86_64": 202, "aarch64": 98}


def _waits_indefinitely(pid):
    """Whether the main thread of ``pid`` is blocked in futex(2) with no timeout, as it is
    waiting on a Python lock or semaphore (from /proc/<pid>/task/<pid>/syscall: number, then
    the arguments; the 4th is the timeout). A thread waiting for the GIL waits with a timeout."""
    machine = platform.machine()
    assert machine in FUTEX, f"the futex(2) system call number on {machine} is not known here"
    fields = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
    return len(fields) > 4 and fields[0] == str(FUTEX[machine]) and int(fields[4], 16) == 0


def signal_while_waiting(run, send, timeout=120):
    """Call ``send()`` (it signals snakemake) while snakemake does nothing but wait for its
    jobs, then let snakemake go on; its jobs stay stopped (continue_group() lets them go).

    The run is stopped whole (stop_group); when snakemake's main thread was then blocked on a
    lock with no timeout, with every job of the run stopped, the one lock it can be waiting on is
    its scheduler's, which only a job's end (or its 1 s rescheduling timer) releases: the signal
    sent now is handled there, on snakemake's continuing, and not inside its logging or its
    scheduler's lock (snakemake 9.27.1 drops a Ctrl-C that lands while it writes a log line, and
    hangs on a SIGTERM that lands while it holds that lock). Otherwise snakemake alone goes on
    for a moment, and the run is stopped again.
    """
    deadline = time.monotonic() + timeout
    while True:
        stop_group(run)
        if _waits_indefinitely(run.pid):
            break
        os.kill(run.pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            raise AssertionError(f"snakemake was not seen waiting for its jobs within {timeout} s")
        time.sleep(0.01)
    send()
    os.kill(run.pid, signal.SIGCONT)


def wait_for_line(path, text, process, timeout=120):
    """Wait until the log at ``path`` of ``process`` holds ``text``."""
    deadline = time.monotonic() + timeout
    while text not in Path(path).read_text():
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"{path} did not show {text!r} (snakemake exit code {process.poll()}):\n"
                                 f"{Path(path).read_text()[-3000:]}")
        time.sleep(0.01)


def _replace_with_file(path, data):
    """Put a regular file holding ``data`` at ``path`` in one step (replacing a named pipe)."""
    with tempfile.NamedTemporaryFile(dir=Path(path).parent, prefix=".replacing-", delete=False) as stream:
        stream.write(data)
    os.replace(stream.name, path)


def _drain(descriptor):
    """Read a pipe opened O_NONBLOCK whose writers are gone, to its end."""
    data = bytearray()
    while chunk := os.read(descriptor, 1 << 16):
        data += chunk
    return bytes(data)


class Barrier:
    """A named pipe at a path where a job will open a file for writing. Nobody reads it, so the
    job's open() blocks: the job is held just before that file for as long as the test wants,
    on a fast or a slow machine alike.

    ``release()`` lets the job through; ``remove()`` takes the pipe away (after a kill: the job
    never got past its open(), so there is no file, as a kill just before it leaves none).
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.path)

    def release(self, timeout=120):
        """Let the job open the file; take what it writes there until it closes it, and leave
        those bytes at the path as a regular file, what the job would have left. Returns them."""
        reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(reader, select.POLLIN)
            deadline = time.monotonic() + timeout
            data = bytearray()
            # Linux reports POLLHUP on a pipe's read end only after a writer has opened and
            # closed it: until the job comes (its open() now returns at once), poll sees nothing.
            while True:
                events = 0
                for _, event in poller.poll(100):
                    events |= event
                if events & select.POLLHUP:
                    data += _drain(reader)
                    break
                if events & select.POLLIN:
                    data += os.read(reader, 1 << 16)  # as it comes: the job's write may exceed the pipe
                if time.monotonic() > deadline:
                    raise AssertionError(f"no job wrote and closed {self.path} within {timeout} s")
        finally:
            os.close(reader)
        _replace_with_file(self.path, bytes(data))
        return bytes(data)

    def remove(self):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISFIFO(os.lstat(self.path).st_mode):
                os.unlink(self.path)


class WriteHold:
    """A named pipe at a path a job writes (a ``.tmp``), held open for reading by the test,
    which never reads it, its capacity one page: the job opens the file, writes a page and
    blocks inside write() with the file open, mid-write, until the run is killed.

    ``settle()``, once the run is gone, leaves at the path a regular file holding what the job
    had written, what a kill mid-write leaves behind; or no file if no job opened it.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.path)
        self._reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(self._reader, fcntl.F_SETPIPE_SZ, os.sysconf("SC_PAGE_SIZE"))

    def settle(self):
        if self._reader is None:
            return
        try:
            poller = select.poll()
            poller.register(self._reader, select.POLLIN)
            # POLLHUP: a writer came and is gone (Barrier.release); nothing: none came.
            opened = any(events & select.POLLHUP for _, events in poller.poll(0))
            data = _drain(self._reader) if opened else None
        finally:
            os.close(self._reader)
            self._reader = None
        if data is None:
            os.unlink(self.path)
        else:
            _replace_with_file(self.path, data)


def kill_job_held_at(path, workdir, configfile, script, log_path):
    """Run the workflow with one core, a Barrier at ``path`` holding the job that opens it,
    and SIGKILL the run once a job of ``script`` is seen (held there, or earlier in its work);
    the barrier is gone afterwards, as a kill before that open leaves no file."""
    barrier = Barrier(path)
    try:
        run = start_workflow(workdir, configfile, cores=1, log_path=log_path)
        killed = kill_when(run, lambda jobs: [job for job in jobs if job.script == script], pause=lambda: 0.05)
        assert killed, Path(log_path).read_text()[-3000:]
    finally:
        barrier.remove()
