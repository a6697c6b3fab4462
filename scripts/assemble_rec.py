"""Snakemake script: train.rec (the parts written into train.rec.partial, with the header and
identity records around them), train.idx, train.lst and property (faceprep.outputs.rec)."""

import json
import os
from collections import Counter

import numpy as np

from faceprep.insightface import read_property
from faceprep.outputs.rec import assemble_rec, image_sizes, property_size, size_names
from faceprep.rule_logging import log_to
from faceprep.sources import TREE
from faceprep.sources.tree import image_names

log = log_to(snakemake.log[0])
sizes = image_sizes(snakemake.input.indexes)
fallback = read_property(snakemake.params.source_property)[1:] if snakemake.params.source_property else (0, 0)
size = property_size(sizes, fallback)
summary = assemble_rec(
    os.path.dirname(snakemake.output.rec),
    snakemake.params.layout,
    np.load(snakemake.input.rows),
    np.load(snakemake.input.offsets),
    snakemake.input.indexes,
    size,
    source_names=(lambda rows: image_names(snakemake.input.names, rows[:, :-1])) if snakemake.params.source_kind == TREE else None,
)
others = size_names(Counter({other: count for other, count in sizes.items() if other != size}))
log.info("summary: %s", json.dumps(summary | {"property_size": list(size), "other_sizes": others}, sort_keys=True))
