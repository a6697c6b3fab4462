"""Snakemake script: the labels of one scan chunk's image records (faceprep.chunking.scan_chunks),
each row's and the distinct ones, and, for a dataset with a rec among its outputs, the size of
each image's record in it (faceprep.sources.job_row_scan)."""

import json

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.chunking import scan_chunks
from faceprep.extract import chunk_rows
from faceprep.rule_logging import log_to
from faceprep.sources import job_row_scan

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    chunk = scan_chunks(json.load(stream))[int(snakemake.wildcards.chunk)]
rows = chunk_rows(snakemake.input.rows, chunk)
labels, record_bytes = job_row_scan(snakemake, rows, snakemake.params.record_sizes)
distinct = np.unique(labels)
write_atomically(snakemake.output.row_labels, lambda stream: np.save(stream, labels))
write_atomically(snakemake.output.labels, lambda stream: np.save(stream, distinct))
write_atomically(snakemake.output.record_bytes, lambda stream: np.save(stream, record_bytes))
log.info("chunk %s: %d images, %d distinct labels", snakemake.wildcards.chunk, len(rows), len(distinct))
