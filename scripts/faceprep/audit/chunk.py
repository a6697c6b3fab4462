"""The audit of one chunk's record stream: each image read and decoded once.

A chunk gives two files: its findings (JSON: undecodable images, images that are not plain
JPEG with the training readers they fail in, the count per size, evaluation images found)
and one row per image (``IMAGE_ROW``: digest, key, label, width, height; sorted by digest)
from which the join finds byte-identical images and odd sizes across the whole dataset.
"""

from collections import Counter

import numpy as np

from faceprep.atomic import write_atomically, write_json
from faceprep.audit.images import FAILING_READERS, comparable, image_digest, inspect_image, is_plain
from faceprep.audit.overlap import Thumbnails
from faceprep.image_header import size_text

IMAGE_ROW = np.dtype([("digest_high", "<u8"), ("digest_low", "<u8"), ("key", "<i8"), ("label", "<i8"), ("width", "<i4"), ("height", "<i4")])
# Decoded images held at once for the overlap search's batched queries.
SEARCH_BATCH = 256
PROGRESS_EVERY = 1000


def _entry(key, label, **detail):
    """A finding: the image's key and label, then its detail."""
    return {"key": int(key), "label": int(label)} | detail


class ChunkAudit:
    """Collects ``add(key, label, data)`` of a chunk's images; ``search`` (an OverlapSearch,
    or None without evaluation images) finds evaluation images among them."""

    def __init__(self, search=None):
        self.search = search
        self._digests, self._columns = [], []
        self.undecodable, self.not_plain_jpeg, self.eval_overlap = [], [], []
        self._sizes = Counter()
        self._pending = []
        self._thumbnails = Thumbnails(SEARCH_BATCH)

    def add(self, key, label, data):
        digest = image_digest(data)
        facts = inspect_image(data)
        width, height = facts.size or (0, 0)
        self._digests.append(digest)
        self._columns.append((key, label, width, height))
        if facts.problem is not None:
            self.undecodable.append(_entry(key, label, reason=facts.problem, format=facts.format))
        else:
            self._sizes[facts.size] += 1
            if not is_plain(facts):
                entry = _entry(key, label, format=facts.format)
                if facts.format in FAILING_READERS:
                    entry["fails"] = FAILING_READERS[facts.format]
                self.not_plain_jpeg.append(entry)
        if self.search is None:
            return
        exact = self.search.exact(digest)
        if exact is not None:
            self._record_overlap(key, label, exact, 0.0, 0, 0)
        elif facts.image is not None:
            # Right after the decode, while the picture is in the CPU's cache. The bytes wait
            # for the batched search, not the picture: holding 256 decoded pictures took
            # more time than decoding again the few that turn out to be candidates (2 % of the
            # bench's faces).
            self._thumbnails.add(comparable(facts.image))
            self._pending.append((key, label, data))
            if len(self._pending) >= SEARCH_BATCH:
                self._search_pending()

    def _record_overlap(self, key, label, image, rms, dx, dy):
        for bin_name, index in self.search.images[image]["refs"]:
            self.eval_overlap.append(_entry(key, label, bin=bin_name, index=index, distance=round(rms, 3), shift=[dx, dy]))

    def _search_pending(self):
        for (key, label, data), nearest in zip(self._pending, self.search.candidates(self._thumbnails.grays())):
            if nearest:
                for image, rms, dx, dy in self.search.confirm(comparable(inspect_image(data).image), nearest):
                    self._record_overlap(key, label, image, rms, dx, dy)
        self._pending = []

    def finish(self):
        """The chunk's findings (a dict) and image rows (sorted by digest)."""
        if self._pending:
            self._search_pending()
        rows = np.zeros(len(self._digests), IMAGE_ROW)
        # Big-endian halves: rows sort as the digests' bytes do.
        digests = np.frombuffer(b"".join(self._digests), ">u8").reshape(-1, 2)
        rows["digest_high"], rows["digest_low"] = digests[:, 0], digests[:, 1]
        for name, column in zip(("key", "label", "width", "height"), zip(*self._columns)):
            rows[name] = column
        rows.sort(order=["digest_high", "digest_low", "key"])
        findings = {
            "images": len(rows),
            "undecodable": self.undecodable,
            "not_plain_jpeg": self.not_plain_jpeg,
            "sizes": dict(sorted((size_text(*size), count) for size, count in self._sizes.items())),
            "eval_overlap": self.eval_overlap,
        }
        return findings, rows


def audit_records(records, findings_path, rows_path, search=None, progress=None):
    """Audit every ``(key, label, image)`` of ``records`` and write the chunk's findings and
    rows (each to a temporary name, renamed). Returns the findings."""
    audit = ChunkAudit(search)
    for count, (key, label, data) in enumerate(records, 1):
        audit.add(key, label, data)
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(PROGRESS_EVERY)
    findings, rows = audit.finish()
    if progress is not None and len(rows) % PROGRESS_EVERY:
        progress(len(rows) % PROGRESS_EVERY)
    write_atomically(rows_path, lambda stream: np.save(stream, rows))
    write_json(findings_path, findings)
    return findings
