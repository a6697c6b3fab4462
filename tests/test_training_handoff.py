"""The outputs as training code reads them: the README's snippets, run against a workflow output
whose images directory held stale files, with Keras_insightface's and torchvision's documented
rules reimplemented here (their packages are not installed)."""

import glob
import json
import os
import re
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest

from workflow import REPO, block_label, run_workflow, write_config, write_insightface_source

pytestmark = pytest.mark.e2e

# Labels that do not run 0..C-1, and sort differently as strings and as integers.
LABELS = [3, 5, 9, 12, 40, 100]
# Each folder's class as this test expects it: the position of its label among the labels, sorted.
CLASS_OF_FOLDER = {str(label): rank for rank, label in enumerate(sorted(LABELS))}
IMAGES = 240
# The README's snippets name paths as string literals under /datasets.
README_PATHS = '"/datasets'
FOLDER = "faces_emore_112x112_folders"


def image_label(key):
    return float(LABELS[block_label(key, IMAGES, len(LABELS))])


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """A run into an images directory holding another release's files, which fails, then the
    documented rerun with remove_unlisted."""
    root = tmp_path_factory.mktemp("handoff")
    source = write_insightface_source(root / "src", IMAGES, len(LABELS), image_label=image_label)
    datasets_dir = root / "datasets"
    images = datasets_dir / FOLDER
    stale = [images / "3" / "999.jpg", images / "7", images / "README.txt"]
    (images / "7").mkdir(parents=True)
    (images / "3").mkdir()
    for path in (stale[0], images / "7" / "1.jpg", stale[2]):
        path.write_bytes(b"an earlier release's file")
    dataset = {"source": str(source), "images": str(images), "bins_out": str(datasets_dir / "bins"), "bins": []}
    config = write_config(root / "config.yaml", {"handoff": dataset}, chunk_size=100)
    failed = run_workflow(root / "work", config, check=False)
    kept = sorted(glob.glob(f"{images}/**", recursive=True))
    passed = run_workflow(root / "work", config, "--config", "remove_unlisted=True")
    summary = json.loads((root / "work" / "results" / "handoff" / "extraction.json").read_text())
    return SimpleNamespace(datasets_dir=datasets_dir, images=images, stale=stale, failed=failed, kept=kept,
                           passed=passed, summary=summary, index=datasets_dir / f"{FOLDER}_shuffle.npz")


def test_a_prefilled_images_directory_fails_naming_the_files_and_keeps_them(output):
    assert output.failed.returncode != 0
    text = output.failed.stdout + output.failed.stderr
    named = ", ".join(map(str, output.stale))
    assert f"3 files or directories in {output.images} that no chunk manifest lists" in text, text[-3000:]
    assert f"first: {named};" in text
    assert {str(path) for path in output.stale} <= set(output.kept)


def test_remove_unlisted_leaves_exactly_the_dataset(output):
    assert output.summary["removed_unlisted"] == {"count": 3, "first": list(map(str, output.stale))}
    on_disk = sorted(path for path in glob.glob(f"{output.images}/**", recursive=True) if os.path.isfile(path))
    assert on_disk == sorted(np.load(output.index)["image_names"].tolist())
    assert len(on_disk) == IMAGES


def test_class_table_maps_each_label_to_its_rank(output):
    table = (output.datasets_dir / f"{FOLDER}_classes.tsv").read_text()
    assert table == "label\tclass\n" + "".join(f"{label}\t{rank}\n" for label, rank in CLASS_OF_FOLDER.items())


def readme_snippets():
    """The ```py blocks of the README's section on training from the outputs."""
    readme = (REPO / "README.md").read_text()
    section = re.split(r"\n##+ ", readme.split("### Training from the outputs", 1)[1], maxsplit=1)[0]
    return re.findall(r"```py\n(.*?)```", section, re.S)


def run_snippet(snippet, output, monkeypatch, **modules):
    """Run a README snippet with its /datasets/ paths pointing at the output, the given stand-in
    modules importable, and the working directory restored afterwards."""
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.chdir(output.datasets_dir.parent)
    namespace = {}
    exec(snippet.replace(README_PATHS, f'"{output.datasets_dir}'), namespace)
    return namespace


class FolderClasses:
    """Keras_insightface's ImageClassesRule_map: the names in ``directory`` sorted as integers
    (as strings if one is not a number); an image's class is its folder name's position."""

    def __init__(self, directory):
        names = [os.path.basename(path) for path in glob.glob(os.path.join(directory, "*"))]
        numeric = all(name.isnumeric() for name in names)
        self.ranks = {name: rank for rank, name in enumerate(sorted(names, key=int if numeric else None))}

    def __call__(self, image_name):
        return self.ranks[os.path.basename(os.path.dirname(image_name))]


class KerasInsightfaceData:
    """Keras_insightface's data.py, reduced to what decides which images train with which class."""

    def __init__(self):
        self.read_index = None

    def pre_process_folder(self, data_path, image_classes_rule=None):
        data_path = data_path.rstrip(os.sep)
        # A folder's index is looked for in the working directory.
        index = data_path if data_path.endswith(".npz") else os.path.basename(data_path) + "_shuffle.npz"
        if os.path.exists(index):
            archive = np.load(index)
            assert len(archive.keys()) == 2, "a third key makes it a dataset with embeddings"
            self.read_index = index
            names, classes = archive["image_names"], archive["image_classes"]
        else:
            rule = image_classes_rule or FolderClasses(data_path)
            names = np.array(glob.glob(os.path.join(data_path, "*", "*.jpg")))
            classes = np.array([rule(name) for name in names])
        return names, classes, int(classes.max()) + 1

    def prepare_dataset(self, data_path, batch_size=128, **_):
        self.trained = self.pre_process_folder(data_path)
        return "dataset", len(self.trained[0]) // batch_size

    def Triplet_dataset(self, data_path, **_):
        rule = FolderClasses(data_path)
        names, classes, count = self.pre_process_folder(data_path, rule)
        # Batches are grouped by the index's classes; each image is yielded with rule(name).
        self.trained = names, classes, count
        self.yielded_classes = np.array([rule(name) for name in names])
        return "triplet dataset"


def expected_classes(names):
    return [CLASS_OF_FOLDER[os.path.basename(os.path.dirname(name))] for name in names]


def test_the_readme_has_the_three_snippets():
    assert len(readme_snippets()) == 3


def test_readme_softmax_snippet_trains_on_the_index_with_folder_ranks(output, monkeypatch):
    keras = KerasInsightfaceData()
    run_snippet(readme_snippets()[0], output, monkeypatch, data=keras)
    names, classes, count = keras.trained
    assert keras.read_index == str(output.index)
    assert count == len(LABELS)
    assert classes.tolist() == expected_classes(names)
    assert sorted(names.tolist()) == sorted(glob.glob(f"{output.images}/*/*.jpg"))


def test_readme_triplet_snippet_finds_the_index_from_the_folders_parent(output, monkeypatch):
    keras = KerasInsightfaceData()
    run_snippet(readme_snippets()[1], output, monkeypatch, data=keras)
    names, classes, count = keras.trained
    assert keras.read_index == f"{FOLDER}_shuffle.npz"  # found in the working directory
    assert count == len(LABELS)
    assert classes.tolist() == keras.yielded_classes.tolist() == expected_classes(names)


def test_triplet_dataset_cannot_take_the_index_path(output):
    with pytest.raises(KeyError):
        KerasInsightfaceData().Triplet_dataset(str(output.index))


def test_keras_insightface_indexing_the_folder_itself_agrees_with_the_index(output, monkeypatch):
    monkeypatch.chdir(output.images)  # no index here: it globs the folder
    keras = KerasInsightfaceData()
    names, classes, count = keras.pre_process_folder(str(output.images))
    assert keras.read_index is None
    index = np.load(output.index)
    assert dict(zip(names.tolist(), classes.tolist())) == dict(zip(index["image_names"].tolist(), index["image_classes"].tolist()))
    assert count == len(LABELS)


class ImageFolder:
    """torchvision's ImageFolder: classes are the directory names sorted as strings, a class's
    index its position; samples are (path, class index), class by class, files sorted."""

    def __init__(self, root):
        self.classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples = [
            (os.path.join(root, name, file_name), self.class_to_idx[name])
            for name in self.classes
            for file_name in sorted(os.listdir(os.path.join(root, name)))
        ]
        self.targets = [target for _, target in self.samples]


def test_readme_image_folder_snippet_gives_each_sample_its_label(output, monkeypatch):
    torchvision, datasets = types.ModuleType("torchvision"), types.ModuleType("torchvision.datasets")
    torchvision.datasets, datasets.ImageFolder = datasets, ImageFolder
    namespace = run_snippet(readme_snippets()[2], output, monkeypatch,
                            torchvision=torchvision, **{"torchvision.datasets": datasets})
    folder, path, label = namespace["folder"], namespace["path"], namespace["label"]
    assert label == int(os.path.basename(os.path.dirname(path)))
    assert len(folder.samples) == IMAGES and len(folder.classes) == len(LABELS)
    # What the README warns of: its class numbers are not the index's for these labels.
    assert folder.class_to_idx != CLASS_OF_FOLDER
