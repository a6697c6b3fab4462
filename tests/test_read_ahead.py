"""faceprep.read_ahead: a helper process starts only once reads are slow, asks for the files the
reader takes next and no further ahead than allowed, and is gone once the reader is done; a
tree read with it yields the same records."""

import time

import numpy as np
import pytest

from faceprep import read_ahead
from faceprep.demo import encode_image
from faceprep.read_ahead import ReadAhead
from faceprep.sources.tree import iter_tree_images, plan_tree


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
    plan_tree(root, 100, tmp_path / "rows.npy", tmp_path / "names.txt", tmp_path / "skipped.tsv")
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
