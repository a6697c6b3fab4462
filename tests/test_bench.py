"""`make bench` cannot rot: its smoke preset runs every contender once on a few hundred images."""

import json
import math
import os
import pickle
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceprep.audit.overlap import CANDIDATE_DISTANCE, SEARCH_SLACK
from faceprep.rec_reader import IndexedRecordReader
from oracle import mxnet_python

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

SMOKE_IMAGES, SMOKE_CHUNK_SIZE, SMOKE_BIN_IMAGES = 400, 100, 200
BIN_KINDS = ("all_jpeg", "mixed")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    mxnet_python()  # machine.lacks() without the oracle venv
    out = tmp_path_factory.mktemp("bench")
    report = out / "section.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_bench.py"), "--smoke", "--out", str(out / "work"), "--report", str(report)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return out / "work", report, json.loads((out / "work" / "results.json").read_text())


@pytest.mark.e2e
@pytest.mark.mxnet
def test_every_contender_is_measured_once_per_round(smoke):
    _, _, results = smoke
    contenders = [record["contender"] for record in results["records"]]
    assert sorted(contenders) == sorted(["original", "workflow_cores1", "workflow_cores2", "tar", "tar_halves",
                                         "workflow_quarter", "shards_webdataset", "shards_tfrecord"]
                                        + [f"bin_{program}_{kind}" for kind in BIN_KINDS
                                           for program in ("original", "workflow")])
    for record in results["records"]:
        runs = [record["reformat"], record["verify"], record["one_run"]] if "reformat" in record else [record]
        for run in runs:
            assert run["wall"] > 0 and run["cpu_seconds"] > 0 and 0 <= run["system_seconds"] <= run["cpu_seconds"]
            assert 0 <= run["stolen_cpus"] <= os.cpu_count()
            if not record["contender"].startswith("tar"):  # a few hundred files: tar may exit before the first sample
                assert run["max_rss_kb"] > 0
            # Extractions are also timed until their tree is on disk; bins are one file each.
            if record["contender"] in ("original", "workflow_cores1", "workflow_cores2", "tar", "tar_halves",
                                       "workflow_quarter", "shards_webdataset", "shards_tfrecord"):
                assert run["dirty_mb"] >= 0 and run["sync_seconds"] > 0
                assert run["on_disk"] == run["wall"] + run["sync_seconds"]
            else:
                assert run["sync_seconds"] is None and run["on_disk"] is None


@pytest.mark.e2e
@pytest.mark.mxnet
def test_workflow_jobs_are_followed_with_their_memory(smoke):
    _, _, results = smoke
    full = next(record for record in results["records"] if record["contender"] == "workflow_cores2")
    rules = sorted(job["rule"] for job in full["jobs"])
    chunks = math.ceil(SMOKE_IMAGES / SMOKE_CHUNK_SIZE)
    assert rules == sorted(["plan_chunks", "build_index", "verify_extraction"] + ["extract_chunk"] * chunks)
    assert all(job["seconds"] > 0 and job["peak_rss_kb"] > 0 for job in full["jobs"])
    # Snakemake's own benchmark files of the chunk jobs are read too.
    assert [entry["rule"] for entry in full["benchmarks"]] == ["extract_chunk"] * chunks
    assert full["snakemake_peak_rss_kb"] > 0
    # Snakemake's exit after its last job, and the same command rerun with nothing to do.
    last_end = max(job["start"] + job["seconds"] for job in full["jobs"])
    assert full["exit_after_last_job"] == pytest.approx(full["wall"] - last_end) and full["exit_after_last_job"] > 0
    assert 0 < full["nothing_to_do_wall"]
    for kind in BIN_KINDS:
        bins = next(record for record in results["records"] if record["contender"] == f"bin_workflow_{kind}")
        for step, rule in (("reformat", "reformat_bin"), ("verify", "verify_bin")):
            assert [job["rule"] for job in bins[step]["jobs"]] == [rule]
            assert [entry["rule"] for entry in bins[step]["benchmarks"]] == [rule]
        # One run makes the verified bin from scratch: both jobs, one after the other.
        assert [job["rule"] for job in sorted(bins["one_run"]["jobs"], key=lambda job: job["start"])] == [
            "reformat_bin", "verify_bin"]
    for shard_format in ("webdataset", "tfrecord"):
        shards = next(record for record in results["records"] if record["contender"] == f"shards_{shard_format}")
        rules = sorted(job["rule"] for job in shards["jobs"])
        # One label scan: a plan of an explicit chunk_size scans by up to 200,000 records, whatever --cores.
        assert rules == sorted(["plan_chunks", "class_table", "shard_metadata", "verify_shards"]
                               + ["scan_labels"] + ["write_shard"] * chunks)
        assert shards["shard_bytes"] > results["inputs"]["full"]["image_bytes"]


@pytest.mark.e2e
@pytest.mark.mxnet
def test_all_jpeg_bin_is_kept_whole_and_the_mixed_bin_reencodes_its_planted_images(smoke):
    _, _, results = smoke
    workflow = {record["bin"]: record for record in results["records"]
                if record["contender"].startswith("bin_workflow")}
    assert workflow["all_jpeg"]["kept"] == SMOKE_BIN_IMAGES and workflow["all_jpeg"]["reencode_reasons"] == {}
    planted = {image_format: count for image_format, count in results["inputs"]["bin_formats"]["mixed"].items()
               if image_format != "jpeg"}
    assert sum(workflow["mixed"]["reencode_reasons"].values()) == sum(planted.values())
    assert workflow["mixed"]["kept"] == SMOKE_BIN_IMAGES - sum(planted.values())


@pytest.mark.e2e
@pytest.mark.mxnet
def test_report_has_every_table_and_target(smoke):
    _, report, _ = smoke
    text = report.read_text()
    for row in ("original MXNet script", "workflow, `--cores 1`", "workflow, `--cores 2`", "`tar -x` of the same tree",
                "two `tar -x` together, each of half the tree", "¼ rec", "extract_chunk", "build_index"):
        assert row in text
    for label in ("all-JPEG", "mixed"):
        bin_table_runs = [line.split(" | ")[1] for line in text.splitlines() if line.startswith(f"| {label} | ")]
        assert bin_table_runs == ["original reformat (skimage + `tf.image.encode_jpeg`, 1 process)",
                                  "workflow `reformat_bin` (whole `snakemake` run)",
                                  "workflow `verify_bin` (whole `snakemake` run)",
                                  "workflow `reformat_bin` + `verify_bin` (the two runs above)",
                                  "workflow `reformat_bin` + `verify_bin` in one `snakemake` run"]
        for job in ("reformat_bin", "verify_bin"):
            assert f"| {job}, {label} bin | – | " in text  # its peak, measured on the full-size inputs only
    targets = text.split("### Targets", 1)[1]
    assert targets.count("\n- ") == 6
    for shard_format in ("webdataset", "tfrecord"):
        assert re.search(rf"shards, `{shard_format}`, until on disk ≤ 1\.2× the disk's sequential write \(`dd`\) of "
                         r"the same bytes: [\d.]+× — ", targets)
        assert f"`outputs: [{shard_format}]` (no tree)" in text
    assert re.search(r"The disk writes [\d,]+ MB/s sequentially", text)
    assert "retired (issue 26): bins ≥ 2× and ≥ 5× the original" in targets
    largest = re.search(r"largest (\d+) MB \(([^)]+)\)", targets)
    assert f"| {largest[2]} | " in text  # the largest peak names a job of the memory table
    assert "Machine: " in text and "Python 3." in text
    assert re.search(r"extraction, `--cores 2` wall ≤ 1\.25× two half-tree `tar -x` together \(the two-core limit\): "
                     r"[\d.]+× — .* \([\d.]+× one `tar -x`\)", targets)
    tar_row = next(line for line in text.splitlines() if line.startswith("| `tar -x` of the same tree | "))
    assert tar_row.split(" | ")[8] == "1.00"  # × tar -x (wall + sync)
    # The --cores 2 run of the round, with one duration per chunk job.
    round_row = next(line for line in text.splitlines() if line.startswith("| 1 | "))
    assert len(round_row.split(" | ")[-1].rstrip(" |").split(", ")) == SMOKE_IMAGES // SMOKE_CHUNK_SIZE


@pytest.mark.e2e
@pytest.mark.mxnet
def test_report_is_rewritten_from_the_saved_results(smoke, tmp_path):
    work, report, _ = smoke
    again = tmp_path / "again.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run_bench.py"), "--rerender", "--out", str(work), "--report", str(again)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert again.read_text() == report.read_text()


@pytest.mark.e2e
def test_extraction_only_times_the_workflow_against_two_half_tree_tars(tmp_path):
    """The extraction target at a larger count: just its two contenders, in rounds, with inputs of their
    own (the full comparison's are not replaced), and a report that rerenders the same."""
    report = tmp_path / "extraction.md"
    command = [sys.executable, str(BENCH / "run_bench.py"), "--smoke", "--rounds", "2", "--extraction-only",
               "--out", str(tmp_path / "work")]
    result = subprocess.run(command + ["--report", str(report)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    work = tmp_path / "work" / "extraction_only"
    results = json.loads((work / "results.json").read_text())
    assert results["extraction_only"] and "tree.tar" not in os.listdir(work / "data")
    assert [(record["round"], record["contender"]) for record in results["records"]] == [
        (1, "workflow_cores2"), (1, "tar_halves"), (2, "tar_halves"), (2, "workflow_cores2")]
    for record in results["records"]:
        assert record["on_disk"] == record["wall"] + record["sync_seconds"] > 0
    workflow = [record for record in results["records"] if record["contender"] == "workflow_cores2"]
    assert all(record["nothing_to_do_wall"] > 0 and record["chunks"] == SMOKE_IMAGES // SMOKE_CHUNK_SIZE
               for record in workflow)
    text = report.read_text()
    walls = {name: statistics.median(record["wall"] for record in results["records"] if record["contender"] == name)
             for name in ("workflow_cores2", "tar_halves")}
    ratio = walls["workflow_cores2"] / walls["tar_halves"]
    assert f"two half-tree `tar -x` together: {ratio:.2f}×" in text
    again = tmp_path / "again.md"
    rerender = subprocess.run(command[:2] + ["--rerender", "--extraction-only", "--out", str(tmp_path / "work"),
                                             "--report", str(again)], capture_output=True, text=True, timeout=120)
    assert rerender.returncode == 0, rerender.stderr
    assert again.read_text() == text


@pytest.mark.e2e
@pytest.mark.mxnet
def test_synthetic_rec_has_the_insightface_layout(smoke):
    work, _, results = smoke
    source = work / "data" / "full"
    with IndexedRecordReader(source / "train.rec", source / "train.idx") as reader:
        header, _ = reader.read_unpacked(0)
        images, identities = SMOKE_IMAGES, results["inputs"]["full"]["identities"]
        assert header.label.tolist() == [images + 1, images + 1 + identities]
        assert int(reader.index[0, 1]) == int(reader.index[:, 1].max())  # the header record is physically last
        start = 1
        for label in range(identities):
            identity, _ = reader.read_unpacked(images + 1 + label)
            first, end = (int(value) for value in identity.label)
            assert first == start and end > first
            for key in range(first, end):
                assert reader.read_unpacked(key)[0].label == label
            start = end
        assert start == images + 1
    assert (source / "property").read_text() == f"{identities},112,112"


@pytest.mark.e2e
@pytest.mark.mxnet
def test_bins_hold_arrays_of_the_same_pictures_and_the_original_is_timed_on_a_readable_twin(smoke):
    work, _, results = smoke
    bins = {}
    for kind, path in (("all_jpeg", "full/cfp_fp_all_jpeg.bin"), ("mixed", "full/cfp_fp_mixed.bin"),
                       ("original_readable", "original_readable/cfp_fp_mixed.bin")):
        with open(work / "data" / path, "rb") as stream:
            bins[kind] = pickle.load(stream, encoding="bytes")
    assert all(len(images) == SMOKE_BIN_IMAGES and issame == bins["mixed"][1] for images, issame in bins.values())
    for images, _ in bins.values():
        assert all(isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[1] == 1
                   for image in images)

    def differing(kind, other):
        pairs = zip(bins[kind][0], bins[other][0])
        return [index for index, (image, other_image) in enumerate(pairs) if not np.array_equal(image, other_image)]

    formats = results["inputs"]["bin_formats"]
    assert formats["all_jpeg"] == {"jpeg": SMOKE_BIN_IMAGES}
    # Every all-JPEG image is a baseline 8-bit JPEG: start-of-frame 0xFFC0, 8-bit precision.
    for image in bins["all_jpeg"][0]:
        data = image.tobytes()
        assert data.startswith(b"\xff\xd8") and data[data.index(b"\xff\xc0") + 4] == 8
    # The mixed bin is the all-JPEG one with the planted images in their places; its twin differs from it
    # only at the 12-bit JPEGs (start-of-frame 0xFFC1, extended sequential, 12-bit), where it holds the
    # all-JPEG bin's image.
    planted = differing("mixed", "all_jpeg")
    assert len(planted) == sum(count for image_format, count in formats["mixed"].items() if image_format != "jpeg")
    twelve_bit = differing("mixed", "original_readable")
    assert len(twelve_bit) == formats["mixed"]["jpeg_12bit"] and set(twelve_bit) < set(planted)
    for index in twelve_bit:
        data = bins["mixed"][0][index].tobytes()
        assert data[data.index(b"\xff\xc1") + 4] == 12
        assert np.array_equal(bins["original_readable"][0][index], bins["all_jpeg"][0][index])
    assert differing("original_readable", "all_jpeg") == sorted(set(planted) - set(twelve_bit))
    assert results["original_bin_failure"]["index"] == twelve_bit[0]


def test_chunk_sizes_above_a_quarter_of_the_rec_are_refused():
    """Otherwise the quarter rec runs smaller chunks, and its memory says nothing about the rec's size."""
    result = subprocess.run([sys.executable, str(BENCH / "run_bench.py"), "--images", "1000", "--identities", "100",
                             "--chunk-sizes", "100,300"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "chunk sizes cannot exceed a quarter of --images (250)" in result.stderr


@pytest.mark.e2e
def test_scale_preset_measures_every_rule_at_two_counts(tmp_path):
    """The `--scale` machinery on small counts: recs written through DatasetWriter, the whole
    workflow run and measured per rule, the trees deleted, and the count-scaling report."""
    import run_bench
    import scale

    counts = ((400, 8), (1200, 24))
    runs = [scale.measure_scale(run_bench.SNAKEMAKE, run_bench.REPO, tmp_path, images, identities, 2, print)
            for images, identities in counts]
    for (images, identities), run in zip(counts, runs):
        assert (run["images"], run["identities"], run["chunks"]) == (images, identities, 1)
        with IndexedRecordReader(tmp_path / f"rec_{images}" / "train.rec", tmp_path / f"rec_{images}" / "train.idx") as reader:
            assert reader.read_unpacked(0)[0].label.tolist() == [images + 1, images + 1 + identities]
        assert {"plan_chunks", "extract_chunk", "build_index", "verify_extraction"} <= set(run["rules"])
        assert run["rules"]["extract_chunk"]["jobs"] == run["chunks"]
        assert all(row["peak_rss_mb"] > 0 and row["us_per_image"] > 0 for row in run["rules"].values())
        assert not (tmp_path / f"run_{images}").exists()  # the tree is deleted after measuring

    report = scale.render({"scale": "ms1m", "runs": runs})
    assert "| extract_chunk | 1 |" in report and "Glint360K (17.1 M)" in report


@pytest.mark.e2e
@pytest.mark.mxnet
def test_the_packing_bench_runs_every_contender_and_the_recs_hold_every_image(tmp_path):
    """bench/packing.py's smoke preset: the workflow's recs (tree -> rec, rec -> shuffled rec),
    tar -cf, cp and MXNet's im2rec each once; their outputs checked, not just timed."""
    mxnet_python()
    result = subprocess.run([sys.executable, str(BENCH / "packing.py"), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    results = json.loads((tmp_path / "results.json").read_text())
    contenders = ["workflow_tree_rec", "tar_cf", "im2rec_list", "im2rec_pack", "workflow_rec_shuffled", "cp_rec"]
    from_disk = [f"{name}_from_disk" for name in ("workflow_tree_rec", "tar_cf", "im2rec_pack")]
    assert sorted(results["records"]) == sorted(contenders + from_disk)
    assert all(len(records) == 1 and records[0]["wall"] > 0 for records in results["records"].values())
    for name in ("workflow_tree_rec", "workflow_rec_shuffled", "workflow_tree_rec_from_disk"):
        record = results["records"][name][0]
        assert record["rec_bytes"] > 0 and {"write_rec_part", "assemble_rec"} <= set(record["peak_mb_by_rule"])
    # The last round's runs are in the trash or the current run directory: both recs hold 300 images.
    recs = sorted(tmp_path.glob("runs/**/rec/train.idx"))
    assert recs and all(len(path.read_text().splitlines()) in (300, 300 + 1 + 10) for path in recs)
    assert "tree → rec:" in (tmp_path / "report.md").read_text()
    assert "tree from disk → rec:" in (tmp_path / "report.md").read_text()


def test_the_audit_bench_measures_its_rows(tmp_path):
    """bench/audit.py on small counts: every planted copy found and nothing else, on drawn
    identities and on the demo; CPU times, the join's own peak memory and the audit's jobs
    alone on a small rec, measured."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "audit.py"), "--images", "60", "--evaluation", "60", "--identities", "6",
         "--join-images", "450000", "--rounds", "1", "--alone", "300", "10", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    record = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    for data in ("drawn", "demo"):
        assert record[data]["recall"] == record[data]["precision"] == 1.0, record[data]
        assert record[data]["planted"] == 4 * (6 if data == "drawn" else 600), record[data]
        # within what the approximate candidate search is sure to reach
        assert 0 < record[data]["copy_feature_distance_max"] < CANDIDATE_DISTANCE / (1 + SEARCH_SLACK), record[data]
    assert record["cpu"]["decode_us"] > 0 and record["cpu"]["audit_us"] > record["cpu"]["decode_us"]
    assert record["join"]["images"] == 450000 and 0 < record["join"]["peak_mb"] < 300
    assert "CPU per image" in result.stdout
    # The audit's jobs alone on a rec of 300 distinct records: it made audit.json, and its jobs' memory was read.
    alone = record["alone"]
    assert alone["images"] == 300 and alone["audit_wall"] > alone["plan_wall"] > 0, alone
    assert {"audit_chunk", "join_audit", "index_evaluation_images"} <= set(alone["peak_rss_mb"]), alone
