"""`make bench BENCH_ARGS="--scale ms1m"`: the workflow at a real dataset's record count.

Writes a rec with MS1M-ArcFace's exact counts (5,822,653 images of 85,742 identities,
insightface layout, through the project's DatasetWriter) whose images are tiny payloads
(16 bytes: the tree's cost is its files, not their bytes), and a rec of the same shape at a
smaller count (``--scale-base``, 300,000 images by default). Each is run once through the
whole workflow (`snakemake --cores N`, `chunk_size: auto`, every target: extraction, index,
verification, report figures) with every job process followed: wall, peak RSS and time per
image of each rule, Snakemake's own peak RSS and how long it takes to start the first job.
The two counts give a count-scaling table, and a straight line through each rule's two peak
RSS values projects it to Glint360K (17.1 M) and WebFace42M (42.5 M).

Disk: the 5.8 M-image run needs ~5.9 M inodes and ~25 GB (a 4 KB block per file) plus
~0.5 GB of rec, manifests and index; it is deleted when the run ends.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from measure import drop_tree, run_measured
from synthetic import plan_records

from faceprep.insightface import DatasetWriter

SCALES = {"ms1m": (5_822_653, 85_742)}
PROJECTED = {"Glint360K": 17_091_657, "WebFace42M": 42_474_557}
# Targets of the full-scale issue.
TARGET_CHUNK_JOB_MB = 200
TARGET_DATASET_JOB_MB = 1000
# Rules run once per chunk; the others once per dataset.
PER_CHUNK_RULES = {"extract_chunk"}
DATASET = "scale"


def write_scaled_rec(directory, images, identities, seed=0):
    """An insightface-layout rec of ``images`` 16-byte images spread over ``identities``."""
    sizes, _ = plan_records(images, identities, 1, seed)
    labels = np.repeat(np.arange(identities), sizes)
    with DatasetWriter(directory) as writer:
        for key, label in enumerate(labels.tolist(), start=1):
            writer.add(key, label, b"\xff\xd8scale" + key.to_bytes(8, "little") + b"\xff")
    return directory


def run_workflow(snakemake, repo, run_dir, source, cores, log_path):
    config = run_dir / "config.yaml"
    dataset = {"source": str(source), "images": str(run_dir / "images"), "bins_out": str(run_dir / "bins"), "bins": []}
    config.write_text(yaml.safe_dump({"datasets": {DATASET: dataset}, "chunk_size": "auto", "audit": False}))
    command = [snakemake, "--snakefile", repo / "Snakefile", "--directory", run_dir / "work", "--configfile", config,
               "--cores", str(cores)]
    return run_measured(command, log_path, cwd=repo, write_back=True)


def rule_rows(run, images):
    """Per rule: jobs, the longest job's wall, summed job seconds, largest peak RSS, µs per image."""
    rules = {}
    for job in run.jobs:
        if job.rule is None or job.seconds is None:
            continue
        row = rules.setdefault(job.rule, {"jobs": 0, "longest_s": 0.0, "job_s": 0.0, "peak_rss_mb": 0.0})
        row["jobs"] += 1
        row["longest_s"] = max(row["longest_s"], job.seconds)
        row["job_s"] += job.seconds
        row["peak_rss_mb"] = max(row["peak_rss_mb"], job.peak_rss_kb / 1024)
    for row in rules.values():
        row["us_per_image"] = 1e6 * row["job_s"] / images
    return rules


def measure_scale(snakemake, repo, out, images, identities, cores, say):
    """Write the rec, run the workflow on it, return its measurements; the tree is deleted after."""
    source = out / f"rec_{images}"
    if not (source / "train.idx").exists():
        started = time.monotonic()
        write_scaled_rec(source, images, identities)
        say(f"wrote a rec of {images:,} images in {time.monotonic() - started:.0f} s")
    run_dir = out / f"run_{images}"
    drop_tree(run_dir)
    run_dir.mkdir(parents=True)
    say(f"workflow on {images:,} images, --cores {cores}")
    run = run_workflow(snakemake, repo, run_dir, source, cores, out / f"workflow_{images}.log")
    plan = json.loads((run_dir / "work" / "results" / DATASET / "chunk_plan.json").read_text())
    summary = json.loads((run_dir / "work" / "results" / DATASET / "extraction.json").read_text())
    if summary["images"] != images:
        raise RuntimeError(f"{run_dir}: verified {summary['images']} images, expected {images}")
    first_job = min((job.start for job in run.jobs), default=run.start)
    result = {
        "images": images, "identities": identities, "cores": cores, "wall_s": run.wall,
        "sync_s": run.sync_seconds, "chunks": len(plan["chunks"]), "chunk_size": plan["chunk_size"],
        "snakemake_peak_rss_mb": run.command_peak_rss_kb / 1024, "first_job_after_s": first_job - run.start,
        "rules": rule_rows(run, images),
    }
    say(f"deleting the tree of {images:,} images")
    drop_tree(run_dir)
    return result


def projection(small, large, rule, target_images):
    """Peak RSS of ``rule`` at ``target_images`` on the line through the two measured counts."""
    x0, x1 = small["images"], large["images"]
    y0, y1 = small["rules"][rule]["peak_rss_mb"], large["rules"][rule]["peak_rss_mb"]
    slope = (y1 - y0) / (x1 - x0)
    return y1 + slope * (target_images - x1), slope * 1e6


def render(results):
    small, large = results["runs"]
    lines = [
        f"### Full record count ({large['images']:,} images of {large['identities']:,} identities, `--scale ms1m`)",
        "",
        f"Tiny 16-byte images, insightface layout; one run each with `--cores {large['cores']}` and `chunk_size: auto` "
        f"({large['chunks']:,} chunks of {large['chunk_size']:,} at full count, {small['chunks']} at "
        f"{small['images']:,}); every target of the dataset (extraction, index, verification, report figures).",
        "",
        "| | " + f"{small['images']:,} images | {large['images']:,} images |",
        "| --- | ---: | ---: |",
        f"| wall s (+ sync s) | {small['wall_s']:.1f} (+{small['sync_s']:.1f}) | {large['wall_s']:.1f} "
        f"(+{large['sync_s']:.1f}) |",
        f"| Snakemake peak RSS MB | {small['snakemake_peak_rss_mb']:.0f} | {large['snakemake_peak_rss_mb']:.0f} |",
        f"| Snakemake start until the first job s | {small['first_job_after_s']:.1f} | {large['first_job_after_s']:.1f} |",
        "",
        "| rule | jobs | longest job s | µs per image (all jobs) | peak RSS MB | "
        + " | ".join(f"peak RSS MB projected at {name} ({count / 1e6:.1f} M)" for name, count in PROJECTED.items())
        + " | target MB | MB per million images |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in PROJECTED) + " | ---: | ---: |",
    ]
    verdicts = []
    for rule in sorted(large["rules"]):
        row = large["rules"][rule]
        small_row = small["rules"].get(rule)
        target = TARGET_CHUNK_JOB_MB if rule in PER_CHUNK_RULES else TARGET_DATASET_JOB_MB
        if small_row is None:
            projected, per_million = [row["peak_rss_mb"]] * len(PROJECTED), float("nan")
        else:
            projected = [projection(small, large, rule, count)[0] for count in PROJECTED.values()]
            per_million = projection(small, large, rule, 0)[1]
        # A per-chunk job's memory follows the chunk size, not the dataset: its measured peak is the projection.
        if rule in PER_CHUNK_RULES:
            projected = [row["peak_rss_mb"]] * len(PROJECTED)
        lines.append(
            f"| {rule} | {row['jobs']:,} | {row['longest_s']:.1f} | {row['us_per_image']:.2f} | {row['peak_rss_mb']:.0f} | "
            + " | ".join(f"{value:.0f}" for value in projected)
            + f" | {target} | {per_million:.1f} |"
        )
        if max(projected) > target:
            verdicts.append(f"{rule}: {max(projected):.0f} MB projected, over the {target} MB target")
    lines += ["", "Targets: " + ("; ".join(verdicts) if verdicts else "every rule within its target") + "."]
    return "\n".join(lines) + "\n"


def run_scale(args, snakemake, repo, say):
    images, identities = SCALES[args.scale]
    base_identities = max(1, round(identities * args.scale_base / images))
    out = args.out / "scale"
    out.mkdir(parents=True, exist_ok=True)
    runs = [measure_scale(snakemake, repo, out, count, ids, args.scale_cores, say)
            for count, ids in ((args.scale_base, base_identities), (images, identities))]
    results = {"scale": args.scale, "runs": runs}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    report = render(results)
    report_path = args.report or out / "report.md"
    Path(report_path).write_text(report)
    print(report)
    say(f"report: {report_path}; measurements: {out / 'results.json'}")
    for count in (args.scale_base, images):
        drop_tree(out / f"rec_{count}")
    os.sync()
