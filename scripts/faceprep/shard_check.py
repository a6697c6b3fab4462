"""The shards' metadata sidecar, and the verification of one format's shards against it and the plan."""

import contextlib
import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

from faceprep.classes import ClassTable
from faceprep.errors import DatasetError
from faceprep.outputs import SHARD_FORMATS
from faceprep.shards import shard_file_name, shard_file_regex

METADATA_NAME, CLASSES_NAME = "metadata.json", "classes.tsv"
# Problems named in a failed verification's message (all are counted).
SHOWN_PROBLEMS = 20
HASH_BLOCK = 8 << 20
READ_BUFFER = 1 << 20


def shard_metadata(dataset, plan, classes, label_mode, shard_order, shard_seed, summaries):
    """The sidecar of a dataset's shards; ``summaries`` maps each format on to its chunks'
    shard summaries (as ``ChunkShards`` writes them) in chunk order."""
    formats = {}
    for shard_format, chunk_summaries in summaries.items():
        shards = [shard for summary in chunk_summaries for shard in summary["shards"]]
        images = sum(shard["images"] for shard in shards)
        if images != plan["images"]:
            raise DatasetError(f"{dataset}: the {shard_format} shards hold {images} images, the plan has {plan['images']}")
        formats[shard_format] = {
            "members": SHARD_FORMATS[shard_format].members,
            "shards": [{key: shard[key] for key in ("file", "images", "bytes", "sha256")} for shard in shards],
        }
    return {
        "dataset": dataset,
        "num_images": plan["images"],
        "num_classes": len(classes),
        "classes": CLASSES_NAME,
        "class_of_label": "rank of the label among all distinct labels, sorted as integers" if classes.identities is None
        else "a folder tree's label is its class: the rank of its identity directory's name among all (as integers "
             f"when every name is one); {CLASSES_NAME} names each class's identity",
        "layout": plan["layout"],
        "label_mode": label_mode,
        "shard_order": shard_order,
        "shard_seed": shard_seed if shard_order == "shuffled" else None,
        "formats": formats,
    }


def _sha256(path):
    digest = hashlib.sha256()
    # One buffer read into again and again: a new block per read costs a quarter of the
    # hashing's time in page faults. Large blocks: the lock Python threads share is taken
    # again after each block, and the walk beside it holds it for milliseconds at a time.
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    with open(path, "rb", buffering=0) as stream:
        while size := stream.readinto(block):
            digest.update(view[:size])
    return digest.hexdigest()


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


def verify_shards(metadata, shards_dir, plan, shard_format, shard_sizes, chunk_summaries=None, workers=1,
                  remove_unlisted=False):
    """Check one format's shards: the metadata lists the shards of ``shard_sizes``
    (``plan_shards``: per chunk, its shards' image counts) with those counts; every listed
    shard is there, with its size, SHA-256 and image count (walked); no other shard of the
    format lies in ``shards_dir`` (an earlier run's with another ``shard_size``, which a
    loader globbing the shards would read too: ``remove_unlisted`` deletes those instead);
    the class table beside the metadata has ``num_classes`` classes. Returns a summary (with
    the shards removed) or raises DatasetError naming the shards.

    ``chunk_summaries`` (the shard jobs' summaries, by chunk): those of chunks with a shard
    found missing or damaged are deleted with the metadata, so that the next run writes
    those chunks' shards again. ``workers`` shards are checked at a time: hashing releases
    the GIL, so each core hashes a shard.
    """
    problems = []
    shards = metadata["formats"].get(shard_format, {}).get("shards", [])
    planned_sizes = [size for sizes in shard_sizes for size in sizes]
    chunk_of = [chunk for chunk, sizes in enumerate(shard_sizes) for _ in sizes]
    planned = [shard_file_name(metadata["dataset"], shard, shard_format) for shard in range(len(planned_sizes))]
    listed = [shard["file"] for shard in shards]
    if listed != planned:
        problems.append(f"{METADATA_NAME} lists {len(listed)} {shard_format} shards, the plan has "
                        f"{len(planned)}: {sorted(set(planned) ^ set(listed))[:5]}")
    for planned_images, shard in zip(planned_sizes, shards):
        if shard["images"] != planned_images:
            problems.append(f"{shard['file']}: {METADATA_NAME} says {shard['images']} images, the plan {planned_images}")
    if metadata["num_images"] != plan["images"]:
        problems.append(f"{METADATA_NAME} says {metadata['num_images']} images, the plan has {plan['images']}")
    pattern = shard_file_regex(metadata["dataset"], shard_format)
    strays = sorted(set(filter(pattern.fullmatch, os.listdir(shards_dir))) - set(listed))
    if remove_unlisted:
        for name in strays:
            os.unlink(os.path.join(shards_dir, name))
    else:
        problems += [f"{os.path.join(shards_dir, name)}: not listed in {METADATA_NAME}" for name in strays]
    classes = ClassTable.read(os.path.join(shards_dir, metadata["classes"]))
    if len(classes) != metadata["num_classes"]:
        problems.append(f"{classes.source}: {len(classes)} classes, {METADATA_NAME} says {metadata['num_classes']}")
    images = total_bytes = 0
    damaged = set()
    paths = [os.path.join(shards_dir, shard["file"]) for shard in shards]
    check = functools.partial(_check_shard, count_images=SHARD_FORMATS[shard_format].count_images)
    with ThreadPoolExecutor(workers) as pool:
        for number, (shard, problem) in enumerate(zip(shards, pool.map(check, paths, shards))):
            if problem:
                problems.append(problem)
                damaged.add(number)
            images += shard["images"]
            total_bytes += shard["bytes"]
    if problems:
        shown = "\n  ".join(problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        forgotten = ""
        if chunk_summaries is not None and damaged and listed == planned:
            chunks = sorted({chunk_of[number] for number in damaged})
            # The metadata goes too: Snakemake reruns no job whose output is there.
            for path in [chunk_summaries[chunk] for chunk in chunks] + [os.path.join(shards_dir, METADATA_NAME)]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            forgotten = (f"\n  removed the summaries of the {len(chunks)} chunks with those shards and {METADATA_NAME}: "
                         "the next run writes them again")
        unlisted = ("\n  shards not listed (an earlier run's, with another shard_size?) would be read by a loader "
                    "globbing them: move them away, or rerun with `--config remove_unlisted=True` to delete exactly "
                    "these") if strays and not remove_unlisted else ""
        raise DatasetError(f"verification of the {shard_format} shards in {shards_dir} failed "
                           f"({len(problems)} problems):\n  {shown}{more}{forgotten}{unlisted}")
    return {"format": shard_format, "shards": len(shards), "images": images, "bytes": total_bytes,
            "classes": len(classes), "checked": "size, SHA-256 and image count of every shard",
            "removed_unlisted": strays if remove_unlisted else []}
