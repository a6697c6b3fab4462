"""What the shard tests share: a source's shards written chunk by chunk, as the shard jobs
write them. Imports no TensorFlow, for the test that blocks it."""

import json

import numpy as np

from faceprep.classes import ClassTable, chunk_labels, distinct_labels
from faceprep.extract import extract_chunk
from faceprep.insightface import plan_chunks
from faceprep.shards import ChunkShards, first_shard_of, plan_shards


def write_shards(source, tmp_path, shard_format, chunk_size=3, shard_size="auto"):
    """Plan the source and write each chunk's shards; return ``(plan, shard sizes, shard paths,
    chunk summaries)``."""
    plan = plan_chunks(source / "train.rec", source / "train.idx", None, chunk_size, tmp_path / "rows.npy")
    rows = np.load(tmp_path / "rows.npy")
    table = ClassTable(distinct_labels(*(chunk_labels(source / "train.rec", source / "train.idx", rows[start:end])
                                         for start, end in plan["chunks"])))
    (tmp_path / "shards").mkdir(exist_ok=True)
    table.write(tmp_path / "shards" / "classes.tsv")
    shard_sizes = plan_shards(plan, shard_size, shard_format)
    summaries = []
    for chunk, (start, end) in enumerate(plan["chunks"]):
        summary_path = tmp_path / f"chunk_{chunk}.json"
        writer = ChunkShards(shard_format, tmp_path / "shards", "set", first_shard_of(shard_sizes, chunk),
                             shard_sizes[chunk], table, summary_path)
        extract_chunk(source / "train.rec", source / "train.idx", rows[start:end], [writer])
        summaries.append(json.loads(summary_path.read_text()))
    paths = [tmp_path / "shards" / shard["file"] for summary in summaries for shard in summary["shards"]]
    return plan, shard_sizes, paths, summaries
