"""A disk that fills up during extraction: a clear error, nothing marked done, resume after freeing space."""

import errno
import os
import re
import subprocess

import numpy as np
import pytest

from faceprep.atomic import write_bytes
from faceprep.classes import ClassTable
from faceprep.insightface import DatasetWriter
from faceprep.outputs import SHARD_FORMATS
from faceprep.shards import ChunkShards
from machine import lacks
from workflow import run_workflow, tree_digest, write_config

pytestmark = pytest.mark.e2e

IMAGES, IDENTITIES = 200, 5


def write_source(directory):
    directory.mkdir(parents=True)
    with DatasetWriter(directory, image_size=None) as writer:
        for key in range(1, IMAGES + 1):
            writer.add(key, float((key - 1) % IDENTITIES), os.urandom(3000))
    return directory


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (the images need ~600 KiB); needs root."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if result.returncode != 0:
        lacks(f"cannot mount a tmpfs here (root needed): {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_fails_cleanly_and_resumes(tmp_path, small_tmpfs):
    source = write_source(tmp_path / "src")

    def config(name, images):
        datasets = {"d": {"source": str(source), "images": str(images), "bins_out": str(tmp_path / name / "bins"), "bins": []}}
        return write_config(tmp_path / f"{name}.yaml", datasets, chunk_size=50)

    run_workflow(tmp_path / "reference_work", config("reference", tmp_path / "reference" / "images"))

    images = small_tmpfs / "images"
    full = config("full", images)
    result = run_workflow(tmp_path / "work", full, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"No space left on device.*writing image record key \d+|writing image record key \d+.*No space left", output), output[-3000:]
    assert str(images) in output
    manifests = sorted((tmp_path / "work" / "results" / "d" / "manifests").glob("*.tsv"))
    assert len(manifests) < 4  # the chunk that hit the full disk is not marked done
    assert not (tmp_path / "work" / "results" / "d" / "extraction.json").exists()

    subprocess.run(["mount", "-o", "remount,size=4m", str(small_tmpfs)], check=True)
    run_workflow(tmp_path / "work", full)
    assert tree_digest(images) == tree_digest(tmp_path / "reference" / "images")


@pytest.mark.parametrize("shard_format", sorted(SHARD_FORMATS))
def test_a_full_disk_while_writing_a_shard_names_the_shard(tmp_path, small_tmpfs, shard_format):
    shard = small_tmpfs / f"d-00000.{SHARD_FORMATS[shard_format].extension}"
    classes = ClassTable(np.arange(IDENTITIES))
    with pytest.raises(OSError) as error:
        with ChunkShards(shard_format, small_tmpfs, "d", 0, [IMAGES], classes, tmp_path / "summary.json") as writer:
            for key in range(1, IMAGES + 1):
                writer.write(key, key % IDENTITIES, os.urandom(3000))
    assert error.value.errno == errno.ENOSPC
    assert str(shard) in str(error.value)
    assert os.listdir(small_tmpfs) == [] and not (tmp_path / "summary.json").exists()


def test_a_full_disk_while_writing_a_bin_names_the_bin(small_tmpfs):
    with pytest.raises(OSError) as error:
        write_bytes(small_tmpfs / "lfw.bin", os.urandom(600_000))
    assert error.value.errno == errno.ENOSPC
    assert str(small_tmpfs / "lfw.bin") in str(error.value)
    assert os.listdir(small_tmpfs) == []
