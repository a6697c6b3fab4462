"""The machine a benchmark ran on, recorded beside its results."""

import os
import platform
from pathlib import Path

from measure import meminfo_kb

BENCH_DIR = Path(__file__).resolve().parent


def machine():
    """CPUs, memory, kernel, Python, the filesystem holding the bench's work and the write-back
    threshold, as results.json records them."""
    vmstat = {name: int(value) for name, value in (line.split() for line in Path("/proc/vmstat").read_text().splitlines())}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gb": round(meminfo_kb()["MemTotal"] / 1024 ** 2, 1),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": filesystem_type(BENCH_DIR),
        "dirty_background_ratio": int(Path("/proc/sys/vm/dirty_background_ratio").read_text()),
        "dirty_background_mb": round(vmstat["nr_dirty_background_threshold"] * os.sysconf("SC_PAGE_SIZE") / 2**20),
    }


def filesystem_type(path):
    """The type of the filesystem mounted deepest above ``path`` (from /proc/mounts)."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount_point, fs_type = line.split()[:3]
        if str(path).startswith(mount_point) and len(mount_point) > len(best):
            best, kind = mount_point, fs_type
    return kind
