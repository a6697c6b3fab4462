"""Snakemake script: the audit's report page (faceprep.audit.report), with thumbnails of the
training images read from the source and of the evaluation images found."""

import json

from faceprep.audit.report import SHOWN, rows_of_keys, shown_keys, write_audit_page
from faceprep.binfile import load_bin
from faceprep.rule_logging import log_to
from faceprep.sources import job_records

log = log_to(snakemake.log[0])
with open(snakemake.input.audit) as stream:
    audit = json.load(stream)
keys = shown_keys(audit)
training = {key: data for key, _, data in job_records(snakemake, rows_of_keys(snakemake.input.rows, keys), in_order=True)} if keys else {}
bin_images = {}
wanted = {(entry["bin"], entry["index"]) for entry in audit["eval_overlap"][:SHOWN]}
for name, path in dict(snakemake.params.bins).items():
    indexes = {index for bin_name, index in wanted if bin_name == name}
    if indexes:
        images, _ = load_bin(path)
        bin_images.update({(name, index): images[index] for index in indexes})
write_audit_page(snakemake.output.page, snakemake.wildcards.dataset, audit, training, bin_images)
log.info("%s: %d training and %d evaluation thumbnails", snakemake.output.page, len(training), len(bin_images))
