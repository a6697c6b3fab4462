"""Snakemake script: the extracted ``<label>/<key>.jpg`` tree checked against the plan and
every chunk's manifest (faceprep.folder_check.verify_extraction): every listed file there,
nothing unlisted (removed instead with ``remove_unlisted``), sizes and checksums read back
with ``verify_crc``; a damaged chunk's manifest is deleted so that the next run extracts it
again. The summary marks the extraction verified."""

import json

from faceprep.atomic import write_json
from faceprep.folder_check import verify_extraction
from faceprep.rule_logging import log_to

log = log_to(snakemake.log[0])
with open(snakemake.input.plan) as stream:
    plan = json.load(stream)
summary = verify_extraction(
    plan,
    snakemake.input.manifests,
    snakemake.params.images_dir,
    label_mode=snakemake.params.label_mode,
    check_crc=snakemake.params.check_crc,
    remove_unlisted=snakemake.params.remove_unlisted,
    forget_damaged=True,
)
removed = summary["removed_unlisted"]
if removed["count"]:
    log.info("removed %d entries no chunk manifest lists, first: %s", removed["count"], ", ".join(removed["first"]))
write_json(snakemake.output.summary, summary)
log.info("verified %d images in %d chunks", summary["images"], summary["chunks"])
