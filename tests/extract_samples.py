"""insightface-layout sources written with DatasetWriter, planned and extracted into folders
chunk by chunk: what the extraction, index and verification tests start from."""

from faceprep.extract import chunk_rows, extract_chunk
from faceprep.folders import FolderWriter
from faceprep.insightface import DatasetWriter, plan_chunks


def write_source(directory, labels, header=None, identities=None, skip_keys=(), property_identities=None):
    """An insightface source whose image ``key`` (1-based) has label ``labels[key - 1]``."""
    images = len(labels)
    identities = identities if identities is not None else len({str(label) for label in labels})
    header = header if header is not None else [images + 1, images + 1 + identities]
    # Identity records of [0, 0]: labels must never be taken from them.
    with DatasetWriter(directory, header=header, identities=property_identities or identities,
                       identity_ranges=[[0.0, 0.0]] * identities) as writer:
        for key, label in enumerate(labels, start=1):
            if key not in skip_keys:
                writer.add(key, label, f"image {key}".encode() * 3)
    return directory


def plan(source, chunk_size=4):
    return plan_chunks(source / "train.rec", source / "train.idx", source / "property", chunk_size, source.parent / "rows.npy")


def extract_keys(source, tmp_path, key_range, label="first", manifest_name="manifest.tsv"):
    """Extract image keys ``[start, end)`` (positions key - 1 of the plan) into tmp_path/images."""
    manifest = tmp_path / manifest_name
    start, end = key_range
    rows = chunk_rows(source.parent / "rows.npy", (start - 1, end - 1))
    writer = FolderWriter(tmp_path / "images", manifest)
    return extract_chunk(source / "train.rec", source / "train.idx", rows, [writer], label), manifest


def extract(source, tmp_path, key_range, label="first"):
    plan(source)
    return extract_keys(source, tmp_path, key_range, label)


def extracted_in_two_chunks(tmp_path, labels):
    """Plan and manifests of ``labels`` extracted as two chunks, so that labels span both."""
    source = write_source(tmp_path / "src", labels)
    half = len(labels) // 2
    the_plan = plan(source, chunk_size=half)
    assert len(the_plan["chunks"]) == 2
    manifests = [extract_keys(source, tmp_path, key_range, manifest_name=f"chunk_{chunk}.tsv")[1]
                 for chunk, key_range in enumerate([(1, half + 1), (half + 1, len(labels) + 1)])]
    return the_plan, manifests
