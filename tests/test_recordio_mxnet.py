"""Cross-checks of scripts/faceprep/recordio.py against MXNet's own RecordIO (the test oracle).

MXNet runs in .venv-mxnet through the scripts in tests/mxnet_oracle/ (see tests/oracle.py).
"""

import json
import random
import struct
import subprocess

import pytest

import machine
import oracle
from faceprep.rec_reader import IndexedRecordReader
from faceprep.recordio import IRHeader, RecordWriter, pack_header
from oracle import make_insightface_source, run_oracle, run_original_extraction
from recordio_samples import MAGIC, frames, random_payload

pytestmark = pytest.mark.mxnet

MAGIC_FLOAT = struct.unpack("<f", MAGIC)[0]


def float32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def edge_records():
    """Records that exercise splitting at every place the format allows, as (label, id, id2, payload)."""
    return [
        (0, 0, 0, b""),
        (1, 1, 0, MAGIC),
        (2.5, 2, 0, MAGIC + b"after"),
        (3, 3, 0, b"befo" + MAGIC),
        (4, 4, 0, MAGIC * 3),
        (5, 5, 0, b"x" + MAGIC + b"yy"),
        (6, 6, 0, b"xyz" + MAGIC),
        (MAGIC_FLOAT, 7, 0, b"label bits are the magic"),
        (8, 0xCED7230A, 0xCED7230A << 32, b"ids hold the magic"),
        ([1.0, MAGIC_FLOAT], 2**64 - 1, 2**64 - 1, MAGIC),
        ([float32(0.1)], 10, 0, b""),
        ([], 11, 0, b"empty label list"),
        ([85741, 1], 12, 0, b"\xff\xd8" * 50),
    ]


def random_records(rng, count):
    records = []
    for _ in range(count):
        kind = rng.choice(["int", "float", "array"])
        if kind == "int":
            label = rng.randint(0, 10**6)
        elif kind == "float":
            label = float32(rng.uniform(-1e4, 1e4))
        else:
            label = [float32(rng.uniform(-1e3, 1e3)) for _ in range(rng.randint(1, 6))]
        records.append((label, rng.getrandbits(64), rng.getrandbits(64), random_payload(rng, 3000)))
    return records


@pytest.fixture(scope="module")
def spec():
    """Edge-case and random records under shuffled, non-consecutive keys, as write_rec.py takes them."""
    rng = random.Random(1234)
    records = edge_records() + random_records(rng, 250)
    keys = rng.sample(range(2000), len(records))
    return [
        {"key": key, "label": label, "id": id1, "id2": id2, "payload_hex": payload.hex()}
        for key, (label, id1, id2, payload) in zip(keys, records)
    ]


def comparable(header):
    """``header`` with a label array turned into a tuple of floats, as expected_header spells it."""
    return header._replace(label=tuple(header.label.tolist())) if header.flag else header


def expected_header(record):
    label = record["label"]
    if isinstance(label, list) and label:
        return IRHeader(len(label), tuple(float(value) for value in label), record["id"], record["id2"])
    # MXNet's pack turns an empty label list into flag 0 with label 0.
    return IRHeader(0, float(label) if not isinstance(label, list) else 0.0, record["id"], record["id2"])


@pytest.fixture(scope="module")
def mxnet_files(spec, tmp_path_factory):
    directory = tmp_path_factory.mktemp("mxnet_written")
    (directory / "spec.json").write_text(json.dumps(spec))
    rec, idx = directory / "mx.rec", directory / "mx.idx"
    run_oracle("write_rec.py", directory / "spec.json", rec, idx)
    return rec, idx


def test_reader_reads_what_mxnet_wrote(spec, mxnet_files):
    rec, idx = mxnet_files
    flags = {flag for flag, _ in frames(rec.read_bytes())}
    assert flags == {0, 1, 2, 3}, "the spec should make MXNet write plain and split records"
    with IndexedRecordReader(rec, idx) as reader:
        for record in spec:
            header, image = reader.read_unpacked(record["key"])
            assert comparable(header) == expected_header(record), f"key {record['key']}"
            assert image.hex() == record["payload_hex"], f"key {record['key']}"
        payloads = dict(reader.iter_keys([record["key"] for record in spec]))
    assert payloads == {
        record["key"]: pack_header(record["label"], bytes.fromhex(record["payload_hex"]), record["id"], record["id2"])
        for record in spec
    }


def test_writer_output_is_byte_identical_to_mxnet_and_mxnet_reads_it(spec, mxnet_files, tmp_path):
    rec, idx = tmp_path / "ours.rec", tmp_path / "ours.idx"
    with RecordWriter(rec, idx) as writer:
        for record in spec:
            payload = pack_header(record["label"], bytes.fromhex(record["payload_hex"]), record["id"], record["id2"])
            writer.write(record["key"], payload)
    mx_rec, mx_idx = mxnet_files
    assert rec.read_bytes() == mx_rec.read_bytes()
    assert idx.read_bytes() == mx_idx.read_bytes()

    read_back = json.loads(run_oracle("read_rec.py", rec, idx).stdout)
    expected = []
    for record in spec:
        header = expected_header(record)
        label = list(header.label) if header.flag else [header.label]
        expected.append(
            {"key": record["key"], "flag": header.flag, "label": label, "id": header.id, "id2": header.id2,
             "payload_hex": record["payload_hex"]}
        )
    assert read_back == expected


INSIGHTFACE_CASES = {
    "scalar labels, magic, shuffled": dict(label_style="scalar", magic_every=4, shuffle_physical=True),
    "array labels, magic": dict(label_style="array", magic_every=3, shuffle_physical=False),
}
IMAGES, IDENTITIES, SEED = 300, 25, 7


@pytest.fixture(scope="module", params=INSIGHTFACE_CASES.values(), ids=INSIGHTFACE_CASES.keys())
def insightface_source(request, tmp_path_factory):
    dest = tmp_path_factory.mktemp("insightface") / "faces"
    return make_insightface_source(dest, IMAGES, IDENTITIES, SEED, **request.param), request.param


def read_insightface(source):
    """Key-0 header, identity ranges and ``{key: (header, image)}`` of the image records, via our reader."""
    with IndexedRecordReader(source / "train.rec", source / "train.idx") as reader:
        header0, _ = reader.read_unpacked(0)
        first_identity_key, end = (int(value) for value in header0.label)
        ranges = [tuple(int(v) for v in reader.read_unpacked(key)[0].label) for key in range(first_identity_key, end)]
        images = {key: reader.read_unpacked(key) for key in range(1, first_identity_key)}
        offsets = dict(reader.index.tolist())
    return header0, ranges, images, offsets


def test_insightface_dataset_written_by_mxnet_is_readable(insightface_source):
    source, options = insightface_source
    header0, ranges, images, offsets = read_insightface(source)

    assert header0.flag == 2 and header0.label.tolist() == [IMAGES + 1, IMAGES + 1 + IDENTITIES]
    assert (source / "property").read_text().strip() == f"{IDENTITIES},112,112"
    assert len((source / "train.idx").read_text().splitlines()) == IMAGES + IDENTITIES + 1
    assert sorted(images) == list(range(1, IMAGES + 1))

    # Identities own contiguous, non-empty key ranges that cover every image, in order.
    assert ranges[0][0] == 1 and ranges[-1][1] == IMAGES + 1
    assert all(start < end for start, end in ranges)
    assert all(previous[1] == current[0] for previous, current in zip(ranges, ranges[1:]))
    for identity, (start, end) in enumerate(ranges):
        for key in range(start, end):
            header, image = images[key]
            assert header.id == key and 200 <= len(image) <= 3000
            if options["label_style"] == "scalar":
                assert (header.flag, header.label) == (0, identity)
            else:
                assert header.flag == 2 and header.label[0] == identity and header.label[1] in (0.0, 1.0)

    magic_keys = [key for key in images if key % options["magic_every"] == 0]
    for key in magic_keys:
        image = images[key][1]
        assert image[:4] == MAGIC and image[-4:] == MAGIC, f"key {key}"
    split_starts = sum(flag == 1 for flag, _ in frames((source / "train.rec").read_bytes()))
    assert split_starts == len(magic_keys)

    image_offsets = [offsets[key] for key in range(1, IMAGES + 1)]
    assert (image_offsets != sorted(image_offsets)) == options["shuffle_physical"]
    assert offsets[0] == max(offsets.values())


def test_original_extraction_writes_every_image_under_its_summed_label(insightface_source, tmp_path):
    source, options = insightface_source
    _, _, images, _ = read_insightface(source)
    save_dir = run_original_extraction(source, tmp_path / "extracted")
    expected = {}
    for key, (header, image) in images.items():
        # The original names folders int(np.sum(label)): [identity, aligned] lands in identity + aligned.
        folder = int(header.label) if header.flag == 0 else int(sum(header.label))
        expected[f"{folder}/{key}.jpg"] = image
    written = {str(path.relative_to(save_dir)): path.read_bytes() for path in save_dir.rglob("*.jpg")}
    assert written == expected
    if options["label_style"] == "array":
        assert any(header.label[1] for header, _ in images.values()), "some image should be 'aligned'"


def test_insightface_source_is_deterministic(tmp_path):
    options = dict(label_style="array", magic_every=2, shuffle_physical=True)
    first, again = (make_insightface_source(tmp_path / name, 40, 6, 3, **options) for name in ("first", "again"))
    for name in ("train.rec", "train.idx", "property"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name


@pytest.mark.parametrize("require_all", [False, True], ids=["bare pytest", "make test"])
def test_missing_mxnet_venv_skips_under_bare_pytest_and_fails_under_make_test(monkeypatch, tmp_path, require_all):
    monkeypatch.setattr(oracle, "REPO_ROOT", tmp_path)
    if require_all:
        monkeypatch.setenv(machine.REQUIRE_ALL, "1")
    else:
        monkeypatch.delenv(machine.REQUIRE_ALL, raising=False)
    outcome = pytest.fail.Exception if require_all else pytest.skip.Exception
    with pytest.raises(outcome, match="make mxnet-venv"):
        oracle.mxnet_python()


def test_failing_oracle_shows_its_output(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as error:
        make_insightface_source(tmp_path / "bad", images=2, identities=5, seed=0)
    assert "need 1 <= identities <= images" in str(error.value)
