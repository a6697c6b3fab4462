"""Evaluation images in a training set: byte-identical, re-encoded, or shifted and re-encoded.

A search in two steps, because aligned faces all look alike at low resolution:

1. Candidates. Every image gets a 15-number feature: the lowest 4x4 DCT coefficients but
   the mean of an 8x8 thumbnail of its centre (8 px in from each edge, 12x12 px blocks of the
   112x112 gray), scaled to length 1, so brightness and contrast do not count. The
   evaluation side is indexed (a k-d tree) with one feature per shift of its crop window by
   up to SHIFT px each way, so a training copy shifted that far finds a near-identical
   feature instead of one blurred by the shift. The CANDIDATES nearest within
   CANDIDATE_DISTANCE are kept.
2. Confirmation. A candidate is a match when the two 112x112 grays, the training image
   shifted by up to SHIFT + 1 px each way, differ by at most MATCH_PSNR_DB (root mean square
   over the image but a 3 px border). Re-encodes at JPEG quality 75 with 2 px shifts stay
   above 34 dB on the demo's faces, different pictures of one drawn identity below 25 dB
   (bench/README.md has the measurements).

A byte-identical image is a match by its digest, whether or not it decodes.
"""

import json
import math

import numpy as np

from faceprep.atomic import write_atomically, write_json
from faceprep.audit.images import GRAY_SIZE, comparable, inspect_image
from faceprep.binfile import load_bin

SHIFT = 2
MARGIN = 8
BLOCK = (GRAY_SIZE - 2 * MARGIN) // 8
CANDIDATES = 4
CANDIDATE_DISTANCE = 0.08
MATCH_PSNR_DB = 30.0
_MAX_RMS = 255 / 10 ** (MATCH_PSNR_DB / 20)
_BORDER = SHIFT + 1
_VARIANTS = [(dx, dy) for dy in range(-SHIFT, SHIFT + 1) for dx in range(-SHIFT, SHIFT + 1)]
_k = np.arange(8)
_DCT = np.cos(np.pi * (2 * _k[None, :] + 1) * _k[:4, None] / 16).astype(np.float32)


def thumbnail(image, dx=0, dy=0):
    """The 8x8 gray thumbnail of a comparable image's centre, its crop window moved by (dx, dy)."""
    box = (MARGIN + dx, MARGIN + dy, GRAY_SIZE - MARGIN + dx, GRAY_SIZE - MARGIN + dy)
    return np.asarray(image.crop(box).reduce(BLOCK).convert("L"), dtype=np.float32)


def features(thumbnails):
    """The candidate features (n x 15) of n thumbnails (n x 8 x 8)."""
    coefficients = (_DCT @ thumbnails @ _DCT.T).reshape(len(thumbnails), -1)[:, 1:]
    return coefficients / (np.linalg.norm(coefficients, axis=1, keepdims=True) + 1e-3)


def aligned_distance(training_gray, evaluation_gray):
    """``(rms, dx, dy)``: the smallest root-mean-square difference of two 112x112 grays over
    shifts of the training image by up to SHIFT + 1 px, and the shift it was found at."""
    training = training_gray.astype(np.float32)
    evaluation = evaluation_gray.astype(np.float32)
    inner = evaluation[_BORDER:-_BORDER, _BORDER:-_BORDER]
    best = (math.inf, 0, 0)
    for dy in range(-_BORDER, _BORDER + 1):
        for dx in range(-_BORDER, _BORDER + 1):
            window = training[_BORDER + dy : GRAY_SIZE - _BORDER + dy, _BORDER + dx : GRAY_SIZE - _BORDER + dx]
            rms = float(np.sqrt(np.mean(np.square(window - inner))))
            if rms < best[0]:
                best = (rms, dx, dy)
    return best


def _digest(data):
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def index_evaluation_images(bins, gray_path, features_path, refs_path):
    """Index the images of ``bins`` (``{name: path}``) for the search: distinct images (by
    digest) with every ``[bin, index]`` holding them, their 112x112 grays and features."""
    by_digest, distinct = {}, []
    for name, path in bins.items():
        images, _ = load_bin(path)
        for index, data in enumerate(images):
            digest = _digest(data)
            if digest not in by_digest:
                by_digest[digest] = len(distinct)
                distinct.append({"digest": digest, "refs": [], "data": data})
            distinct[by_digest[digest]]["refs"].append([name, index])
    grays = np.zeros((len(distinct), GRAY_SIZE, GRAY_SIZE), np.uint8)
    thumbnails = np.zeros((len(distinct), len(_VARIANTS), 8, 8), np.float32)
    for position, entry in enumerate(distinct):
        facts = inspect_image(entry.pop("data"))
        entry["decoded"] = facts.image is not None
        if entry["decoded"]:
            image = comparable(facts.image)
            grays[position] = np.asarray(image.convert("L"))
            thumbnails[position] = [thumbnail(image, dx, dy) for dx, dy in _VARIANTS]
    write_atomically(gray_path, lambda stream: np.save(stream, grays))
    variant_features = features(thumbnails.reshape(-1, 8, 8)).reshape(len(distinct), len(_VARIANTS), -1)
    write_atomically(features_path, lambda stream: np.save(stream, variant_features))
    write_json(refs_path, {"variants": _VARIANTS, "images": distinct})
    return len(distinct)


class OverlapSearch:
    """The index written by ``index_evaluation_images``, searched for training images."""

    def __init__(self, gray_path, features_path, refs_path):
        from scipy.spatial import cKDTree

        with open(refs_path) as stream:
            self.images = json.load(stream)["images"]
        self._by_digest = {entry["digest"]: position for position, entry in enumerate(self.images)}
        self._grays = np.load(gray_path, mmap_mode="r")
        decoded = np.array([entry["decoded"] for entry in self.images], bool)
        variant_features = np.load(features_path)
        self._owners = np.repeat(np.flatnonzero(decoded), variant_features.shape[1])
        points = variant_features[decoded].reshape(-1, variant_features.shape[-1])
        self._tree = cKDTree(points) if len(points) else None

    def exact(self, digest):
        """The distinct evaluation image with these bytes, or None."""
        return self._by_digest.get(digest.hex())

    def matches(self, images):
        """For each comparable training image: ``[(evaluation image, rms, dx, dy)]`` of the
        evaluation images it is a picture of (see the module)."""
        if self._tree is None or not images:
            return [[] for _ in images]
        query = features(np.array([thumbnail(image) for image in images]))
        distances, found = self._tree.query(query, k=CANDIDATES, distance_upper_bound=CANDIDATE_DISTANCE)
        results = []
        for image, row_distances, row_found in zip(images, distances, found):
            owners = sorted({int(self._owners[point]) for point, distance in zip(row_found, row_distances) if math.isfinite(distance)})
            confirmed = []
            if owners:
                gray = np.asarray(image.convert("L"))
                for owner in owners:
                    rms, dx, dy = aligned_distance(gray, self._grays[owner])
                    if rms <= _MAX_RMS:
                        confirmed.append((owner, rms, dx, dy))
            results.append(confirmed)
        return results
