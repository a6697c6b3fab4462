"""The report of `bench/run_bench.py`: medians of its records, the markdown section and the targets.

``summarize`` turns the saved records (``results.json``) into rows; ``render`` writes the
section bench/README.md holds, ending with the targets (restated by issue 26).
"""

import statistics

# The cfp_fp-like bins, by name in the report. Their pictures are the same; every image of the
# all-JPEG bin is an 8-bit JPEG, which reformat_bin keeps without importing TensorFlow, while
# the mixed bin's planted BMP and 12-bit JPEG images make it import TensorFlow to re-encode them.
BIN_LABELS = {"all_jpeg": "all-JPEG", "mixed": "mixed"}
SHARD_CONTENDERS = {"shards_webdataset": "webdataset", "shards_tfrecord": "tfrecord"}
EXTRACTION_ROWS = {
    "original": "original MXNet script (1 process)",
    "workflow_cores1": "workflow, `--cores 1`",
    "workflow_cores2": "workflow, `--cores 2`",
    "tar": "`tar -x` of the same tree",
    "tar_halves": "two `tar -x` together, each of half the tree (the two-core limit)",
    "workflow_quarter": "workflow, `--cores 2`, ¼ rec",
    "shards_webdataset": "workflow, `--cores 2`, `outputs: [webdataset]` (no tree)",
    "shards_tfrecord": "workflow, `--cores 2`, `outputs: [tfrecord]` (no tree)",
}
# Targets on a 2-core machine (restated by issue 26): the extraction's wall against two half-tree
# tar -x run together (the two-core limit of creating the files), shard runs until on disk
# against the disk's sequential write of the same bytes, peak memory and Snakemake's overhead.
# Retired: bins >= 2x / 5x the original (TensorFlow's import dominates a bin of seconds either
# way) and shards >= 3x faster than tar -x of the tree; the ratios stay in the tables.
TARGET_WALL_VS_TAR_HALVES = 1.25
TARGET_SHARDS_VS_DD = 1.2
TARGET_PEAK_RSS_MB = 200
TARGET_OVERHEAD = 0.10


def median_of(records, contender, key=lambda record: record["wall"]):
    values = [key(record) for record in records if record["contender"] == contender]
    return statistics.median(values) if values else None


def median_recorded(records, contender, field):
    """The median of ``field`` over the runs of ``contender``; None if a run lacks it (results.json
    files written before kernel, stolen and write-back time were recorded)."""
    values = [record.get(field) for record in records if record["contender"] == contender]
    return None if not values or None in values else statistics.median(values)


def summarize(results):
    records, inputs = results["records"], results["inputs"]
    images = inputs["full"]["images"]
    # results.json of benchmarks before the shard runs have none of them.
    measured = {name: label for name, label in EXTRACTION_ROWS.items() if median_of(records, name) is not None}
    wall = {name: median_of(records, name) for name in measured}
    rss = {name: max(record["max_rss_kb"] for record in records if record["contender"] == name) / 1024
           for name in measured}
    on_disk = {name: median_recorded(records, name, "on_disk") for name in measured}
    extraction = []
    for name, label in measured.items():
        count = inputs["quarter" if name == "workflow_quarter" else "full"]["images"]
        extraction.append({"contender": name, "label": label, "wall": wall[name], "images_per_s": count / wall[name],
                           "vs_original": (count / wall[name]) / (images / wall["original"]),
                           "vs_tar": wall[name] / wall["tar"] * images / count, "max_rss_mb": rss[name],
                           "on_disk": on_disk[name],
                           "on_disk_vs_tar": (on_disk[name] / on_disk["tar"] * images / count
                                              if on_disk[name] and on_disk["tar"] else None),
                           **{field: median_recorded(records, name, field)
                              for field in ("cpu_seconds", "system_seconds", "background_cpus", "stolen_cpus",
                                            "dirty_mb", "sync_seconds")}})
    bins = bin_rows(records, inputs["params"]["bin_images"])
    return {"extraction": extraction, "bins": bins, "memory": memory_rows(records),
            "overhead": overhead_rows(records)}


def bin_row(job, label, records_of, runs):
    """The row of ``job`` over ``records_of``; ``runs(record)``: the runs of one record that make it up."""
    def median_over_records(value):
        return statistics.median(value(runs(record)) for record in records_of)

    return {"job": job, "label": label, "job_s": None,
            "wall": median_over_records(lambda runs_of: sum(run["wall"] for run in runs_of)),
            "cpu_seconds": median_over_records(lambda runs_of: sum(run["cpu_seconds"] for run in runs_of)),
            "background_cpus": median_over_records(
                lambda runs_of: sum(run["background_cpus"] * run["wall"] for run in runs_of)
                / sum(run["wall"] for run in runs_of)),
            "max_rss_mb": max(run["max_rss_kb"] for record in records_of for run in runs(record)) / 1024}


def bin_rows(records, bin_images):
    """Per bin: the original, each workflow job and both; × original against the original on the same bin."""
    rows = []
    for kind in BIN_LABELS:
        originals, workflows = ([record for record in records if record["contender"] == f"bin_{program}_{kind}"]
                                for program in ("original", "workflow"))
        rows_of_bin = [bin_row("original", "original reformat (skimage + `tf.image.encode_jpeg`, 1 process)",
                               originals, lambda record: [record])]
        for step, rule in (("reformat", "reformat_bin"), ("verify", "verify_bin")):
            row = bin_row(rule, f"workflow `{rule}` (whole `snakemake` run)", workflows, lambda record: [record[step]])
            row["job_s"] = statistics.median(sum(entry["s"] for entry in record[step]["benchmarks"]
                                                 if entry["rule"] == rule) for record in workflows)
            rows_of_bin.append(row)
        rows_of_bin.append(bin_row("both", "workflow `reformat_bin` + `verify_bin` (the two runs above)", workflows,
                                   lambda record: [record["reformat"], record["verify"]]))
        if all("one_run" in record for record in workflows):
            rows_of_bin.append(bin_row("one_run", "workflow `reformat_bin` + `verify_bin` in one `snakemake` run",
                                       workflows, lambda record: [record["one_run"]]))
        for row in rows_of_bin:
            row |= {"bin": kind, "images_per_s": bin_images / row["wall"],
                    "vs_original": rows_of_bin[0]["wall"] / row["wall"]}
        rows += rows_of_bin
    return rows


def memory_rows(records):
    """Peak RSS per job (per rule, and per bin for the bin jobs), the largest over all runs, for the
    quarter and the full rec. ``job`` names the job a row measures (None for Snakemake itself)."""
    peaks = {}

    def note(job, process, size, megabytes):
        key = (job, process, size)
        peaks[key] = max(peaks.get(key, 0), megabytes)

    for record in records:
        runs = [record] if "jobs" in record else [record[step] for step in ("reformat", "verify", "one_run")
                                                    if step in record]
        size = "quarter" if record["contender"] == "workflow_quarter" else "full"
        on_bin = f", {BIN_LABELS[record['bin']]} bin" if "bin" in record else ""
        for run in runs:
            for job in run["jobs"]:
                note(job["rule"] + on_bin, job["rule"] + on_bin, size, job["peak_rss_kb"] / 1024)
            for entry in run["benchmarks"]:
                job = entry["rule"] + on_bin
                note(job, f"{job} (Snakemake benchmark)", size, entry["max_rss_mb"])
            note(None, "snakemake (scheduler process)", size, run["snakemake_peak_rss_kb"] / 1024)
    rows = sorted({(job, process) for job, process, _ in peaks}, key=lambda row: row[1])
    return [{"job": job, "process": process, "quarter_mb": peaks.get((job, process, "quarter")),
             "full_mb": peaks.get((job, process, "full"))} for job, process in rows]


def overhead_rows(records):
    rows = []
    for name in ("workflow_cores1", "workflow_cores2", "workflow_quarter"):
        runs = [record for record in records if record["contender"] == name]
        wall = statistics.median(run["wall"] for run in runs)
        overhead = statistics.median(run["overhead"] for run in runs)
        chunk_jobs = [job for run in runs for job in run["jobs"] if job["rule"] == "extract_chunk"]
        rows.append({
            "contender": name, "label": EXTRACTION_ROWS[name], "wall": wall, "overhead": overhead,
            "fraction": overhead / wall,
            "first_job_after": statistics.median(run["first_job_after"] for run in runs),
            "exit_after_last_job": median_recorded(records, name, "exit_after_last_job"),
            "nothing_to_do": median_recorded(records, name, "nothing_to_do_wall"),
            "job_seconds": {rule: statistics.median(sum(job["seconds"] for job in run["jobs"] if job["rule"] == rule)
                                                    for run in runs)
                            for rule in sorted({job["rule"] for run in runs for job in run["jobs"]})},
            "chunk_jobs": len(chunk_jobs) // len(runs),
        })
    return rows


def shard_lines(results, summary):
    """What the shard runs wrote, against the disk's sequential write speed."""
    disk = results.get("disk_write")
    rows = {row["contender"]: row for row in summary["extraction"]}
    if not disk or not any(name in rows for name in SHARD_CONTENDERS):
        return []
    lines = [f"The shard rows write shards of `shard_size: auto` (each ≤ 256 MB, at least 64 of them from 64,000 "
             f"images on, several per chunk job; chunks {chunk_size_text(results)}) and no tree, then "
             "`metadata.json` and the format's verification (size, SHA-256 and image count of every shard); their "
             "jobs fsync each shard before renaming it, so little is left to the sync. The disk writes "
             f"{disk['mb_per_s']:,.0f} MB/s sequentially (`dd bs=16M conv=fdatasync` of "
             f"{disk['bytes'] / 2**20:,.0f} MB, the images' size, in {disk['wall']:.1f} s), the limit of any "
             "writer of these bytes:", ""]
    for name, shard_format in SHARD_CONTENDERS.items():
        if name in rows:
            shard_bytes = median_of(results["records"], name, key=lambda record: record["shard_bytes"])
            shards = median_of(results["records"], name, key=lambda record: record.get("shards", 0))
            lines.append(f"- `{shard_format}`: {shard_bytes / 2**20:,.0f} MB of shards{f' ({shards:.0f})' if shards else ''}, at least "
                         f"{shard_bytes / 2**20 / disk['mb_per_s']:.1f} s at that speed; the run took "
                         f"{fmt(rows[name]['wall'])} s ({fmt(rows[name]['on_disk'])} s until on disk).")
    return lines + [""]


def cores2_round_lines(records):
    """Each ``--cores 2`` run with its chunk jobs, to tell slow jobs that computed from slow jobs that waited."""
    runs = [record for record in records if record["contender"] == "workflow_cores2"]
    lines = ["The `--cores 2` runs one by one; chunk jobs in the order they started:", "",
             "| round | wall s | CPU s | of it kernel s | stolen (CPUs) | left dirty MB | sync s | chunk jobs s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in runs:
        chunks = sorted((job["start"], job["seconds"]) for job in run["jobs"] if job["rule"] == "extract_chunk")
        lines.append(f"| {run['round']} | {fmt(run['wall'])} | {fmt(run['cpu_seconds'])} | "
                     f"{fmt(run.get('system_seconds'))} | {fmt(run.get('stolen_cpus'), 2)} | "
                     f"{fmt(run.get('dirty_mb'), 0)} | {fmt(run.get('sync_seconds'))} | "
                     f"{', '.join(fmt(seconds) for _, seconds in chunks)} |")
    return lines + [""]


def chunk_size_text(results):
    """The chunk size of the workflow runs; for ``auto``, what the plans of the full rec made of it."""
    if results["chunk_size"] != "auto":
        return f"{results['chunk_size']:,}"
    planned = {(record["chunks"], record["chunk_size"]) for record in results["records"]
               if record["contender"] in ("workflow_cores1", "workflow_cores2") and "chunks" in record}
    return "auto: " + ", ".join(f"{chunks} chunks of {size:,}" for chunks, size in sorted(planned))


def fmt(value, digits=1, suffix=""):
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def render(results):
    """The markdown section of ``results`` (as saved in results.json)."""
    inputs, sweep, machine_info = results["inputs"], results["sweep"], results["machine"]
    summary, original_bin_failure = results["summary"], results["original_bin_failure"]
    full, quarter, bin_images = inputs["full"], inputs["quarter"], inputs["params"]["bin_images"]
    planted = ", ".join(f"{count} {image_format}" for image_format, count in inputs["bin_formats"]["mixed"].items()
                        if image_format != "jpeg")
    rounds = max(record["round"] for record in results["records"])
    lines = [
        "## Benchmark (`make bench`)",
        "",
        "`make bench` runs `bench/run_bench.py`: it builds a synthetic MS1M-like `train.rec` "
        f"({full['images']:,} images of {full['identities']:,} identities, "
        f"{full['image_bytes'] / full['images'] / 1000:.1f} KB JPEGs on average, insightface layout) and two "
        f"cfp_fp-like bins of the same {bin_images:,} pictures as `cv2.imencode` arrays: *all-JPEG*, every image an "
        "8-bit JPEG as in the real cfp_fp.bin and agedb_30.bin, which `reformat_bin` keeps without importing "
        f"TensorFlow, and *mixed*, with {planted} images planted, which it imports TensorFlow to re-encode. "
        f"Then it times every contender on the same files over {rounds} alternating rounds and "
        "reports medians: the original MXNet extraction script, the workflow with `--cores 1` and `--cores 2`, "
        "`tar -x` of the same tree (the practical limit of creating those files with one process) and two `tar -x` "
        "run together, each of half of it (the limit with both cores), and on each bin the original bin "
        "reformat and the workflow's `reformat_bin` and `verify_bin`, as two `snakemake` runs and as one. Before each run its outputs are moved out of "
        "the way and the file system synced, and its input is read once, so every contender starts from the same "
        "warm page cache. Removed trees are deleted in bulk between rounds, followed by a pause: on ext4 without a "
        "journal, files created within minutes of a large deletion are several times slower to create "
        "(`bench/measure.py` explains).",
        "",
        "```sh",
        f"make bench                                  # the run below took {results['elapsed_s'] / 60:.0f} min; "
        "scratch data in bench/work/",
        ".venv/bin/python bench/run_bench.py --help  # sizes, rounds, chunk sizes to try, report path",
        ".venv/bin/python bench/run_bench.py --rerender --report report.md  # rewrite the report from results.json",
        "```",
        "",
        "`tests/test_bench.py` runs the `--smoke` preset (a few hundred images, one round) so the benchmark keeps "
        "working; it asserts what was measured, never how fast.",
        "",
        f"Machine: {machine_info['nproc']} CPUs ({machine_info['cpu']}), {machine_info['memory_gb']} GB RAM, "
        f"{machine_info['machine']}, Linux {machine_info['kernel']}, {machine_info['filesystem']}, "
        f"Python {machine_info['python']}. The disk is shared with other work, hence the alternating rounds.",
        "",
        f"### rec → folders and shards ({full['images']:,} images, chunk_size {chunk_size_text(results)})",
        "",
        "| run | wall s | images/s | × original (speed) | × `tar -x` (wall) | left dirty MB | sync s "
        "| wall + sync s | × `tar -x` (wall + sync) | CPU s | of it kernel s | other load (CPUs) | stolen (CPUs) "
        "| peak RSS MB (largest process) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["extraction"]:
        lines.append(f"| {row['label']} | {fmt(row['wall'])} | {fmt(row['images_per_s'], 0)} | "
                     f"{fmt(row['vs_original'], 2)} | {fmt(row['vs_tar'], 2)} | {fmt(row['dirty_mb'], 0)} | "
                     f"{fmt(row['sync_seconds'])} | {fmt(row['on_disk'])} | {fmt(row['on_disk_vs_tar'], 2)} | "
                     f"{fmt(row['cpu_seconds'])} | {fmt(row['system_seconds'])} | {fmt(row['background_cpus'], 2)} | "
                     f"{fmt(row['stolen_cpus'], 2)} | {fmt(row['max_rss_mb'], 0)} |")
    lines += [
        "",
        "Workflow walls are the whole `snakemake` process: start-up, the `plan_chunks` checkpoint, the chunk jobs, "
        "`build_index` and `verify_extraction`. The ¼-rec row "
        f"({quarter['images']:,} images) is scaled to the full size in the `× tar -x` columns. *CPU s*: user + "
        "system time of the run's whole process tree, *of it kernel s* the system part (mostly creating files); "
        "*left dirty MB*: file data still in memory, not yet on disk, when the run ended (`Dirty` in "
        "`/proc/meminfo`), *sync s* the `sync` that wrote it back right after, and *wall + sync* the time until the "
        "tree was on disk. The kernel starts writing back in the background once dirty data passes "
        "`vm.dirty_background_ratio` of the memory it can use"
        + ("" if "dirty_background_mb" not in machine_info else
           f" ({machine_info['dirty_background_ratio']} %: {machine_info['dirty_background_mb']:,} MB when the "
           f"benchmark started, for a tree of {full['image_bytes'] / 2**20:,.0f} MB)")
        + ", so a run that ends sooner leaves more of the writing to the sync; "
        "*other load*: CPUs that other processes kept busy during the "
        "run, on average (from `/proc/stat`), the noise the alternating rounds are there for; *stolen*: CPUs the "
        "hypervisor gave to other machines during the run, on average (`/proc/stat` steal), which no process sees.",
        "",
    ]
    lines += shard_lines(results, summary)
    lines += cores2_round_lines(results["records"])
    if sweep:
        lines += ["Chunk size: before the rounds, two `--cores 2` runs with each candidate, the second pass in "
                  "reverse order; the size with the shortest mean is used above. Candidates are at most a quarter of the rec, "
                  "so the ¼-rec run holds whole chunks of the same size and its memory is comparable.", "",
                  "| chunk_size | chunks | wall s (pass 1, pass 2) | mean s |", "| ---: | ---: | --- | ---: |"]
        lines += [f"| {entry['chunk_size']:,} | {entry['chunks']} | "
                  f"{', '.join(fmt(wall) for wall in entry['walls'])} | {fmt(statistics.mean(entry['walls']))} |"
                  for entry in sweep]
        lines.append("")
    lines += [
        f"### bin → bin ({bin_images:,} images)",
        "",
        "| bin | run | wall s | job s | images/s | × original | CPU s | other load (CPUs) | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["bins"]:
        lines.append(f"| {BIN_LABELS[row['bin']]} | {row['label']} | {fmt(row['wall'])} | {fmt(row['job_s'])} | "
                     f"{fmt(row['images_per_s'], 0)} | {fmt(row['vs_original'], 2)} | {fmt(row['cpu_seconds'])} | "
                     f"{fmt(row['background_cpus'], 2)} | {fmt(row['max_rss_mb'], 0)} |")
    lines += ["", "*job s*: the job alone, from Snakemake's benchmark file; *wall s*: the whole `snakemake` run; "
                  "*× original*: against the original on the same bin."]
    if original_bin_failure:
        lines += ["", "The original cannot read the mixed bin's 12-bit JPEGs "
                      f"(image {original_bin_failure['index']}: `{original_bin_failure['error']}`), so on that bin it "
                      "is timed on a twin holding 8-bit JPEGs of the same pictures there; the workflow reads the "
                      "real bin."]
    lines += [
        "",
        "### Peak memory per job",
        "",
        f"Largest peak RSS over all runs, for the ¼ rec ({quarter['images']:,} images) and the full rec "
        f"({full['images']:,}). Job processes are followed while Snakemake runs them (`VmHWM`, sampled every "
        "0.1 s); `(Snakemake benchmark)` rows are the `max_rss` of the rules' benchmark files.",
        "",
        "| process | ¼ rec MB | full rec MB |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {row['process']} | {fmt(row['quarter_mb'], 0)} | {fmt(row['full_mb'], 0)} |"
              for row in summary["memory"]]
    lines += [
        "",
        "### Snakemake's overhead",
        "",
        "Overhead = wall − Σ(job process lifetimes) / cores: the time the run's cores were not running a job "
        "(Snakemake's start-up and DAG building, the checkpoint re-evaluation, gaps between jobs, and cores left "
        "idle while a single job such as `plan_chunks` runs). Job lifetimes are measured from each job process's "
        "start to its exit. The Python start-up and imports inside each job count as job time.",
        "",
        "| run | wall s | chunk jobs | first job after s | Σ job s by rule | exit after last job s | overhead s | overhead % |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in summary["overhead"]:
        jobs = ", ".join(f"{rule} {seconds:.1f}" for rule, seconds in row["job_seconds"].items())
        lines.append(f"| {row['label']} | {fmt(row['wall'])} | {row['chunk_jobs']} | {fmt(row['first_job_after'])} | "
                     f"{jobs} | {fmt(row.get('exit_after_last_job'))} | {fmt(row['overhead'])} | "
                     f"{fmt(100 * row['fraction'], 0)} |")
    idle_seconds = nothing_to_do_seconds(summary)
    if idle_seconds:
        lines += ["", f"*exit after last job*: from the end of the last job to Snakemake's exit (the teardown of "
                  "its modules, and, after last jobs shorter than a second, the rest of the 1 s timer its last "
                  "scheduling pass started, `--max-jobs-per-timespan`'s smallest timespan). The same `--cores 2` "
                  f"command run again right after, with everything up to "
                  f"date, took {idle_seconds:.1f} s: the start-up, DAG and exit every run pays."]
    lines += ["", "### Targets", ""] + [f"- {line}" for line in targets(summary, results)]
    return "\n".join(lines) + "\n"


def nothing_to_do_seconds(summary):
    """The `--cores 2` command's rerun with everything up to date (None in older results)."""
    return next(row.get("nothing_to_do") for row in summary["overhead"] if row["contender"] == "workflow_cores2")


def targets(summary, results):
    rows = {row["contender"]: row for row in summary["extraction"]}
    cores2 = rows["workflow_cores2"]
    largest_mb, largest_job = max((value, row["job"]) for row in summary["memory"] if row["job"]
                                  for value in (row["quarter_mb"], row["full_mb"]) if value is not None)
    # Flat: on the 4x larger rec, within 25 % + 5 MB (sampling noise) of the quarter rec's peak.
    growing = [row["process"] for row in summary["memory"]
               if row["quarter_mb"] and row["full_mb"] and row["full_mb"] > 1.25 * row["quarter_mb"] + 5]
    overhead = {row["contender"]: row["fraction"] for row in summary["overhead"]}
    worst_overhead = max(overhead["workflow_cores1"], overhead["workflow_cores2"])
    disk = results.get("disk_write")

    def verdict(ok):
        return "met" if ok else "**missed**"

    lines = []
    if "tar_halves" in rows:
        ratio = cores2["wall"] / rows["tar_halves"]["wall"]
        lines.append(f"extraction, `--cores 2` wall ≤ {TARGET_WALL_VS_TAR_HALVES:g}× two half-tree `tar -x` together "
                     f"(the two-core limit): {ratio:.2f}× — {verdict(ratio <= TARGET_WALL_VS_TAR_HALVES)} "
                     f"({cores2['vs_tar']:.2f}× one `tar -x`)")
    for name, shard_format in SHARD_CONTENDERS.items():
        if name in rows and disk and rows[name].get("on_disk") is not None:
            shard_bytes = median_of(results["records"], name, key=lambda record: record["shard_bytes"])
            ratio = rows[name]["on_disk"] / (shard_bytes / 2**20 / disk["mb_per_s"])
            lines.append(f"shards, `{shard_format}`, until on disk ≤ {TARGET_SHARDS_VS_DD:g}× the disk's sequential "
                         f"write (`dd`) of the same bytes: {ratio:.2f}× — {verdict(ratio <= TARGET_SHARDS_VS_DD)}")
    return lines + [
        f"peak RSS ≤ {TARGET_PEAK_RSS_MB} MB per job: largest {largest_mb:.0f} MB ({largest_job}) — "
        f"{verdict(largest_mb <= TARGET_PEAK_RSS_MB)}; flat in rec size: "
        + (f"**grows** for {', '.join(growing)}" if growing else "met"),
        f"Snakemake overhead ≤ {100 * TARGET_OVERHEAD:.0f} % of the run: `--cores 1` "
        f"{100 * overhead['workflow_cores1']:.0f} %, `--cores 2` {100 * overhead['workflow_cores2']:.0f} % — "
        f"{verdict(worst_overhead <= TARGET_OVERHEAD)}",
        "retired (issue 26): bins ≥ 2× and ≥ 5× the original, shards ≥ 3× faster than `tar -x`; their ratios "
        "stay in the tables above",
    ]
