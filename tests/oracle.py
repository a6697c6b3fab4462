"""Run the MXNet test oracle (``tests/mxnet_oracle/*.py``) in the repository's ``.venv-mxnet``.

The workflow never needs MXNet; tests use it to write reference ``.rec`` files and to
run the original extraction script. Without the venv, tests that need it skip
under a bare ``pytest`` and fail under ``make test`` (machine.lacks), so ``make test``
cannot pass without actually running the cross-checks.
"""

import json
import os
import subprocess
from pathlib import Path

from machine import lacks

REPO_ROOT = Path(__file__).resolve().parents[1]
ORACLE_DIR = Path(__file__).resolve().parent / "mxnet_oracle"


class OracleError(subprocess.CalledProcessError):
    """An oracle script failed; unlike CalledProcessError, str() shows its output."""

    def __str__(self):
        return f"{super().__str__()}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


def mxnet_python() -> Path:
    """The MXNet venv's python; machine.lacks() when the venv is missing."""
    python = REPO_ROOT / ".venv-mxnet" / "bin" / "python"
    if not python.exists():
        lacks(f"MXNet oracle venv missing ({python} not found); create it with `make mxnet-venv`")
    return python


def run_oracle(script_name, *args) -> subprocess.CompletedProcess:
    """Run ``tests/mxnet_oracle/<script_name>`` with ``args``; raise OracleError on a non-zero exit."""
    command = [str(mxnet_python()), str(ORACLE_DIR / script_name), *map(str, args)]
    # The pytest process's PYTHONPATH/PYTHONHOME would point the MXNet venv at the
    # workflow's packages (numpy 2, which mxnet 1.9 cannot import).
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise OracleError(result.returncode, command, result.stdout, result.stderr)
    return result


def make_insightface_source(
    dest, images, identities, seed, label_style="scalar", magic_every=0, shuffle_physical=False,
    overlapping_identities=False,
) -> Path:
    """Write an insightface dataset dir (train.rec, train.idx, property) into ``dest`` with MXNet."""
    args = ["--out", dest, "--images", images, "--identities", identities, "--seed", seed]
    args += ["--label-style", label_style, "--magic-every", magic_every]
    if shuffle_physical:
        args.append("--shuffle-physical")
    if overlapping_identities:
        args.append("--overlapping-identities")
    run_oracle("write_insightface_rec.py", *args)
    return Path(dest)


def make_rec_from_spec(spec, dest) -> Path:
    """Write ``dest/train.rec`` and ``train.idx`` with MXNet's writer from ``spec`` (see write_rec.py)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "spec.json").write_text(json.dumps(spec))
    run_oracle("write_rec.py", dest / "spec.json", dest / "train.rec", dest / "train.idx")
    (dest / "spec.json").unlink()
    return dest


def run_mxface_extraction(layout, read_dir, save_dir) -> Path:
    """Extract ``read_dir`` of ``layout`` into ``save_dir`` as arcface_torch's MXFaceDataset reads it."""
    run_oracle("extract_by_keys.py", layout, read_dir, save_dir)
    return Path(save_dir)


def run_original_extraction(read_dir, save_dir) -> Path:
    """Run the original MXNet extraction of ``read_dir/train.rec`` into ``save_dir``; returns ``save_dir``."""
    run_oracle("original_extract.py", read_dir, save_dir)
    return Path(save_dir)
