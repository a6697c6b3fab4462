"""faceprep.read_ahead: a helper process starts only once reads are slow, asks for the files the
reader takes next and no further ahead than allowed, and is gone once the reader is done; a
tree read with it yields the same records. A tree's plan and a rec re-packed in another order
ask for their next files or records once their reads are slow, and read the same."""

import logging
import os
import re
import threading
import time

import numpy as np
import pytest

from faceprep import read_ahead
from faceprep.demo import encode_image
from faceprep.insightface import IM2REC, DatasetWriter, iter_images_in_order
from faceprep.read_ahead import FilesAhead, RangesAhead, ReadAhead, SlowReads, will_need
from faceprep.record_index import read_index
from faceprep.sources.tree import iter_tree_images, plan_tree
from tree_samples import plan_files


def wait_for_lines(path, count, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            time.sleep(0.2)  # a helper going too far would write more by now
            return path.read_text().splitlines()
        time.sleep(0.01)
    pytest.fail(f"{path}: fewer than {count} lines after {seconds} s")


def test_fast_reads_start_no_helper():
    ahead = ReadAhead(lambda first: pytest.fail("no helper expected"), np.full(2000, 6000))
    for number in range(2000):
        ahead.read(number, 10e-6, 6000)
    assert ahead._helper is None


def test_one_slow_window_starts_no_helper(monkeypatch):
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 4)
    ahead = ReadAhead(lambda first: pytest.fail("no helper expected"), np.full(40, 100))
    for number in range(40):
        ahead.read(number, 1.0 if number in (4, 13, 21) else 1e-6, 100)  # never two windows in a row
    assert ahead._helper is None


def test_slow_reads_start_a_helper_that_keeps_its_distance_and_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 4)
    monkeypatch.setattr(read_ahead, "READ_AHEAD_BYTES", 350)  # 3 files of 100 bytes past the reader's
    paths = []
    for number in range(40):
        paths.append(tmp_path / f"{number}.bin")
        paths[-1].write_bytes(bytes(100))
    advised = tmp_path / "advised.txt"

    def paths_from(first):  # runs in the helper: each path is noted as it is asked for
        for path in paths[first:]:
            with open(advised, "a") as stream:
                stream.write(f"{path.name}\n")
            yield path

    with ReadAhead(paths_from, np.full(40, 100)) as ahead:
        for number in range(8):  # two slow windows: the helper starts at file 8
            ahead.read(number, 1.0, 100)
        assert wait_for_lines(advised, 4) == [f"{number}.bin" for number in range(8, 12)]
        for number in range(8, 11):  # the reader moves on to file 10: the helper to file 13
            ahead.read(number, 1.0, 100)
        assert wait_for_lines(advised, 6) == [f"{number}.bin" for number in range(8, 14)]
        helper = ahead._helper
        assert helper.is_alive()
    assert not helper.is_alive() and ahead._helper is None


def test_a_tree_read_ahead_yields_the_same_records(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    for identity in range(6):
        (root / f"id{identity}").mkdir(parents=True)
        for number in range(7):
            pixels = np.full((8, 8, 3), identity * 7 + number, np.uint8)
            (root / f"id{identity}" / f"{number}.jpg").write_bytes(encode_image(pixels))
    plan_tree(root, 100, *plan_files(tmp_path))
    rows = np.load(tmp_path / "rows.npy")[::-1]  # in another order than the names file's
    plain = list(iter_tree_images(root, tmp_path / "names.txt", rows))

    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 2)
    monkeypatch.setattr(read_ahead, "SLOW_READ_SECONDS", -1.0)  # every read is slow
    started, start = [], ReadAhead._start

    def noted_start(self, first):
        started.append(first)
        start(self, first)

    monkeypatch.setattr(ReadAhead, "_start", noted_start)
    ahead = list(iter_tree_images(root, tmp_path / "names.txt", rows))

    assert started == [4]
    assert ahead == plain
    assert [key for key, _, _ in plain] == rows[:, 0].tolist()
    assert [data for _, _, data in plain] == [(root / name).read_bytes() for name in
                                              np.array((tmp_path / "names.txt").read_text().splitlines())[rows[:, 0] - 1]]


def test_a_window_is_slow_when_most_of_its_reads_are_not_when_one_read_lost_its_core(monkeypatch):
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 4)
    reads = SlowReads()
    # One read of every window waited 0.5 s (its process lost the core): the window's total is
    # far over, but the reads did not come from a disk.
    assert not any(reads.read(0.5 if number % 4 == 0 else 10e-6, 6000) for number in range(40))
    assert not reads.slow
    made_slow = [reads.read(1e-3 if number % 4 else 10e-6, 6000) for number in range(8)]  # 3 of 4 slow
    assert made_slow == [False] * 7 + [True] and reads.slow
    assert reads.microseconds == pytest.approx((3 * 1000 + 10) / 4)  # the last window's mean


def test_files_ahead_asks_for_the_next_files_once_each_and_leaves_what_is_no_file_alone(monkeypatch):
    asked = []
    monkeypatch.setattr(read_ahead, "will_need", asked.append)
    monkeypatch.setattr(read_ahead, "FILES_AHEAD", 3)
    ahead = FilesAhead(["a", "b", None, "d", "e", "f"], first=1)
    ahead.reached(1)
    assert asked == ["b", "d"]  # 3 from b on: the directory between is left alone
    ahead.reached(2)
    assert asked == ["b", "d", "e"]
    ahead.reached(5)
    assert asked == ["b", "d", "e", "f"]


def test_will_need_does_not_wait_for_a_fifo_or_fail_on_a_missing_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = threading.Event()
    threading.Thread(target=lambda: (will_need(fifo), will_need(tmp_path / "missing"), done.set()), daemon=True).start()
    assert done.wait(10), "will_need waited for a writer of the FIFO"


def test_a_plan_whose_reads_are_slow_asks_for_each_directorys_files_ahead_and_plans_the_same(tmp_path, monkeypatch,
                                                                                           caplog):
    root = tmp_path / "tree"
    for identity in range(5):
        (root / f"id{identity}" / "nested").mkdir(parents=True)
        for number in range(9):
            pixels = np.full((8, 8, 3), identity * 9 + number, np.uint8)
            (root / f"id{identity}" / f"{number}.jpg").write_bytes(encode_image(pixels))
        (root / f"id{identity}" / "nested" / "0.jpg").write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8)))
        os.mkfifo(root / f"id{identity}" / "pipe")
    (root / "notes.txt").write_text("stray")

    def plan(out):
        out.mkdir()
        result = plan_tree(root, 100, *plan_files(out))
        return result, np.load(out / "rows.npy").tolist(), (out / "names.txt").read_bytes(), (out / "skipped.tsv").read_bytes()

    plain = plan(tmp_path / "plain")
    asked = []
    monkeypatch.setattr(read_ahead, "will_need", lambda path: asked.append(os.path.relpath(path, root)))
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 2)
    monkeypatch.setattr(read_ahead, "SLOW_READ_SECONDS", -1.0)  # every read is slow
    with caplog.at_level(logging.INFO, "faceprep.sources.tree"):
        assert plan(tmp_path / "ahead") == plain
    [message] = [record.getMessage() for record in caplog.records]
    assert re.fullmatch(rf"plan process \d+: reads took \d+ us a file, from disk \(after {re.escape(str(root))}/id0/2.jpg\): "
                        "it asks for each directory's next files before reading them", message), message
    images = set((tmp_path / "plain" / "names.txt").read_text().splitlines())
    assert len(images) == 50
    # Slow after 2 windows of 2 reads: the stray file (the root is read first), id0/0.jpg, 1 and 2.
    # From id0/3.jpg on every image is asked for once, the FIFOs and directories never.
    assert len(asked) == len(set(asked)) and set(asked) == images - {"id0/0.jpg", "id0/1.jpg", "id0/2.jpg"}


def test_ranges_ahead_asks_for_each_range_once_and_survives_a_refused_request(monkeypatch):
    asked = []

    def advise(descriptor, offset, length, advice):
        asked.append((descriptor, offset, length, advice))
        if offset == 300:
            raise OSError(22, "refused")

    monkeypatch.setattr(read_ahead.os, "posix_fadvise", advise)
    monkeypatch.setattr(read_ahead, "RANGES_AHEAD", 2)
    ahead = RangesAhead(7, [100, 200, 300, 400, 500], 64, first=1)
    ahead.reached(1)
    ahead.reached(2)
    ahead.reached(4)
    assert asked == [(7, offset, 64, os.POSIX_FADV_WILLNEED) for offset in (200, 300, 400, 500)]


def test_a_repack_whose_reads_are_slow_asks_for_the_next_records_ahead_and_reads_the_same(tmp_path, monkeypatch,
                                                                                         caplog):
    rng = np.random.default_rng(5)
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        for key in range(40):
            writer.add(key, float(key % 3), rng.integers(0, 256, int(rng.integers(100, 3000)), np.uint8).tobytes())
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    rows = read_index(idx)[rng.permutation(40)]
    plain = list(iter_images_in_order(rec, idx, rows))

    asked = []
    monkeypatch.setattr(read_ahead.os, "posix_fadvise", lambda descriptor, offset, length, advice: asked.append(offset))
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 2)
    monkeypatch.setattr(read_ahead, "RANGES_AHEAD", 3)
    monkeypatch.setattr(read_ahead, "SLOW_READ_SECONDS", -1.0)  # every read is slow
    with caplog.at_level(logging.INFO, "faceprep.insightface"):
        assert list(iter_images_in_order(rec, idx, rows)) == plain
    # Slow after 2 windows of 2 reads: from the 5th record on, each asked for once, in the order read.
    assert asked == rows[4:, 1].tolist()
    [message] = [record.getMessage() for record in caplog.records]
    assert re.fullmatch(rf"{re.escape(str(rec))}: reads took \d+ us a record: asking for the records from number 4 on ahead",
                        message), message


def test_without_posix_fadvise_slow_reads_ask_for_nothing_and_read_the_same(tmp_path, monkeypatch, caplog):
    """Where the system has no posix_fadvise (macOS), a re-pack and a plan whose reads are slow
    read as before, asking the kernel for nothing, and their logs say so."""
    with DatasetWriter(tmp_path, IM2REC, image_size=None) as writer:
        for key in range(12):
            writer.add(key, 0.0, bytes([key]) * 500)
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    rows = read_index(idx)[::-1]
    plain = list(iter_images_in_order(rec, idx, rows))
    monkeypatch.delattr(read_ahead.os, "posix_fadvise")
    monkeypatch.setattr(read_ahead, "CAN_ADVISE", False)
    monkeypatch.setattr(read_ahead, "READS_PER_CHECK", 2)
    monkeypatch.setattr(read_ahead, "SLOW_READ_SECONDS", -1.0)  # every read is slow
    with caplog.at_level(logging.INFO, "faceprep.insightface"):
        assert list(iter_images_in_order(rec, idx, rows)) == plain
    FilesAhead([str(rec)], 0).reached(0)
    root = tmp_path / "tree"
    (root / "id").mkdir(parents=True)
    for number in range(5):
        (root / "id" / f"{number}.jpg").write_bytes(encode_image(np.full((8, 8, 3), number, np.uint8)))
    (tmp_path / "plan").mkdir()
    with caplog.at_level(logging.INFO, "faceprep.sources.tree"):
        plan_tree(root, 100, *plan_files(tmp_path / "plan"))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2 and all(message.endswith(
        ": this system cannot be asked to read ahead (no posix_fadvise): it reads on as before") for message in messages)
    assert not any("asking" in message or "asks" in message for message in messages), messages
