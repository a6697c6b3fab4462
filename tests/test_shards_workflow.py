"""End to end: shards through `snakemake`, read with the webdataset library and tf.data; every
expected value is read from the rec with faceprep.recordio."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from faceprep.demo import encode_image
from faceprep.ownership import OWNER_FILE
from faceprep.rec_reader import IndexedRecordReader
from faceprep.outputs import SHARD_FORMATS
from faceprep.shards import shard_file_name
from interrupting import WriteHold, kill_when, start_workflow
from workflow import (
    REPO,
    block_label,
    run_workflow,
    tree_digest,
    webdataset_keys_per_worker,
    write_config,
    write_insightface_source,
)

pytestmark = pytest.mark.e2e

IMAGES, IDENTITIES, CHUNK_SIZE = 300, 6, 120


def sparse_label(key):
    """Labels 2, 7, 12, ...: a class (0..5) is never its label."""
    return float(5 * block_label(key, IMAGES, IDENTITIES) + 2)


def face(key):
    return encode_image(np.random.default_rng(key).integers(0, 256, (12, 12, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_insightface_source(tmp_path_factory.mktemp("src") / "src", IMAGES, IDENTITIES, image=face,
                                    image_label=sparse_label)


def rec_images(source):
    """``{key: (label, image bytes)}`` of every image record."""
    with IndexedRecordReader(source / "train.rec", source / "train.idx") as reader:
        images = {}
        for key in range(1, IMAGES + 1):
            header, image = reader.read_unpacked(key)
            images[key] = (int(header.label), bytes(image))
    return images


def rank(labels):
    """``{label: rank among the distinct labels sorted as integers}``."""
    return {label: position for position, label in enumerate(sorted(set(labels)))}


def run(root, source, outputs, **settings):
    dataset = {"source": str(source), "bins_out": str(root / "out" / "bins"), "bins": [], "outputs": outputs,
               "shards": str(root / "out" / "shards"), "images": str(root / "out" / "images")}
    dataset.update(settings)
    config = write_config(root / "config.yaml", {"rec": dataset}, chunk_size=CHUNK_SIZE)
    run_workflow(root / "work", config)
    return root / "out" / "shards", config


def read_webdataset(shards):
    """``(key, class, image, json)`` of every sample of a shards directory's tars, or of one tar."""
    import webdataset

    urls = sorted(str(path) for path in shards.glob("*.tar")) if shards.is_dir() else [str(shards)]
    return [(int(sample["__key__"]), int(sample["cls"]), sample["jpg"], json.loads(sample["json"]))
            for sample in webdataset.WebDataset(urls, shardshuffle=False)]


def test_the_demos_shards_feed_two_dataloader_workers(tmp_path):
    """A demo dataset as a --configfile gives it: chunk_size and shard_size auto. Its 2,000
    images are one chunk, cut into two shards, so each of two workers reads one."""
    dataset = {"demo": {"images": 2000, "identities": 40, "seed": 0}, "bins_out": str(tmp_path / "bins"), "bins": [],
               "outputs": ["webdataset"], "shards": str(tmp_path / "shards")}
    run_workflow(tmp_path / "work", write_config(tmp_path / "config.yaml", {"demo": dataset}))
    urls = sorted((tmp_path / "shards").glob("*.tar"))
    assert [url.name for url in urls] == ["demo-00000.tar", "demo-00001.tar"]
    keys = webdataset_keys_per_worker(urls, nodes=1, workers=2)
    assert sorted(keys) == list(range(1, 2001))


def read_tfrecord(shards_dir):
    import tensorflow as tf

    features = {name: tf.io.FixedLenFeature([], tf.int64) for name in ("image/class/label", "image/key", "image/label")}
    features["image/encoded"] = tf.io.FixedLenFeature([], tf.string)
    samples = []
    urls = sorted(str(path) for path in shards_dir.glob("*.tfrecord"))
    for record in tf.data.TFRecordDataset(urls):
        example = tf.io.parse_single_example(record, features)
        assert tf.image.decode_jpeg(example["image/encoded"], channels=3).shape == (12, 12, 3)
        samples.append((int(example["image/key"]), int(example["image/class/label"]),
                        example["image/encoded"].numpy(), int(example["image/label"])))
    return samples


def test_folders_webdataset_and_tfrecord_from_one_config(tmp_path, source):
    shards_dir, config = run(tmp_path, source, ["folders", "webdataset", "tfrecord"])
    images = rec_images(source)
    classes = rank(label for label, _ in images.values())

    webdataset_samples = read_webdataset(shards_dir)
    assert sorted(key for key, *_ in webdataset_samples) == list(range(1, IMAGES + 1))
    for key, image_class, image, fields in webdataset_samples:
        label = images[key][0]
        assert image == images[key][1]
        assert image_class == classes[label]
        assert fields == {"key": key, "label": label, "class": classes[label]}

    tfrecord_samples = read_tfrecord(shards_dir)
    assert sorted(key for key, *_ in tfrecord_samples) == list(range(1, IMAGES + 1))
    for key, image_class, image, label in tfrecord_samples:
        assert (label, image) == images[key]
        assert image_class == classes[label]

    # The class of an image is the one its Keras_insightface index entry gives (ranked,
    # so raw labels and classes compare alike).
    index = np.load(tmp_path / "out" / "images_shuffle.npz")
    keys = [int(Path(name).stem) for name in index["image_names"]]
    index_classes = rank(index["image_classes"].tolist())
    by_key = dict(zip(keys, (index_classes[value] for value in index["image_classes"].tolist())))
    assert {key: image_class for key, image_class, *_ in webdataset_samples} == by_key
    assert len(list((tmp_path / "out" / "images").rglob("*.jpg"))) == IMAGES

    metadata = json.loads((shards_dir / "metadata.json").read_text())
    assert (metadata["num_images"], metadata["num_classes"]) == (IMAGES, IDENTITIES)
    assert [shard["images"] for shard in metadata["formats"]["tfrecord"]["shards"]] == [120, 120, 60]
    assert (shards_dir / "classes.tsv").read_text().splitlines()[1:] == [f"{5 * c + 2}\t{c}" for c in range(IDENTITIES)]
    for shard_format in ("webdataset", "tfrecord"):
        summary = json.loads((tmp_path / "work" / "results" / "rec" / f"shards_{shard_format}.json").read_text())
        assert (summary["shards"], summary["images"]) == (3, IMAGES)

    # A finished run has nothing left to do (no job reruns for a param the plan decides).
    rerun = run_workflow(tmp_path / "work", config, "-n")
    assert "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-3000:]

    # A damaged shard fails its format's verification, which names it.
    damaged = shards_dir / "rec-00001.tar"
    data = bytearray(damaged.read_bytes())
    data[5000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (tmp_path / "work" / "results" / "rec" / "shards_webdataset.json").unlink()
    result = run_workflow(tmp_path / "work", config, check=False)
    assert result.returncode != 0
    assert f"{damaged}: SHA-256 differs from metadata.json" in result.stdout + result.stderr


@pytest.mark.e2e
def test_an_earlier_runs_shards_fail_the_verification_until_removed_as_asked(tmp_path, source):
    """Sharded again with a larger shard_size into the same directory, the earlier run's
    extra shards would be read by a loader globbing the tars: the verification names them
    and how to delete them; with remove_unlisted, exactly those go."""
    shards_dir, _ = run(tmp_path, source, ["webdataset"], shard_size=30)
    assert len(list(shards_dir.glob("*.tar"))) == 10
    dataset = {"source": str(source), "bins": [], "outputs": ["webdataset"], "shards": str(shards_dir), "shard_size": 60}
    config = write_config(tmp_path / "config.yaml", {"rec": dataset}, chunk_size=CHUNK_SIZE)
    result = run_workflow(tmp_path / "work", config, check=False)
    assert result.returncode != 0
    assert f"{shards_dir / 'rec-00009.tar'}: not listed in metadata.json" in result.stdout + result.stderr
    assert "rerun with `--config remove_unlisted=True` to delete exactly these" in result.stdout + result.stderr
    run_workflow(tmp_path / "work", config, "--config", "remove_unlisted=True")
    metadata = json.loads((shards_dir / "metadata.json").read_text())
    listed = [shard["file"] for shard in metadata["formats"]["webdataset"]["shards"]]
    # Chunks of 120, 120 and 60 images, in shards of at most 60.
    assert sorted(path.name for path in shards_dir.glob("*.tar")) == listed == [f"rec-{n:05d}.tar" for n in range(5)]
    assert sorted(key for key, _, _, _ in read_webdataset(shards_dir)) == list(range(1, IMAGES + 1))


README_SHARDS = "/datasets/faces_emore_shards"


def readme_snippets():
    """The README's Python blocks that read shards from README_SHARDS."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [block for block in blocks if README_SHARDS in block]


def test_shards_only_shuffled_and_the_readme_readers(tmp_path, source):
    shards_dir, _ = run(tmp_path, source, ["webdataset", "tfrecord"], shard_order="shuffled")
    assert not (tmp_path / "out" / "images").exists() and not (tmp_path / "out" / "images_shuffle.npz").exists()
    assert not (tmp_path / "work" / "results" / "rec" / "manifests").exists()
    assert sorted(path.name for path in shards_dir.iterdir()) == [OWNER_FILE, "classes.tsv", "metadata.json"] + [
        f"rec-{chunk:05d}.{extension}" for chunk in range(3) for extension in ("tar", "tfrecord")]
    images = rec_images(source)
    samples = read_webdataset(shards_dir)
    assert sorted(key for key, *_ in samples) == list(range(1, IMAGES + 1))
    assert all(image == images[key][1] for key, _, image, _ in samples)
    # In rec order a 120-image shard would hold 2-3 of the 6 identities; shuffled, each holds all.
    for shard in sorted(shards_dir.glob("*.tar")):
        assert len({image_class for _, image_class, _, _ in read_webdataset(shard)}) == IDENTITIES
    first_shard = [key for key, *_ in samples[:120]]
    assert first_shard == sorted(first_shard) and first_shard != list(range(1, 121))
    metadata = json.loads((shards_dir / "metadata.json").read_text())
    assert (metadata["shard_order"], metadata["shard_seed"]) == ("shuffled", 0)

    snippets = readme_snippets()
    assert len(snippets) == 2
    classes = rank(label for label, _ in images.values())
    expected = sorted((classes[label], image) for label, image in images.values())
    for snippet in snippets:
        namespace = {}
        exec(snippet.replace(README_SHARDS, str(shards_dir)), namespace)
        if "tf" in namespace:  # the tf.data one: batches of (decoded images, classes)
            pairs = [(int(image_class), image.shape) for images_batch, classes_batch in namespace["dataset"]
                     for image, image_class in zip(images_batch, classes_batch)]
        else:
            pairs = [(int(image_class), image.shape) for image, image_class in namespace["dataset"]]
        assert sorted(pairs) == sorted((image_class, (12, 12, 3)) for image_class, _ in expected)


# Large enough that a shard takes a while to write: a kill lands inside one.
KILL_IMAGES, KILL_CHUNK_SIZE = 6000, 1500


def shard_being_written(jobs):
    """``(job, temporary shard)`` when a write_shard job among ``jobs`` (running_jobs()) holds a
    shard's .tmp open and the shard itself does not exist yet, else None."""
    for job in jobs:
        if job.script == "write_shard":
            for path in job.open_files:
                if path.endswith(".tmp") and Path(path).exists() and not Path(path[: -len(".tmp")]).exists():
                    return job, path
    return None


def test_sigkill_mid_shard_then_resume_gives_identical_shards(tmp_path):
    source = write_insightface_source(tmp_path / "src", KILL_IMAGES, 30, image=lambda key: key.to_bytes(4, "little") * 2000)

    def config(root):
        dataset = {"source": str(source), "bins_out": str(root / "bins"), "bins": [], "shards": str(root / "shards"),
                   "outputs": ["webdataset", "tfrecord"]}
        return write_config(root / "config.yaml", {"rec": dataset}, chunk_size=KILL_CHUNK_SIZE)

    reference = tmp_path / "reference"
    reference.mkdir()
    run_workflow(reference / "work", config(reference))

    root = tmp_path / "killed"
    root.mkdir()
    # Every shard's .tmp is a write hold: the first shard job blocks mid-write with it open
    # until the kill, on a fast or a slow machine alike.
    # shard_size auto: shards of ~1,000 images, so each chunk of 1,500 is two shards.
    holds = [WriteHold(root / "shards" / f"{shard_file_name('rec', shard, shard_format)}.tmp")
             for shard in range(2 * KILL_IMAGES // KILL_CHUNK_SIZE) for shard_format in SHARD_FORMATS]
    try:
        run = start_workflow(root / "work", config(root), cores=1, log_path=root / "run.log")
        killed = kill_when(run, shard_being_written, pause=lambda: 0.05, screen=True)
        assert killed, (root / "run.log").read_text()[-3000:]
        (_, temporary), _ = killed
        assert Path(temporary).exists() and not Path(temporary[: -len(".tmp")]).exists()
        assert not (root / "shards" / "metadata.json").exists()
    finally:
        for hold in holds:
            hold.settle()  # the .tmp being written keeps what the job had written, as after any kill

    run_workflow(root / "work", config(root), "--unlock")
    run_workflow(root / "work", config(root))
    assert tree_digest(root / "shards") == tree_digest(reference / "shards")
    assert not list((root / "shards").glob("*.tmp"))
