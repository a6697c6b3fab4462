"""Figures of the workflow's report (``snakemake --report``); usable without Snakemake.

Everything is drawn from the workflow's own outputs: a dataset's chunk manifests and the
extracted image tree, and for an evaluation bin the reformatted bin itself, decoded with
``tf.image.decode_jpeg`` as the evaluation code decodes it, so that the picture proves the
output reads. Figures are matplotlib (no display needed); every file is written to a
temporary name and renamed. The report's tables are in ``faceprep.report_tables``.
"""

import io
import logging
import os
import re
from collections import Counter

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from PIL import Image

from faceprep.atomic import write_bytes
from faceprep.tf_ops import import_tensorflow
from faceprep.binfile import load_bin
from faceprep.folders import read_manifest_images
from faceprep.report_tables import human_bytes

log = logging.getLogger(__name__)

SAME_COLOUR = "#1f6fb4"
DIFFERENT_COLOUR = "#d35400"
REENCODED_COLOUR = "#b0005a"
BAR_COLOUR = "#4c72b0"
# Pixels per inch of every figure: a 1-inch tile shows a 112x112 face at about its own size.
DPI = 100


def save_figure(figure, path):
    """Save ``figure`` as ``path`` (format from its suffix: ``.png``, ``.svg``, ``.pdf``)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1][1:], dpi=DPI)
    write_bytes(path, buffer.getvalue())


# --- datasets ------------------------------------------------------------------------------


def images_per_identity(manifest_paths):
    """``Counter`` of images per label over the chunk manifests of a dataset."""
    counts = Counter()
    for manifest_path in manifest_paths:  # one at a time: memory follows the chunk size
        labels, label_counts = np.unique(read_manifest_images([manifest_path]).labels, return_counts=True)
        counts.update(dict(zip(labels.tolist(), label_counts.tolist())))
    return counts


def plot_identity_histogram(counts, path, title):
    """Histogram of images per identity (``counts``: label -> images), identities on a log scale.

    Bins are equally wide ranges of whole numbers (unequal integer ranges would draw a comb
    that is not in the data), 10 to 60 of them as the number of identities allows. The log
    scale shows the long tail of identities with many images next to the bulk. Returns the
    saved figure.
    """
    sizes = np.fromiter(counts.values(), dtype=np.int64, count=len(counts))
    if not len(sizes):
        raise ValueError(f"{path}: no identities to plot")
    bins = int(np.clip(2 * np.sqrt(len(sizes)), 10, 60))
    width = max(1, -(-(int(sizes.max()) - int(sizes.min()) + 1) // bins))
    edges = np.arange(sizes.min() - 0.5, sizes.max() + width, width)
    median = float(np.median(sizes))
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    axes.hist(sizes, bins=edges, color=BAR_COLOUR, edgecolor="white", linewidth=0.5, log=True)
    axes.axvline(median, color="black", linestyle="--", linewidth=1, label=f"median: {median:,.0f} images")
    # 1, 2, 5, 10, 20, ...: readable ticks even when the counts span less than a decade.
    axes.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    axes.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    axes.yaxis.set_minor_formatter(ticker.NullFormatter())
    axes.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    axes.set_xlabel("images of the identity" + (f" (bins of {width})" if width > 1 else ""))
    axes.set_ylabel("identities (log scale)")
    axes.set_title(f"{title}\n{len(sizes):,} identities, {int(sizes.sum()):,} images; "
                   f"fewest {int(sizes.min()):,}, most {int(sizes.max()):,} images per identity", fontsize=11)
    axes.legend(loc="upper right", frameon=False)
    axes.grid(axis="y", color="0.9")
    axes.set_axisbelow(True)
    save_figure(figure, path)
    return figure


def sample_faces(manifest_paths, identities=6, faces=8, seed=0):
    """``identities`` labels drawn at random, each with up to ``faces`` of its images.

    Returns ``[(label, images of the label, [image paths relative to the images dir])]``
    sorted by label, paths by record key. Reads the manifests twice (counts, then paths of
    the drawn labels only), so memory stays small for millions of images.
    """
    counts = images_per_identity(manifest_paths)
    rng = np.random.default_rng(seed)
    labels = sorted(int(label) for label in rng.choice(sorted(counts), min(identities, len(counts)), replace=False))
    paths = {label: [] for label in labels}
    for manifest_path in manifest_paths:
        images = read_manifest_images([manifest_path])
        drawn_rows = np.isin(images.labels, labels)
        for label, key in zip(images.labels[drawn_rows].tolist(), images.keys[drawn_rows].tolist()):
            paths[label].append(f"{label}/{key}.jpg")
    samples = []
    for label in labels:
        drawn = rng.choice(len(paths[label]), min(faces, len(paths[label])), replace=False)
        samples.append((label, counts[label], [paths[label][index] for index in sorted(drawn)]))
    return samples


def _read_image(path):
    """The RGB pixels of an extracted image, or None if its bytes are no image Pillow reads.

    Extraction copies records byte for byte whatever they hold, so such a record is a
    finding to show on the sheet, not a reason to fail; a missing file is an error.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        log.warning("%s: not an image Pillow decodes (%s); marked on the contact sheet", path, error)
        return None


def _bare(axes):
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)


def draw_contact_sheet(samples, images_dir, path, title):
    """A grid with one row per sampled identity (``sample_faces``), labelled with its label.

    Returns the relative paths of the sampled images that do not decode; their tiles say so.
    """
    if not samples:
        raise ValueError(f"{path}: no identities to show")
    columns = max(len(faces) for _, _, faces in samples)
    figure = Figure(figsize=(1.6 + 1.05 * columns, 0.7 + 1.2 * len(samples)), layout="constrained")
    figure.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    grid = figure.add_gridspec(len(samples), columns)
    undecodable = []
    for row, (label, count, faces) in enumerate(samples):
        for column in range(columns):
            axes = figure.add_subplot(grid[row, column])
            _bare(axes)
            if column < len(faces):
                pixels = _read_image(os.path.join(images_dir, faces[column]))
                if pixels is None:
                    undecodable.append(faces[column])
                    axes.set_box_aspect(1)
                    axes.set_facecolor("0.92")
                    axes.text(0.5, 0.5, "not an\nimage", ha="center", va="center", fontsize=9,
                              color=REENCODED_COLOUR, transform=axes.transAxes)
                else:
                    axes.imshow(pixels)
                axes.set_xlabel(faces[column], fontsize=7, labelpad=2)
            if column == 0:
                axes.set_ylabel(f"label {label}\n{count:,} images", rotation=0, ha="right", va="center",
                                fontsize=10, labelpad=8)
    figure.suptitle(title, fontsize=12)
    save_figure(figure, path)
    return undecodable


# --- evaluation bins -----------------------------------------------------------------------


def sample_pairs(issame, highlighted_pairs=(), count=12, seed=0):
    """Indices of up to ``count`` pairs to show, sorted.

    Up to half are drawn from ``highlighted_pairs`` (pairs holding a re-encoded image, the
    ones worth seeing); the rest alternate between same-identity and different pairs.
    """
    rng = np.random.default_rng(seed)
    highlighted = sorted(highlighted_pairs)
    chosen = {int(pair) for pair in rng.permutation(highlighted)[: count // 2]} if highlighted else set()
    pools = [
        [pair for pair in rng.permutation(len(issame)).tolist() if bool(issame[pair]) == same and pair not in chosen]
        for same in (True, False)
    ]
    while len(chosen) < count and any(pools):
        for pool in pools:
            if pool and len(chosen) < count:
                chosen.add(pool.pop())
    return sorted(chosen)


def decode_with_tensorflow(bin_path, images, indices):
    """``{index: HxWx3 uint8 array}`` as ``tf.image.decode_jpeg(x, channels=3)`` decodes ``images[index]``."""
    tf = import_tensorflow()  # takes seconds; only the bin figures need it

    decoded = {}
    for index in indices:
        try:
            decoded[index] = tf.image.decode_jpeg(images[index], channels=3).numpy()
        except tf.errors.InvalidArgumentError as error:
            reason = re.sub(r"\{\{.*?\}\}\s*", "", error.message)  # drop TF's op-location prefix
            raise ValueError(f"{bin_path}: image {index}: tf.image.decode_jpeg fails: {reason}") from None
    return decoded


def _bin_header(figure, bin_name, summary):
    text_axes, bar_axes = figure.subplots(1, 2, width_ratios=[1.5, 1])
    text_axes.set_axis_off()
    verified = "every image decodes with tf.image.decode_jpeg" if summary["verified"] else "NOT verified"
    text_axes.set_title(f"{bin_name}.bin, reformatted: pairs as tf.image.decode_jpeg reads them",
                        loc="left", fontsize=12, fontweight="bold")
    text_axes.text(
        0, 0.45,
        f"{summary['pairs']:,} pairs: {summary['same']:,} same identity, {summary['different']:,} different\n"
        f"{summary['images']:,} images: {summary['kept']:,} kept byte for byte, {summary['reencoded']:,} re-encoded\n"
        f"{human_bytes(summary['bytes_in'])} of images in, {human_bytes(summary['bytes_out'])} out\n"
        f"verification: {verified}",
        va="center", fontsize=10, linespacing=1.6, transform=text_axes.transAxes,
    )
    reasons = summary["reencode_reasons"]
    names = ["kept"] + [f"re-encoded: {reason}" for reason in reasons]
    values = [summary["kept"]] + list(reasons.values())
    colours = [SAME_COLOUR] + [REENCODED_COLOUR] * len(reasons)
    positions = np.arange(len(names))
    bar_axes.barh(positions, values, color=colours)
    bar_axes.set_yticks(positions, names, fontsize=8)
    bar_axes.invert_yaxis()
    bar_axes.set_xscale("symlog", linthresh=1)
    bar_axes.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    bar_axes.tick_params(axis="x", labelsize=7)
    bar_axes.set_xlim(0, max(values) * 4)
    for position, value in zip(positions, values):
        bar_axes.text(value, position, f" {value:,}", va="center", fontsize=8)
    bar_axes.set_title("images kept / re-encoded (log scale)", fontsize=9)
    for side in ("top", "right"):
        bar_axes.spines[side].set_visible(False)


def draw_bin_pairs(reformatted_path, source_path, summary, path, bin_name, pairs=12, seed=0):
    """Sample pairs of the reformatted bin, decoded with TensorFlow, labelled same/different.

    ``summary`` is the bin's verification summary (pairs, same, different, kept,
    re-encoded with reasons, bytes). Pairs holding a re-encoded image (compared with the
    source bin) are shown first and their re-encoded images marked. Returns the pairs shown.
    """
    outputs, issame = load_bin(reformatted_path)
    sources, _ = load_bin(source_path)
    if len(sources) != len(outputs):
        raise ValueError(f"{reformatted_path}: {len(outputs)} images, its source {source_path} has {len(sources)}")
    reencoded = {index for index, (output, source) in enumerate(zip(outputs, sources)) if output != source}
    shown = sample_pairs(issame, {index // 2 for index in reencoded}, pairs, seed)
    decoded = decode_with_tensorflow(reformatted_path, outputs, [i for pair in shown for i in (2 * pair, 2 * pair + 1)])

    per_row = 4
    rows = -(-len(shown) // per_row)
    figure = Figure(figsize=(10.5, 1.9 + 1.55 * rows), layout="constrained")
    header, body = figure.subfigures(2, 1, height_ratios=[1.9, 1.55 * rows])
    _bin_header(header, bin_name, summary)
    cells = body.subfigures(rows, per_row, wspace=0.03, hspace=0.04).reshape(-1)
    for cell, pair in zip(cells, shown):
        same = bool(issame[pair])
        colour = SAME_COLOUR if same else DIFFERENT_COLOUR
        cell.set_facecolor("#e8f1fa" if same else "#fcede0")
        cell.suptitle(f"pair {pair}: {'same' if same else 'different'}", color=colour, fontweight="bold", fontsize=10)
        for axes, index in zip(cell.subplots(1, 2), (2 * pair, 2 * pair + 1)):
            _bare(axes)
            axes.imshow(decoded[index])
            if index in reencoded:
                axes.set_xlabel(f"image {index}, re-encoded", fontsize=7, color=REENCODED_COLOUR, fontweight="bold")
            else:
                axes.set_xlabel(f"image {index}", fontsize=7)
    for cell in cells[len(shown):]:
        cell.set_facecolor("none")
    save_figure(figure, path)
    return shown
