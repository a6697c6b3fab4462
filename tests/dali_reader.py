"""NVIDIA DALI as a real reader in tests: programs run by the python of the repository's
``.venv-dali`` (``make dali-venv``), on the CPU (``device_id=None``, the CPU decoder), as
arcface_torch's loader reads a rec. Without the venv, tests that need it skip under a bare
``pytest`` and fail under ``make test`` (machine.lacks)."""

import json
import os
import subprocess
from machine import lacks
from workflow import REPO

# fn.readers.mxnet over argv[1] (rec) and argv[2] (idx), in file order: the epoch's sample count
# and, for each sample, the decoded image's shape and its label.
READ_REC = """
import json, sys
from nvidia.dali import fn, pipeline_def, types

@pipeline_def(batch_size=1, num_threads=2, device_id=None)
def pipeline(rec, idx):
    jpegs, labels = fn.readers.mxnet(path=rec, index_path=idx, random_shuffle=False, name="reader")
    return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB), labels

pipe = pipeline(sys.argv[1], sys.argv[2])
pipe.build()
samples = pipe.reader_meta("reader")["epoch_size"]
decoded = []
for _ in range(samples):
    images, labels = pipe.run()
    decoded.append([list(images.at(0).shape), float(labels.at(0)[0])])
print(json.dumps({"samples": samples, "decoded": decoded}))
"""


def dali_python():
    python = REPO / ".venv-dali" / "bin" / "python"
    if not python.exists():
        lacks(f"DALI venv missing ({python} not found); create it with `make dali-venv`")
    return python


def run_dali(program, *args):
    """Run ``program`` (Python source) with ``args`` in DALI's venv; its stdout, once it exited 0."""
    result = subprocess.run([str(dali_python()), "-c", program, *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def dali_reads_rec(rec_dir):
    """What DALI's mxnet reader reads from ``rec_dir``'s train.rec and train.idx:
    ``{"samples": epoch size, "decoded": [[shape, label], ...] in file order}``."""
    return json.loads(run_dali(READ_REC, rec_dir / "train.rec", rec_dir / "train.idx").splitlines()[-1])
