"""Several writers of one rec, as parts on several machines over NFS: each locks the bytes
it writes, a filesystem that cannot lock still gets the same rec (with a warning), and on NFS
each writer drops its machine's cached pages of the rec once they are on disk."""

import errno
import fcntl
import logging
import os
import subprocess
import sys

import pytest

from faceprep import atomic
from faceprep.errors import OutputError
from faceprep.insightface import IM2REC, INSIGHTFACE, iter_images_in_order
from faceprep.outputs.rec import PARTIAL, RecPartWriter, first_image_key
from rec_samples import order_source, write_rec


# Another process taking a write lock on bytes [argv[2], argv[3]) of file argv[1]: exit 1 if
# it is held, else 0; with argv[4], it keeps the lock until its stdin closes.
LOCKER = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_WRONLY)
begin, end = int(sys.argv[2]), int(sys.argv[3])
try:
    fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, end - begin, begin)
except OSError:
    sys.exit(1)
if len(sys.argv) > 4:
    print("locked", flush=True)
    sys.stdin.read()
"""


def locked_elsewhere(path, begin, end):
    """Whether bytes [begin, end) of ``path`` are under a write lock that another process cannot take."""
    return subprocess.run([sys.executable, "-c", LOCKER, str(path), str(begin), str(end)]).returncode == 1


def test_each_writer_of_the_partial_rec_holds_a_lock_on_just_the_bytes_it_writes(sparse_rec, tmp_path, monkeypatch):
    """Parts may run on several machines over NFS, whose client widens a write to the page
    around it unless the file holds byte-range locks: each part holds a write lock on its own
    range while it writes, the assembly on the header and identity records, and together the
    ranges cover the rec once. A range another process holds stops a part, naming it."""
    plan, ordered, offsets, classes = order_source(sparse_rec, tmp_path / "work", INSIGHTFACE)
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    partial = rec_dir / PARTIAL
    start, end = plan["chunks"][1]
    begin, stop = int(offsets[start]), int(offsets[end])
    with RecPartWriter(partial, rec_dir / "part.npz", ordered[start:end], first_image_key(INSIGHTFACE) + start,
                       classes, offsets[start : end + 1]) as writer:
        assert locked_elsewhere(partial, begin, begin + 1) and locked_elsewhere(partial, stop - 1, stop)
        assert not locked_elsewhere(partial, begin - 1, begin) and not locked_elsewhere(partial, stop, stop + 1)
        for record in iter_images_in_order(sparse_rec / "train.rec", sparse_rec / "train.idx", ordered[start:end, :2]):
            writer.write(*record)
    assert not locked_elsewhere(partial, begin, stop)

    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(partial), str(stop - 8), str(stop + 8), "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputError, match=rf"bytes {begin}..{stop} are being written by another process"):
            RecPartWriter(partial, rec_dir / "part.npz", ordered[start:end], first_image_key(INSIGHTFACE) + start,
                          classes, offsets[start : end + 1])
    finally:
        holder.communicate("")

    locked = []
    lock_range = atomic._lock_range
    monkeypatch.setattr(atomic, "_lock_range", lambda descriptor, name, first, last: (
        locked.append((first, last)), lock_range(descriptor, name, first, last)))
    write_rec(sparse_rec, tmp_path / "whole", INSIGHTFACE)
    rec_bytes = (tmp_path / "whole" / "rec" / "train.rec").stat().st_size
    assert len(locked) == len(plan["chunks"]) + 2  # the parts, the header, the identity records
    covered = 0
    for first, last in sorted(locked):
        assert first == covered < last
        covered = last
    assert covered == rec_bytes


@pytest.mark.parametrize("answer", [errno.ENOLCK, errno.ENOSYS])
def test_where_the_filesystem_cannot_lock_the_rec_is_written_alike_with_a_warning(sparse_rec, tmp_path, monkeypatch,
                                                                                   caplog, answer):
    write_rec(sparse_rec, tmp_path / "locked", IM2REC)

    def refuse(*args):
        raise OSError(answer, os.strerror(answer))

    monkeypatch.setattr(fcntl, "lockf", refuse)
    with caplog.at_level(logging.WARNING, "faceprep.atomic"):
        write_rec(sparse_rec, tmp_path / "unlocked", IM2REC)
    assert (tmp_path / "unlocked" / "rec" / "train.rec").read_bytes() == (
        tmp_path / "locked" / "rec" / "train.rec").read_bytes()
    assert caplog.records and all("cannot lock bytes" in record.getMessage() and "NFS" in record.getMessage()
                                  for record in caplog.records)


def test_on_nfs_each_writer_drops_its_machines_cached_pages_of_the_rec_once_they_are_on_disk(sparse_rec, tmp_path,
                                                                                              monkeypatch):
    """A machine that wrote part of a page over NFS may keep zeros in its cache where another
    machine wrote the rest: on NFS (by the filesystem's type) every part and the assembly drop
    the file's cached pages after syncing; elsewhere nothing is dropped."""
    advised = []
    advise = os.posix_fadvise

    def spy(descriptor, offset, length, advice):
        advised.append((offset, length, advice))
        advise(descriptor, offset, length, advice)

    monkeypatch.setattr(atomic.os, "posix_fadvise", spy)
    write_rec(sparse_rec, tmp_path / "local", INSIGHTFACE)
    assert advised == []
    descriptor = os.open(tmp_path / "local" / "rec" / "train.rec", os.O_RDONLY)
    try:  # this machine's filesystem, read from fstatfs: a known type, not NFS
        assert atomic._filesystem_type(descriptor) not in (None, 0x6969)
    finally:
        os.close(descriptor)
    monkeypatch.setattr(atomic, "_filesystem_type", lambda descriptor: 0x6969)  # NFS_SUPER_MAGIC
    summary, ordered, sizes = write_rec(sparse_rec, tmp_path / "nfs", INSIGHTFACE)
    chunks = len(order_source(sparse_rec, tmp_path / "plan", INSIGHTFACE)[0]["chunks"])
    assert advised == [(0, 0, os.POSIX_FADV_DONTNEED)] * (chunks + 1)
    assert (tmp_path / "nfs" / "rec" / "train.rec").read_bytes() == (tmp_path / "local" / "rec" / "train.rec").read_bytes()
