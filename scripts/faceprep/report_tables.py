"""Tables of the workflow's report (``snakemake --report``): self-contained HTML pages made
from the workflow's summaries (extraction, shards, bins), written to a temporary name and
renamed; usable without Snakemake."""

import csv
import html
import math
import os

from faceprep.atomic import write_bytes


def human_bytes(size):
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:,} bytes" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1000


TABLE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1e293b; margin: 1.5rem; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.8rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.35rem 0.8rem; border-bottom: 1px solid #e2e8f0; text-align: left; vertical-align: top; }
th { background: #f1f5f9; }
tbody tr:nth-child(even) { background: #f8fafc; }
td.number { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th[scope="row"], td.reasons { white-space: nowrap; }
td.ok { color: #15803d; font-weight: 600; }
td.bad { color: #b91c1c; font-weight: 600; }
code { font-size: 0.85em; }
"""


def _cell(value, kind=""):
    css = f' class="{kind}"' if kind else ""
    return f"<td{css}>{value}</td>"


def _html_table(header, rows, note=""):
    """``rows`` hold already-formatted cells; ``header`` plain strings, or None for a key/value table."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header) if header else ""
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    note = f"<p>{note}</p>" if note else ""
    return f"<table>{head}<tbody>{body}</tbody></table>{note}"


def _write_html_page(path, title, body):
    document = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{TABLE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    # A folder tree's paths need not be UTF-8: their undecodable bytes are shown escaped.
    write_bytes(path, document.encode(errors="backslashreplace"))


def extraction_speed(manifest_paths, benchmark_paths):
    """``(images, seconds, jobs)`` over the chunks whose Snakemake benchmark file exists.

    ``benchmark_paths[i]`` is the benchmark of the job that wrote ``manifest_paths[i]``;
    its ``s`` column is the job's wall-clock time.
    """
    images = jobs = 0
    seconds = 0.0
    for manifest_path, benchmark_path in zip(manifest_paths, benchmark_paths, strict=True):
        if not os.path.exists(benchmark_path):
            continue
        with open(benchmark_path, newline="") as stream:
            runs = list(csv.DictReader(stream, delimiter="\t"))
        if not runs or "s" not in runs[0]:
            raise ValueError(f"{benchmark_path}: not a Snakemake benchmark file (no 's' column)")
        with open(manifest_path) as stream:
            images += sum(1 for _ in stream) - 1  # minus the header line
        # A benchmark repeated n times holds n runs of the whole chunk.
        seconds += sum(float(run["s"]) for run in runs) / len(runs)
        jobs += 1
    return images, seconds, jobs


_LAYOUT_TEXT = {
    "insightface": "insightface: header record at key 0, images at keys 1..N, identity records after them",
    "im2rec": "im2rec: no header record, every key of train.idx is an image",
    "tree": "folder tree: one class per directory holding images, classes in the order of its name",
}


def _identities_text(summary, plan):
    extracted = f"{summary['distinct_labels']:,} distinct labels extracted"
    if summary["identities"] is None:
        return f"{extracted} (neither a header record nor a property file to compare with)"
    return f"{summary['identities']:,} by the {plan['identities_from']} ({extracted})"


def write_extraction_table(path, dataset, summary, plan, speed, locations):
    """HTML table of one dataset's extraction.

    ``summary`` is ``extraction.json``, ``plan`` ``chunk_plan.json``, ``speed`` what
    ``extraction_speed`` returns, ``locations`` ``{"source", "images", "index"}`` paths.
    """
    images = summary["images"]
    timed_images, seconds, jobs = speed
    if jobs and seconds > 0:
        rate = (f"{timed_images / seconds:,.0f} images/s per job "
                f"({timed_images:,} images in {seconds:,.1f} s over {jobs:,} chunk jobs)")
    else:
        rate = "not measured (no benchmark files of the chunk jobs)"
    crc = "and its checksum" if summary["crc_checked"] else "(checksum not checked: <code>verify_crc: false</code>)"
    rows = [
        ("source", _cell(f"<code>{html.escape(locations['source'])}</code>")),
        ("images written to", _cell(f"<code>{html.escape(locations['images'])}</code>")),
        ("index", _cell(f"<code>{html.escape(locations['index'])}</code>")),
        ("layout", _cell(_LAYOUT_TEXT[plan["layout"]])),
        ("images", _cell(f"{images:,} (the plan has {summary['expected_images']:,})")),
        ("identities", _cell(_identities_text(summary, plan))),
    ]
    if "image_size" in plan:
        height, width = plan["image_size"]
        rows.append(("image size (property)", _cell(f"{height} × {width}")))
    if "skipped" in plan:
        skipped = plan["skipped"]
        named = "".join(f"<br><code>{html.escape(entry)}</code>" for entry in skipped["first"])
        more = f"<br>… {skipped['count'] - len(skipped['first']):,} more" if skipped["count"] > len(skipped["first"]) else ""
        rows.append(("skipped", _cell(f"{skipped['count']:,} files and directories{named}{more}")))
    rows += [
        ("chunks", _cell(f"{summary['chunks']:,} of up to {plan['chunk_size']:,} images")),
        ("bytes", _cell(f"{human_bytes(summary['bytes'])} ({summary['bytes'] / max(images, 1):,.0f} per image)")),
        ("extraction speed", _cell(rate)),
        ("verification", _cell(f"passed: every image of the manifests is on disk with its size {crc}; "
                                 "nothing else is in the images directory", "ok")),
    ]
    removed = summary["removed_unlisted"]
    if removed["count"]:
        first = ", ".join(f"<code>{html.escape(path)}</code>" for path in removed["first"])
        rows.append(("removed (<code>remove_unlisted</code>)",
                     _cell(f"{removed['count']:,} files or directories no chunk manifest lists, first: {first}")))
    _write_html_page(path, f"{dataset}: {'folder tree' if plan['layout'] == 'tree' else 'train.rec'} → image folders",
                     _html_table(None, [(f'<th scope="row">{name}</th>', cell) for name, cell in rows]))



# With reencode: all every image is re-encoded: the table lists a bin's lowest PSNRs only.
REENCODED_ROWS_PER_BIN = 20
# Image sizes the rec's table names; rec.json has them all.
SIZES_SHOWN = 20


def _psnr_cell(psnr):
    return "identical" if psnr is None else f"{psnr:.1f}"


def _reencoded_image_rows(name, summary):
    """One row per re-encoded image of a bin, in image order; beyond REENCODED_ROWS_PER_BIN,
    the lowest PSNRs and a row counting the rest."""
    entries = summary["reencoded_images"]
    lowest = sorted(entries, key=lambda entry: math.inf if entry["psnr_db"] is None else entry["psnr_db"])
    shown, rest = lowest[:REENCODED_ROWS_PER_BIN], lowest[REENCODED_ROWS_PER_BIN:]
    rows = [
        [
            _cell(f"<code>{html.escape(name)}.bin</code>"),
            _cell(f"{entry['image']:,}", "number"),
            _cell(f"{entry['pair']:,}", "number"),
            _cell(html.escape(entry["reason"]), "reasons"),
            _cell(_psnr_cell(entry["psnr_db"]), "number"),
            _cell(f"{entry['mean_abs_diff']:.2f}", "number"),
            _cell(f"{entry['psnr_floor_db']:.1f}", "number"),
        ]
        for entry in sorted(shown, key=lambda entry: entry["image"])
    ]
    if rest:
        rows.append([
            _cell(f"<code>{html.escape(name)}.bin</code>"),
            _cell(f"{len(rest):,} more, each at {_psnr_cell(rest[0]['psnr_db'])} dB or above"),
        ])
    return rows


def _sizes_text(sizes):
    """``sizes`` (``{WxH: images}``, most common first) as text: the first SIZES_SHOWN, then
    how many images the other sizes hold (an unaligned set has thousands of sizes)."""
    shown = ", ".join(f"{name}: {count:,}" for name, count in list(sizes.items())[:SIZES_SHOWN])
    others = list(sizes.values())[SIZES_SHOWN:]
    return shown + (f", and {len(others):,} other sizes of {sum(others):,} images (rec.json lists all)" if others else "")


def write_rec_table(path, dataset, rec_dir, summary):
    """HTML table of a dataset's verified rec (``summary``: verify_rec's)."""
    size_text = _sizes_text(summary["image_sizes"])
    rows = [
        ("rec", _cell(f"<code>{html.escape(rec_dir)}/train.rec</code>")),
        ("layout", _cell(_LAYOUT_TEXT[summary["layout"]])),
        ("images", _cell(f"{summary['images']:,} of {summary['classes']:,} classes, {summary['records']:,} records")),
        ("bytes", _cell(f"{human_bytes(summary['bytes'])} ({summary['bytes'] / max(summary['images'], 1):,.0f} per image)")),
        ("image sizes (width x height)", _cell(html.escape(size_text) or "none")),
        ("verification", _cell(f"passed: {html.escape(summary['checked'])}", "ok")),
    ]
    _write_html_page(path, f"{dataset}: → rec", _html_table(None, [(f'<th scope="row">{name}</th>', cell) for name, cell in rows]))


def write_shards_table(path, dataset, metadata, verifications):
    """HTML table with one row per shard format; ``verifications`` are the formats'
    verification summaries (each exists only if it passed)."""
    header = ("format", "shards", "images", "classes", "bytes", "bytes per image", "verified")
    rows = []
    for summary in verifications:
        rows.append([
            _cell(html.escape(summary["format"])),
            *(_cell(f"{summary[key]:,}", "number") for key in ("shards", "images", "classes")),
            _cell(human_bytes(summary["bytes"]), "number"),
            _cell(f"{summary['bytes'] / max(summary['images'], 1):,.0f}", "number"),
            _cell("yes", "ok"),
        ])
    note = (f"Shard order: <code>{html.escape(metadata['shard_order'])}</code>; labels: "
            f"<code>{html.escape(metadata['label_mode'])}</code>. <em>verified</em>: every shard of the plan is "
            f"listed in <code>metadata.json</code> and holds its chunk's images, with the size and SHA-256 listed.")
    _write_html_page(path, f"{dataset}: → shards", _html_table(header, rows, note))


def write_bins_table(path, dataset, summaries):
    """HTML table with one row per evaluation bin; ``summaries`` maps bin name -> verification summary."""
    header = ("bin", "pairs", "same", "different", "images", "kept", "re-encoded", "reasons",
              "bytes in", "bytes out", "verified")
    rows = []
    for name, summary in summaries.items():
        reasons = "<br>".join(f"{html.escape(reason)}: {count:,}" for reason, count in summary["reencode_reasons"].items())
        verified = bool(summary["verified"])
        rows.append([
            _cell(f"<code>{html.escape(name)}.bin</code>"),
            *(_cell(f"{summary[key]:,}", "number") for key in ("pairs", "same", "different", "images", "kept",
                                                                "reencoded")),
            _cell(reasons or "–", "reasons"),
            _cell(human_bytes(summary["bytes_in"]), "number"),
            _cell(human_bytes(summary["bytes_out"]), "number"),
            _cell("yes" if verified else "no", "ok" if verified else "bad"),
        ])
    note = ("<em>kept</em>: the source bytes, which <code>tf.image.decode_jpeg</code> already reads; "
            "<em>re-encoded</em>: decoded another way and written as JPEG. <em>verified</em>: every image "
            "of the reformatted bin decodes with <code>tf.image.decode_jpeg(x, channels=3)</code> to its "
            "source's size, every re-encoded one within what re-encoding can change, and the pair flags "
            "equal the source's.")
    body = _html_table(header, rows, note)
    reencoded_rows = [row for name, summary in summaries.items() for row in _reencoded_image_rows(name, summary)]
    if reencoded_rows:
        quality = ", ".join(sorted({str(summary["jpeg_quality"]) for summary in summaries.values()}))
        reencoded_header = ("bin", "image", "pair", "reason", "PSNR dB", "mean |difference|", "floor dB")
        reencoded_note = (
            f"Each re-encoded image (JPEG quality {quality}, 4:4:4) against its source, both decoded with "
            "the accurate integer IDCT: PSNR, and the mean absolute difference in levels of 0–255 per "
            "sample. Sources of more than 8 bits per sample are compared as rounded to 8 bits: their "
            "loss is that rounding plus this. <em>floor</em>: the least PSNR re-encoding at that quality "
            "can give an image of its size; an image below it would be out of order or replaced."
        )
        body += "<h2>Re-encoded images</h2>" + _html_table(reencoded_header, reencoded_rows, reencoded_note)
    _write_html_page(path, f"{dataset}: evaluation bins", body)
