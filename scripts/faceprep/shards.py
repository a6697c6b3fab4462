"""A dataset's shards: how many images each holds, their names, and the writer of one
chunk's shards. The formats themselves are faceprep.outputs' modules.

A chunk's images are cut into shards of ``shard_size`` images or fewer (as equal as
possible), never across chunks, so that each chunk job writes and resumes its own shards;
shards are numbered through the dataset. ``shard_size: auto`` keeps a shard at or below
LARGEST_SHARD_BYTES and makes at least MANY_SHARDS of them once the dataset holds
MANY_SHARDS_FROM images or more: a loader needs at least as many shards as nodes times
DataLoader workers (webdataset yields nothing to a worker without one).

A chunk's writer writes each shard to a temporary name and renames it when it is full; its
summary (every shard's file, images, bytes, SHA-256) is written last, the mark that the
chunk's shards are done.
"""

import math
import os
import re

import numpy as np

from faceprep.atomic import CommitOnExit, write_atomically, write_json
from faceprep.outputs import SHARD_FORMATS

# Rows gathered at a time by write_shuffled_rows.
ROWS_BLOCK = 1 << 20
# shard_size 'auto'. 256 MB: a shard streams in a second or two and a lost one costs little;
# below MANY_SHARDS_FROM images, shards of SMALL_SHARD_IMAGES still let several workers read.
LARGEST_SHARD_BYTES = 256 << 20
MANY_SHARDS, MANY_SHARDS_FROM, SMALL_SHARD_IMAGES = 64, 64_000, 1000


def shard_file_name(dataset, shard, shard_format):
    return f"{dataset}-{shard:05d}.{SHARD_FORMATS[shard_format].extension}"


def shard_file_pattern(dataset, shard_format):
    """A glob pattern matching every ``shard_file_name`` of ``dataset`` in ``shard_format``
    (dataset names hold no glob characters), and a few more names: a glob cannot say
    "digits only". The ownership check refuses a directory nobody owns holding any of them."""
    return f"{dataset}-[0-9]*.{SHARD_FORMATS[shard_format].extension}"


def shard_file_regex(dataset, shard_format):
    """A regular expression matching exactly the names ``shard_file_name`` can give ``dataset``
    in ``shard_format``: what the verification takes for a shard (and ``remove_unlisted`` may
    delete), never a user's file beside them."""
    return re.compile(rf"{re.escape(dataset)}-\d+\.{re.escape(SHARD_FORMATS[shard_format].extension)}")


def auto_shard_size(images, image_bytes, shard_format):
    """Images per shard for ``shard_size: auto``, for ``images`` of ``image_bytes`` in all."""
    per_image = image_bytes / max(images, 1) + SHARD_FORMATS[shard_format].bytes_per_image
    wanted = MANY_SHARDS if images >= MANY_SHARDS_FROM else math.ceil(images / SMALL_SHARD_IMAGES)
    count = max(wanted, math.ceil(images * per_image / LARGEST_SHARD_BYTES), 1)
    return max(1, math.ceil(images / count))


def plan_shards(plan, shard_size, shard_format):
    """Per chunk of ``plan``, the image counts of its shards, in order (shard ``n`` of the
    dataset is the ``n``-th of these). ``shard_size``: images, or ``"auto"``."""
    if shard_size == "auto":
        # A plan of an earlier version has no rec_bytes: then the image count alone sizes shards.
        shard_size = auto_shard_size(plan["images"], plan.get("rec_bytes", 0), shard_format)
    shards = []
    for start, end in plan["chunks"]:
        images = end - start
        count = math.ceil(images / shard_size)
        shards.append([images * (part + 1) // count - images * part // count for part in range(count)])
    return shards


def first_shard_of(shard_sizes, chunk):
    """The dataset-wide number of chunk ``chunk``'s first shard."""
    return sum(len(sizes) for sizes in shard_sizes[:chunk])


class ChunkShards(CommitOnExit):
    """A chunk's images as its shards of one format: the first ``sizes[0]`` images written go
    to shard ``first``, the next ``sizes[1]`` to shard ``first + 1``, and so on. ``close``
    writes the summary ``{"format", "images", "shards": [per shard: file, images, bytes,
    sha256]}`` to ``summary_path``."""

    def __init__(self, shard_format, directory, dataset, first, sizes, classes, summary_path):
        self.shard_format, self.directory, self.dataset = shard_format, directory, dataset
        self.first, self.sizes, self.classes, self.summary_path = first, list(sizes), classes, summary_path
        self.shards, self.images = [], 0
        self._current = None

    def _path(self, number):
        return os.path.join(self.directory, shard_file_name(self.dataset, self.first + number, self.shard_format))

    def write(self, key, label, image):
        if self._current is None or self._current.images == self.sizes[len(self.shards)]:
            if self._current is not None:
                self.shards.append(self._current.close())
            if len(self.shards) == len(self.sizes):
                raise ValueError(f"{self.summary_path}: more images than the {sum(self.sizes)} planned")
            self._current = SHARD_FORMATS[self.shard_format].writer(self._path(len(self.shards)), self.classes)
        self._current.write(key, label, image)
        self.images += 1

    def close(self):
        if self._current is not None:
            self.shards.append(self._current.close())
            self._current = None
        written = [shard["images"] for shard in self.shards]
        if written != self.sizes:
            raise ValueError(f"{self.summary_path}: wrote shards of {written} images, planned {self.sizes}")
        write_json(self.summary_path, {"format": self.shard_format, "images": self.images, "shards": self.shards})

    def abort(self):
        if self._current is not None:
            self._current.abort()

    @property
    def size(self):
        return sum(shard["bytes"] for shard in self.shards)


def write_shuffled_rows(rows_path, shuffled_path, seed):
    """Write a plan's image rows in the order of a permutation seeded with ``seed``, so that
    the plan's chunk ``[start, end)`` of the result is a random subset of the images.

    The permutation takes 8 bytes an image; rows are gathered from a mapping ROWS_BLOCK at a time.
    """
    rows = np.load(rows_path, mmap_mode="r")
    order = np.random.default_rng(seed).permutation(len(rows))

    def write(stream):
        np.lib.format.write_array_header_1_0(
            stream, {"descr": np.lib.format.dtype_to_descr(rows.dtype), "fortran_order": False, "shape": rows.shape}
        )
        for start in range(0, len(order), ROWS_BLOCK):
            stream.write(np.ascontiguousarray(rows[order[start : start + ROWS_BLOCK]]).tobytes())

    write_atomically(shuffled_path, write)
