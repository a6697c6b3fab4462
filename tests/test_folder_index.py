"""Keras_insightface's index (``<images>_shuffle.npz``) and class table built from chunk
manifests: classes are folder ranks as Keras_insightface computes them, the bytes do not
depend on the day, and a manifest path that is not ``<label>/<key>.jpg`` is refused."""

import os

import numpy as np
import pytest

from extract_samples import extract, extract_keys, plan, write_source
from faceprep.errors import DatasetError
from faceprep.folder_index import build_index


def test_index_bytes_do_not_depend_on_when_it_was_written(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", [0.0, 1.0, 1.0])
    _, manifest = extract(source, tmp_path, (1, 4))
    build_index([manifest], tmp_path / "images", tmp_path / "first.npz", tmp_path / "classes.tsv")
    monkeypatch.setattr("time.time", lambda: 2_000_000_000.0)  # another day
    build_index([manifest], tmp_path / "images", tmp_path / "second.npz", tmp_path / "classes.tsv")
    assert (tmp_path / "first.npz").read_bytes() == (tmp_path / "second.npz").read_bytes()


def test_index_written_in_blocks_is_the_shuffled_name_and_label_arrays(tmp_path, monkeypatch):
    monkeypatch.setattr("faceprep.folder_index.NPZ_BLOCK", 3)  # several blocks, the last one short
    labels = [7.0, 7.0, 12.0, 3.0, 3.0, 3.0, 12.0, 7.0, 0.0, 104.0, 104.0]
    source = write_source(tmp_path / "src", labels)
    plan(source)
    manifests = [extract_keys(source, tmp_path, key_range, manifest_name=f"chunk_{chunk}.tsv")[1]
                 for chunk, key_range in enumerate([(1, 5), (5, 12)])]
    images = tmp_path / "images"

    assert build_index(manifests, images, tmp_path / "index.npz", tmp_path / "classes.tsv", seed=5) == (len(labels), 5)

    names = [str(images / f"{int(label)}/{key}.jpg") for key, label in enumerate(labels, start=1)]
    order = np.random.default_rng(5).permutation(len(labels))
    index = np.load(tmp_path / "index.npz")
    assert sorted(index.keys()) == ["image_classes", "image_names"]
    assert index["image_names"].dtype == np.array(names).dtype
    assert index["image_names"].tolist() == np.array(names)[order].tolist()
    assert index["image_classes"].tolist() == [folder_rank(images, name) for name in np.array(names)[order]]


def folder_rank(images, image_name):
    """Keras_insightface's class of an image found in folder ``images`` (ImageClassesRule_map):
    the rank of its folder name among the names in ``images`` sorted as integers."""
    folders = sorted(os.listdir(images), key=int)
    return folders.index(os.path.basename(os.path.dirname(image_name)))


def test_index_classes_are_folder_ranks_for_labels_that_do_not_run_from_zero(tmp_path):
    labels = [9.0, 3.0, 5.0, 5.0, 3.0, 40.0, 9.0, 12.0, 100.0, 5.0]
    source = write_source(tmp_path / "src", labels)
    plan(source)
    _, manifest = extract_keys(source, tmp_path, (1, len(labels) + 1))
    images = tmp_path / "images"

    assert build_index([manifest], images, tmp_path / "images_shuffle.npz", tmp_path / "images_classes.tsv") == (10, 6)

    index = np.load(tmp_path / "images_shuffle.npz")
    classes = index["image_classes"]
    assert classes.tolist() == [folder_rank(images, name) for name in index["image_names"]]
    assert sorted(set(classes.tolist())) == list(range(6)) and classes.max() + 1 == 6  # Keras_insightface's class count
    assert (tmp_path / "images_classes.tsv").read_text() == "label\tclass\n3\t0\n5\t1\n9\t2\n12\t3\n40\t4\n100\t5\n"


def test_index_refuses_a_manifest_path_that_is_not_label_key_jpg(tmp_path):
    source = write_source(tmp_path / "src", [0.0, 1.0])
    _, manifest = extract(source, tmp_path, (1, 3))
    manifest.write_text(manifest.read_text().replace("1/2.jpg", "../2.jpg"))
    with pytest.raises(DatasetError, match=r"path '\.\./2\.jpg' is not <label>/<key>\.jpg of label 1"):
        build_index([manifest], tmp_path / "images", tmp_path / "index.npz", tmp_path / "classes.tsv")
