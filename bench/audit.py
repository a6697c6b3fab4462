#!/usr/bin/env python3
"""`make bench`, the audit (faceprep.audit): its cost per image, how well it finds evaluation
images, and the join's memory at WebFace42M's count. Prints a JSON record and Markdown rows.

- **CPU per image**: ``--images`` distinct synthetic faces (MS1M-sized JPEGs) audited against
  ``--evaluation`` distinct evaluation faces (about the distinct images of lfw + cfp_fp +
  agedb_30), against a bare decode of the same bytes by the same decoder (Pillow's
  ``Image.open(...).load()``); CPU seconds of this process, alternated over ``--rounds``.
- **Precision and recall**: ``--identities`` drawn identities of 8 pictures, the first in the
  evaluation set; the other 7 train, with copies of every evaluation picture planted byte for
  byte, re-encoded at q85, and shifted 2 px (and 1 px) and re-encoded at q75. The same on the demo
  dataset (its bins hold other pictures of its training identities), and with ``--photos DIR``
  on photos of one identity (each centre-cropped to 112x112, each in turn the evaluation image).
  With them, how far the candidate step must reach: the farthest re-encoded copy's feature
  from its nearest indexed one, and the share of other images within the step's limit.
- **Added wall** (``--rec DIR``): the workflow extracting the rec into folders with
  ``--cores 2``, with and without the audit, alternated over ``--rounds``; fresh directories.
- **The audit alone** (``--alone IMAGES IDENTITIES``, e.g. MS1M's 5822653 85742): a rec of that
  many synthetic faces, each record's bytes distinct (``synthetic.keyed_jpeg``), and the wall of
  ``--cores 2`` making its audit.json against making only its chunk plan; the rules' peak memory.
- **Join memory**: ``--join-images`` rows of random digests in chunks of 200,000 (sorted as the
  chunk jobs write them), joined in a child process; its peak RSS.
"""

import argparse
import io
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "scripts"))

from faceprep.audit.chunk import IMAGE_ROW, audit_records  # noqa: E402
from faceprep.audit.images import comparable, inspect_image  # noqa: E402
from faceprep.audit.overlap import CANDIDATE_DISTANCE, OverlapSearch, Thumbnails, features, index_evaluation_images  # noqa: E402
from faceprep.binfile import load_bin, write_reformatted  # noqa: E402
from faceprep.demo import make_demo_dataset  # noqa: E402
from faceprep.faces import draw_face, random_face_traits  # noqa: E402
from faceprep.sources import REC, records  # noqa: E402
from faceprep.insightface import plan_chunks  # noqa: E402
from measure import run_measured  # noqa: E402
from synthetic import JPEG_QUALITY, face_pool, jpeg_bytes, plan_records, write_rec  # noqa: E402

# Goal (issue 28): audit CPU per image <= 1.5x a bare decode; join memory <= 1 GB at 42.5 M.
TARGET_CPU_RATIO, TARGET_JOIN_MB = 1.5, 1000
CHUNK_ROWS = 200_000


def jpeg(pixels, quality):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def shifted(pixels, dx, dy):
    return np.asarray(Image.fromarray(pixels).transform(pixels.shape[1::-1], Image.AFFINE, (1, 0, -dx, 0, 1, -dy)))


def planted_copies(evaluation_jpegs):
    """Training copies of every evaluation image: byte for byte, q85, shifted 2 px and 1 px at q75."""
    copies = []
    for index, data in enumerate(evaluation_jpegs):
        pixels = np.asarray(inspect_image(data).image.convert("RGB"))  # 12-bit, lossless and BMP too
        copies += [(index, data), (index, jpeg(pixels, 85)), (index, jpeg(shifted(pixels, 2, -2), 75)), (index, jpeg(shifted(pixels, -1, 1), 75))]
    return copies


def search_index(directory, evaluation_jpegs):
    """The overlap search's index of ``evaluation_jpegs`` (written to ``directory``)."""
    bin_path = directory / "evaluation.bin"
    images = list(evaluation_jpegs) + ([evaluation_jpegs[0]] if len(evaluation_jpegs) % 2 else [])
    write_reformatted(bin_path, images, [True] * (len(images) // 2))
    paths = [directory / name for name in ("grays.npy", "features.npy", "images.json")]
    index_evaluation_images({"evaluation": bin_path}, *paths)
    return OverlapSearch(*paths)


def feature_distances(directory, jpegs):
    """Each image's exact distance to the nearest indexed feature (``directory`` holds the
    index): how far the candidate step must reach."""
    from scipy.spatial import cKDTree

    indexed = np.load(directory / "features.npy")
    sheet = Thumbnails(len(jpegs))
    for data in jpegs:
        sheet.add(comparable(inspect_image(data).image))
    distances, _ = cKDTree(indexed.reshape(-1, indexed.shape[-1])).query(features(sheet.grays()))
    return distances


def precision_recall(directory, evaluation_jpegs, others):
    """Plant copies of ``evaluation_jpegs`` among ``others`` (training images that are none of
    them) and search: ``{planted, found, true, false, recall, precision}``."""
    copies = planted_copies(evaluation_jpegs)
    training = [(None, data) for data in others] + copies
    stream = ((key, 0, data) for key, (_, data) in enumerate(training))
    findings = audit_records(stream, directory / "c.json", directory / "c.npy", search_index(directory, evaluation_jpegs))
    found = {(entry["key"], entry["index"]) for entry in findings["eval_overlap"]}
    truth = {(key, index) for key, (index, _) in enumerate(training) if index is not None}
    # a repeated first image (odd counts) sits at the bin's last index too
    found = {(key, index if index < len(evaluation_jpegs) else 0) for key, index in found}
    true = len(found & truth)
    # Re-encoded copies (byte-identical ones match by digest), and the others: how many
    # reach the candidate step's limit and cost a pixel comparison.
    copy_distances = feature_distances(directory, [data for index, data in copies if data != evaluation_jpegs[index]])
    other_distances = feature_distances(directory, others)
    return {"planted": len(truth), "found": len(found), "true": true, "false": len(found - truth),
            "recall": true / len(truth), "precision": true / len(found) if found else 1.0,
            "copy_feature_distance_max": float(copy_distances.max()),
            "others_within_candidate_distance": float(np.mean(other_distances <= CANDIDATE_DISTANCE))}


def drawn_identities(identities, seed):
    rng = np.random.default_rng(seed)
    pictures = [[jpeg(draw_face(traits, rng), JPEG_QUALITY) for _ in range(8)]
                for traits in (random_face_traits(rng) for _ in range(identities))]
    return [faces[0] for faces in pictures], [data for faces in pictures for data in faces[1:]]


def demo_images(directory):
    make_demo_dataset(directory / "demo")
    demo = directory / "demo"
    plan = plan_chunks(demo / "train.rec", demo / "train.idx", demo / "property", 10**9, directory / "rows.npy")
    rows = np.load(directory / "rows.npy")
    training = [data for _, _, data in records(REC, rows, rec=directory / "demo" / "train.rec", idx=directory / "demo" / "train.idx")]
    evaluation = sorted({data for name in ("lfw", "cfp_fp", "agedb_30") for data in load_bin(directory / "demo" / f"{name}.bin")[0]})
    return evaluation, training, plan["images"]


def photos(directory):
    """Photos of one identity, each centre-cropped to a square and resized to 112x112."""
    faces = []
    for path in sorted(Path(directory).iterdir()):
        with Image.open(path) as image:
            image = image.convert("RGB")
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            faces.append(np.asarray(image.crop((left, top, left + side, top + side)).resize((112, 112), Image.LANCZOS)))
    return [jpeg(face, JPEG_QUALITY) for face in faces]


def photo_rounds(directory, faces):
    """Each photo in turn the evaluation image, the others training images."""
    rounds = [precision_recall(directory, [face], faces[:position] + faces[position + 1 :]) for position, face in enumerate(faces)]
    totals = {name: sum(result[name] for result in rounds) for name in ("planted", "found", "true", "false")}
    return totals | {"recall": totals["true"] / totals["planted"], "precision": totals["true"] / max(totals["found"], 1),
                     "copy_feature_distance_max": max(result["copy_feature_distance_max"] for result in rounds),
                     "others_within_candidate_distance": statistics.mean(result["others_within_candidate_distance"] for result in rounds)}


def cpu_per_image(directory, images, evaluation, rounds, seed):
    pool = [jpeg(face, JPEG_QUALITY) for face in face_pool(images + evaluation, seed)]
    training, evaluation_jpegs = pool[:images], pool[images:]
    search = search_index(directory, evaluation_jpegs)
    decode, audit = [], []
    for _ in range(rounds):
        start = time.process_time()
        for data in training:
            Image.open(io.BytesIO(data)).load()
        decode.append((time.process_time() - start) / images)
        start = time.process_time()
        audit_records(((key, 0, data) for key, data in enumerate(training)), directory / "c.json", directory / "c.npy", search)
        audit.append((time.process_time() - start) / images)
    return {"images": images, "evaluation": evaluation, "decode_us": 1e6 * statistics.median(decode),
            "audit_us": 1e6 * statistics.median(audit), "rounds_decode_us": [1e6 * v for v in decode],
            "rounds_audit_us": [1e6 * v for v in audit],
            "ratio": statistics.median(audit) / statistics.median(decode)}


# VmHWM: this process's own peak (ru_maxrss keeps the parent's across fork and exec).
JOIN_CHILD = """
import re, sys, time
sys.path.insert(0, sys.argv[1])
from faceprep.audit.join import join_audit
import glob, json
rows = sorted(glob.glob(sys.argv[2] + "/*.npy"))
findings = sorted(glob.glob(sys.argv[2] + "/*.json"))
start = time.monotonic()
audit = join_audit(findings, rows)
print(json.dumps({"seconds": time.monotonic() - start, "groups": len(audit["duplicates"]),
                  "odd": len(audit["odd_size"]),
                  "peak_mb": int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024}))
"""


def join_memory(directory, images, seed):
    rng = np.random.default_rng(seed)
    for chunk, start in enumerate(range(0, images, CHUNK_ROWS)):
        count = min(CHUNK_ROWS, images - start)
        rows = np.zeros(count, IMAGE_ROW)
        rows["digest_high"] = rng.integers(0, 2**63, count, dtype=np.uint64) * 2 + rng.integers(0, 2, count, dtype=np.uint64)
        rows["digest_low"] = rng.integers(0, 2**63, count, dtype=np.uint64)
        rows["key"] = np.arange(start + 1, start + count + 1)
        rows["label"] = rows["key"] // 50
        rows["width"] = rows["height"] = 112
        rows[::100_000]["digest_high"] = 7  # a few duplicates across chunks
        rows.sort(order=["digest_high", "digest_low", "key"])
        np.save(directory / f"chunk_{chunk:05d}.npy", rows)
        (directory / f"chunk_{chunk:05d}.json").write_text(json.dumps(
            {"images": count, "undecodable": [], "not_plain_jpeg": [], "sizes": {"112x112": count}, "eval_overlap": []}))
    result = subprocess.run([sys.executable, "-c", JOIN_CHILD, str(REPO / "scripts"), str(directory)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout) | {"images": images}


def workflow_command(rec, work, audit, *arguments):
    """`snakemake --cores 2` extracting ``rec`` into folders in a fresh ``work`` directory,
    audited or not (a dataset config written there); ``arguments``: targets (default: all) or options."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dataset = {"source": str(rec), "images": str(work / "images"), "bins": []}
    (work / "config.yaml").write_text(json.dumps({"datasets": {"bench": dataset}, "audit": audit}))
    return [str(Path(sys.executable).parent / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory",
            str(work / "work"), "--configfile", str(work / "config.yaml"), "--cores", "2", *arguments]


def workflow_wall(rec, work, audit):
    """Seconds of `snakemake --cores 2` extracting ``rec`` into folders, audited or not."""
    command = workflow_command(rec, work, audit, "-q")
    start = time.monotonic()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    subprocess.run(["sync"], check=True)
    wall = time.monotonic() - start
    shutil.rmtree(work)
    return wall


def added_wall(rec, out, rounds):
    walls = {False: [], True: []}
    for _ in range(rounds):
        for audit in (False, True):
            walls[audit].append(workflow_wall(rec, out / "workflow", audit))
    plain, audited = statistics.median(walls[False]), statistics.median(walls[True])
    return {"without": plain, "with": audited, "added": audited - plain, "rounds": {str(k): v for k, v in walls.items()}}


def scaled_rec(directory, images, identities, seed):
    """A rec of ``images`` synthetic faces of ``identities`` (MS1M-sized JPEGs from a pool of
    4,000 pictures, each record's bytes made distinct by a comment segment holding its key,
    so that the audit does not find thousands of duplicate groups a real dataset lacks)."""
    if (directory / "train.idx").exists():
        return
    pool = [jpeg_bytes(face) for face in face_pool(4000, seed)]
    sizes, picks = plan_records(images, identities, len(pool), seed)
    write_rec(directory, sizes, picks, pool, distinct_bytes=True)


def audit_alone(rec, out, images, identities, seed):
    """The audit's jobs alone on a rec of ``images`` (``scaled_rec``), ``--cores 2``: the wall of
    a run making its audit.json against a run making only the chunk plan (which any run
    makes first), from fresh working directories, and its jobs' peak memory (VmHWM)."""
    scaled_rec(rec, images, identities, seed)
    walls, peaks = {}, {}
    for target in ("chunk_plan.json", "audit.json"):
        run = run_measured(workflow_command(rec, out / "alone", True, f"results/bench/{target}"),
                           out / f"alone_{target}.log", cwd=REPO)
        walls[target] = run.wall
        for job in run.jobs:
            peaks[job.rule] = max(peaks.get(job.rule, 0), job.peak_rss_kb / 1024)
    shutil.rmtree(out / "alone")
    return {"images": images, "identities": identities, "plan_wall": walls["chunk_plan.json"],
            "audit_wall": walls["audit.json"], "added": walls["audit.json"] - walls["chunk_plan.json"],
            "peak_rss_mb": peaks}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--evaluation", type=int, default=25_000)
    parser.add_argument("--identities", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--join-images", type=int, default=42_500_000)
    parser.add_argument("--photos", type=Path, help="a directory of photos of one identity")
    parser.add_argument("--rec", type=Path, help="a rec directory to time the workflow with and without the audit on")
    parser.add_argument("--alone", type=int, nargs=2, metavar=("IMAGES", "IDENTITIES"),
                        help="time the audit's jobs alone on a rec of this many images (5822653 85742: MS1M's count)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "work" / "audit")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {}
    with tempfile.TemporaryDirectory(dir=args.out) as directory:
        result["drawn"] = precision_recall(Path(directory), *drawn_identities(args.identities, args.seed))
    with tempfile.TemporaryDirectory(dir=args.out) as directory:
        evaluation, training, count = demo_images(Path(directory))
        result["demo"] = precision_recall(Path(directory), evaluation, training) | {"demo_images": count}
    if args.photos:
        with tempfile.TemporaryDirectory(dir=args.out) as directory:
            result["photos"] = photo_rounds(Path(directory), photos(args.photos))
    with tempfile.TemporaryDirectory(dir=args.out) as directory:
        result["cpu"] = cpu_per_image(Path(directory), args.images, args.evaluation, args.rounds, args.seed)
    with tempfile.TemporaryDirectory(dir=args.out) as directory:
        result["join"] = join_memory(Path(directory), args.join_images, args.seed)
    if args.rec:
        result["wall"] = added_wall(args.rec.resolve(), args.out.resolve(), args.rounds)
    if args.alone:
        result["alone"] = audit_alone(args.out.resolve() / "scaled_rec", args.out.resolve(), *args.alone, args.seed)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result, indent=2))
    print(rows_text(result))
    return result


def rows_text(result):
    cpu, join = result["cpu"], result["join"]
    lines = ["| data | planted copies | found | true | false | recall | precision | farthest copy's feature | others within the limit |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("drawn", "demo", "photos"):
        if name in result:
            row = result[name]
            lines.append(f"| {name} | {row['planted']} | {row['found']} | {row['true']} | {row['false']} | "
                         f"{row['recall']:.3f} | {row['precision']:.3f} | {row['copy_feature_distance_max']:.3f} | "
                         f"{row['others_within_candidate_distance']:.1%} |")
    lines += [
        "",
        f"CPU per image: audit {cpu['audit_us']:.0f} µs, bare decode {cpu['decode_us']:.0f} µs: "
        f"{cpu['ratio']:.2f}× (goal ≤ {TARGET_CPU_RATIO}×) — {'met' if cpu['ratio'] <= TARGET_CPU_RATIO else 'missed'}",
        f"Join of {join['images']:,} rows: peak RSS {join['peak_mb']:.0f} MB (goal ≤ {TARGET_JOIN_MB} MB), {join['seconds']:.0f} s",
    ]
    if "wall" in result:
        wall = result["wall"]
        lines.append(f"Workflow, --cores 2: {wall['without']:.1f} s without the audit, {wall['with']:.1f} s with it "
                     f"(+{wall['added']:.1f} s)")
    if "alone" in result:
        alone = result["alone"]
        lines.append(f"The audit alone on {alone['images']:,} images, --cores 2: {alone['audit_wall']:.1f} s against "
                     f"{alone['plan_wall']:.1f} s for the plan alone (+{alone['added']:.1f} s); peak RSS (MB): "
                     + ", ".join(f"{rule} {peak:.0f}" for rule, peak in sorted(alone["peak_rss_mb"].items())))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
