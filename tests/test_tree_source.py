"""Folder trees as sources: a WebFace-style tree (string, unicode, spaced and non-UTF-8 identity
names, nested directories, 1-image identities, PNGs, stray and empty files, names with a tab or
a line break, a link cycle) packed into
a rec that MXNet, the MXFaceDataset oracle and DALI read, into shards and a normalised tree,
and read back. Expected values come from the files on disk."""

import json
import os
import re
import struct

import numpy as np
import pytest

from faceprep.demo import encode_image
from faceprep.errors import DatasetError
from faceprep.image_header import image_format
from faceprep.recordio import MAGIC, encode_record, framed_bytes, pack_header
from faceprep.classes import identity_order
from faceprep.sources.tree import iter_tree_images, plan_tree
from dali_reader import dali_reads_rec, run_dali
from oracle import make_rec_from_spec, run_mxface_extraction, run_oracle
from tree_samples import PLAN_FILES, plan_files
from workflow import REPO, run_workflow, tree_digest, webdataset_keys_per_worker, write_config, without_file_access_override

IDENTITIES = {
    "m.0abc": 3,
    "Zoë Ångström": 2,  # unicode and a space
    "nested/deeper/id 7": 2,  # an identity two levels down
    "single": 1,
    "10": 2,
    "9": 3,
    os.fsdecode(b"caf\xe9"): 2,  # Latin-1, not UTF-8: Linux names are bytes
}
STRAYS = {".DS_Store": b"\x00\x00\x00\x01Bud1", "Thumbs.db": b"\xd0\xcf\x11\xe0", "m.0abc/notes.txt": b"who is this?",
          "single/empty.jpg": b""}
# Images whose names train.lst and the names file cannot hold: skipped and named, a directory whole.
UNLISTABLE = ["m.0abc/a\tb.jpg", "line\nbreak/000.jpg"]
# Pictures in directories a system or a tool keeps (trash, Synology's thumbnails, a zip's
# resource forks): skipped and named, a directory whole, never an identity each.
SYSTEM_PICTURES = [".Trash-1000/files/000.jpg", "m.0abc/@eaDir/000.jpg/SYNOPHOTO_THUMB_S.jpg", "__MACOSX/9/000.jpg",
                   "lost+found/#1234"]


SPLIT_SEED = 1  # m.0abc/000.jpg: its record is split at a magic word


def picture(seed, png=False):
    pixels = np.random.default_rng(seed).integers(0, 256, (14, 12, 3), dtype=np.uint8)
    if seed == SPLIT_SEED:  # a comment segment after SOI holding RecordIO's magic at image byte 8
        data, comment = encode_image(pixels), b"\0\0" + struct.pack("<I", MAGIC) + b"\0\0"
        return data[:2] + b"\xff\xfe" + struct.pack(">H", 2 + len(comment)) + comment + data[2:]
    if not png:
        return encode_image(pixels)
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree") / "webface"
    seed = 0
    for identity, count in IDENTITIES.items():
        (root / identity).mkdir(parents=True)
        for number in range(count):
            seed += 1
            png = seed % 4 == 0
            # Extensions lie: a PNG named .jpg, a JPEG named .dat; content decides.
            name = f"{number:03d}.{'jpg' if png or number % 2 == 0 else 'dat'}"
            if identity == os.fsdecode(b"caf\xe9") and number == 1:
                name = os.fsdecode(b"\xe9t\xe9.jpg")
            (root / identity / name).write_bytes(picture(seed, png))
    for path, data in STRAYS.items():
        (root / path).write_bytes(data)
    for path in UNLISTABLE + SYSTEM_PICTURES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(picture(100))
    (root / "nested" / "loop").symlink_to(root / "nested")  # a directory link cycle
    return root


def expected_images(tree):
    """``[(class, relative path, bytes)]`` in key order, from the files themselves."""
    order = identity_order(IDENTITIES)
    images = []
    for image_class, identity in enumerate(order):
        for name in sorted(os.listdir(tree / identity)):
            if not (tree / identity / name).is_file():
                continue
            data = (tree / identity / name).read_bytes()
            if data and image_format(data[:12]) and f"{identity}/{name}" not in UNLISTABLE:
                images.append((image_class, f"{identity}/{name}", data))
    return images


def listed_paths(path, column=0):
    """A column of a text file's tab-separated lines, as paths (bytes on disk, UTF-8 or not)."""
    return [os.fsdecode(line.split(b"\t")[column]) for line in path.read_bytes().splitlines()]


def test_plan_names_classes_and_skipped_files(tree, tmp_path):
    plan = plan_tree(tree, 4, *plan_files(tmp_path))
    images = expected_images(tree)
    assert identity_order(IDENTITIES) == ["10", "9", "Zoë Ångström", "caf\udce9", "m.0abc", "nested/deeper/id 7", "single"]
    assert (plan["images"], plan["identities"], plan["layout"]) == (len(images), len(IDENTITIES), "tree")
    assert listed_paths(tmp_path / "names.txt") == [path for _, path, _ in images]
    rows = np.load(tmp_path / "rows.npy")
    assert rows[:, 0].tolist() == list(range(1, len(images) + 1))
    assert rows[:, 1].tolist() == [image_class for image_class, _, _ in images]
    # Each class's identity directory, bytes as on disk (caf\xe9 is not UTF-8).
    assert (tmp_path / "identities.txt").read_bytes().splitlines() == [
        os.fsencode(name) for name in identity_order(IDENTITIES)]
    skipped = dict(line.split("\t") for line in (tmp_path / "skipped.tsv").read_text().splitlines())
    assert set(skipped) == {".DS_Store", "Thumbs.db", "m.0abc/notes.txt", "single/empty.jpg", "nested/loop",
                            "m.0abc/a\\tb.jpg", "line\\nbreak", ".Trash-1000", "m.0abc/@eaDir", "__MACOSX", "lost+found"}
    assert all("hidden or system directory" in skipped[path] for path in (".Trash-1000", "m.0abc/@eaDir", "__MACOSX",
                                                                          "lost+found"))
    assert skipped["single/empty.jpg"] == "empty" and "link cycle" in skipped["nested/loop"]
    assert "tab or line break" in skipped["m.0abc/a\\tb.jpg"] and "tab or line break" in skipped["line\\nbreak"]
    assert plan["skipped"]["count"] == 11 and plan["image_formats"] == {"jpeg": 12, "png": 3}
    # In the order read, written as met: level by level, each directory's entries by name.
    assert list(skipped) == sorted(skipped, key=lambda path: (path.count("/"), path))
    assert plan["skipped"]["first"] == [f"{path}: {reason}" for path, reason in skipped.items()]
    # Every directory read, level by level (the root as "."): not the cycle, nor the line break.
    directories = (tmp_path / "directories.txt").read_bytes().splitlines()
    assert directories[0] == b"." and sorted(directories[1:]) == sorted(
        os.fsencode(path) for path in ["nested", "nested/deeper", *IDENTITIES])
    # Each image's record size, as a writer frames it: the split one is 4 bytes longer.
    framed = [len(encode_record(pack_header(float(image_class), data, key)))
              for key, (image_class, _, data) in enumerate(images, start=1)]
    assert rows[:, 3].tolist() == framed
    split = [path for _, path, _ in images].index("m.0abc/000.jpg")
    assert framed[split] == framed_bytes(24 + len(images[split][2]), 0) + 4
    # Read by two processes, the same plan.
    again = tmp_path / "two"
    again.mkdir()
    assert plan_tree(tree, 4, *plan_files(again), workers=2) == plan
    for name in PLAN_FILES:
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes()


def test_a_directory_linked_twice_is_read_once_under_its_shallowest_path(tmp_path):
    """Directories are read level by level, in name order: of two ways to one directory, the
    one nearer the root (then the first by name) is kept, the other skipped and named."""
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "1.jpg").write_bytes(picture(1))
    (root / "c").mkdir()
    (root / "c" / "2.jpg").write_bytes(picture(2))
    (root / "c" / "link").symlink_to(root / "a")  # a second way to a, one level deeper
    (root / "a" / "up").symlink_to(root)  # a cycle
    plan = plan_tree(root, 4, *plan_files(tmp_path), workers=2)
    assert (tmp_path / "names.txt").read_text().splitlines() == ["a/b/1.jpg", "c/2.jpg"]
    assert plan["skipped"]["first"] == [f"{path}: a directory reached before (a link cycle, or a second link to it)"
                                        for path in ("a/up", "c/link")]


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: (root / "a").mkdir(), r"holds no image files"),
    (lambda root: (root / "x.jpg").write_bytes(picture(1)), r"holds images directly \(x\.jpg"),
])
def test_bad_trees_fail_naming_the_problem(tmp_path, make, message):
    root = tmp_path / "tree"
    root.mkdir()
    make(root)
    with pytest.raises(DatasetError, match=message):
        plan_tree(root, 4, *plan_files(tmp_path))
    assert [path.name for path in tmp_path.iterdir()] == ["tree"]  # no plan file, no temporary


def run_tree(root, tree, outputs, **settings):
    dataset = {"source": str(tree), "outputs": outputs, "bins": [], **settings}
    for key, output in (("images", "folders"), ("shards", "webdataset"), ("rec", "rec")):
        if output in outputs:
            dataset[key] = str(root / key)
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root / "config.yaml", {"faces": dataset}, chunk_size=5)
    return run_workflow(root / "work", config, check=False), config


@pytest.mark.e2e
def test_a_tree_packed_as_an_insightface_rec_is_what_mxnet_writes_and_mxface_dataset_reads(tree, tmp_path):
    result, _ = run_tree(tmp_path, tree, ["rec", "folders", "webdataset"])
    assert result.returncode == 0, result.stderr[-3000:]
    images = expected_images(tree)
    rec = tmp_path / "rec"
    records = json.loads(run_oracle("read_rec.py", rec / "train.rec", rec / "train.idx").stdout)
    image_records = records[1 : len(images) + 1]
    assert [(record["key"], record["label"], bytes.fromhex(record["payload_hex"])) for record in image_records] == [
        (key, [float(image_class)], data) for key, (image_class, _, data) in enumerate(images, start=1)]
    assert records[0]["label"] == [len(images) + 1.0, len(images) + 1.0 + len(IDENTITIES)]
    assert listed_paths(rec / "train.lst", 2) == [path for _, path, _ in images]
    assert (rec / "property").read_text() == f"{len(IDENTITIES)},14,12"
    spec = [{"key": record["key"], "label": record["label"][0] if record["flag"] == 0 else record["label"],
             "id": record["id"], "id2": record["id2"], "payload_hex": record["payload_hex"]} for record in records]
    replay = make_rec_from_spec(spec, tmp_path / "replay")
    assert (replay / "train.rec").read_bytes() == (rec / "train.rec").read_bytes()
    assert (replay / "train.idx").read_bytes() == (rec / "train.idx").read_bytes()

    extracted = run_mxface_extraction("insightface", rec, tmp_path / "mxface")
    assert tree_digest(extracted) == tree_digest(tmp_path / "images")  # <class>/<key>.jpg both ways
    assert {(int(path.parent.name), path.read_bytes()) for path in extracted.rglob("*.jpg")} == {
        (image_class, data) for image_class, _, data in images}
    keys = webdataset_keys_per_worker(sorted((tmp_path / "shards").glob("*.tar")), nodes=1, workers=2)
    assert sorted(keys) == list(range(1, len(images) + 1))
    # The class tables beside the shards and the normalised tree lead each class back to its identity.
    identities = [b"%d\t%d\t%s" % (image_class, image_class, os.fsencode(name))
                  for image_class, name in enumerate(identity_order(IDENTITIES))]
    for table in (tmp_path / "shards" / "classes.tsv", tmp_path / "images_classes.tsv"):
        assert table.read_bytes().splitlines() == [b"label\tclass\tidentity", *identities]
    assert "identity" in json.loads((tmp_path / "shards" / "metadata.json").read_text())["class_of_label"]

    log = (tmp_path / "work" / "logs" / "faces" / "plan_chunks.log").read_text()
    assert "skipped 11 files and directories" in log and "Thumbs.db" in log and "single/empty.jpg: empty" in log
    plan = json.loads((tmp_path / "work" / "results" / "faces" / "chunk_plan.json").read_text())
    assert plan["skipped"]["count"] == 11
    # The plan's rows hold classes and record sizes: one label scan job for these few rows.
    assert len(plan["chunks"]) > 1 and plan["scan_chunks"] == [[0, len(images)]]
    scanned = sorted(path.name for path in (tmp_path / "work" / "results" / "faces" / "labels").glob("rows_*.npy"))
    assert scanned == ["rows_00000.npy"]

    # Round trip: the rec as a source gives every file's bytes back under its class.
    dataset = {"source": str(rec), "images": str(tmp_path / "back"), "bins": []}
    run_workflow(tmp_path / "back_work", write_config(tmp_path / "back.yaml", {"back": dataset}))
    assert {(int(path.parent.name), path.read_bytes()) for path in (tmp_path / "back").rglob("*.jpg")} == {
        (image_class, data) for image_class, _, data in images}


@pytest.mark.e2e
def test_a_tree_packed_as_an_im2rec_rec_feeds_dali_one_sample_per_image(tree, tmp_path):
    result, _ = run_tree(tmp_path, tree, ["rec"], rec_layout="im2rec", rec_order="shuffled", rec_seed=5)
    assert result.returncode == 0, result.stderr[-3000:]
    images = expected_images(tree)
    rec = tmp_path / "rec"
    samples = dali_reads_rec(rec)
    assert samples["samples"] == len(images)
    lst = [[os.fsdecode(column) for column in line.split(b"\t")] for line in (rec / "train.lst").read_bytes().splitlines()]
    by_path = {path: image_class for image_class, path, _ in images}
    assert sorted(path for _, _, path in lst) == sorted(by_path)
    assert [label for _, label in samples["decoded"]] == [float(by_path[path]) for _, _, path in lst]
    assert all(shape == [14, 12, 3] for shape, _ in samples["decoded"])


@pytest.mark.e2e
def test_an_unreadable_file_in_the_tree_fails_naming_it(tree, tmp_path):
    unreadable = sorted((tree / "9").iterdir())[1]
    mode = unreadable.stat().st_mode
    unreadable.chmod(0)
    try:
        dataset = {"source": str(tree), "outputs": ["rec"], "bins": [], "rec": str(tmp_path / "rec")}
        config = write_config(tmp_path / "config.yaml", {"faces": dataset})
        result = run_workflow(tmp_path / "work", config, check=False, launcher=without_file_access_override())
    finally:
        unreadable.chmod(mode)
    assert result.returncode != 0
    assert re.search(rf"{re.escape(str(unreadable))}: cannot be read \(Permission denied\)", result.stdout + result.stderr)
    assert not (tmp_path / "rec" / "train.rec").exists()


def test_a_file_changed_since_the_plan_fails_naming_its_path(tmp_path):
    """The parts read the files the plan named (their paths joined as bytes): one emptied or
    removed since the plan is an error naming its path as text, a non-UTF-8 name included."""
    identity = tmp_path / "tree" / os.fsdecode(b"caf\xe9")  # Latin-1, not UTF-8
    identity.mkdir(parents=True)
    for number, name in enumerate(["Zoë 1.jpg", "Zoë 2.jpg"]):
        (identity / name).write_bytes(encode_image(np.full((8, 8, 3), number, np.uint8)))
    plan_tree(tmp_path / "tree", 100, *plan_files(tmp_path))
    rows = np.load(tmp_path / "rows.npy")
    emptied, removed = identity / "Zoë 1.jpg", identity / "Zoë 2.jpg"
    emptied.write_bytes(b"")
    with pytest.raises(DatasetError) as error:
        list(iter_tree_images(tmp_path / "tree", tmp_path / "names.txt", rows))
    assert str(error.value) == (f"{emptied}: image key {rows[0, 0]} is empty now (it held an image when "
                                "the tree was planned)")
    removed.unlink()
    with pytest.raises(DatasetError) as error:
        list(iter_tree_images(tmp_path / "tree", tmp_path / "names.txt", rows[1:]))
    assert str(error.value) == f"{removed}: image key {rows[1, 0]} cannot be read (No such file or directory)"


def readme_dali_snippet():
    """The DALI reader of the README's section on packing a folder tree."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Packing a folder tree", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return snippet


@pytest.mark.e2e
def test_the_readmes_dali_reader_reads_the_packed_tree(tree, tmp_path):
    """The snippet as written, on the CPU: device_id None and the CPU decoder for "mixed"."""
    result, _ = run_tree(tmp_path, tree, ["rec"], rec_layout="im2rec", rec_order="shuffled")
    assert result.returncode == 0, result.stderr[-3000:]
    snippet = readme_dali_snippet()
    for written, here in (('"/datasets/webface4m_rec"', f'"{tmp_path / "rec"}"'), ("device_id=0", "device_id=None"),
                          ('device="mixed"', 'device="cpu"')):
        assert written in snippet
        snippet = snippet.replace(written, here)
    program = snippet + """
pipe = pipeline()
pipe.build()
images, labels = pipe.run()
print(pipe.reader_meta("reader")["epoch_size"], images.at(0).shape)
"""
    assert run_dali(program).split()[-4:] == [str(len(expected_images(tree))), "(14,", "12,", "3)"]
