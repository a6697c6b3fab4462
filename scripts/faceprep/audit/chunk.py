"""The audit of one chunk's record stream: each image read and decoded once.

A chunk gives two files: its findings (JSON: undecodable images, images that are not plain
JPEG, the count per size, evaluation images found) and one row per image
(``IMAGE_ROW``: digest, key, label, width, height; sorted by digest) from which the join
finds byte-identical images and odd sizes across the whole dataset.
"""

from collections import Counter

import numpy as np

from faceprep.atomic import write_atomically, write_json
from faceprep.audit.images import comparable, image_digest, inspect_image, is_plain
from faceprep.audit.overlap import Thumbnails

IMAGE_ROW = np.dtype([("digest_high", "<u8"), ("digest_low", "<u8"), ("key", "<i8"), ("label", "<i8"), ("width", "<i4"), ("height", "<i4")])
# Decoded images held at once for the overlap search's batched queries.
SEARCH_BATCH = 256
PROGRESS_EVERY = 1000


def size_text(width, height):
    return f"{width}x{height}"


class ChunkAudit:
    """Collects ``add(key, label, data)`` of a chunk's images; ``search`` (an OverlapSearch,
    or None without evaluation images) finds evaluation images among them."""

    def __init__(self, search=None):
        self.search = search
        self.rows = []
        self.undecodable, self.not_plain_jpeg, self.eval_overlap = [], [], []
        self.sizes = Counter()
        self._pending = []
        self._thumbnails = Thumbnails(SEARCH_BATCH)

    def add(self, key, label, data):
        digest = image_digest(data)
        facts = inspect_image(data)
        width, height = facts.size or (0, 0)
        self.rows.append((int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big"), key, label, width, height))
        entry = {"key": int(key), "label": int(label)}
        if facts.problem is not None:
            self.undecodable.append(entry | {"reason": facts.problem, "format": facts.format})
        else:
            self.sizes[size_text(width, height)] += 1
            if not is_plain(facts):
                self.not_plain_jpeg.append(entry | {"format": facts.format})
        if self.search is None:
            return
        exact = self.search.exact(digest)
        if exact is not None:
            self._record_overlap(entry, exact, 0.0, 0, 0)
        elif facts.image is not None:
            image = comparable(facts.image)
            # Right after the decode, while the picture is in the CPU's cache.
            self._thumbnails.add(image)
            self._pending.append((entry, image))
            if len(self._pending) >= SEARCH_BATCH:
                self._search_pending()

    def _record_overlap(self, entry, image, rms, dx, dy):
        for bin_name, index in self.search.images[image]["refs"]:
            self.eval_overlap.append(entry | {"bin": bin_name, "index": index, "distance": round(rms, 3), "shift": [dx, dy]})

    def _search_pending(self):
        found = self.search.matches([image for _, image in self._pending], self._thumbnails.grays())
        for (entry, _), matches in zip(self._pending, found):
            for image, rms, dx, dy in matches:
                self._record_overlap(entry, image, rms, dx, dy)
        self._pending = []

    def finish(self):
        """The chunk's findings (a dict) and image rows (sorted by digest)."""
        if self._pending:
            self._search_pending()
        rows = np.array(self.rows, dtype=IMAGE_ROW)
        rows.sort(order=["digest_high", "digest_low", "key"])
        findings = {
            "images": len(rows),
            "undecodable": self.undecodable,
            "not_plain_jpeg": self.not_plain_jpeg,
            "sizes": dict(sorted(self.sizes.items())),
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
