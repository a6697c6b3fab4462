"""Evaluation sets both ways: LFW's official layout and pairs.txt, and path lists, packed into
bins that insightface's load_bin (pickle + mx.image.imdecode, the MXNet oracle) and
tf.image.decode_jpeg read; a dataset's bins written out as images and pairs and packed back
byte for byte; bad pairs files named by file and line. Expected values come from the files."""

import io
import json
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from faceprep.errors import ConfigError, DatasetError
from faceprep.evalsets import export_bin_images, pack_evalset
from faceprep.pair_lists import pairs_files, read_pairs
from faceprep.workflow_config import resolve_evalsets
from faceprep.faces import draw_face, random_face_traits
from oracle import run_oracle
from workflow import run_workflow, write_config

NAMES = ["Aaron_Peirsol", "Zoë_Ångström", "Abel_Pacheco", "Ahmed_Chalabi"]


def face(seed, image_format="JPEG"):
    rng = np.random.default_rng(seed)
    pixels = draw_face(random_face_traits(rng), rng)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    """LFW's layout (name/name_NNNN.<ext>: a PNG and a BMP among the JPEGs) and a pairs.txt of
    2 folds of 3 same and 3 different pairs, as LFW's official file has them."""
    root = tmp_path_factory.mktemp("lfw")
    images = root / "lfw"
    files = {}
    for number, name in enumerate(NAMES):
        (images / name).mkdir(parents=True)
        for index in range(1, 4):
            image_format, extension = {(1, 2): ("PNG", "png"), (2, 3): ("BMP", "bmp")}.get((number, index), ("JPEG", "jpg"))
            path = images / name / f"{name}_{index:04d}.{extension}"
            path.write_bytes(face(10 * number + index, image_format))
            files[(name, index)] = path
    same = [(NAMES[0], 1, 2), (NAMES[1], 1, 3), (NAMES[2], 2, 3)]
    different = [(NAMES[0], 1, NAMES[1], 2), (NAMES[2], 1, NAMES[3], 3), (NAMES[3], 2, NAMES[1], 1)]
    lines = ["2\t3"]
    expected = []
    for _ in range(2):
        for name, first, second in same:
            lines.append(f"{name}\t{first}\t{second}")
            expected.append((files[(name, first)], files[(name, second)], True))
        for name, first, other, second in different:
            lines.append(f"{name}\t{first}\t{other}\t{second}")
            expected.append((files[(name, first)], files[(other, second)], False))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return images, root / "pairs.txt", expected


@pytest.fixture(scope="module")
def cfp(tmp_path_factory):
    """CFP's layout: Data/Images/<id>/{frontal,profile}/NN.jpg, Protocol/Pair_list_F.txt and
    Pair_list_P.txt numbering them by paths relative to Protocol, and Protocol/Split/FP and FF,
    two folds each of same.txt and diff.txt ('i,j' lines). Returns the root and, per split,
    the expected pairs in fold order (each fold's same pairs, then its different ones)."""
    root = tmp_path_factory.mktemp("cfp") / "cfp-dataset"
    lists = {}
    for pose, offset in (("frontal", 0), ("profile", 50)):
        lines = []
        for identity in range(1, 4):
            for number in (1, 2):
                path = root / "Data" / "Images" / f"{identity:03d}" / pose / f"{number:02d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(face(offset + 10 * identity + number))
                lines.append(f"{len(lines) + 1} ../Data/Images/{identity:03d}/{pose}/{number:02d}.jpg")
        lists[pose] = {int(line.split()[0]): line.split()[1][3:] for line in lines}
        (root / "Protocol").mkdir(exist_ok=True)
        (root / "Protocol" / f"Pair_list_{pose[0].upper()}.txt").write_text("\n".join(lines) + "\n")
    folds = {"01": {"same": [(1, 1), (3, 4)], "diff": [(1, 3), (2, 6)]}, "02": {"same": [(5, 6)], "diff": [(6, 1)]}}
    expected = {}
    for split, second_pose in (("FP", "profile"), ("FF", "frontal")):
        expected[split] = []
        for fold, files in folds.items():
            directory = root / "Protocol" / "Split" / split / fold
            directory.mkdir(parents=True)
            for name, same in (("same", True), ("diff", False)):
                (directory / f"{name}.txt").write_text("".join(f"{i},{j}\n" for i, j in files[name]))
                expected[split] += [(lists["frontal"][i], lists[second_pose][j], same) for i, j in files[name]]
    return root, expected


def test_cfps_protocol_gives_its_folds_in_order(cfp, tmp_path):
    root, expected = cfp
    for split in ("FP", "FF"):
        pairs_format, pairs = read_pairs(root / "Protocol" / "Split" / split, root)
        assert pairs_format == "cfp" and [pair[:3] for pair in pairs] == expected[split]
        assert [pair[3] for pair in pairs[:3]] == [f"{root / 'Protocol' / 'Split' / split / '01' / name}: line {line}"
                                                   for name, line in (("same.txt", 1), ("same.txt", 2), ("diff.txt", 1))]
    split = root / "Protocol" / "Split" / "FP"
    assert pairs_files(split) == [str(root / "Protocol" / f"Pair_list_{pose}.txt") for pose in "FP"] + [
        str(split / fold / name) for fold in ("01", "02") for name in ("same.txt", "diff.txt")]
    summary = pack_evalset(root, split, tmp_path / "cfp_fp.bin", tmp_path / "read.txt")
    assert (summary["pairs_format"], summary["pairs"], summary["same"]) == ("cfp", 6, 3)
    assert_readers_read(tmp_path / "cfp_fp.bin", [(None, None, same) for _, _, same in expected["FP"]])
    with open(tmp_path / "cfp_fp.bin", "rb") as stream:
        bins, _ = pickle.load(stream, encoding="bytes")
    assert bins == [(root / path).read_bytes() for first, second, _ in expected["FP"] for path in (first, second)]


@pytest.mark.parametrize(("change", "message"), [
    (lambda split: (split / "02" / "diff.txt").write_text("6,9\n"), r"02/diff\.txt: line 1: image 9 is not in .*Pair_list_P\.txt"),
    (lambda split: (split / "01" / "same.txt").write_text("1,1\n1;2\n"), r"01/same\.txt: line 2: expected 'i,j', got '1;2'"),
    (lambda split: (split.parents[1] / "Pair_list_P.txt").write_text("1 ../../elsewhere.jpg\n"),
     r"Pair_list_P\.txt: line 1: \.\./\.\./elsewhere\.jpg leads out of the dataset's root"),
    (lambda split: (split / "01" / "diff.txt").unlink(), r"01/diff\.txt: cannot be read as text"),
    (lambda split: (split.parents[2] / "Data/Images/003/frontal/02.jpg").unlink(),
     r"Pair_list_F\.txt: line 6 \(.*FP/02/diff\.txt: line 1\): no file Data/Images/003/frontal/02\.jpg in "),
])
def test_a_damaged_cfp_protocol_is_named_by_file_and_line(cfp, tmp_path, change, message):
    root = shutil.copytree(cfp[0], tmp_path / "cfp-dataset")
    split = root / "Protocol" / "Split" / "FP"
    change(split)
    with pytest.raises(DatasetError, match=message):
        read_pairs(split, root)
    (root / "Protocol" / "Split" / "XX").mkdir()
    with pytest.raises(DatasetError, match=r"XX: a CFP split directory is named FP or FF"):
        read_pairs(root / "Protocol" / "Split" / "XX", root)


def test_a_cfp_image_no_pair_uses_may_be_missing(cfp, tmp_path):
    """An aligned copy of CFP may lack images the protocol lists but no pair of the split
    uses (FP's profile images 2 and 5 here)."""
    root = shutil.copytree(cfp[0], tmp_path / "cfp-dataset")
    (root / "Data/Images/001/profile/02.jpg").unlink()
    assert [pair[:3] for pair in read_pairs(root / "Protocol" / "Split" / "FP", root)[1]] == cfp[1]["FP"]


def test_a_cfp_split_missing_a_file_is_refused_before_any_job(cfp, tmp_path):
    root = shutil.copytree(cfp[0], tmp_path / "cfp-dataset")
    split = root / "Protocol" / "Split" / "FP"
    (split / "01" / "diff.txt").unlink()
    settings = {"images": str(root), "pairs": str(split), "bin": str(tmp_path / "cfp_fp.bin")}
    with pytest.raises(ConfigError, match=r"evalsets\.cfp_fp\.pairs: .*FP/01/diff\.txt is not a file"):
        resolve_evalsets({"cfp_fp": settings})
    with pytest.raises(ConfigError, match=r"evalsets\.cfp_fp\.pairs: .*Split: a CFP split directory is named FP or FF"):
        resolve_evalsets({"cfp_fp": settings | {"pairs": str(split.parent)}})


def mxnet_load_bin(path):
    return json.loads(run_oracle("load_bin.py", path).stdout)


def assert_readers_read(bin_path, expected):
    """insightface's load_bin (MXNet) and TensorFlow decode every image to 112x112x3, not zeros."""
    import tensorflow as tf

    loaded = mxnet_load_bin(bin_path)
    assert loaded["issame"] == [same for _, _, same in expected]
    assert all(shape[:3] == [112, 112, 3] and shape[3] > 0 for shape in loaded["images"])
    with open(bin_path, "rb") as stream:
        images, _ = pickle.load(stream, encoding="bytes")
    for image in images:
        assert tf.image.decode_jpeg(image, channels=3).shape == (112, 112, 3)


def test_lfws_official_pairs_become_a_bin_of_the_files_in_pair_order(lfw, tmp_path):
    images, pairs, expected = lfw
    summary = pack_evalset(images, pairs, tmp_path / "lfw.bin", tmp_path / "read.txt")
    with open(tmp_path / "lfw.bin", "rb") as stream:
        bins, issame = pickle.load(stream, encoding="bytes")
    files = [path for first, second, _ in expected for path in (first, second)]
    assert issame == [same for _, _, same in expected]
    for data, path in zip(bins, files):
        if path.suffix == ".bmp":  # TF cannot read BMP: re-encoded as a JPEG
            assert data[:2] == b"\xff\xd8" and data != path.read_bytes()
        else:  # JPEG and PNG, which tf.io.decode_jpeg reads: kept byte for byte
            assert data == path.read_bytes()
    assert (summary["pairs_format"], summary["pairs"], summary["same"], summary["different"]) == ("lfw", 12, 6, 6)
    assert summary["reencoded"] == sum(path.suffix == ".bmp" for path in files) > 0
    assert_readers_read(tmp_path / "lfw.bin", expected)
    # Every image read, once, relative to the images directory: what faceprep.changes watches.
    assert (tmp_path / "read.txt").read_text().splitlines() == list(dict.fromkeys(
        str(path.relative_to(images)) for path in files))


def test_lfws_view_1_pairs_rfws_pairs_and_a_byte_order_mark(lfw, tmp_path):
    """pairsDevTrain.txt and pairsDevTest.txt: one fold, the first line its count alone (every
    same pair, then every different one); RFW's pairs: no header; an editor's byte order mark
    before either format."""
    images, pairs, expected = lfw
    lines = pairs.read_text().splitlines()[1:]
    same, different = [line for line in lines if line.count("\t") == 2], [line for line in lines if line.count("\t") == 3]
    (tmp_path / "pairsDevTest.txt").write_text("\n".join([str(len(same)), *same, *different]) + "\n", encoding="utf-8-sig")
    pairs_format, read = read_pairs(tmp_path / "pairsDevTest.txt", images)
    assert pairs_format == "lfw" and [same for _, _, same, _ in read] == [True] * 6 + [False] * 6
    assert {(images / first, images / second) for first, second, _, _ in read} == {pair[:2] for pair in expected}
    (tmp_path / "pairsDevTrain.txt").write_text("\n".join([str(len(same) + 1), *same, *different]) + "\n")
    with pytest.raises(DatasetError, match=r"line 1: the header promises 1 folds of 7 same and 7 different"):
        read_pairs(tmp_path / "pairsDevTrain.txt", images)
    # RFW's <race>_pairs.txt: LFW's lines with no header.
    (tmp_path / "African_pairs.txt").write_text("\n".join(lines) + "\n")
    with_header = read_pairs(pairs, images)[1]
    assert [pair[:3] for pair in read_pairs(tmp_path / "African_pairs.txt", images)[1]] == [pair[:3] for pair in with_header]
    first, second, _ = expected[0]
    (tmp_path / "list.txt").write_text(f"{first.relative_to(images)} {second.relative_to(images)} 1\n", encoding="utf-8-sig")
    assert read_pairs(tmp_path / "list.txt", images) == ("path list", [(str(first.relative_to(images)),
                                                                       str(second.relative_to(images)), True,
                                                                       f"{tmp_path / 'list.txt'}: line 1")])


def test_calfw_and_cplfw_two_line_pairs(lfw, tmp_path):
    """pairs_CALFW.txt, pairs_CPLFW.txt: a pair is two 'path label' lines with one label, 0
    for different people; a line without its pair, two labels for one pair and a third field
    are named."""
    images, _, expected = lfw
    lines = [f"{path.relative_to(images)} {label}" for index, (first, second, same) in enumerate(expected)
             for path, label in ((first, index + 1 if same else 0), (second, index + 1 if same else 0))]
    (tmp_path / "pairs_CALFW.txt").write_text("\n".join(lines) + "\n")
    summary = pack_evalset(images, tmp_path / "pairs_CALFW.txt", tmp_path / "calfw.bin", tmp_path / "read.txt")
    assert (summary["pairs_format"], summary["pairs"], summary["same"]) == ("two-line pairs", 12, 6)
    assert_readers_read(tmp_path / "calfw.bin", expected)
    with open(tmp_path / "calfw.bin", "rb") as stream:
        bins, _ = pickle.load(stream, encoding="bytes")
    assert bins[0] == expected[0][0].read_bytes() and bins[1] == expected[0][1].read_bytes()
    for change, message in [
        (lambda lines: lines.pop(), r"line 23: the last pair has one line of two"),
        (lambda lines: lines.__setitem__(3, lines[3][:-1] + "7"), r"lines 3 and 4: one pair, labels 2 and 7"),
        (lambda lines: lines.__setitem__(4, lines[4] + " x"), r"line 5: expected 'path label', got"),
    ]:
        changed = list(lines)
        change(changed)
        (tmp_path / "bad.txt").write_text("\n".join(changed) + "\n")
        with pytest.raises(DatasetError, match=r"bad\.txt: " + message):
            read_pairs(tmp_path / "bad.txt", images)


def test_a_path_list_with_spaces_and_nested_paths(lfw, tmp_path):
    images, _, expected = lfw
    lines = [f"{first.relative_to(images)}\t{second.relative_to(images)}\t{int(same)}" for first, second, same in expected[:4]]
    (tmp_path / "pairs_label.txt").write_text("\n".join(lines) + "\n")
    pack_evalset(images, tmp_path / "pairs_label.txt", tmp_path / "mine.bin", tmp_path / "read.txt")
    with open(tmp_path / "mine.bin", "rb") as stream:
        bins, issame = pickle.load(stream, encoding="bytes")
    assert issame == [same for _, _, same in expected[:4]] and len(bins) == 8
    assert bins[0] == expected[0][0].read_bytes()


@pytest.mark.parametrize(("change", "message"), [
    (lambda lines: lines.__setitem__(2, "Zoë_Ångström\t1\t9"), r"pairs\.txt: line 3: no file named Zoë_Ångström/Zoë_Ångström_0009"),
    (lambda lines: lines.__setitem__(5, "Aaron_Peirsol\t1"), r"pairs\.txt: line 6: expected 'name n1 n2' or 'name1 n1 name2 n2'"),
    (lambda lines: lines.__setitem__(0, "3\t3"), r"pairs\.txt: line 1: the header promises 3 folds of 3 same and 3 different"),
    (lambda lines: lines.__setitem__(3, "Abel_Pacheco\tx\t3"), r"pairs\.txt: line 4: image number 'x' is not an integer"),
])
def test_bad_pairs_fail_naming_the_line_and_write_nothing(lfw, tmp_path, change, message):
    images, pairs, _ = lfw
    lines = pairs.read_text().splitlines()
    change(lines)
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        pack_evalset(images, tmp_path / "pairs.txt", tmp_path / "out.bin", tmp_path / "read.txt")
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "out.bin.tmp").exists()
    assert not (tmp_path / "read.txt").exists()


def test_a_bad_path_list_line_and_an_unreadable_image_are_named(lfw, tmp_path):
    images, _, expected = lfw
    (tmp_path / "bad.txt").write_text(f"{expected[0][0].relative_to(images)} x.jpg 1\n")
    with pytest.raises(DatasetError, match=r"bad\.txt: line 1: no file x\.jpg"):
        read_pairs(tmp_path / "bad.txt", images)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a picture")
    (tmp_path / "broken" / "pairs.txt").write_text("a.jpg\ta.jpg\t1\n")
    with pytest.raises(Exception, match=r"broken/a\.jpg \(.*pairs\.txt: line 1\)"):
        pack_evalset(tmp_path / "broken", tmp_path / "broken" / "pairs.txt", tmp_path / "out.bin", tmp_path / "read.txt")
    assert not (tmp_path / "out.bin").exists() and not (tmp_path / "read.txt").exists()


def test_bin_to_images_to_bin_is_byte_identical(lfw, tmp_path):
    images, pairs, expected = lfw
    pack_evalset(images, pairs, tmp_path / "lfw.bin", tmp_path / "read.txt")
    counts = export_bin_images(tmp_path / "lfw.bin", tmp_path / "images" / "lfw")
    assert counts == {"images": 24, "pairs": 12, "same": 6}
    exported = tmp_path / "images" / "lfw"
    assert (exported / "pairs.txt").read_text().splitlines()[:2] == ["0.jpg 1.jpg 1", "2.jpg 3.jpg 1"]
    pack_evalset(exported, exported / "pairs.txt", tmp_path / "again.bin", tmp_path / "read_again.txt")
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "lfw.bin").read_bytes()


@pytest.mark.e2e
def test_evalsets_and_bin_images_through_the_workflow(lfw, cfp, tmp_path):
    """A --configfile naming only evalsets runs only those; a dataset's bin_images packs back
    into its reformatted bin byte for byte; an image rewritten in place, or a CFP fold file
    changed, is packed again."""
    original, pairs, expected = lfw
    images = shutil.copytree(original, tmp_path / "lfw")  # rewritten below
    cfp_root = shutil.copytree(cfp[0], tmp_path / "cfp-dataset")
    fold_file = cfp_root / "Protocol" / "Split" / "FP" / "02" / "diff.txt"
    config = write_config(tmp_path / "only.yaml", {}, evalsets={
        "mine": {"images": str(images), "pairs": str(pairs), "bin": str(tmp_path / "eval" / "mine.bin")},
        "cfp_fp": {"images": str(cfp_root), "pairs": str(fold_file.parents[1]), "bin": str(tmp_path / "eval" / "cfp_fp.bin")},
    })
    config.write_text(config.read_text().replace("datasets: {}\n", ""))
    result = run_workflow(tmp_path / "work", config)
    assert "make_demo_dataset" not in result.stdout + result.stderr
    summary = json.loads((tmp_path / "work" / "results" / "evalsets" / "mine.json").read_text())
    assert summary["verified"] and summary["pairs"] == 12
    assert (tmp_path / "work" / "results" / "evalsets" / "report" / "mine_pairs.png").stat().st_size > 10_000
    assert_readers_read(tmp_path / "eval" / "mine.bin", expected)
    assert_readers_read(tmp_path / "eval" / "cfp_fp.bin", cfp[1]["FP"])
    # An image rewritten in place (its directory unchanged) is packed again on the next run,
    # and so is a CFP set whose fold file changed (its last pair now frontal 6 with profile 2).
    first = images / expected[0][0].relative_to(original)
    first.write_bytes(face(99))
    fold_file.write_text("6,2\n")
    run_workflow(tmp_path / "work", config)
    with open(tmp_path / "eval" / "mine.bin", "rb") as stream:
        assert pickle.load(stream, encoding="bytes")[0][0] == first.read_bytes()
    with open(tmp_path / "eval" / "cfp_fp.bin", "rb") as stream:
        assert pickle.load(stream, encoding="bytes")[0][-1] == (cfp_root / "Data/Images/001/profile/02.jpg").read_bytes()
    assert "Nothing to be done" in run_workflow(tmp_path / "work", config, "-n").stdout

    demo = {"demo": {"images": 200, "identities": 10}, "bins_out": str(tmp_path / "bins"), "bins": ["cfp_fp"],
            "images": str(tmp_path / "faces"), "bin_images": str(tmp_path / "bin_images")}
    run_workflow(tmp_path / "demo_work", write_config(tmp_path / "demo.yaml", {"demo": demo}))
    exported = tmp_path / "bin_images" / "cfp_fp"
    back = {"back": {"images": str(exported), "pairs": str(exported / "pairs.txt"), "bin": str(tmp_path / "back.bin")}}
    config = write_config(tmp_path / "back.yaml", {}, evalsets=back)
    config.write_text(config.read_text().replace("datasets: {}\n", ""))
    run_workflow(tmp_path / "back_work", config)
    assert (tmp_path / "back.bin").read_bytes() == (tmp_path / "bins" / "cfp_fp.bin").read_bytes()
