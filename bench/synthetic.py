"""Synthetic MS1M-like benchmark inputs: a train.rec in insightface's layout and cfp_fp-like bins.

Drawing and encoding a face costs milliseconds, so a pool of distinct faces is drawn
once and its JPEGs are reused across records: what the benchmark measures (reading
records, creating files) does not depend on which picture a record holds.

``prepare_inputs`` generates run_bench's inputs (or reuses them when drawn with the same
parameters and the same generator code).
"""

import functools
import hashlib
import io
import json
import os
import statistics
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from faceprep.binfile import write_py2_bin
from faceprep.demo import encode_image
from faceprep.faces import draw_face, random_face_traits
from faceprep.insightface import DatasetWriter
from bench_report import BIN_LABELS
from measure import drop_tree, say

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# Quality 96 makes the demo faces average ~6 KB, the size of an MS1M-ArcFace image.
JPEG_QUALITY = 96
FACES_PER_IDENTITY_IN_POOL = 10
# Images of a cfp_fp-like bin that are not baseline JPEG, as in the real bins.
BIN_EXTRA_FORMATS = ("bmp",) * 3 + ("jpeg_12bit",) * 3


def face_pool(size, seed):
    """``size`` distinct 112x112 faces as RGB arrays (groups of FACES_PER_IDENTITY_IN_POOL share an identity)."""
    rng = np.random.default_rng(seed)
    traits = [random_face_traits(rng) for _ in range(-(-size // FACES_PER_IDENTITY_IN_POOL))]
    return [draw_face(traits[index // FACES_PER_IDENTITY_IN_POOL], rng) for index in range(size)]


def jpeg_bytes(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def plan_records(images, identities, pool_size, seed):
    """``(sizes, picks)``: images per identity (uneven, log-normal weights, at least one each) and
    the pool face of every image record."""
    if identities < 1 or images < identities:
        raise ValueError(
            f"need at least one identity and one image per identity, got {images} images, {identities} identities"
        )
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 0.5, identities)
    sizes = 1 + rng.multinomial(images - identities, weights / weights.sum())
    return sizes, rng.integers(pool_size, size=images)


def _records(sizes, picks):
    """``(key, label, pick)`` of every image record, in key order."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return zip(range(1, len(picks) + 1), labels.tolist(), picks.tolist())


def keyed_jpeg(data, key):
    """JPEG ``data`` with a comment segment after SOI holding ``key``: the same picture in
    bytes no other record holds, so that a check for byte-identical images finds none."""
    comment = b"key %d" % key
    return data[:2] + b"\xff\xfe" + (2 + len(comment)).to_bytes(2, "big") + comment + data[2:]


def write_rec(out_dir, sizes, picks, pool_jpegs, distinct_bytes=False):
    """Write train.rec/train.idx/property in insightface's layout (image keys 1..N grouped by
    identity), each record's JPEG ``keyed_jpeg`` with ``distinct_bytes``; return ``{images,
    identities, image_bytes}``."""
    image_bytes = 0
    with DatasetWriter(out_dir) as writer:
        for key, label, pick in _records(sizes, picks):
            data = keyed_jpeg(pool_jpegs[pick], key) if distinct_bytes else pool_jpegs[pick]
            writer.add(key, float(label), data)
            image_bytes += len(data)
    return {"images": len(picks), "identities": len(sizes), "image_bytes": image_bytes}


def write_tree_tar(path, sizes, picks, pool_jpegs, labels=None):
    """Write a tar of the ``<label>/<key>.jpg`` tree the rec extracts to, as ``tar -cf`` of it would
    hold; of the directories of ``labels`` only (a range), if given."""
    temporary = f"{path}.tmp"
    with tarfile.open(temporary, "w", format=tarfile.GNU_FORMAT) as archive:
        current_label = None
        for key, label, pick in _records(sizes, picks):
            if labels is not None and label not in labels:
                continue
            if label != current_label:
                directory = tarfile.TarInfo(f"./{label}")
                directory.type, directory.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(directory)
                current_label = label
            member = tarfile.TarInfo(f"./{label}/{key}.jpg")
            member.size, member.mode = len(pool_jpegs[pick]), 0o644
            archive.addfile(member, io.BytesIO(pool_jpegs[pick]))
    os.replace(temporary, path)


def write_bins(images, pool, seed, *, all_jpeg, mixed, original_readable):
    """Write three cfp_fp-like bins of the same ``images`` pictures to the paths given; return
    ``{"all_jpeg": {format: count}, "mixed": ..., "original_readable": ...}``.

    Images are ``(n, 1)`` uint8 arrays as ``cv2.imencode`` returns them. ``all_jpeg`` holds
    an 8-bit JPEG of every picture, as the real cfp_fp.bin and agedb_30.bin do; ``mixed`` is
    the same bin with BMP and 12-bit JPEG images planted (BIN_EXTRA_FORMATS) in a few places.
    The original script's skimage cannot read 12-bit JPEG, so ``original_readable``, the twin
    of ``mixed`` it can read, holds the 8-bit JPEG of the same picture in those places.
    """
    if images < 2 * len(BIN_EXTRA_FORMATS) or images % 2:
        raise ValueError(f"a bin needs an even number of images, at least {2 * len(BIN_EXTRA_FORMATS)}; got {images}")

    @functools.cache
    def encoded(pick, image_format):
        data = jpeg_bytes(pool[pick]) if image_format == "jpeg" else encode_image(pool[pick], image_format)
        return np.frombuffer(data, np.uint8).reshape(-1, 1)

    rng = np.random.default_rng(seed)
    picks = rng.integers(len(pool), size=images).tolist()
    planted = dict(zip(rng.choice(images, len(BIN_EXTRA_FORMATS), replace=False).tolist(), BIN_EXTRA_FORMATS))
    mixed_formats = [planted.get(index, "jpeg") for index in range(images)]
    formats = {
        "all_jpeg": ["jpeg"] * images,
        "mixed": mixed_formats,
        "original_readable": ["jpeg" if image_format == "jpeg_12bit" else image_format
                              for image_format in mixed_formats],
    }
    paths = {"all_jpeg": all_jpeg, "mixed": mixed, "original_readable": original_readable}
    issame = [pair % 2 == 0 for pair in range(images // 2)]
    for kind, path in paths.items():
        write_py2_bin(path, [encoded(pick, image_format) for pick, image_format in zip(picks, formats[kind])], issame)
    return {kind: dict(sorted(Counter(image_formats).items())) for kind, image_formats in formats.items()}


# ---------------------------------------------------------------- run_bench's inputs

# Tars of the first and the second half of the identities' part of the tree, for tar_halves.
HALF_TARS = ("tree_half_1.tar", "tree_half_2.tar")


def bin_name(kind):
    return f"cfp_fp_{kind}"


def generator_digest():
    """Digest of the code that draws the inputs: a change to it invalidates generated inputs."""
    digest = hashlib.sha256()
    faceprep = REPO / "scripts" / "faceprep"
    generators = ("demo.py", "faces.py", "binfile.py", "insightface.py", "recordio.py")
    for path in (BENCH_DIR / "synthetic.py", *(faceprep / name for name in generators)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare_inputs(args):
    """Generate (or reuse, when made with the same parameters) the rec datasets and the bins;
    with ``--extraction-only`` just the full rec and the half-tree tars."""
    data = args.out / "data"
    params = {"images": args.images, "identities": args.identities, "bin_images": args.bin_images,
              "pool": args.pool, "seed": args.seed, "generator": generator_digest(),
              "extraction_only": args.extraction_only}
    description_path = data / "inputs.json"
    if description_path.exists():
        description = json.loads(description_path.read_text())
        if description["params"] == params:
            say(f"reusing the inputs in {data}")
            return description
    drop_tree(data)
    data.mkdir(parents=True)
    started = time.monotonic()
    pool = face_pool(min(args.pool, args.images), args.seed)
    pool_jpegs = [jpeg_bytes(face) for face in pool]
    say(f"drew {len(pool)} faces, mean JPEG {statistics.mean(map(len, pool_jpegs)) / 1000:.1f} KB")
    sizes, picks = plan_records(args.images, args.identities, len(pool), args.seed)
    full = write_rec(data / "full", sizes, picks, pool_jpegs)
    half = len(sizes) // 2
    for name, labels in zip(HALF_TARS, [range(half), range(half, len(sizes))]):
        write_tree_tar(data / name, sizes, picks, pool_jpegs, labels)
    if args.extraction_only:
        description = {"params": params, "full": full}
        description_path.write_text(json.dumps(description, indent=2))
        say(f"wrote the inputs in {time.monotonic() - started:.0f} s: {full['images']} records and the half-tree tars")
        return description
    write_tree_tar(data / "tree.tar", sizes, picks, pool_jpegs)
    quarter = write_rec(data / "quarter",
                        *plan_records(args.images // 4, max(1, args.identities // 4), len(pool), args.seed + 1),
                        pool_jpegs)
    twin = data / "original_readable" / f"{bin_name('mixed')}.bin"
    twin.parent.mkdir()
    formats = write_bins(args.bin_images, pool, args.seed, original_readable=twin,
                         **{kind: data / "full" / f"{bin_name(kind)}.bin" for kind in BIN_LABELS})
    description = {"params": params, "full": full, "quarter": quarter, "bin_formats": formats}
    description_path.write_text(json.dumps(description, indent=2))
    say(f"wrote the inputs in {time.monotonic() - started:.0f} s: {full['images']} + {quarter['images']} "
        f"records, bins {formats}")
    return description
