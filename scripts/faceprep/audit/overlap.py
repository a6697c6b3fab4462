"""Evaluation images in a training set: byte-identical, re-encoded, or shifted and re-encoded.

A search in two steps, because aligned faces all look alike at low resolution:

1. Candidates. Every image gets a 15-number feature: the lowest 4x4 DCT coefficients but
   the mean of an 8x8 thumbnail of its centre (8 px in from each edge, 12x12 px blocks of the
   112x112 gray), scaled to length 1, so brightness and contrast do not count; a face of
   less contrast than FLAT_CONTRAST is scaled as if it had that much (scaled to length 1,
   the JPEG noise of a flat face moved its feature as far as another face's). The
   evaluation side is indexed (a k-d tree) with one feature per shift of its crop window by
   up to SHIFT px each way, so a training copy shifted that far finds a near-identical
   feature instead of one blurred by the shift. The CANDIDATES nearest within
   CANDIDATE_DISTANCE are kept; the search is approximate by SEARCH_SLACK (the k-d tree's
   ``eps``): it may miss a candidate farther than CANDIDATE_DISTANCE / (1 + SEARCH_SLACK),
   beyond the farthest planted copy measured (bench/README.md), in half the time.
2. Confirmation. A candidate is a match when the two 112x112 grays differ by at most
   MATCH_PSNR_DB (root mean square over the image but a 3 px border), the training image
   shifted as the nearest variant says, or by one pixel more either way. Re-encodes at JPEG
   quality 75 with 2 px shifts stay above 34 dB on the demo's faces, different pictures of
   one drawn identity below 25 dB (bench/README.md has the measurements).

A byte-identical image is a match by its digest, whether or not it decodes.
"""

import json
import math

import numpy as np
from PIL import Image

from faceprep.atomic import write_atomically, write_json
from faceprep.audit.images import GRAY_SIZE, comparable, image_digest, inspect_image
from faceprep.binfile import load_bin

SHIFT = 2
MARGIN = 8
BLOCK = (GRAY_SIZE - 2 * MARGIN) // 8
CANDIDATES = 4
CANDIDATE_DISTANCE = 0.06
SEARCH_SLACK = 0.5
# The root mean square, in gray levels, of the part of the 8x8 thumbnail its 15 coefficients
# hold; with the unscaled cosines below their length is about 32 times that (8 for the 64
# blocks, 4 to 5.7 for cosines not scaled to length 1).
FLAT_CONTRAST = 16
_FLAT_NORM = 32 * FLAT_CONTRAST
MATCH_PSNR_DB = 30.0
HOPELESS = 2.5
_MAX_RMS = 255 / 10 ** (MATCH_PSNR_DB / 20)
_BORDER = SHIFT + 1
# Evaluation images decoded and held at once while the index is built.
INDEX_BATCH = 1024
# Every shift: with every other one only, a third of 1-px shifted copies were missed.
_VARIANTS = [(dx, dy) for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1)]
_k = np.arange(8)
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:4, None] / 16).astype(np.float32)
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


class Thumbnails:
    """The 8x8 thumbnails of comparable images' centres, gathered side by side on one sheet:
    Pillow averages each image's blocks and pastes them (gray images as RGB), and the sheet
    is copied out once for all (a copy per thumbnail costs more than taking it)."""

    def __init__(self, capacity):
        self._sheet = Image.new("RGB", (8 * max(capacity, 1), 8))
        self.count = 0

    def add(self, image, dx=0, dy=0):
        """Add the thumbnail of ``image``, its crop window moved by (dx, dy)."""
        box = (MARGIN + dx, MARGIN + dy, GRAY_SIZE - MARGIN + dx, GRAY_SIZE - MARGIN + dy)
        self._sheet.paste(image.reduce(BLOCK, box), (8 * self.count, 0))
        self.count += 1

    def grays(self):
        """The thumbnails so far as gray levels, n x 8 x 8; the sheet is emptied."""
        pixels = np.frombuffer(self._sheet.tobytes(), np.uint8).reshape(8, -1, 8, 3)[:, : self.count]
        self.count = 0
        return pixels.transpose(1, 0, 2, 3).astype(np.float32) @ _GRAY_WEIGHTS


def features(thumbnails):
    """The candidate features (n x 15) of n thumbnails (n x 8 x 8)."""
    coefficients = (_DCT @ thumbnails @ _DCT.T).reshape(len(thumbnails), 16)[:, 1:]
    return coefficients / np.maximum(np.linalg.norm(coefficients, axis=1, keepdims=True), _FLAT_NORM)


def _rms(training, inner, dx, dy):
    window = training[_BORDER + dy : GRAY_SIZE - _BORDER + dy, _BORDER + dx : GRAY_SIZE - _BORDER + dx]
    return float(np.sqrt(np.mean(np.square(window - inner))))


def aligned_distance(training_gray, evaluation_gray, shifts):
    """``(rms, dx, dy)``: the smallest root-mean-square difference of two 112x112 grays over
    ``shifts`` of the training image (each coordinate within SHIFT + 1 px), and its shift;
    ``shifts[0]`` first: when even that is HOPELESS times the match limit off, the rest are
    not tried (a copy one pixel off its best shift differs by about twice the limit at most)."""
    training = training_gray.astype(np.float32)
    inner = evaluation_gray[_BORDER:-_BORDER, _BORDER:-_BORDER].astype(np.float32)
    best = (_rms(training, inner, *shifts[0]), *shifts[0])
    if best[0] > HOPELESS * _MAX_RMS:
        return best
    for dx, dy in shifts[1:]:
        rms = _rms(training, inner, dx, dy)
        if rms < best[0]:
            best = (rms, dx, dy)
    return best


def _shifts_near(variant):
    """The training shifts to confirm a candidate at: first the one its nearest variant (the
    evaluation crop moved by (dx, dy)) stands for, (-dx, -dy), then those around it."""
    dx, dy = _VARIANTS[variant]
    around = [(-dx + ex, -dy + ey) for ey in (-1, 0, 1) for ex in (-1, 0, 1) if (ex, ey) != (0, 0)]
    return [(-dx, -dy)] + [(x, y) for x, y in around if abs(x) <= _BORDER and abs(y) <= _BORDER]


def _first_seen(bins):
    """``(distinct, first)``: the distinct images of ``bins`` (``{name: path}``) by digest, in
    the order first met, each ``{digest, refs}`` with every ``[bin, index]`` holding it; and
    per bin the indexes where one is first met."""
    by_digest, distinct, first = {}, [], {}
    for name, path in bins.items():
        images, _ = load_bin(path)
        first[name] = []
        for index, data in enumerate(images):
            digest = image_digest(data).hex()
            if digest not in by_digest:
                by_digest[digest] = len(distinct)
                distinct.append({"digest": digest, "refs": []})
                first[name].append(index)
            distinct[by_digest[digest]]["refs"].append([name, index])
    return distinct, first


def _variant_features(images):
    """The features (n x len(_VARIANTS) x 15) of comparable ``images`` at every crop shift."""
    sheet = Thumbnails(len(images))
    shifted = []
    for dx, dy in _VARIANTS:
        for image in images:
            sheet.add(image, dx, dy)
        shifted.append(features(sheet.grays()))
    return np.stack(shifted, axis=1) if images else np.zeros((0, len(_VARIANTS), 15), np.float32)


def index_evaluation_images(bins, gray_path, features_path, refs_path):
    """Index the images of ``bins`` (``{name: path}``) for the search: distinct images (by
    digest) with every ``[bin, index]`` holding them, their 112x112 grays and features.

    Two passes over the bins, one bin in memory at a time: the first finds the distinct
    images, the second decodes each once, writes its gray and takes its features
    INDEX_BATCH images at a time. Holding every decoded picture took 5 GB for 72,000
    distinct images (six bins of 12,000)."""
    distinct, first = _first_seen(bins)
    variant_features = []

    def write_grays(stream):
        np.lib.format.write_array_header_1_0(
            stream, {"descr": "|u1", "fortran_order": False, "shape": (len(distinct), GRAY_SIZE, GRAY_SIZE)})
        position, batch = 0, []
        for name, path in bins.items():
            images, _ = load_bin(path)
            for index in first[name]:
                facts = inspect_image(images[index])
                distinct[position]["decoded"] = facts.image is not None
                image = comparable(facts.image) if facts.image is not None else Image.new("L", (GRAY_SIZE, GRAY_SIZE))
                stream.write(np.asarray(image.convert("L"), np.uint8).tobytes())
                batch.append(image)
                position += 1
                if len(batch) == INDEX_BATCH:
                    variant_features.append(_variant_features(batch))
                    batch = []
            del images
        variant_features.append(_variant_features(batch))

    write_atomically(gray_path, write_grays)
    write_atomically(features_path, lambda stream: np.save(stream, np.concatenate(variant_features)))
    write_json(refs_path, {"variants": _VARIANTS, "images": distinct})
    return len(distinct)


class OverlapSearch:
    """The index written by ``index_evaluation_images``, searched for training images."""

    def __init__(self, gray_path, features_path, refs_path):
        from scipy.spatial import cKDTree

        with open(refs_path) as stream:
            self.images = json.load(stream)["images"]
        self._by_digest = {bytes.fromhex(entry["digest"]): position for position, entry in enumerate(self.images)}
        self._grays = np.load(gray_path, mmap_mode="r")
        decoded = np.array([entry["decoded"] for entry in self.images], bool)
        variant_features = np.load(features_path)
        # Point p of the tree is variant p % len(_VARIANTS) of decoded image _owners[p // len(_VARIANTS)].
        self._owners = np.flatnonzero(decoded)
        points = variant_features[decoded].reshape(-1, variant_features.shape[-1])
        self._tree = cKDTree(points) if len(points) else None

    def exact(self, digest):
        """The distinct evaluation image with these bytes, or None."""
        return self._by_digest.get(digest)

    def candidates(self, thumbnails):
        """For each of n training thumbnails (n x 8 x 8 gray levels): ``{evaluation image:
        its nearest variant}`` of the evaluation images it may be a picture of."""
        if self._tree is None:
            return [{} for _ in thumbnails]
        distances, found = self._tree.query(features(thumbnails), k=CANDIDATES, distance_upper_bound=CANDIDATE_DISTANCE, eps=SEARCH_SLACK)
        results = [{} for _ in thumbnails]
        for row in np.flatnonzero(np.isfinite(distances[:, 0])):
            nearest = results[row]  # results come nearest first
            for point, distance in zip(found[row].tolist(), distances[row].tolist()):
                if math.isfinite(distance):
                    owner, variant = divmod(point, len(_VARIANTS))
                    nearest.setdefault(int(self._owners[owner]), variant)
        return results

    def confirm(self, image, nearest):
        """``[(evaluation image, rms, dx, dy)]``: the ``candidates`` of a comparable training
        image it is a picture of (see the module)."""
        gray = np.asarray(image.convert("L"))
        confirmed = []
        for owner, variant in sorted(nearest.items()):
            rms, dx, dy = aligned_distance(gray, self._grays[owner], _shifts_near(variant))
            if rms <= _MAX_RMS:
                confirmed.append((owner, rms, dx, dy))
        return confirmed
