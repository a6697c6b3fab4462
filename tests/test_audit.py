"""The audit (faceprep.audit) on planted data, in a rec (im2rec layout, keys past 2^24, labels
in no order, several chunks) with an evaluation bin and in a folder tree with an evalset:
every kind is found, and nothing else, in particular no other picture of an identity whose
pictures are in the evaluation set. Expected values come from how the data was planted."""

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from bin_samples import KINDS, encode, face_like
from faceprep.audit.chunk import audit_records
from faceprep.audit.images import DALI, FAILING_READERS, MXNET, TENSORFLOW, inspect_image, is_plain
from faceprep.audit import join
from faceprep.audit.join import join_audit
from faceprep.audit.overlap import OverlapSearch, index_evaluation_images
from faceprep.binfile import write_reformatted
from faceprep.demo import encode_image
from faceprep.faces import draw_face, random_face_traits
from faceprep.insightface import IM2REC, DatasetWriter
from dali_reader import run_dali
from interrupting import kill_job_held_at
from oracle import run_oracle
from workflow import REPO, run_workflow, write_config

sys.path.insert(0, str(REPO / "bench"))
from audit import jpeg, shifted  # noqa: E402  (the bench plants its copies the same way)

FIRST_KEY = 2**24 + 5
IDENTITIES = 6
FACES = 6


def plant():
    """``(images, evaluation, expected)``: training ``(label, bytes, kind)`` in no label order,
    evaluation images (bytes) whose bin repeats two of them, and what the audit must find."""
    rng = np.random.default_rng(7)
    traits = [random_face_traits(rng) for _ in range(IDENTITIES)]
    # Identities 0-3 have pictures in the evaluation set, other pictures of them train.
    evaluation_pixels = [draw_face(traits[identity], rng) for identity in (0, 0, 1, 1, 2, 2, 3, 3)]
    evaluation = [jpeg(pixels, 95) for pixels in evaluation_pixels]
    images = [(identity, jpeg(draw_face(traits[identity], rng), 95), None) for identity in range(IDENTITIES) for _ in range(FACES)]
    decoded = [np.asarray(Image.open(io.BytesIO(data))) for data in evaluation]
    cut = jpeg(draw_face(traits[4], rng), 95)
    odd = np.asarray(Image.fromarray(draw_face(traits[5], rng)).resize((96, 112)))
    images += [
        (0, evaluation[0], ("eval", 0)),  # byte for byte
        (1, jpeg(decoded[2], 85), ("eval", 2)),  # re-encoded at q85
        (2, jpeg(shifted(decoded[4], 2, 2), 75), ("eval", 4)),  # shifted 2 px, re-encoded at q75
        (3, jpeg(shifted(decoded[7], -2, 1), 75), ("eval", 7)),
        (4, cut[: len(cut) // 2], ("undecodable", "jpeg")),
        (4, np.random.default_rng(1).bytes(3000), ("undecodable", "unknown")),
        (1, b"", ("undecodable", "empty")),  # empty files, as im2rec packs them: no duplicates of each other
        (3, b"", ("undecodable", "empty")),
        (5, encode_image(draw_face(traits[5], rng), "png"), ("not_plain_jpeg", "png")),
        (5, encode_image(draw_face(traits[5], rng), "jpeg_cmyk"), ("not_plain_jpeg", "jpeg-cmyk")),
        (5, encode_image(draw_face(traits[5], rng), "jpeg_12bit"), ("not_plain_jpeg", "jpeg-12bit")),
        (5, jpeg(odd, 95), ("odd_size", "96x112")),
        (4, images[4 * FACES][1], ("duplicate", "within")),  # a copy in its own identity
        (0, images[5 * FACES][1], ("duplicate", "across")),  # a copy under another identity
    ]
    order = np.random.default_rng(3).permutation(len(images))
    return [images[position] for position in order], evaluation


@pytest.fixture(scope="module")
def planted():
    return plant()


def evaluation_bin(path, evaluation):
    """A bin of the evaluation images, LFW-like in holding two of them twice."""
    write_reformatted(path, evaluation + [evaluation[0], evaluation[4]], [True, False] * 2 + [True])
    return [*range(len(evaluation)), 0, 4]  # bin index -> evaluation image


def expected_findings(images, key_of, bin_images):
    """What the audit must report for the planted ``images`` (keys from ``key_of(position)``)."""
    expected = {"undecodable": set(), "not_plain_jpeg": set(), "odd_size": set(), "eval_overlap": set(), "duplicates": set()}
    originals = {}
    for position, (label, data, kind) in enumerate(images):
        if data:
            originals.setdefault(data, []).append(key_of(position))
        if kind is None:
            continue
        what, detail = kind
        if what == "eval":
            expected["eval_overlap"] |= {(key_of(position), "lfw", index) for index, image in enumerate(bin_images) if image == detail}
        elif what in ("undecodable", "not_plain_jpeg", "odd_size"):
            expected[what].add((key_of(position), detail))
    expected["duplicates"] = {tuple(sorted(keys)) for keys in originals.values() if len(keys) > 1}
    return expected


def found_findings(audit):
    return {
        "undecodable": {(entry["key"], entry["format"]) for entry in audit["undecodable"]},
        "not_plain_jpeg": {(entry["key"], entry["format"]) for entry in audit["not_plain_jpeg"]},
        "odd_size": {(entry["key"], entry["size"]) for entry in audit["odd_size"]},
        "eval_overlap": {(entry["key"], entry["bin"], entry["index"]) for entry in audit["eval_overlap"]},
        "duplicates": {tuple(sorted(entry["keys"])) for entry in audit["duplicates"]},
    }


def test_every_planted_kind_is_found_and_nothing_else(planted, tmp_path):
    images, evaluation = planted
    bin_images = evaluation_bin(tmp_path / "lfw.bin", evaluation)
    index = [tmp_path / name for name in ("grays.npy", "features.npy", "images.json")]
    assert index_evaluation_images({"lfw": tmp_path / "lfw.bin"}, *index) == len(evaluation)
    search = OverlapSearch(*index)
    records = [(FIRST_KEY + position, label, data) for position, (label, data, _) in enumerate(images)]
    halves = [records[: len(records) // 2], records[len(records) // 2 :]]
    for number, half in enumerate(halves):
        audit_records(iter(half), tmp_path / f"{number}.json", tmp_path / f"{number}.npy", search)
    audit = join_audit([tmp_path / "0.json", tmp_path / "1.json"], [tmp_path / "0.npy", tmp_path / "1.npy"])
    expected = expected_findings(images, lambda position: FIRST_KEY + position, bin_images)
    assert found_findings(audit) == expected
    # Each image that is not plain JPEG names the readers it fails in: a 12-bit JPEG all three.
    assert {entry["format"]: entry["fails"] for entry in audit["not_plain_jpeg"]} == {
        "png": [], "jpeg-cmyk": [], "jpeg-12bit": [TENSORFLOW, DALI, MXNET]}
    assert audit["sizes"] == {"112x112": len(images) - 5, "96x112": 1}  # four undecodable, one odd
    groups = {tuple(entry["keys"]): entry["across_identities"] for entry in audit["duplicates"]}
    assert sorted(groups.values()) == [False, True]
    assert all(entry["reason"] for entry in audit["undecodable"])
    shifts = {entry["key"]: entry["shift"] for entry in audit["eval_overlap"]}
    assert sorted(map(tuple, shifts.values())) == [(-2, 1), (0, 0), (0, 0), (2, 2)]


def test_past_listed_the_informing_kinds_keep_their_first_entries_and_count_all(tmp_path, monkeypatch):
    """Past LISTED entries, not_plain_jpeg keeps the first of each format (a 12-bit JPEG after
    many PNGs stays listed), odd_size and duplicates their first by key; counts has every
    total, and undecodable is listed whole (exclude.txt needs each key)."""
    monkeypatch.setattr(join, "LISTED", 2)
    records = [(key, 0, encode(face_like(key), "png")) for key in range(1, 6)]
    records += [(6, 1, encode(face_like(6), "jpeg12"))]
    records += [(key, 2, encode(face_like(key, 96, 80), "baseline")) for key in (7, 8, 9)]
    records += [(key, 3, encode(face_like(key % 3), "baseline")) for key in (10, 11, 12, 20, 21, 22)]
    records += [(key, 4, encode(face_like(key), "truncated")) for key in (30, 31, 32)]
    halves = [records[::2], records[1::2]]
    for number, half in enumerate(halves):
        audit_records(iter(half), tmp_path / f"{number}.json", tmp_path / f"{number}.npy")
    audit = join_audit([tmp_path / "0.json", tmp_path / "1.json"], [tmp_path / "0.npy", tmp_path / "1.npy"])
    assert audit["counts"] == {"undecodable": 3, "not_plain_jpeg": 6, "odd_size": 3, "duplicates": 3, "eval_overlap": 0}
    assert [(entry["key"], entry["format"]) for entry in audit["not_plain_jpeg"]] == [(1, "png"), (2, "png"), (6, "jpeg-12bit")]
    assert [entry["key"] for entry in audit["odd_size"]] == [7, 8]
    assert [entry["keys"] for entry in audit["duplicates"]] == [[10, 22], [11, 20]]
    assert [entry["key"] for entry in audit["undecodable"]] == [30, 31, 32]


def test_no_picture_of_an_identity_matches_another(tmp_path):
    """Drawn faces of one identity (pose, light and expression vary) never match each other:
    each identity's first picture is the evaluation image, the others train."""
    rng = np.random.default_rng(11)
    pictures = [[jpeg(draw_face(traits, rng), 95) for _ in range(8)] for traits in (random_face_traits(rng) for _ in range(40))]
    assert search_pictures(pictures, tmp_path) == []


def search_pictures(pictures, directory):
    """The overlaps found when each identity's first picture is the evaluation image and the
    others are searched for it."""
    write_reformatted(directory / "eval.bin", [identity[0] for identity in pictures], [True] * (len(pictures) // 2))
    index = [directory / name for name in ("grays.npy", "features.npy", "images.json")]
    index_evaluation_images({"eval": directory / "eval.bin"}, *index)
    records = [(number, identity, data) for identity, faces in enumerate(pictures) for number, data in enumerate(faces[1:])]
    findings = audit_records(iter(records), directory / "c.json", directory / "c.npy", OverlapSearch(*index))
    return findings["eval_overlap"]


def write_planted_rec(directory, images):
    with DatasetWriter(directory, IM2REC) as writer:
        for position, (label, data, _) in enumerate(images):
            writer.add(FIRST_KEY + position, float(label), data)
    return directory


@pytest.fixture(scope="module")
def rec_run(planted, tmp_path_factory):
    """The workflow on the planted rec (3 chunks) with its lfw.bin."""
    images, evaluation = planted
    root = tmp_path_factory.mktemp("audit_rec")
    source = write_planted_rec(root / "source", images)
    bin_images = evaluation_bin(source / "lfw.bin", evaluation)
    dataset = {"source": str(source), "images": str(root / "images"), "bins": ["lfw"], "bins_out": str(root / "bins")}
    config = write_config(root / "config.yaml", {"planted": dataset}, chunk_size=20)
    run_workflow(root / "work", config)
    return root, config, bin_images


def test_the_workflow_finds_every_kind_in_a_rec(planted, rec_run):
    images, _ = planted
    root, _, bin_images = rec_run
    results = root / "work" / "results" / "planted"
    audit = json.loads((results / "audit.json").read_text())
    assert list(audit) == ["undecodable", "not_plain_jpeg", "sizes", "odd_size", "duplicates", "eval_overlap", "counts"]
    assert audit["counts"] == {kind: len(audit[kind]) for kind in audit if kind not in ("sizes", "counts")}
    assert found_findings(audit) == expected_findings(images, lambda position: FIRST_KEY + position, bin_images)
    lines = (results / "exclude.txt").read_text().splitlines()
    assert lines[0].startswith("#")
    expected = {entry["key"] for kind in ("undecodable", "eval_overlap") for entry in audit[kind]}
    assert [int(line) for line in lines[1:]] == sorted(expected) and len(expected) == 8
    page = (results / "report" / "audit.html").read_text()
    # every overlap pair and every image problem drawn; the undecodable ones named instead
    assert page.count("<figure") == sum(len(audit[kind]) for kind in ("undecodable", "not_plain_jpeg", "odd_size", "duplicates", "eval_overlap"))
    assert page.count("data:image/png;base64,") == 2 * len(audit["eval_overlap"]) + 3 + 1 + 4
    # extraction passed the bytes through untouched, undecodable ones included
    written = sorted(path.read_bytes() for path in (root / "images").rglob("*.jpg"))
    assert written == sorted(data for _, data, _ in images)


def test_a_killed_audit_resumes_to_the_same_results(rec_run, tmp_path):
    root, config, _ = rec_run
    reference = (root / "work" / "results" / "planted" / "audit.json").read_bytes()
    held = tmp_path / "work" / "results" / "planted" / "audit" / "chunk_00001.npy.tmp"
    kill_job_held_at(held, tmp_path / "work", _moved(config, root, tmp_path), "audit_chunk", tmp_path / "run.log")
    assert not (tmp_path / "work" / "results" / "planted" / "audit.json").exists()
    run_workflow(tmp_path / "work", _moved(config, root, tmp_path), "--unlock")
    run_workflow(tmp_path / "work", _moved(config, root, tmp_path))
    assert (tmp_path / "work" / "results" / "planted" / "audit.json").read_bytes() == reference


def _moved(config, root, elsewhere):
    """The config with its outputs moved from ``root`` to ``elsewhere`` (same source)."""
    text = config.read_text()
    moved = elsewhere / "config.yaml"
    if not moved.exists():
        moved.write_text(text.replace(str(root / "images"), str(elsewhere / "images")).replace(str(root / "bins"), str(elsewhere / "bins")))
    return moved


def test_a_tree_with_an_evalset(planted, tmp_path):
    """A folder tree (string identity names) searched for an evalset's images and for those of
    a bin given in audit_bins (as faces_emore's lfw.bin, for a tree that has none); entries
    carry paths."""
    planted_images, evaluation = planted
    tree = tmp_path / "tree"
    # A folder source recognises images by content: random bytes and empty files are skipped, not audited.
    noise = [position for position, (_, _, kind) in enumerate(planted_images) if kind in (("undecodable", "unknown"), ("undecodable", "empty"))]
    (tree / "noise").mkdir(parents=True)
    for position in noise:
        (tree / "noise" / f"{position}.jpg").write_bytes(planted_images[position][1])
    images = [image for position, image in enumerate(planted_images) if position not in noise]
    names = {}
    for position, (label, data, _) in enumerate(images):
        identity = tree / f"person {label} é"
        identity.mkdir(parents=True, exist_ok=True)
        (identity / f"{position:04d}.jpg").write_bytes(data)
        names[position] = f"person {label} é/{position:04d}.jpg"
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for number, data in enumerate(evaluation):
        (pictures / f"{number}.jpg").write_bytes(data)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("".join(f"{2 * pair}.jpg {2 * pair + 1}.jpg 1\n" for pair in range(len(evaluation) // 2)))
    dataset = {"source": str(tree), "outputs": ["rec"], "rec": str(tmp_path / "rec"), "bins": []}
    evalsets = {"mine": {"images": str(pictures), "pairs": str(pairs), "bin": str(tmp_path / "mine.bin")}}
    (tmp_path / "bins").mkdir()
    lfw_images = evaluation_bin(tmp_path / "bins" / "lfw.bin", evaluation)
    config = write_config(tmp_path / "config.yaml", {"tree": dataset}, evalsets=evalsets, chunk_size=30,
                          audit_bins=[str(tmp_path / "bins" / "lfw.bin")])
    run_workflow(tmp_path / "work", config)
    audit = json.loads((tmp_path / "work" / "results" / "tree" / "audit.json").read_text())
    # a tree's keys are 1..N in (identity, file name) order
    key_of_path = {path: key for key, path in enumerate(sorted(names.values(), key=lambda path: (int(path.split()[1]), path)), 1)}
    position_key = {position: key_of_path[path] for position, path in names.items()}
    expected = expected_findings(images, position_key.get, list(range(len(evaluation))))
    in_lfw = expected_findings(images, position_key.get, lfw_images)["eval_overlap"]
    expected["eval_overlap"] = ({(key, "evalsets.mine", index) for key, _, index in expected["eval_overlap"]}
                                | {(key, "audit_bins.lfw", index) for key, _, index in in_lfw})
    assert found_findings(audit) == expected
    paths = {entry["key"]: entry["path"] for entry in audit["undecodable"] + audit["eval_overlap"]}
    assert all(paths[key] == names[position] for position, key in position_key.items() if key in paths)
    skipped = (tmp_path / "work" / "results" / "tree" / "skipped_files.tsv").read_text().splitlines()
    assert len(noise) == 3 and all(any(line.startswith(f"noise/{position}.jpg\t") for line in skipped) for position in noise)


def test_the_readme_drops_the_excluded_keys(rec_run):
    """The README's exclude.txt snippet, run on the planted run's file with an MXFaceDataset's
    key list and an ImageFolder's samples of the extracted tree as stand-ins."""
    from pathlib import Path
    from types import SimpleNamespace

    import re

    root, _, _ = rec_run
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```py\n(.*?)```", readme, flags=re.S) if "exclude.txt" in block)
    exclude_path = root / "work" / "results" / "planted" / "exclude.txt"
    files = sorted((root / "images").rglob("*.jpg"))
    namespace = {
        "np": np,
        "Path": Path,
        "dataset": SimpleNamespace(imgidx=np.array([int(path.stem) for path in files])),
        "folder": SimpleNamespace(samples=[(str(path), 0) for path in files]),
    }
    exec(snippet.replace('"results/faces_emore/exclude.txt"', repr(str(exclude_path))), namespace)
    excluded = {int(line) for line in exclude_path.read_text().splitlines()[1:]}
    kept = {int(path.stem) for path in files} - excluded
    assert len(excluded) == 8
    assert set(namespace["dataset"].imgidx.tolist()) == kept
    assert {int(Path(path).stem) for path, _ in namespace["folder"].samples} == kept


# DALI's image decoder on the CPU (device_id=None), as arcface_torch's DALI loader decodes:
# argv OUT_DIR FILE...; each file's decode saved as OUT_DIR/<name>.npy; prints {name: error or null}.
DALI_DECODES = """
import json, os, sys
import numpy as np
from nvidia.dali import fn, pipeline_def, types

errors = {}
for path in sys.argv[2:]:
    data = np.fromfile(path, np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def decode():
        return fn.decoders.image(fn.external_source(source=lambda: [data], batch=True), device="cpu", output_type=types.RGB)

    name = os.path.basename(path)
    try:
        pipe = decode()
        pipe.build()
        image = np.asarray(pipe.run()[0].at(0))
    except Exception as error:
        errors[name] = str(error).splitlines()[0]
        continue
    np.save(os.path.join(sys.argv[1], name + ".npy"), image)
    errors[name] = None
json.dump(errors, sys.stdout)
"""


def tensorflow_decodes(paths, out_dir):
    """Keras_insightface's decode, tf.io.decode_jpeg(channels=3), of each file, saved as DALI_DECODES saves."""
    import tensorflow as tf

    for path in paths:
        try:
            image = tf.io.decode_jpeg(path.read_bytes(), channels=3).numpy()
        except tf.errors.InvalidArgumentError:
            continue
        np.save(out_dir / f"{path.name}.npy", image)


def faithful(decoded, pixels):
    """Whether a reader's decode is the picture: an HxWx3 array within 20 dB PSNR of it (the
    lossy formats here keep 28 dB or more; a wrong decode is far below)."""
    if decoded is None or decoded.shape != pixels.shape:
        return False
    error = np.mean((decoded.astype(np.float64) - pixels) ** 2)
    return error == 0 or 10 * np.log10(255**2 / error) >= 20


def test_each_format_that_is_not_plain_jpeg_fails_in_the_training_readers_the_audit_names(tmp_path):
    """FAILING_READERS, checked against TensorFlow, DALI and MXNet themselves on one picture
    encoded in every format the bins' tests know (12-bit JPEG: MXNet's wrong pixels count)."""
    pixels = face_like(3)
    formats = {}
    for kind in KINDS:
        data = encode(pixels, kind)
        facts = inspect_image(data)
        if kind == "truncated" or is_plain(facts):
            continue
        (tmp_path / kind).write_bytes(data)
        assert facts.problem is None and facts.format in FAILING_READERS, (kind, facts)
        formats[kind] = facts.format
    assert set(formats.values()) == set(FAILING_READERS)
    paths = [tmp_path / kind for kind in formats]
    decodes = {reader: tmp_path / f"decoded_{number}" for number, reader in enumerate((TENSORFLOW, DALI, MXNET))}
    for directory in decodes.values():
        directory.mkdir()
    tensorflow_decodes(paths, decodes[TENSORFLOW])
    run_dali(DALI_DECODES, decodes[DALI], *paths)
    run_oracle("imdecode_files.py", decodes[MXNET], *paths)

    def decoded(reader, kind):
        path = decodes[reader] / f"{kind}.npy"
        return np.load(path) if path.exists() else None

    failing = {kind: [reader for reader in decodes if not faithful(decoded(reader, kind), pixels)] for kind in formats}
    assert failing == {kind: FAILING_READERS[found] for kind, found in formats.items()}


def test_what_the_audit_finds_undecodable_neither_tensorflow_nor_dali_decodes(tmp_path):
    """The undecodable kinds (an empty record as im2rec packs an empty file, a JPEG cut short,
    bytes of no format) are found so, and TF's and DALI's decoders both refuse each."""
    samples = {"empty": b"", "truncated": encode(face_like(4), "truncated"), "noise": np.random.default_rng(2).bytes(3000)}
    for name, data in samples.items():
        assert inspect_image(data).problem is not None, name
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / name for name in samples]
    for directory in ("tf", "dali"):
        (tmp_path / directory).mkdir()
    tensorflow_decodes(paths, tmp_path / "tf")
    errors = json.loads(run_dali(DALI_DECODES, tmp_path / "dali", *paths).splitlines()[-1])
    assert not list((tmp_path / "tf").iterdir()) and not list((tmp_path / "dali").iterdir())
    assert all(errors[name] for name in samples), errors
