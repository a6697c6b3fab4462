"""The whole dataset's audit from its chunks' (faceprep.audit.chunk): ``audit.json`` and
``exclude.txt``.

Byte-identical images are found by digest across every chunk without holding every row: the
chunks' rows are sorted by digest, so each of PARTITIONS digest ranges is a slice of every
chunk's rows file; one range at a time is read from every chunk, gathered and sorted. Memory follows the
largest range (1/256 of the rows: ~6.6 MB of 40-byte rows at 42.5 M images), not the dataset.

The kinds that only inform list their first LISTED entries by key (``not_plain_jpeg`` per
format), and ``counts`` gives every kind's total: an aligned set's few odd images are all
listed, while a set whose images are nearly all odd or PNG (VGGFace2's originals, DigiFace-1M)
keeps audit.json and the join's memory bounded (3.4 M odd sizes listed took 1.4 GB and 165 MB
of JSON). ``undecodable`` and ``eval_overlap`` are listed whole: exclude.txt needs each one.
"""

import json
import os
from collections import Counter

import numpy as np

from faceprep.atomic import write_bytes, write_json
from faceprep.audit.chunk import IMAGE_ROW
from faceprep.audit.images import image_digest
from faceprep.image_header import size_text

KINDS = ("undecodable", "not_plain_jpeg", "sizes", "odd_size", "duplicates", "eval_overlap")
# Entries a kind that only informs lists (the module docstring says why).
LISTED = 100_000
# What exclude.txt lists: images that crash a loader or inflate an evaluation.
EXCLUDED_KINDS = ("undecodable", "eval_overlap")
PARTITIONS = 256
# Records holding no bytes (an empty file im2rec packed) are undecodable, not copies of one picture.
_EMPTY_HIGH, _EMPTY_LOW = (int(half) for half in np.frombuffer(image_digest(b""), ">u8"))


def most_common_size(sizes):
    """The ``WxH`` with the most images (the larger image on a tie), or None."""
    if not sizes:
        return None
    return max(sizes, key=lambda text: (sizes[text], [int(side) for side in text.split("x")]))


def _odd_sizes(rows_paths, common):
    """The first LISTED images (by key) not of the size ``common``, as entries, and their count."""
    odd, count = np.zeros(0, IMAGE_ROW), 0
    for path in rows_paths:
        rows = np.load(path)
        decoded = rows["width"] > 0
        if common is not None:
            width, height = (int(side) for side in common.split("x"))
            decoded &= (rows["width"] != width) | (rows["height"] != height)
        count += int(decoded.sum())
        odd = np.concatenate([odd, rows[decoded]])
        odd = odd[np.argsort(odd["key"], kind="stable")[:LISTED]]
    columns = (odd[name].tolist() for name in ("key", "label", "width", "height"))
    return [{"key": key, "label": label, "size": size_text(width, height)} for key, label, width, height in zip(*columns)], count


def _first_of_each_format(entries):
    """The first LISTED ``entries`` of each format, by key."""
    seen = Counter()
    kept = []
    for entry in _by_key(entries):
        seen[entry["format"]] += 1
        if seen[entry["format"]] <= LISTED:
            kept.append(entry)
    return kept


class _ChunkRows:
    """A chunk's rows file read a slice at a time (a mapping would keep every page read
    resident): where each digest range starts, found from one read of the whole file."""

    def __init__(self, path):
        self.path = path
        mapped = np.load(path, mmap_mode="r")
        if mapped.dtype != IMAGE_ROW or mapped.ndim != 1:
            raise ValueError(f"{path}: not a chunk audit's image rows ({mapped.dtype}, shape {mapped.shape})")
        self.offset = mapped.offset
        high = np.array(mapped["digest_high"])
        del mapped
        edges = np.arange(PARTITIONS, dtype=np.uint64) << np.uint64(56)
        self.bounds = np.append(np.searchsorted(high, edges), len(high))

    def partition(self, number):
        start, end = int(self.bounds[number]), int(self.bounds[number + 1])
        return np.fromfile(self.path, IMAGE_ROW, count=end - start, offset=self.offset + start * IMAGE_ROW.itemsize)


def duplicate_groups(rows_paths):
    """Groups of byte-identical images, each ``{key, label, keys, labels, across_identities}``
    (``key``/``label`` the group's first image), by first key; empty images form none."""
    chunks = [_ChunkRows(path) for path in rows_paths]
    groups = []
    for partition in range(PARTITIONS):
        gathered = np.concatenate([chunk.partition(partition) for chunk in chunks])
        if len(gathered) < 2:
            continue
        gathered.sort(order=["digest_high", "digest_low", "key"])
        same = (gathered["digest_high"][1:] == gathered["digest_high"][:-1]) & (gathered["digest_low"][1:] == gathered["digest_low"][:-1])
        if not same.any():
            continue
        starts = np.flatnonzero(np.concatenate([[True], ~same]))
        ends = np.append(starts[1:], len(gathered))
        for start, end in zip(starts.tolist(), ends.tolist()):
            empty = (gathered["digest_high"][start], gathered["digest_low"][start]) == (_EMPTY_HIGH, _EMPTY_LOW)
            if end - start > 1 and not empty:
                keys = gathered["key"][start:end].tolist()
                labels = gathered["label"][start:end].tolist()
                groups.append({"key": keys[0], "label": labels[0], "keys": keys, "labels": labels, "across_identities": len(set(labels)) > 1})
    return sorted(groups, key=lambda group: group["key"])


def _by_key(entries):
    return sorted(entries, key=lambda entry: (entry["key"], entry.get("bin", ""), entry.get("index", 0)))


def join_audit(findings_paths, rows_paths, paths_of=None):
    """The dataset's audit (``KINDS``, then ``counts``) from its chunks' findings and rows;
    ``paths_of`` (a folder source: keys -> relative paths) adds each entry's ``path``
    (``paths`` for a group)."""
    audit = {kind: [] for kind in KINDS}
    sizes, counts = {}, Counter()
    for path in findings_paths:
        with open(path) as stream:
            findings = json.load(stream)
        for kind in ("undecodable", "not_plain_jpeg", "eval_overlap"):
            audit[kind].extend(findings[kind])
            counts[kind] += len(findings[kind])
        audit["not_plain_jpeg"] = _first_of_each_format(audit["not_plain_jpeg"])
        for text, count in findings["sizes"].items():
            sizes[text] = sizes.get(text, 0) + count
    for kind in ("undecodable", "eval_overlap"):
        audit[kind] = _by_key(audit[kind])
    audit["sizes"] = dict(sorted(sizes.items(), key=lambda item: (-item[1], item[0])))
    audit["odd_size"], counts["odd_size"] = _odd_sizes(rows_paths, most_common_size(sizes))
    groups = duplicate_groups(rows_paths)
    audit["duplicates"], counts["duplicates"] = groups[:LISTED], len(groups)
    if paths_of is not None:
        _add_paths(audit, paths_of)
    audit["counts"] = {kind: counts[kind] for kind in KINDS if kind != "sizes"}
    return audit


def _add_paths(audit, paths_of):
    entries = [entry for kind in KINDS if kind != "sizes" for entry in audit[kind]]
    keys = sorted({key for entry in entries for key in entry.get("keys", [entry["key"]])})
    found = dict(zip(keys, paths_of(keys)))
    for entry in entries:
        entry["path"] = found[entry["key"]]
        if "keys" in entry:
            entry["paths"] = [found[key] for key in entry["keys"]]


def excluded_keys(audit):
    return sorted({entry["key"] for kind in EXCLUDED_KINDS for entry in audit[kind]})


def write_audit(audit_path, exclude_path, dataset, audit):
    """Write ``audit.json`` and ``exclude.txt`` (a header comment, then one key a line)."""
    keys = excluded_keys(audit)
    header = (
        f"# {dataset}: {len(keys)} image keys a training run may drop ({os.path.basename(audit_path)} beside"
        " this file has why): undecodable images and images of evaluation sets.\n"
    )
    write_json(audit_path, audit)
    write_bytes(exclude_path, (header + "".join(f"{key}\n" for key in keys)).encode())
