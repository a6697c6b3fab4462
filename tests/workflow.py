"""Run the workflow with snakemake from tests, each run in its own working directory, and the
sources and checks the workflow tests share; interrupting.py stops and kills runs."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from faceprep.insightface import DatasetWriter
from faceprep.ownership import OWNER_FILE
from machine import lacks

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def write_config(path, datasets, **settings):
    path = Path(path)
    path.write_text(yaml.safe_dump({"datasets": datasets, **settings}))
    return path


def snakemake_command(workdir, configfile, *args, cores=2):
    return [
        str(SNAKEMAKE),
        "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir),
        "--configfile", str(configfile),
        "--cores", str(cores),
        *args,
    ]


def run_workflow(workdir, configfile, *args, cores=2, check=True, launcher=()):
    """Run snakemake to completion; on an unexpected exit code show its output.

    ``launcher``: a command prefix that runs snakemake (e.g. without_file_access_override()).
    """
    result = subprocess.run(
        [*launcher, *snakemake_command(workdir, configfile, *args, cores=cores)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


# The capabilities through which root reads, writes and lists files whatever their mode.
FILE_ACCESS_OVERRIDE = ("dac_override", "dac_read_search")


def without_file_access_override():
    """A command prefix that runs a program with file permission bits applying to it.

    Root ignores permission bits through FILE_ACCESS_OVERRIDE; setpriv drops them from
    the bounding and inheritable sets, so the program runs as root but without them:
    a file that is chmod 000 is unreadable, while the repository, its .venv and the
    test's directories stay reachable as they are. Other users need no prefix.
    machine.lacks() when root has no setpriv.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        lacks("running as root, which reads any file, and setpriv (util-linux) is missing to drop that")
    dropped = ",".join(f"-{capability}" for capability in FILE_ACCESS_OVERRIDE)
    return [setpriv, f"--inh-caps={dropped}", f"--bounding-set={dropped}"]



def write_insightface_source(
    directory, images, identities, image=lambda key: bytes([key % 256]) * 300, image_label=None, header=None
):
    """An insightface source: image keys 1..images in ``identities`` equal blocks of labels,
    one identity record per label, the header record (key 0) last, and ``property``.

    ``image(key)`` gives an image's bytes, ``image_label(key)`` overrides its label (None keeps it),
    ``header`` replaces the header record's label.
    """
    blocks = [[1 + identity * images // identities, 1 + identity * images // identities + images // identities]
              for identity in range(identities)]
    header = header or [images + 1, images + 1 + identities]
    with DatasetWriter(directory, header=header, identities=identities, identity_ranges=blocks) as writer:
        for key in range(1, images + 1):
            label = image_label(key) if image_label else None
            label = float(block_label(key, images, identities)) if label is None else label
            writer.add(key, label, image(key))
    return directory


def block_label(key, images, identities):
    """The label write_insightface_source gives image ``key`` by default."""
    return (key - 1) * identities // images


def tree_digest(root):
    """``{relative path: sha256}`` of every file below ``root``, but the owner files of
    output directories: they name the working directory that wrote them, and trees written
    from two are compared."""
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != OWNER_FILE
    }


_WORKER_READS = """
import json, sys
import webdataset
dataset = webdataset.WebDataset(json.loads(sys.argv[1]), shardshuffle=False, nodesplitter=webdataset.split_by_node,
                                workersplitter=webdataset.split_by_worker)
print(json.dumps([int(sample["__key__"]) for sample in dataset]))
"""


def webdataset_keys_per_worker(urls, nodes, workers):
    """Every sample key that ``nodes`` x ``workers`` readers of ``urls`` get, each reader a
    webdataset pipeline split by node and by worker, as in a DataLoader (webdataset takes
    rank and worker from RANK, WORLD_SIZE, WORKER and NUM_WORKERS, as torch would give them);
    every reader must get a sample (webdataset raises when a worker has no shard)."""
    keys = []
    for rank in range(nodes):
        for worker in range(workers):
            environment = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(nodes),
                           "WORKER": str(worker), "NUM_WORKERS": str(workers)}
            result = subprocess.run([sys.executable, "-c", _WORKER_READS, json.dumps([str(url) for url in urls])],
                                    capture_output=True, text=True, env=environment)
            assert result.returncode == 0, f"node {rank}, worker {worker}: {result.stderr[-2000:]}"
            keys += json.loads(result.stdout)
    return keys
