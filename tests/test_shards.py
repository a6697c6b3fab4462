"""Shard writers, class table and shard verification, read back with the real readers: `tar`,
tarfile, the webdataset library and TensorFlow. Expected values come from the rec itself,
read with faceprep.recordio, never from the writers."""

import io
import json
import math
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from faceprep.classes import ClassTable, distinct_labels
from faceprep.demo import encode_image
from faceprep.extract import extract_chunk
from faceprep.errors import DatasetError
from faceprep.insightface import DatasetWriter, IM2REC, plan_chunks
from faceprep.rec_reader import IndexedRecordReader
from faceprep import shard_check
from faceprep.shard_check import shard_metadata, verify_shards
from faceprep.outputs import SHARD_FORMATS, shard_file
from faceprep.outputs.tfrecord import encode_example
from faceprep.shards import ChunkShards, auto_shard_size, first_shard_of, plan_shards, shard_file_name, write_shuffled_rows
from shard_samples import write_shards
from workflow import REPO, webdataset_keys_per_worker

# Sparse labels, not sorted as strings ("1000" < "7"), so a class is never its label.
LABELS = [7, 7, 1000, 42, 42, 42, 7, 3]


def jpeg(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    return encode_image(pixels)


@pytest.fixture
def source(tmp_path):
    """An im2rec rec: keys 10.., labels LABELS, every image a small distinct JPEG."""
    directory = tmp_path / "src"
    with DatasetWriter(directory, IM2REC, image_size=None) as writer:
        for position, label in enumerate(LABELS):
            writer.add(10 + position, float(label), jpeg(position))
    return directory


def rec_images(source):
    """``{key: (label, image bytes)}`` of every record, read with faceprep.recordio."""
    with IndexedRecordReader(source / "train.rec", source / "train.idx") as reader:
        images = {}
        for key in reader.keys.tolist():
            header, image = reader.read_unpacked(key)
            images[key] = (int(header.label), bytes(image))
    return images


def expected_class(label):
    return sorted(set(LABELS)).index(label)


def test_class_table_ranks_distinct_labels_as_integers(tmp_path):
    table = ClassTable(distinct_labels([10, 2], [1000, 2, 9]))
    assert table.labels.tolist() == [2, 9, 10, 1000]
    assert table.classes_of([1000, 2, 10]).tolist() == [3, 0, 2]
    with pytest.raises(DatasetError, match="has no class for label 11"):
        table.classes_of([9, 11])
    table.write(tmp_path / "classes.tsv")
    assert (tmp_path / "classes.tsv").read_text() == "label\tclass\n2\t0\n9\t1\n10\t2\n1000\t3\n"
    assert ClassTable.read(tmp_path / "classes.tsv").labels.tolist() == [2, 9, 10, 1000]
    (tmp_path / "bad.tsv").write_text("label\tclass\n2\t0\n10\t2\n")
    with pytest.raises(DatasetError, match=r"bad\.tsv: line 3: label 10 class 2; expected class 1"):
        ClassTable.read(tmp_path / "bad.tsv")


def test_a_folder_trees_class_table_names_each_class_identity(tmp_path):
    """Identities are written and read back as bytes: a Linux name need not be UTF-8."""
    identities = [b"m.0abc", "Zo\u00eb \u00c5ngstr\u00f6m".encode(), b"caf\xe9", b"nested/id 7"]
    ClassTable([0, 1, 2, 3], "classes.tsv", identities).write(tmp_path / "classes.tsv")
    assert (tmp_path / "classes.tsv").read_bytes() == (
        b"label\tclass\tidentity\n0\t0\tm.0abc\n1\t1\tZo\xc3\xab \xc3\x85ngstr\xc3\xb6m\n2\t2\tcaf\xe9\n3\t3\tnested/id 7\n")
    table = ClassTable.read(tmp_path / "classes.tsv")
    assert (table.labels.tolist(), table.identities) == ([0, 1, 2, 3], identities)
    assert ClassTable.read(tmp_path / "classes.tsv").class_of(2) == 2
    (tmp_path / "bad.tsv").write_bytes(b"label\tclass\tidentity\n0\t0\tm.0abc\n1\t1\n")
    with pytest.raises(DatasetError, match=r"bad\.tsv: line 3: expected '<label>\\t<class>\\t<identity>'"):
        ClassTable.read(tmp_path / "bad.tsv")
    with pytest.raises(DatasetError, match="3 identities for 4 classes"):
        ClassTable([0, 1, 2, 3], "classes.tsv", identities[:3])


def test_webdataset_shards_read_by_tar_tarfile_and_webdataset(source, tmp_path):
    import webdataset

    _, _, paths, summaries = write_shards(source, tmp_path, "webdataset")
    images = rec_images(source)
    listed = subprocess.run(["tar", "-tf", str(paths[0])], capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["10.jpg", "10.cls", "10.json", "11.jpg", "11.cls", "11.json", "12.jpg", "12.cls", "12.json"]
    with tarfile.open(paths[1]) as archive:  # checks every header's checksum
        members = {member.name: archive.extractfile(member).read() for member in archive}
    assert members["13.jpg"] == images[13][1] and members["13.cls"] == b"2"
    assert json.loads(members["13.json"]) == {"key": 13, "label": 42, "class": 2}

    samples = list(webdataset.WebDataset([str(path) for path in paths], shardshuffle=False))
    assert [int(sample["__key__"]) for sample in samples] == sorted(images)
    for sample in samples:
        key = int(sample["__key__"])
        label, image = images[key]
        assert sample["jpg"] == image
        assert int(sample["cls"]) == expected_class(label)
        assert json.loads(sample["json"]) == {"key": key, "label": label, "class": expected_class(label)}
    assert [summary["images"] for summary in summaries] == [3, 3, 2]
    shards = [shard for summary in summaries for shard in summary["shards"]]
    assert [shard["file"] for shard in shards] == [path.name for path in paths] == [f"set-0000{n}.tar" for n in range(3)]
    assert all(shard["bytes"] == path.stat().st_size for shard, path in zip(shards, paths))


def test_a_chunk_writes_several_shards_that_every_node_and_worker_reads(source, tmp_path):
    """shard_size 2: chunks of 3, 3 and 2 images become shards of 1+2, 1+2 and 2. Two nodes of
    two DataLoader workers each (webdataset takes them from RANK/WORLD_SIZE/WORKER/NUM_WORKERS,
    as torch would give them) each get a shard, and together every image once."""
    _, sizes, paths, summaries = write_shards(source, tmp_path, "webdataset", shard_size=2)
    assert sizes == [[1, 2], [1, 2], [2]]
    assert [path.name for path in paths] == [f"set-0000{n}.tar" for n in range(5)]
    assert [[shard["images"] for shard in summary["shards"]] for summary in summaries] == sizes
    assert sorted(webdataset_keys_per_worker(paths, nodes=2, workers=2)) == sorted(rec_images(source))


@pytest.mark.parametrize(("images", "image_bytes", "shard_format", "shards"), [
    (2000, 2000 * 6000, "webdataset", 2),  # the demo: shards of ~1,000 images, one for each of two workers
    (64_000, 64_000 * 6000, "tfrecord", 64),  # 64 shards from 64,000 images on
    # MS1M at 6,250 bytes an image: 256 MB shards. A tar adds 2,304 bytes an image:
    # 5,822,653 x 8,554 / 2^28 = 185.5, so 186 shards; a TFRecord 120: 138.2, so 139.
    (5_822_653, 5_822_653 * 6250, "webdataset", 186),
    (5_822_653, 5_822_653 * 6250, "tfrecord", 139),
])
def test_auto_shard_size(images, image_bytes, shard_format, shards):
    size = auto_shard_size(images, image_bytes, shard_format)
    assert math.ceil(images / size) == shards
    assert size * (image_bytes / images + SHARD_FORMATS[shard_format].bytes_per_image) <= 256 << 20


def test_plan_shards_cuts_each_chunk_into_near_equal_shards():
    plan = {"images": 10, "rec_bytes": 0, "chunks": [[0, 4], [4, 9], [9, 10]]}
    assert plan_shards(plan, 2, "tfrecord") == [[2, 2], [1, 2, 2], [1]]
    assert plan_shards(plan, 100, "tfrecord") == [[4], [5], [1]]
    assert first_shard_of(plan_shards(plan, 2, "tfrecord"), 2) == 5


def test_tfrecord_shards_read_by_tensorflow(source, tmp_path):
    import tensorflow as tf

    _, _, paths, _ = write_shards(source, tmp_path, "tfrecord")
    images = rec_images(source)
    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/key": tf.io.FixedLenFeature([], tf.int64),
        "image/label": tf.io.FixedLenFeature([], tf.int64),
    }
    seen = []
    for record in tf.data.TFRecordDataset([str(path) for path in paths]):
        example = tf.io.parse_single_example(record, features)
        key = int(example["image/key"])
        label, image = images[key]
        assert example["image/encoded"].numpy() == image
        assert tf.image.decode_jpeg(example["image/encoded"]).shape == (16, 24, 3)
        assert example["image/format"].numpy() == b"jpeg"
        assert (int(example["image/label"]), int(example["image/class/label"])) == (label, expected_class(label))
        seen.append(key)
    assert seen == sorted(images)


def test_a_tfrecord_example_names_its_images_format(tmp_path):
    """A folder tree holds PNG, GIF, BMP and WebP beside JPEG: image/format says which."""
    import tensorflow as tf
    from PIL import Image

    def encoded(pillow_format):
        buffer = io.BytesIO()
        Image.new("RGB", (6, 4), (200, 30, 90)).save(buffer, format=pillow_format)
        return buffer.getvalue()

    images = {"jpeg": jpeg(1), "png": encoded("PNG"), "gif": encoded("GIF"), "bmp": encoded("BMP"),
              "webp": encoded("WEBP"), "unknown": b"not an image at all"}
    writer = ChunkShards("tfrecord", tmp_path, "s", 0, [len(images)], ClassTable([0], "classes.tsv"), tmp_path / "s.json")
    for key, data in enumerate(images.values(), start=1):
        writer.write(key, 0, data)
    writer.close()
    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string), "image/format": tf.io.FixedLenFeature([], tf.string)}
    read = [tf.io.parse_single_example(record, features) for record in tf.data.TFRecordDataset(str(tmp_path / "s-00000.tfrecord"))]
    assert [(example["image/format"].numpy().decode(), example["image/encoded"].numpy()) for example in read] == list(images.items())


@pytest.mark.parametrize("features", [
    # A value and an entry longer than 127 bytes: their lengths take two-byte varints.
    {"image/encoded": b"\xff\xd8" + bytes(range(256)), "image/format": b"jpeg", "image/class/label": 2,
     "image/key": 2**40 + 3, "image/label": 0},
    # Around the tabled varints' end (2^14), a value needing three length bytes, the int64
    # extremes and a name long enough that an int entry's length takes two bytes.
    # No name is a prefix of another: protobuf implementations order such map keys differently.
    {"image/encoded": bytes(range(256)) * 80, "b": b"x" * 16_370, "c": 127, "d": 128, "e": 16_383, "f": 16_384,
     "g": 2**63 - 1, "h": -1, "k": -(2**63), "n" * 200: 5},
])
def test_example_encoding_is_protobufs_own(source, features):
    import tensorflow as tf

    example = tf.train.Example(features=tf.train.Features(feature={
        name: tf.train.Feature(int64_list=tf.train.Int64List(value=[value])) if isinstance(value, int)
        else tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        for name, value in features.items()
    }))
    assert encode_example(features) == example.SerializeToString(deterministic=True)


def test_writers_run_without_tensorflow(source, tmp_path):
    """The chunk job must not import TensorFlow: block it and write both formats."""
    program = f"""
import sys
sys.modules["tensorflow"] = None  # any import of it now fails
sys.path[:0] = [{str(REPO / "scripts")!r}, {str(REPO / "tests")!r}]
from pathlib import Path
from shard_samples import write_shards
for shard_format in ("webdataset", "tfrecord"):
    out = Path({str(tmp_path)!r}) / shard_format
    out.mkdir()
    write_shards(Path({str(source)!r}), out, shard_format)
print(sorted(name for name, module in sys.modules.items() if module and name.split(".")[0] in ("tensorflow", "google")))
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("shard_format", ["webdataset", "tfrecord"])
def test_shard_writeback_starts_as_the_shard_grows_over_bytes_already_written(source, tmp_path, monkeypatch, shard_format):
    """A shard job starts the disk's writeback every WRITEBACK_BYTES instead of leaving the
    whole shard to its fsync: each range asked for is already in the file, the ranges follow
    each other from byte 0, and the shard's bytes are those written without it."""
    unhurried = tmp_path / "unhurried"
    unhurried.mkdir()
    _, _, expected_paths, _ = write_shards(source, unhurried, shard_format, chunk_size=8, shard_size=8)
    ranges = []

    def start_writeback(descriptor, offset, length):
        assert os.fstat(descriptor).st_size >= offset + length
        ranges.append((offset, length))

    monkeypatch.setattr(shard_file, "WRITEBACK_BYTES", 1000)
    monkeypatch.setattr(shard_file, "start_writeback", start_writeback)
    _, _, paths, _ = write_shards(source, tmp_path, shard_format, chunk_size=8, shard_size=8)
    assert [path.read_bytes() for path in paths] == [path.read_bytes() for path in expected_paths]
    # Every image's record is over 1000 bytes: each one written starts a writeback.
    assert len(ranges) >= len(LABELS) and ranges[0][0] == 0
    assert all(offset + length == following for (offset, length), (following, _) in zip(ranges, ranges[1:]))
    assert all(length >= 1000 for _, length in ranges) and sum(length for _, length in ranges) <= paths[0].stat().st_size


def test_label_without_class_is_named_with_shard_and_key(source, tmp_path):
    plan = plan_chunks(source / "train.rec", source / "train.idx", None, 8, tmp_path / "rows.npy")
    writer = ChunkShards("tfrecord", tmp_path, "s", 0, [8], ClassTable([3, 7, 42], "classes.tsv"), tmp_path / "s.json")
    with pytest.raises(DatasetError, match=r"s-00000\.tfrecord: image record key 12: classes\.tsv: has no class for label 1000"):
        extract_chunk(source / "train.rec", source / "train.idx", np.load(tmp_path / "rows.npy"), [writer])
    assert plan["images"] == 8
    assert not (tmp_path / "s-00000.tfrecord").exists() and not (tmp_path / "s-00000.tfrecord.tmp").exists()
    assert not (tmp_path / "s.json").exists()


def test_shuffled_rows_are_a_seeded_permutation(tmp_path):
    rows = np.stack([np.arange(1000) * 3, np.arange(1000) * 100], axis=1)
    np.save(tmp_path / "rows.npy", rows)
    write_shuffled_rows(tmp_path / "rows.npy", tmp_path / "a.npy", seed=1)
    write_shuffled_rows(tmp_path / "rows.npy", tmp_path / "b.npy", seed=1)
    shuffled = np.load(tmp_path / "a.npy")
    assert np.array_equal(shuffled, np.load(tmp_path / "b.npy"))
    assert not np.array_equal(shuffled, rows)
    assert np.array_equal(shuffled[np.argsort(shuffled[:, 0])], rows)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("shard_format", ["webdataset", "tfrecord"])
def test_verification_names_a_damaged_missing_or_stray_shard(source, tmp_path, shard_format, workers, monkeypatch):
    plan, sizes, paths, summaries = write_shards(source, tmp_path, shard_format)
    # Shards of several hash blocks, the last one partly filled (the workflow's are megabytes).
    hash_block = 1000
    monkeypatch.setattr(shard_check, "HASH_BLOCK", hash_block)
    assert all(path.stat().st_size > 2 * hash_block and path.stat().st_size % hash_block for path in paths)
    classes = ClassTable.read(tmp_path / "shards" / "classes.tsv")
    metadata = shard_metadata("set", plan, classes, "first", "rec", 0, {shard_format: summaries})
    assert (metadata["num_images"], metadata["num_classes"]) == (8, 4)
    summary = verify_shards(metadata, tmp_path / "shards", plan, shard_format, sizes, workers=workers)
    assert (summary["shards"], summary["images"]) == (3, 8)

    data = bytearray(paths[1].read_bytes())
    data[700] ^= 1
    paths[1].write_bytes(bytes(data))
    # Inside the first image's bytes: TFRecord's own data CRC finds it before the SHA-256 does.
    found = {"webdataset": "SHA-256 differs", "tfrecord": "byte 0: record 0's data fails its CRC"}[shard_format]
    with pytest.raises(DatasetError, match=rf"{paths[1]}: {found}") as error:
        verify_shards(metadata, tmp_path / "shards", plan, shard_format, sizes, workers=workers)
    assert paths[0].name not in str(error.value)

    paths[2].unlink()
    stray = tmp_path / "shards" / shard_file_name("set", 7, shard_format)
    stray.write_bytes(b"")
    with pytest.raises(DatasetError) as error:
        verify_shards(metadata, tmp_path / "shards", plan, shard_format, sizes, workers=workers)
    assert f"{paths[2]}: listed in metadata.json but missing" in str(error.value)
    assert f"{stray}: not listed in metadata.json" in str(error.value)
    assert "rerun with `--config remove_unlisted=True` to delete exactly these" in str(error.value)


@pytest.mark.parametrize("shard_format", ["webdataset", "tfrecord"])
def test_remove_unlisted_deletes_exactly_the_shards_the_metadata_does_not_list(source, tmp_path, shard_format):
    """An earlier run's shards (another shard_size) and nothing else: not the user's files, nor
    another dataset's or format's shards, nor a temporary."""
    plan, sizes, paths, summaries = write_shards(source, tmp_path, shard_format)
    metadata = shard_metadata("set", plan, ClassTable.read(tmp_path / "shards" / "classes.tsv"), "first", "rec", 0,
                              {shard_format: summaries})
    shards = tmp_path / "shards"
    strays = [shard_file_name("set", shard, shard_format) for shard in (3, 12)]
    kept = ["notes.txt", shard_file_name("other", 5, shard_format), f"{strays[0]}.tmp",
            shard_file_name("set", 5, next(name for name in SHARD_FORMATS if name != shard_format))]
    for name in strays + kept:
        (shards / name).write_bytes(b"an earlier run's")
    before = {path.name: path.read_bytes() for path in shards.iterdir() if path.name not in strays}
    summary = verify_shards(metadata, shards, plan, shard_format, sizes, remove_unlisted=True)
    assert summary["removed_unlisted"] == strays and summary["shards"] == len(paths)
    assert {path.name: path.read_bytes() for path in shards.iterdir()} == before


@pytest.mark.parametrize("shard_format", ["webdataset", "tfrecord"])
def test_truncated_shard_fails_its_walk(source, tmp_path, shard_format):
    _, _, paths, _ = write_shards(source, tmp_path, shard_format)
    data = paths[0].read_bytes()
    cut = data[: len(data) // 2]
    count_images = SHARD_FORMATS[shard_format].count_images
    with pytest.raises(DatasetError, match=rf"{paths[0].name}: byte \d+"):
        count_images(paths[0].name, io.BytesIO(cut))
    assert count_images(paths[0].name, io.BytesIO(data)) == 3
