"""The audit's page in the workflow's report: counts per kind, then a thumbnail of every
problem (up to SHOWN a kind; audit.json lists more), and every evaluation image found
beside the training image it was found as. Usable without Snakemake."""

import base64
import html
import io

import numpy as np

from faceprep.atomic import write_bytes
from faceprep.audit.images import inspect_image
from faceprep.audit.join import KINDS
from faceprep.report_tables import TABLE_STYLE

SHOWN = 200
THUMBNAIL = 96
_STYLE = TABLE_STYLE + """
figure { display: inline-block; margin: 0 0.6rem 0.8rem 0; font-size: 0.75rem; vertical-align: top; max-width: 14rem; }
figure img { display: block; width: 96px; height: 96px; object-fit: contain; background: #f1f5f9; }
figure.pair img { display: inline-block; margin-right: 2px; }
figure .missing { width: 96px; height: 96px; background: #fee2e2; display: flex; align-items: center;
                  justify-content: center; color: #b91c1c; font-weight: 600; }
"""
_DESCRIPTIONS = {
    "undecodable": "images a full decode refuses or finds cut short: a data loader crashes on them",
    "not_plain_jpeg": "images that decode but are not plain 8-bit JPEG, each with the training readers that raise on it "
                      "or decode it wrongly (tf.io.decode_jpeg, DALI's fn.decoders.image, mx.image.imdecode)",
    "sizes": "images per size",
    "odd_size": "images not of the dataset's most common size: loaders resize them silently",
    "duplicates": "groups of byte-identical images; across identities they are label noise",
    "eval_overlap": "evaluation images found in the training set: they inflate reported accuracy",
}


def shown_keys(audit):
    """The training keys the page shows a thumbnail of."""
    keys = set()
    for kind in ("undecodable", "not_plain_jpeg", "odd_size", "eval_overlap"):
        keys.update(entry["key"] for entry in audit[kind][:SHOWN])
    for group in audit["duplicates"][:SHOWN]:
        keys.update(group["keys"][:6])
    return keys


def _data_uri(data):
    facts = inspect_image(data) if data is not None else None
    if facts is None or facts.image is None:
        return None
    image = facts.image.convert("RGB")
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figure(uris, caption, pair=False):
    pictures = "".join(
        f'<img src="{uri}" alt="">' if uri else '<div class="missing">no image</div>' for uri in uris
    )
    css = ' class="pair"' if pair else ""
    return f"<figure{css}>{pictures}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _where(entry):
    return f"key {entry['key']}, label {entry['label']}" + (f", {entry['path']}" if "path" in entry else "")


def _total(audit, kind):
    """The entries of ``kind`` in all, listed or not (an audit.json without ``counts`` lists all)."""
    return audit.get("counts", {}).get(kind, len(audit[kind]))


def _section(kind, audit, training, bin_images):
    entries, total = audit[kind], _total(audit, kind)
    parts = [f"<h2>{kind} ({total:,})</h2><p>{html.escape(_DESCRIPTIONS[kind])}.</p>"]
    if kind == "sizes":
        rows = "".join(f'<tr><td>{html.escape(size)}</td><td class="number">{count:,}</td></tr>' for size, count in entries.items())
        return "".join(parts) + f"<table><tr><th>size</th><th>images</th></tr>{rows}</table>"
    for entry in entries[:SHOWN]:
        if kind == "undecodable":
            parts.append(_figure([None], f"{_where(entry)}: {entry['reason']}"))
        elif kind == "duplicates":
            uris = [training.get(key) for key in entry["keys"][:6]]
            parts.append(_figure(uris, f"keys {entry['keys']}, labels {entry['labels']}", pair=True))
        elif kind == "eval_overlap":
            uri = bin_images.get((entry["bin"], entry["index"]))
            caption = f"{_where(entry)} = {entry['bin']} #{entry['index']} (RMS {entry['distance']}, shift {entry['shift']})"
            parts.append(_figure([training.get(entry["key"]), uri], caption, pair=True))
        else:
            detail = entry.get("format") or entry.get("size")
            if entry.get("fails"):
                detail += f", fails in {', '.join(entry['fails'])}"
            parts.append(_figure([training.get(entry["key"])], f"{_where(entry)}: {detail}"))
    if total > SHOWN:
        listed = "" if len(entries) == total else f" (it lists the first {len(entries):,} by key)"
        parts.append(f"<p>… and {total - SHOWN:,} more in audit.json{listed}.</p>")
    return "".join(parts)


def write_audit_page(path, dataset, audit, training_images, bin_images):
    """The page, from ``audit`` (audit.json), ``training_images`` (``{key: bytes}`` of
    ``shown_keys``) and ``bin_images`` (``{(bin, index): bytes}`` of the overlaps shown)."""
    training = {key: _data_uri(data) for key, data in training_images.items()}
    bins = {place: _data_uri(data) for place, data in bin_images.items()}
    counts = "".join(
        f'<tr><th scope="row">{kind}</th><td class="number">{_total(audit, kind):,}</td><td>{html.escape(_DESCRIPTIONS[kind])}</td></tr>'
        for kind in KINDS
    )
    body = "".join(_section(kind, audit, training, bins) for kind in KINDS)
    page = (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(dataset)}: audit</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(dataset)}: audit</h1>"
        f"<table><tr><th>kind</th><th>entries</th><th>what they are</th></tr>{counts}</table>{body}</body></html>\n"
    )
    # A folder tree's paths need not be UTF-8: their undecodable bytes are shown escaped.
    write_bytes(path, page.encode(errors="backslashreplace"))


def rows_of_keys(plan_rows, keys):
    """The plan's rows (image_rows.npy) of ``keys``, in key order."""
    rows = np.load(plan_rows, mmap_mode="r")
    wanted = np.isin(rows[:, 0], np.fromiter(keys, np.int64, len(keys)))
    return np.asarray(rows[wanted])
