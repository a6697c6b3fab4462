"""End to end: recs of every layout written by MXNet's own writer, through `snakemake`, against
MXNet reading them as arcface_torch's MXFaceDataset does (header-less im2rec recs, sparse keys
past 2^24 and 2^32, identity records that overlap their neighbours)."""

import json
import random
import struct

import numpy as np
import pytest

from oracle import make_insightface_source, make_rec_from_spec, run_mxface_extraction
from workflow import run_workflow, tree_digest, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.mxnet]

MAGIC = struct.pack("<I", 0xCED7230A)


def image_bytes(rng, with_magic):
    data = bytearray(rng.randbytes(4 * rng.randint(50, 400)))
    if with_magic:  # at 4-aligned offsets of the payload: MXNet splits the record there
        data[0:4] = MAGIC
        data[-4:] = MAGIC
        middle = 4 * rng.randrange(2, len(data) // 4 - 2)
        data[middle : middle + 4] = MAGIC
    return bytes(data)


def im2rec_spec(keys, labels, seed):
    """Records as im2rec packs them, IRHeader(0, label, key, 0), stored in a shuffled order;
    every third label is an array [label, aligned]."""
    rng = random.Random(seed)
    spec = []
    for position, (key, label) in enumerate(zip(keys, labels)):
        label = [float(label), float(rng.randint(0, 1))] if position % 3 == 0 else float(label)
        spec.append({"key": key, "label": label, "id": key, "id2": 0, "payload_hex": image_bytes(rng, position % 5 == 0).hex()})
    rng.shuffle(spec)
    return spec


def extract(tmp_path, source, **settings):
    datasets = {
        "rec": {
            "source": str(source),
            "images": str(tmp_path / "out" / "images"),
            "bins_out": str(tmp_path / "out" / "bins"),
            "bins": [],
        }
    }
    run_workflow(tmp_path / "work", write_config(tmp_path / "config.yaml", datasets, **settings))
    results = tmp_path / "work" / "results" / "rec"
    plan = json.loads((results / "chunk_plan.json").read_text())
    summary = json.loads((results / "extraction.json").read_text())
    return tmp_path / "out" / "images", plan, summary


def assert_index_lists_the_tree(images):
    index = np.load(f"{images}_shuffle.npz")
    assert sorted(index["image_names"].tolist()) == sorted(str(path) for path in images.rglob("*.jpg"))


def test_header_less_im2rec_rec_extracts_as_mxnet_reads_it(tmp_path):
    keys = list(range(2400))  # from 0, as im2rec numbers a list file; key 0 has a label array
    rng = random.Random(3)
    labels = sorted(rng.choice([3, 5, 9, 10, 11, 40, 41, 97, 1000, 1001]) for _ in keys)
    source = make_rec_from_spec(im2rec_spec(keys, labels, seed=4), tmp_path / "src")
    reference = run_mxface_extraction("im2rec", source, tmp_path / "reference")

    images, plan, summary = extract(tmp_path, source, chunk_size=700)

    assert tree_digest(images) == tree_digest(reference)
    assert len(tree_digest(images)) == 2400
    assert (plan["layout"], plan["images"], plan["keys"], len(plan["chunks"])) == ("im2rec", 2400, [0, 2399], 4)
    assert plan["identities"] is None  # no header record, no property file
    assert (summary["layout"], summary["images"], summary["distinct_labels"]) == ("im2rec", 2400, len(set(labels)))
    assert_index_lists_the_tree(images)


def test_sparse_keys_past_2_to_the_24_and_32_keep_their_exact_names(tmp_path):
    keys = sorted({2**24 + offset for offset in range(-150, 150, 2)} | {2**32 + offset for offset in range(-3, 60, 3)}
                  | {2**24 + 1, 2**24 + 3, 5})
    labels = [key % 7 for key in keys]
    source = make_rec_from_spec(im2rec_spec(keys, labels, seed=5), tmp_path / "src")
    (source / "property").write_text("7,112,112")
    reference = run_mxface_extraction("im2rec", source, tmp_path / "reference")

    images, plan, summary = extract(tmp_path, source, chunk_size=50)

    extracted = tree_digest(images)
    assert extracted == tree_digest(reference)
    assert {int(path.split("/")[1][: -len(".jpg")]) for path in extracted} == set(keys)
    assert (plan["layout"], plan["identities"], plan["identities_from"]) == ("im2rec", 7, "property file")
    assert summary["distinct_labels"] == 7
    assert_index_lists_the_tree(images)


def test_overlapping_identity_records_do_not_move_any_image(tmp_path):
    source = make_insightface_source(
        tmp_path / "src", 1200, 30, seed=6, label_style="array", magic_every=9, shuffle_physical=True,
        overlapping_identities=True,
    )
    reference = run_mxface_extraction("insightface", source, tmp_path / "reference")  # labels from the images' own label[0]

    images, plan, summary = extract(tmp_path, source, chunk_size=500)

    assert tree_digest(images) == tree_digest(reference)
    assert (plan["layout"], plan["identities"], summary["distinct_labels"]) == ("insightface", 30, 30)
    assert_index_lists_the_tree(images)
