#!/usr/bin/env python3
"""`make bench`: speed and peak memory of the workflow against the original scripts and `tar -x`.

Builds a synthetic MS1M-like train.rec (insightface layout) and two cfp_fp-like bins of the
same pictures under ``--out``: one all 8-bit JPEG, as the real cfp_fp.bin and agedb_30.bin
are, and one with BMP and 12-bit JPEG images planted. Then it times on the same files,
alternating the contenders over ``--rounds`` rounds (the machine is shared, so a slow spell
hits every contender in turn):

- the original MXNet extraction script (``tests/mxnet_oracle/original_extract.py``);
- the workflow (the whole ``snakemake`` process) with ``--cores 1`` and ``--cores 2``,
  and with ``--cores 2`` on a rec a quarter the size, to show memory stays flat;
- ``tar -x`` of the same tree: the practical limit of creating those files here;
- the workflow writing shards only (``outputs: [webdataset]``, ``[tfrecord]``), against
  ``tar -x`` of the tree and the disk's sequential write speed (``dd``, measured once);
- on each bin, the original bin reformat (``original_reformat_bin.py``) against the
  workflow's ``reformat_bin`` and ``verify_bin`` jobs, as two ``snakemake`` runs and as one.

``--extraction-only`` times just the extraction target's two contenders (the workflow with
``--cores 2`` and two half-tree ``tar -x`` together), with inputs and results of their
own in ``<out>/extraction_only``: the target at a count where Snakemake's fixed seconds weigh less
(``--images 1000000 --identities 16667``: ~12 GB of inputs, ~35 min for its 4 rounds).

Before every run the previous outputs are moved out of the way (``measure.RunDirectories``
says why they are not deleted right away), the file system synced, and the run's input
read once so that every contender starts from the same warm page cache. Medians are
reported, with ratios against the original and against ``tar -x``, in a markdown
section (``--report``) and on stdout; every measurement goes to ``<out>/results.json``.
"""

import functools
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "scripts"))

import yaml  # noqa: E402

import bench_report  # noqa: E402
from bench_args import parse_args  # noqa: E402
from bin_contenders import WORKFLOW_BIN_SCRIPTS, BinContenders  # noqa: E402
import extraction_report  # noqa: E402
from machine_facts import machine  # noqa: E402
from measure import RunDirectories, listing, read_benchmarks, read_through, run_measured, run_record, say, workflow_record  # noqa: E402
from scale import run_scale  # noqa: E402
from synthetic import HALF_TARS, prepare_inputs  # noqa: E402

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MXNET_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"
ORIGINAL_EXTRACT = REPO / "tests" / "mxnet_oracle" / "original_extract.py"
DATASET = "bench"
# Rounds are alternated over these, in this order rotated by one each round.
CONTENDERS = ("original", "workflow_cores1", "workflow_cores2", "tar", "tar_halves", "workflow_quarter", "shards_webdataset",
              "shards_tfrecord", "bin_original_all_jpeg", "bin_workflow_all_jpeg", "bin_original_mixed",
              "bin_workflow_mixed")
# Full-size trees a round leaves in the trash: original, --cores 1, --cores 2, the two tar -x runs and a
# quarter one, and the shards (a WebDataset tar is ~1.4 times the images' bytes: three 512-byte headers and padding).
TREES_PER_ROUND = 5.25 + 2.5
# --extraction-only: the extraction target's two contenders, and the full-size trees they leave.
EXTRACTION_ONLY_CONTENDERS = ("workflow_cores2", "tar_halves")
EXTRACTION_ONLY_TREES_PER_ROUND = 2
def check_tools():
    missing = [str(path) for path in (SNAKEMAKE, MXNET_PYTHON, ORIGINAL_EXTRACT, *WORKFLOW_BIN_SCRIPTS)
               if not path.exists()]
    if shutil.which("tar") is None:
        missing.append("tar")
    if missing:
        raise SystemExit("bench: missing " + ", ".join(missing) + " (`make venv mxnet-venv` creates the venvs)")


# ---------------------------------------------------------------- contenders


class Bench(BinContenders):
    """The contenders, one method each (named as in CONTENDERS; the bins' in BinContenders),
    returning their measurements; ``contenders``: those the rounds run."""

    dataset = DATASET

    def __init__(self, args, inputs):
        self.args, self.inputs = args, inputs
        self.data = args.out / "data"
        self.dirs = RunDirectories(args.runs, int(args.trash_gb * (1 << 30)), args.settle)
        self.tree_bytes = 0  # disk space of the tree in the current run directory
        self.logs = args.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tar_path = self.data / "tree.tar"
        self.chunk_size = args.chunk_sizes[0]
        self.tree_listing = None  # digest of the first full tree's listing
        if args.extraction_only:
            self.contenders, self.trees_per_round = EXTRACTION_ONLY_CONTENDERS, EXTRACTION_ONLY_TREES_PER_ROUND
        else:
            self.contenders, self.trees_per_round = CONTENDERS, TREES_PER_ROUND

    # -- helpers

    @property
    def run_dir(self):
        return self.dirs.current

    def fresh_run_dir(self, *inputs):
        self.dirs.fresh(self.tree_bytes)
        self.tree_bytes = 0
        read_through(*inputs)

    def before_timed_runs(self, full_trees, what):
        """Room in the trash for ``full_trees`` trees, and no recent bulk deletion."""
        full = self.inputs["full"]
        self.dirs.make_room(int(full_trees * (full["image_bytes"] + 4096 * full["images"])))
        waited = self.dirs.settle()
        if waited:
            say(f"waited {waited:.0f} s after deleting old trees before {what}")

    def rec_files(self, size):
        return [self.data / size / name for name in ("train.rec", "train.idx", "property")]

    def config(self, size, bins, chunk_size, outputs=("folders",)):
        path = self.run_dir / "config.yaml"
        dataset = {"source": str(self.data / size), "images": str(self.run_dir / "images"),
                   "bins_out": str(self.run_dir / "bins"), "bins": bins, "outputs": list(outputs),
                   "shards": str(self.run_dir / "shards")}
        path.write_text(yaml.safe_dump({"datasets": {DATASET: dataset}, "chunk_size": chunk_size, "audit": False}))
        return path

    def extraction_targets(self):
        """The extraction's outputs, the index and the verification (not the dataset report `all` adds)."""
        return [os.path.realpath(self.run_dir / "images_shuffle.npz"), f"results/{DATASET}/extraction.json"]

    def snakemake(self, log_name, configfile, cores, *targets, write_back=False):
        command = [SNAKEMAKE, "--snakefile", REPO / "Snakefile", "--directory", self.run_dir / "work",
                   "--configfile", configfile, "--cores", str(cores), *targets]
        benchmarks = self.run_dir / "work" / "benchmarks"
        # A run in the same directory as an earlier one (verify_bin after reformat_bin) finds its files too.
        earlier = set(benchmarks.rglob("*.tsv"))
        # cwd: the repository, so its default profile applies as for a user.
        run = run_measured(command, self.logs / f"{log_name}.log", cwd=REPO, write_back=write_back)
        return run, read_benchmarks(benchmarks, earlier)

    def check_tree(self, what, size):
        """The extracted tree has every image; trees of all contenders list the same files and sizes."""
        count, total, allocated, digest = listing(self.run_dir / "images")
        self.tree_bytes = allocated
        expected = self.inputs[size]
        if (count, total) != (expected["images"], expected["image_bytes"]):
            raise RuntimeError(f"{what}: {count} files, {total} bytes; the rec holds {expected['images']} "
                               f"images, {expected['image_bytes']} bytes")
        if size == "full":
            if self.tree_listing is None:
                self.tree_listing = digest
            elif digest != self.tree_listing:
                raise RuntimeError(f"{what}: the tree's file names or sizes differ from the first run's")

    # -- before the rounds (not timed)

    def sweep_chunk_sizes(self):
        """Run the workflow (--cores 2) with each candidate chunk size, in two passes in opposite
        orders; keep the size with the shortest mean wall time."""
        sizes = self.args.chunk_sizes
        walls = {size: [] for size in sizes}
        if len(sizes) > 1:
            self.before_timed_runs(2 * len(sizes), "the chunk-size sweep")
            for chunk_size in sizes + sizes[::-1]:
                self.fresh_run_dir(*self.rec_files("full"))
                run, _ = self.snakemake(f"sweep_{chunk_size}", self.config("full", [], chunk_size), 2,
                                        *self.extraction_targets())
                self.check_tree(f"chunk size {chunk_size}", "full")
                walls[chunk_size].append(run.wall)
                say(f"chunk size {chunk_size}: {run.wall:.1f} s")
            self.chunk_size = min(sizes, key=lambda size: statistics.mean(walls[size]))
        say(f"chunk size for the rounds: {self.chunk_size}")
        return [{"chunk_size": size, "chunks": -(-self.inputs["full"]["images"] // size), "walls": walls[size]}
                for size in sizes if walls[size]]

    # -- timed contenders

    def original(self):
        self.fresh_run_dir(*self.rec_files("full"))
        env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
        run = run_measured([MXNET_PYTHON, ORIGINAL_EXTRACT, self.data / "full", self.run_dir / "images"],
                           self.logs / "original.log", env=env, write_back=True)
        self.check_tree("original script", "full")
        return run_record(run)

    def workflow(self, cores, size="full"):
        self.fresh_run_dir(*self.rec_files(size))
        config = self.config(size, [], self.chunk_size)
        run, benchmarks = self.snakemake(f"workflow_{size}_cores{cores}", config, cores, *self.extraction_targets(),
                                         write_back=True)
        self.check_tree(f"workflow --cores {cores}", size)
        summary = json.loads((self.run_dir / "work" / "results" / DATASET / "extraction.json").read_text())
        if summary["images"] != self.inputs[size]["images"]:
            raise RuntimeError(f"workflow --cores {cores}: extraction.json says {summary['images']} images")
        plan = json.loads((self.run_dir / "work" / "results" / DATASET / "chunk_plan.json").read_text())
        record = workflow_record(run, benchmarks, cores) | {"chunks": len(plan["chunks"]), "chunk_size": plan["chunk_size"]}
        if cores == 2 and size == "full":
            # The same command again, everything up to date: Snakemake's own start-up, DAG and
            # exit, which every run pays whatever its jobs do (not part of the timed run).
            idle, _ = self.snakemake(f"workflow_{size}_cores{cores}_nothing_to_do", config, cores,
                                     *self.extraction_targets())
            if idle.jobs:
                raise RuntimeError(f"the rerun of the finished workflow ran jobs: {[job.rule for job in idle.jobs]}")
            record["nothing_to_do_wall"] = idle.wall
        return record

    def shards(self, shard_format):
        """The workflow writing one shard format and no tree: shards, metadata and verification."""
        self.fresh_run_dir(*self.rec_files("full"))
        config = self.config("full", [], self.chunk_size, [shard_format])
        run, benchmarks = self.snakemake(f"shards_{shard_format}", config, 2, str(self.run_dir / "shards" / "metadata.json"),
                                         f"results/{DATASET}/shards_{shard_format}.json", write_back=True)
        metadata = json.loads((self.run_dir / "shards" / "metadata.json").read_text())
        self.tree_bytes = sum(shard["bytes"] for shard in metadata["formats"][shard_format]["shards"])
        if metadata["num_images"] != self.inputs["full"]["images"]:
            raise RuntimeError(f"shards {shard_format}: metadata.json says {metadata['num_images']} images")
        return workflow_record(run, benchmarks, 2) | {"shard_bytes": self.tree_bytes,
                                                      "shards": len(metadata["formats"][shard_format]["shards"])}

    shards_webdataset = functools.partialmethod(shards, "webdataset")
    shards_tfrecord = functools.partialmethod(shards, "tfrecord")

    def disk_write_speed(self):
        """MB/s of ``dd`` writing as many bytes as the rec holds images, flushed to disk (not timed
        as a contender: the limit any writer of this data meets here)."""
        self.before_timed_runs(1, "dd")
        self.fresh_run_dir()
        blocks = max(1, self.inputs["full"]["image_bytes"] >> 24)
        run = run_measured(["dd", "if=/dev/zero", f"of={self.run_dir / 'dd.out'}", "bs=16M", f"count={blocks}",
                            "conv=fdatasync"], self.logs / "dd.log")
        self.tree_bytes = blocks << 24
        return {"bytes": blocks << 24, "wall": run.wall, "mb_per_s": (blocks << 24) / 2**20 / run.wall}

    def workflow_cores1(self):
        return self.workflow(1)

    def workflow_cores2(self):
        return self.workflow(2)

    def workflow_quarter(self):
        return self.workflow(2, "quarter")

    def tar(self):
        self.fresh_run_dir(self.tar_path)
        (self.run_dir / "images").mkdir()
        # No chown and no mtime restore: only what the extractors do, create directories and write files.
        run = run_measured(["tar", "-xf", self.tar_path, "-C", self.run_dir / "images", "--no-same-owner", "-m"],
                           self.logs / "tar.log", write_back=True)
        self.check_tree("tar -x", "full")
        return run_record(run)

    def tar_halves(self):
        """Two ``tar -x`` at once, each of the tar of half the identities: creating the tree's
        files with both cores and nothing else, the limit of any two-process extraction here."""
        halves = [self.data / name for name in HALF_TARS]
        self.fresh_run_dir(*halves)
        (self.run_dir / "images").mkdir()
        both = " & ".join(f"tar -xf {half} -C {self.run_dir / 'images'} --no-same-owner -m" for half in halves)
        run = run_measured(["sh", "-c", f"{both} & wait"], self.logs / "tar_halves.log", write_back=True)
        self.check_tree("two tar -x of half the tree", "full")
        return run_record(run)

    def rounds(self, save):
        """Run the rounds; ``save(records)`` after every run, so an interrupted benchmark keeps its numbers."""
        records = []
        for round_number in range(self.args.rounds):
            self.before_timed_runs(self.trees_per_round, f"round {round_number + 1}")
            shift = round_number % len(self.contenders)
            for name in self.contenders[shift:] + self.contenders[:shift]:
                record = getattr(self, name)()
                record.update(contender=name, round=round_number + 1)
                records.append(record)
                save(records)
                wall = record["wall"] if "wall" in record else record["reformat"]["wall"] + record["verify"]["wall"]
                say(f"round {round_number + 1}: {name}: {wall:.1f} s")
        return records


def run_benchmark(args):
    """Generate the inputs, sweep the chunk size, run the rounds, save results.json and write the report."""
    started = time.monotonic()
    check_tools()
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(args)
    bench = Bench(args, inputs)
    results = {"machine": machine(), "inputs": inputs, "extraction_only": args.extraction_only}
    if not args.extraction_only:
        bench.probe_original_bin()
    results |= {"sweep": bench.sweep_chunk_sizes(), "chunk_size": bench.chunk_size}
    if not args.extraction_only:
        results |= {"original_bin_failure": bench.original_bin_failure, "disk_write": bench.disk_write_speed()}

    def save(records):
        path = args.out / "results.json"
        path.with_suffix(".tmp").write_text(json.dumps(results | {"records": records}, indent=1))
        os.replace(path.with_suffix(".tmp"), path)

    results["records"] = bench.rounds(save)
    results["summary"] = report_of(results).summarize(results)
    results["elapsed_s"] = time.monotonic() - started
    save(results["records"])
    write_report(args, results)
    say("deleting the extracted trees")
    bench.dirs.empty()


def report_of(results):
    """The module that summarizes and renders ``results``: the whole comparison's, or --extraction-only's."""
    return extraction_report if results.get("extraction_only") else bench_report


def write_report(args, results):
    report = report_of(results).render(results)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.report.with_name(args.report.name + ".tmp")
    temporary.write_text(report)
    os.replace(temporary, args.report)
    print(report)
    say(f"report: {args.report}; every measurement: {args.out / 'results.json'}")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv, __doc__)
    # A plain `kill` unwinds like Ctrl-C, so the running contender is stopped too (run_measured).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: terminated"))
    if args.scale:
        run_scale(args, SNAKEMAKE, REPO, say)
    elif args.rerender:
        results = json.loads((args.out / "results.json").read_text())
        results["summary"] = report_of(results).summarize(results)
        write_report(args, results)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
