"""`make bench`, the bin rows: on each synthetic cfp_fp-like bin, the original bin reformat
(``original_reformat_bin.py``) against the workflow's ``reformat_bin`` and ``verify_bin`` jobs,
as two ``snakemake`` runs and as one (``run_bench.Bench`` runs them in its rounds)."""

import functools
import io
import json
import os
import pickle
import sys
from pathlib import Path

from measure import run_measured, run_record, say, workflow_record
from synthetic import bin_name

BENCH_DIR = Path(__file__).resolve().parent
ORIGINAL_REFORMAT = BENCH_DIR / "original_reformat_bin.py"
WORKFLOW_BIN_SCRIPTS = [BENCH_DIR.parent / "scripts" / name for name in ("reformat_bin.py", "verify_bin.py")]


def quiet_tensorflow():
    return os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}


class BinContenders:
    """The bin contenders of ``run_bench.Bench``, which gives them its run directories
    (``fresh_run_dir``, ``run_dir``), ``snakemake``, ``config``, ``chunk_size``, ``data``, ``logs``,
    ``args`` and ``dataset``."""

    original_bin_failure = None  # where the original's reader fails on the mixed bin, if it does

    def probe_original_bin(self):
        """Whether the original's reader (skimage.io.imread) reads every image of the mixed bin.

        It cannot read 12-bit JPEG; then the original is timed on the mixed bin's readable twin instead.
        """
        from skimage.io import imread

        with open(self.data / "full" / f"{bin_name('mixed')}.bin", "rb") as stream:
            images, _ = pickle.load(stream, encoding="bytes")
        for index, image in enumerate(images):
            try:
                imread(io.BytesIO(image))
            except Exception as error:  # whatever the original would have died of
                self.original_bin_failure = {"index": index, "error": f"{type(error).__name__}: {error}"}
                say(f"the original's skimage.io.imread fails on image {index} of the mixed bin: "
                    f"{self.original_bin_failure['error']}")
                return

    def bin_original(self, kind):
        readable_twin = kind == "mixed" and self.original_bin_failure
        source = self.data / ("original_readable" if readable_twin else "full") / f"{bin_name(kind)}.bin"
        self.fresh_run_dir(source)
        output = self.run_dir / "original.bin"
        run = run_measured([sys.executable, ORIGINAL_REFORMAT, source, output],
                           self.logs / f"bin_original_{kind}.log", env=quiet_tensorflow())
        if output.stat().st_size == 0:
            raise RuntimeError(f"original bin reformat wrote an empty {output}")
        return run_record(run) | {"bin": kind}

    def bin_workflow(self, kind):
        """``reformat_bin`` and then ``verify_bin`` of one bin, each a whole ``snakemake`` run; then
        both in one ``snakemake`` run in a fresh directory, as a user's run makes a verified bin."""
        name = bin_name(kind)
        source = self.data / "full" / f"{name}.bin"
        summary_path = f"results/{self.dataset}/bins/{name}.json"  # relative to the working directory
        self.fresh_run_dir(source)
        config = self.config("full", [name], self.chunk_size)
        reformat = self.snakemake(f"bin_reformat_{kind}", config, 2, self.run_dir / "bins" / f"{name}.bin")
        verify = self.snakemake(f"bin_verify_{kind}", config, 2, summary_path)
        self.verified_bin_summary(summary_path)
        self.fresh_run_dir(source)
        one_run = self.snakemake(f"bin_one_run_{kind}", self.config("full", [name], self.chunk_size), 2, summary_path)
        summary = self.verified_bin_summary(summary_path)
        return {"bin": kind, "reformat": workflow_record(*reformat, 2), "verify": workflow_record(*verify, 2),
                "one_run": workflow_record(*one_run, 2),
                "kept": summary["kept"], "reencode_reasons": summary["reencode_reasons"]}

    def verified_bin_summary(self, summary_path):
        """verify_bin's summary; it checked that the output holds as many images as the source, each
        plain bytes TF decodes."""
        summary = json.loads((self.run_dir / "work" / summary_path).read_text())
        if summary["images"] != self.args.bin_images or not summary["verified"]:
            raise RuntimeError(f"{summary_path}: expected {self.args.bin_images} verified images, found {summary}")
        return summary

    bin_original_all_jpeg = functools.partialmethod(bin_original, "all_jpeg")
    bin_workflow_all_jpeg = functools.partialmethod(bin_workflow, "all_jpeg")
    bin_original_mixed = functools.partialmethod(bin_original, "mixed")
    bin_workflow_mixed = functools.partialmethod(bin_workflow, "mixed")
