#!/usr/bin/env python3
"""`make bench`, packing: the workflow writing recs, against what users run today and the disk.

Builds a ``<identity>/<key>.jpg`` tree of synthetic faces (MS1M-sized images) and an
insightface rec of the same images under ``--out``, then times, alternating the contenders
over ``--rounds`` rounds:

- the workflow packing the tree into an insightface rec (``outputs: [rec]``, ``--cores 2``),
  against ``tar -cf`` of the same tree (both read every file and write one archive);
- MXNet's own ``im2rec --pass-through --num-thread 2`` on a list of the tree, what users run
  today (its ``--list`` pass, timed apart);
- the workflow re-packing the rec as a shuffled im2rec rec, against ``cp`` of the rec;
- the workflow, ``tar -cf`` and im2rec's pack pass again with the tree's files dropped from the
  page cache first (``measure.evict``): a user's tree is read from disk, and a tree of
  millions of images is larger than memory.

Each run starts from a fresh run directory (``measure.RunDirectories``) with its input read
through once (in the page cache, as for every contender), or for the ``from disk`` rows with
the tree's file data evicted (its directory entries and inodes stay cached, for every
contender alike), and is timed until its files are on disk (``sync``). The workflow runs
also report each rule's peak memory (the measurement's job watcher) and the bytes written to
disk per byte of the rec (the disks' written-sector counters around the run): the part jobs
write their records in place, at offsets the plan knows, so 1.0 means that no byte of the rec
was written twice. Each workflow run is followed by the same command with everything up to
date, which times Snakemake's own start-up, DAG and exit: the part of the workflow's wall
that no job can shorten.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "scripts"))

import yaml  # noqa: E402

from measure import RunDirectories, evict, read_through, run_measured, say  # noqa: E402
from synthetic import face_pool, jpeg_bytes, plan_records, write_rec, write_tree_tar  # noqa: E402

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MXNET_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"
# MXNet's im2rec as users run it: its own module, after the numpy names mxnet 1.9 needs.
IM2REC = ("import sys, runpy, mxnet_numpy_compat; sys.argv[0] = 'im2rec'; "
          "runpy.run_module('mxnet.tools.im2rec', run_name='__main__')")
FROM_DISK = "_from_disk"  # the same contender, the tree's file data evicted from the page cache first
CONTENDERS = ("workflow_tree_rec", "tar_cf", "im2rec_list", "im2rec_pack", "workflow_rec_shuffled", "cp_rec",
              "workflow_tree_rec" + FROM_DISK, "tar_cf" + FROM_DISK, "im2rec_pack" + FROM_DISK)
TREE_READERS = ("workflow_tree_rec", "tar_cf", "im2rec_list", "im2rec_pack")
WORKFLOWS = ("workflow_tree_rec", "workflow_rec_shuffled", "workflow_tree_rec" + FROM_DISK)
ROWS = {
    "workflow_tree_rec": "workflow, `--cores 2`: tree → insightface rec",
    "tar_cf": "`tar -cf` of the same tree",
    "im2rec_list": "MXNet `im2rec --list --recursive` (its list pass)",
    "im2rec_pack": "MXNet `im2rec --pass-through --num-thread 2`",
    "workflow_rec_shuffled": "workflow, `--cores 2`: rec → shuffled im2rec rec",
    "cp_rec": "`cp` of the rec",
    "workflow_tree_rec" + FROM_DISK: "workflow, `--cores 2`: tree from disk → insightface rec",
    "tar_cf" + FROM_DISK: "`tar -cf` of the same tree from disk",
    "im2rec_pack" + FROM_DISK: "MXNet `im2rec --pass-through --num-thread 2`, tree from disk",
}
# Goals (issue 26): tree -> rec <= 1.0x tar -cf; >= 3x faster than im2rec; rec -> shuffled rec <= 2x cp.
TARGET_TREE_VS_TAR, TARGET_VS_IM2REC, TARGET_SHUFFLED_VS_CP = 1.0, 3.0, 2.0
DEFAULTS = dict(images=300_000, identities=5_000, rounds=3, pool=4_000, seed=0)
SMOKE = dict(images=300, identities=10, rounds=1, pool=30)


def written_sectors():
    """Sectors written to every disk so far (/proc/diskstats), partitions left out."""
    total = 0
    with open("/proc/diskstats") as stream:
        for line in stream:
            fields = line.split()
            name = fields[2]
            if os.path.exists(f"/sys/block/{name}") and not name.startswith(("loop", "ram")):
                total += int(fields[9])
    return total


class Packing:
    def __init__(self, args):
        self.args, self.out = args, args.out
        self.data = self.out / "data"
        self.runs = RunDirectories(self.out / "runs", 40 << 30, 0)
        self.records = {name: [] for name in CONTENDERS}
        self.tree_files = None

    def build(self):
        """The tree (extracted from a tar of it) and the insightface rec of the same images."""
        if (self.data / "inputs.json").exists():
            return
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)
        say(f"drawing {self.args.pool} faces, {self.args.images} images of {self.args.identities} identities")
        pool = [jpeg_bytes(face) for face in face_pool(self.args.pool, self.args.seed)]
        sizes, picks = plan_records(self.args.images, self.args.identities, self.args.pool, self.args.seed)
        inputs = write_rec(self.data / "rec", sizes, picks, pool)
        write_tree_tar(self.data / "tree.tar", sizes, picks, pool)
        (self.data / "tree").mkdir()
        subprocess.run(["tar", "-xf", self.data / "tree.tar", "-C", self.data / "tree"], check=True)
        os.unlink(self.data / "tree.tar")
        (self.data / "inputs.json").write_text(json.dumps(inputs))

    def workflow(self, name, dataset):
        run_dir = self.runs.fresh()
        config = run_dir / "config.yaml"
        config.write_text(yaml.safe_dump({"datasets": {"bench": dataset | {"rec": str(run_dir / "rec"), "bins": []}}, "audit": False}))
        command = [SNAKEMAKE, "--snakefile", REPO / "Snakefile", "--directory", run_dir / "work", "--configfile", config,
                   "--cores", "2"]
        before = written_sectors()
        run = run_measured(command, run_dir / f"{name}.log", cwd=REPO, write_back=True)
        rec_bytes = (run_dir / "rec" / "train.rec").stat().st_size
        # The same command again, everything up to date: Snakemake's start-up, DAG and exit alone.
        up_to_date = run_measured(command, run_dir / f"{name}.up_to_date.log", cwd=REPO)
        peaks = {}
        for job in run.jobs:
            peaks[job.rule] = max(peaks.get(job.rule, 0), job.peak_rss_kb // 1024)
        plan = max((job.seconds for job in run.jobs if job.rule == "plan_chunks"), default=0.0)
        return {"wall": run.wall + run.sync_seconds, "rec_bytes": rec_bytes, "peak_mb_by_rule": peaks,
                "written_bytes": (written_sectors() - before) * 512, "up_to_date": up_to_date.wall, "plan": plan}

    def command(self, name, command, cwd=None, env=None):
        run_dir = self.runs.fresh()
        run = run_measured(command, run_dir / f"{name}.log", cwd=cwd or run_dir, env=env, write_back=True)
        return {"wall": run.wall + run.sync_seconds, "peak_mb": run.max_rss_kb // 1024}

    def run(self, name):
        tree, rec = self.data / "tree", self.data / "rec"
        contender = name.removesuffix(FROM_DISK)
        if contender in TREE_READERS:
            self.tree_files = self.tree_files or sorted(path for path in tree.rglob("*") if path.is_file())
            # Every contender reading the tree starts with it cached, or with it on disk alike:
            # one run after the rec's would otherwise read it from disk (22.9 s instead of 2.5
            # s for the plan), depending on the order of the round.
            (evict if name.endswith(FROM_DISK) else read_through)(*self.tree_files)
        else:
            read_through(rec / "train.rec", rec / "train.idx")
        return self.run_contender(name, contender, tree, rec)

    def run_contender(self, name, contender, tree, rec):
        if contender == "workflow_tree_rec":
            return self.workflow(name, {"source": str(tree), "outputs": ["rec"]})
        if contender == "workflow_rec_shuffled":
            return self.workflow(name, {"source": str(rec), "outputs": ["rec"], "rec_layout": "im2rec",
                                        "rec_order": "shuffled"})
        if contender == "tar_cf":
            return self.command(name, ["sh", "-c", f"tar -cf out.tar -C {tree} ."])
        if contender == "cp_rec":
            return self.command(name, ["cp", rec / "train.rec", rec / "train.idx", "."])
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "mxnet_oracle")}
        env.pop("PYTHONHOME", None)
        if contender == "im2rec_list":
            return self.command(name, [MXNET_PYTHON, "-c", IM2REC, "--list", "--recursive", "data", tree], env=env)
        # The pack pass reads a list made beforehand (not timed here: im2rec_list times it); the
        # list pass reads directories only, no file's data.
        run_dir = self.runs.fresh()
        subprocess.run([MXNET_PYTHON, "-c", IM2REC, "--list", "--recursive", "data", tree], cwd=run_dir, env=env,
                       check=True, capture_output=True)
        run = run_measured([MXNET_PYTHON, "-c", IM2REC, "--pass-through", "--num-thread", "2", "data", tree],
                           run_dir / f"{name}.log", cwd=run_dir, env=env, write_back=True)
        return {"wall": run.wall + run.sync_seconds, "peak_mb": run.max_rss_kb // 1024}

    def rounds(self):
        for number in range(self.args.rounds):
            order = CONTENDERS[number % len(CONTENDERS):] + CONTENDERS[: number % len(CONTENDERS)]
            for name in order:
                record = self.run(name)
                self.records[name].append(record)
                say(f"round {number + 1}: {name}: {record['wall']:.1f} s")
            if number + 1 < self.args.rounds:  # the last round's outputs stay, to be looked at
                self.runs.empty()

    def report(self):
        median = {name: statistics.median(record["wall"] for record in records) for name, records in self.records.items()}
        ratios = {
            "tree_vs_tar_cf": median["workflow_tree_rec"] / median["tar_cf"],
            "im2rec_vs_tree": median["im2rec_pack"] / median["workflow_tree_rec"],
            "im2rec_with_list_vs_tree": (median["im2rec_pack"] + median["im2rec_list"]) / median["workflow_tree_rec"],
            "shuffled_vs_cp": median["workflow_rec_shuffled"] / median["cp_rec"],
            "tree_vs_tar_cf_from_disk": median["workflow_tree_rec" + FROM_DISK] / median["tar_cf" + FROM_DISK],
            "im2rec_vs_tree_from_disk": median["im2rec_pack" + FROM_DISK] / median["workflow_tree_rec" + FROM_DISK],
        }
        lines = ["| contender | wall, median (s) | rounds (s) |", "| --- | ---: | --- |"]
        for name in CONTENDERS:
            walls = ", ".join(f"{record['wall']:.1f}" for record in self.records[name])
            lines.append(f"| {ROWS[name]} | {median[name]:.1f} | {walls} |")
        peaks = {}
        for name in WORKFLOWS:
            for record in self.records[name]:
                for rule, peak in record["peak_mb_by_rule"].items():
                    peaks[rule] = max(peaks.get(rule, 0), peak)
        written = {name: statistics.median(record["written_bytes"] / record["rec_bytes"] for record in self.records[name])
                   for name in WORKFLOWS}
        fixed = {name: statistics.median(record["up_to_date"] for record in self.records[name]) for name in WORKFLOWS}
        plan = {name: statistics.median(record["plan"] for record in self.records[name])
                for name in ("workflow_tree_rec", "workflow_tree_rec" + FROM_DISK)}
        lines += [
            "",
            f"- tree → rec: {ratios['tree_vs_tar_cf']:.2f}× `tar -cf` (goal ≤ {TARGET_TREE_VS_TAR}×); "
            f"im2rec's pack pass took {ratios['im2rec_vs_tree']:.2f}× the workflow, "
            f"{ratios['im2rec_with_list_vs_tree']:.2f}× with its list pass (goal ≥ {TARGET_VS_IM2REC}×).",
            f"- tree from disk → rec: {ratios['tree_vs_tar_cf_from_disk']:.2f}× `tar -cf` from disk; im2rec's pack "
            f"pass took {ratios['im2rec_vs_tree_from_disk']:.2f}× the workflow. The plan read every file from disk in "
            f"{plan['workflow_tree_rec' + FROM_DISK]:.1f} s (several reads in flight); the parts read them again "
            "from the page cache.",
            f"- rec → shuffled im2rec rec: {ratios['shuffled_vs_cp']:.2f}× `cp` (goal ≤ {TARGET_SHUFFLED_VS_CP}×).",
            "- bytes written to disk per byte of the rec: "
            + ", ".join(f"{ROWS[name].split(': ')[1]} {value:.2f}" for name, value in written.items())
            + " (1.0: every byte written once, the parts in place).",
            "- peak RSS per job (MB): " + ", ".join(f"{rule} {peak}" for rule, peak in sorted(peaks.items())),
            f"- Snakemake's own part, the same command rerun with everything up to date: "
            f"{fixed['workflow_tree_rec']:.1f} s (tree), {fixed['workflow_rec_shuffled']:.1f} s (rec): "
            f"{fixed['workflow_tree_rec'] / median['tar_cf']:.2f}× `tar -cf` and "
            f"{fixed['workflow_rec_shuffled'] / median['cp_rec']:.2f}× `cp` before any job; the tree's plan "
            f"(every file read once) {plan['workflow_tree_rec']:.1f} s, "
            f"{(fixed['workflow_tree_rec'] + plan['workflow_tree_rec']) / median['tar_cf']:.2f}× "
            "`tar -cf` with it.",
        ]
        ratios |= {"fixed_vs_tar_cf": fixed["workflow_tree_rec"] / median["tar_cf"],
                   "fixed_vs_cp": fixed["workflow_rec_shuffled"] / median["cp_rec"]}
        return "\n".join(lines) + "\n", ratios, median


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int)
    parser.add_argument("--identities", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--pool", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "work" / "packing")
    parser.add_argument("--smoke", action="store_true", help="a few hundred images, one round (for the tests)")
    args = parser.parse_args(argv)
    for key, value in (DEFAULTS | (SMOKE if args.smoke else {})).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Packing(args)
    bench.build()
    bench.rounds()
    table, ratios, median = bench.report()
    (args.out / "report.md").write_text(table)
    (args.out / "results.json").write_text(json.dumps({"ratios": ratios, "median": median, "records": bench.records},
                                                      indent=2, default=str))
    print(table)


if __name__ == "__main__":
    main()
