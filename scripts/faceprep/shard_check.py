"""The shards' metadata sidecar, and the verification of one format's shards against it and the plan."""

import contextlib
import hashlib
import os
import re
import struct
from concurrent.futures import ThreadPoolExecutor

from faceprep.classes import ClassTable
from faceprep.errors import DatasetError
from faceprep.shards import IMAGE_MEMBERS, SHARD_FORMATS, TAR_BLOCK, masked_crc32c, shard_file_name

METADATA_NAME, CLASSES_NAME = "metadata.json", "classes.tsv"
MEMBERS = {
    "webdataset": {"<key>.jpg": "the record's image bytes", "<key>.cls": "class, ASCII decimal",
                   "<key>.json": '{"key", "label", "class"}'},
    "tfrecord": {"image/encoded": "bytes: the record's image bytes", "image/format": "bytes: jpeg",
                 "image/class/label": "int64: class", "image/key": "int64: record key",
                 "image/label": "int64: raw label"},
}
_ZERO_BLOCK = bytes(TAR_BLOCK)
# Problems named in a failed verification's message (all are counted).
SHOWN_PROBLEMS = 20
HASH_BLOCK = 8 << 20
READ_BUFFER = 1 << 20


def shard_metadata(dataset, plan, classes, label_mode, shard_order, shard_seed, summaries):
    """The sidecar of a dataset's shards; ``summaries`` maps each format on to its shard
    summaries (as the writers write them) in chunk order."""
    formats = {}
    for shard_format, shards in summaries.items():
        images = sum(shard["images"] for shard in shards)
        if images != plan["images"]:
            raise DatasetError(f"{dataset}: the {shard_format} shards hold {images} images, the plan has {plan['images']}")
        formats[shard_format] = {
            "members": MEMBERS[shard_format],
            "shards": [{key: shard[key] for key in ("file", "images", "bytes", "sha256")} for shard in shards],
        }
    return {
        "dataset": dataset,
        "num_images": plan["images"],
        "num_classes": len(classes),
        "classes": CLASSES_NAME,
        "class_of_label": "rank of the label among all distinct labels, sorted as integers",
        "layout": plan["layout"],
        "label_mode": label_mode,
        "shard_order": shard_order,
        "shard_seed": shard_seed if shard_order == "shuffled" else None,
        "formats": formats,
    }


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def count_webdataset_images(path, stream):
    """Images of a WebDataset shard read from ``stream``, walking the tar headers: every image
    is ``<key>.jpg``, ``<key>.cls``, ``<key>.json`` in that order, and the archive ends in zero
    blocks. Header checksums are not summed here: the SHA-256 covers damage."""
    offset, members, key = 0, 0, None
    while True:
        header = stream.read(TAR_BLOCK)
        if len(header) < TAR_BLOCK:
            raise DatasetError(f"{path}: byte {offset}: archive ends without its end-of-archive zero blocks")
        if header == _ZERO_BLOCK:
            break
        if header[257:263] != b"ustar\0":
            raise DatasetError(f"{path}: byte {offset}: no ustar header where member {members + 1} should start")
        name = header[:100].rstrip(b"\0")
        try:
            member_size = int(header[124:135], 8)
        except ValueError:
            raise DatasetError(f"{path}: byte {offset}: member {name!r} has no octal size") from None
        stem, dot, suffix = name.partition(b".")
        if dot + suffix != IMAGE_MEMBERS[members % 3] or (members % 3 and stem != key):
            raise DatasetError(f"{path}: byte {offset}: member {name.decode(errors='replace')} out of place "
                               "(each image is <key>.jpg, <key>.cls, <key>.json)")
        key = stem
        members += 1
        data_size = member_size + -member_size % TAR_BLOCK
        stream.seek(data_size, os.SEEK_CUR)
        offset += TAR_BLOCK + data_size
    rest = stream.read()
    if members % 3 or len(rest) < TAR_BLOCK or rest.count(0) != len(rest):
        raise DatasetError(f"{path}: byte {offset}: archive ends without its end-of-archive zero blocks")
    return members // 3


_TFRECORD_HEAD = struct.Struct("<QI")


def count_tfrecord_images(path, stream):
    """Records of a TFRecord shard read from ``stream``, each length and data checked against
    its masked CRC32C."""
    offset, records = 0, 0
    while head := stream.read(_TFRECORD_HEAD.size):
        if len(head) < _TFRECORD_HEAD.size:
            raise DatasetError(f"{path}: byte {offset}: file ends inside record {records}'s header")
        length, length_crc = _TFRECORD_HEAD.unpack(head)
        if masked_crc32c(head[:8]) != length_crc:
            raise DatasetError(f"{path}: byte {offset}: record {records}'s length fails its CRC")
        data = stream.read(length + 4)
        if len(data) < length + 4:
            raise DatasetError(f"{path}: byte {offset}: record {records} of {length} bytes runs past the end")
        if masked_crc32c(data[:length]) != struct.unpack_from("<I", data, length)[0]:
            raise DatasetError(f"{path}: byte {offset}: record {records}'s data fails its CRC")
        offset += _TFRECORD_HEAD.size + length + 4
        records += 1
    return records


IMAGE_COUNTERS = {"webdataset": count_webdataset_images, "tfrecord": count_tfrecord_images}


def _check_shard(path, shard, count_images):
    """What is wrong with a shard file against its metadata entry, or None."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return f"{path}: listed in {METADATA_NAME} but missing"
    if size != shard["bytes"]:
        return f"{path}: {size} bytes, {METADATA_NAME} says {shard['bytes']}"
    with ThreadPoolExecutor(1) as pool:  # hashlib releases the GIL: hash while walking
        digest = pool.submit(_sha256, path)
        # Read, not mapped: a mapped shard's pages would count as this job's memory.
        with open(path, "rb", buffering=READ_BUFFER) as stream:
            try:
                images = count_images(path, stream)
            except DatasetError as error:
                return str(error)
        if digest.result() != shard["sha256"]:
            return f"{path}: SHA-256 differs from {METADATA_NAME}"
    if images != shard["images"]:
        return f"{path}: holds {images} images, {METADATA_NAME} says {shard['images']}"
    return None


def verify_shards(metadata, shards_dir, plan, shard_format, chunk_summaries=None):
    """Check one format's shards: every chunk of the plan has its shard listed in the metadata
    with the chunk's image count; every listed shard is there, with its size, SHA-256 and
    image count (walked); no other shard of the format lies in ``shards_dir``; the class
    table beside the metadata has ``num_classes`` classes. Returns a summary or raises
    DatasetError naming the shards.

    ``chunk_summaries`` (the shard jobs' summaries, by chunk): those of shards found
    missing or damaged are deleted with the metadata, so that the next run writes those
    shards again.
    """
    problems = []
    shards = metadata["formats"].get(shard_format, {}).get("shards", [])
    planned = [shard_file_name(metadata["dataset"], chunk, shard_format) for chunk in range(len(plan["chunks"]))]
    listed = [shard["file"] for shard in shards]
    if listed != planned:
        problems.append(f"{METADATA_NAME} lists {len(listed)} {shard_format} shards, the plan has "
                        f"{len(planned)} chunks: {sorted(set(planned) ^ set(listed))[:5]}")
    for (start, end), shard in zip(plan["chunks"], shards):
        if shard["images"] != end - start:
            problems.append(f"{shard['file']}: {METADATA_NAME} says {shard['images']} images, its chunk has {end - start}")
    if metadata["num_images"] != plan["images"]:
        problems.append(f"{METADATA_NAME} says {metadata['num_images']} images, the plan has {plan['images']}")
    pattern = re.compile(rf"{re.escape(metadata['dataset'])}-\d+\.{SHARD_FORMATS[shard_format]}")
    strays = sorted(set(filter(pattern.fullmatch, os.listdir(shards_dir))) - set(listed))
    problems += [f"{os.path.join(shards_dir, name)}: not listed in {METADATA_NAME}" for name in strays]
    classes = ClassTable.read(os.path.join(shards_dir, metadata["classes"]))
    if len(classes) != metadata["num_classes"]:
        problems.append(f"{classes.source}: {len(classes)} classes, {METADATA_NAME} says {metadata['num_classes']}")
    images = total_bytes = 0
    damaged = []
    for chunk, shard in enumerate(shards):
        problem = _check_shard(os.path.join(shards_dir, shard["file"]), shard, IMAGE_COUNTERS[shard_format])
        if problem:
            problems.append(problem)
            damaged.append(chunk)
        images += shard["images"]
        total_bytes += shard["bytes"]
    if problems:
        shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        forgotten = ""
        if chunk_summaries is not None and damaged and listed == planned:
            # The metadata goes too: Snakemake reruns no job whose output is there.
            for path in [chunk_summaries[chunk] for chunk in damaged] + [os.path.join(shards_dir, METADATA_NAME)]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            forgotten = (f"\n  removed the summaries of those {len(damaged)} shards and {METADATA_NAME}: the next run "
                         "writes them again")
        raise DatasetError(f"verification of the {shard_format} shards in {shards_dir} failed "
                           f"({len(problems)} problems):\n  {shown}{more}{forgotten}")
    return {"format": shard_format, "shards": len(shards), "images": images, "bytes": total_bytes,
            "classes": len(classes), "checked": "size, SHA-256 and image count of every shard"}
