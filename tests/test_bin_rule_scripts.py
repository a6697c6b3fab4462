"""The bin rule scripts (scripts/reformat_bin.py, scripts/verify_bin.py) run as Snakemake runs
them: their outputs, their logs, and a failure written to the log."""

import json
import logging
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from bin_samples import counts_from_bins, load_output, mixed_bin

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# Runs a rule script as Snakemake does: in a fresh interpreter, scripts/ on sys.path, a
# ``snakemake`` object in its globals (here built from JSON in argv[2]).
RUN_SCRIPT = r"""
import json, runpy, sys
from types import SimpleNamespace
scripts, script, sections = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, scripts)
snakemake = SimpleNamespace(**{
    name: SimpleNamespace(**value) if isinstance(value, dict) else value for name, value in sections.items()
})
runpy.run_path(f"{scripts}/{script}", init_globals={"snakemake": snakemake}, run_name="__main__")
"""


def run_script(name, **sections):
    """Runs a rule script in this process, its logging set up on a bare root logger as in its
    own process; pytest's logging is put back afterwards."""
    root = logging.getLogger()
    handlers, level, excepthook = root.handlers[:], root.level, sys.excepthook
    root.handlers.clear()
    try:
        runpy.run_path(
            str(SCRIPTS / name), init_globals={"snakemake": SimpleNamespace(**sections)}, run_name="__main__"
        )
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook = excepthook


def test_rule_scripts_reformat_verify_and_log(tmp_path):
    source = tmp_path / "source" / "lfw.bin"
    source.parent.mkdir()
    _, images, _ = mixed_bin(source)
    output, summary = tmp_path / "bins" / "lfw.bin", tmp_path / "bins" / "lfw.json"
    logs = tmp_path / "reformat.log", tmp_path / "verify.log"

    run_script(
        "reformat_bin.py",
        input=SimpleNamespace(bin=str(source)),
        output=SimpleNamespace(bin=str(output)),
        params=SimpleNamespace(reencode="needed", jpeg_quality=95),
        threads=2,
        log=[str(logs[0])],
    )
    run_script(
        "verify_bin.py",
        input=SimpleNamespace(source=str(source), reformatted=str(output)),
        output=SimpleNamespace(summary=str(summary)),
        params=SimpleNamespace(jpeg_quality=95),
        threads=2,
        log=[str(logs[1])],
    )

    written = json.loads(summary.read_text())
    counts = counts_from_bins(source, output)
    assert {key: written[key] for key in counts} == counts
    assert written["verified"] is True and counts["images"] == len(images) and counts["reencoded"] > 0
    outputs, _ = load_output(output)
    changed = [index for index, image in enumerate(images) if outputs[index] != image]
    assert [entry["image"] for entry in written["reencoded_images"]] == changed
    reformat_log = logs[0].read_text()
    assert "image 13 (pair 6): TF does not read it (truncated-jpeg)" in reformat_log and '"kept"' in reformat_log
    assert '"verified": true' in logs[1].read_text()


def test_rule_script_failure_is_in_its_log(tmp_path):
    source, log = tmp_path / "lfw.bin", tmp_path / "reformat.log"
    source.write_bytes(b"")
    sections = {
        "input": {"bin": str(source)},
        "output": {"bin": str(tmp_path / "out.bin")},
        "params": {"reencode": "needed", "jpeg_quality": 95},
        "threads": 1,
        "log": [str(log)],
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, SCRIPTS, "reformat_bin.py", json.dumps(sections)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert f"BinError: {source}: empty file" in log.read_text()
    assert not (tmp_path / "out.bin").exists()
