"""The report: figures drawn from the workflow's outputs, and `snakemake --report` seen in Chromium."""

import base64
import html
import io
import json
import pickle
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from faceprep import figures, report_tables
from report_browser import open_view, rendered_dom, report_data, screenshot
from workflow import run_workflow, write_config

DATASET = "faces"
# cfp_fp: the demo plants images TF cannot read in it, so some are re-encoded.
BINS = ["cfp_fp"]
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 70, 220), (230, 200, 30), (150, 40, 190)]


def solid_jpeg(colour, size=112):
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def shows_colour(png, colour, tolerance=4, pixels=100):
    """Whether ``png`` has at least ``pixels`` pixels of ``colour``."""
    image = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    close = np.abs(image - np.array(colour)).max(axis=2) <= tolerance
    return close.sum() >= pixels


def write_manifest(path, rows):
    path.write_text("path\tlabel\tbytes\tcrc32\n" + "".join(f"{p}\t{label}\t1\t00000000\n" for p, label in rows))
    return path


# --- the figure functions, on data made here ----------------------------------------------


def test_sample_pairs_shows_reencoded_pairs_first_and_balances_the_rest():
    issame = [pair % 3 == 0 for pair in range(60)]
    shown = figures.sample_pairs(issame, highlighted_pairs={4, 5, 7}, count=12, seed=3)
    assert len(shown) == len(set(shown)) == 12 and shown == sorted(shown)
    assert {4, 5, 7} <= set(shown)
    rest = [pair for pair in shown if pair not in {4, 5, 7}]
    same = sum(issame[pair] for pair in rest)
    assert abs(same - (len(rest) - same)) <= 1

    many = figures.sample_pairs(issame, highlighted_pairs=range(40), count=12, seed=3)
    assert sum(pair < 40 for pair in many) >= 6  # up to half highlighted, the rest balanced
    assert figures.sample_pairs([True, False], count=12) == [0, 1]


def test_contact_sheet_shows_sampled_identities_from_the_image_tree(tmp_path):
    images_dir = tmp_path / "images"
    rows = []
    for label, colour in zip((3, 7, 11, 20, 31), COLOURS):
        (images_dir / str(label)).mkdir(parents=True)
        for key in range(label * 10, label * 10 + 1 + label % 4):
            (images_dir / str(label) / f"{key}.jpg").write_bytes(solid_jpeg(colour))
            rows.append((f"{label}/{key}.jpg", label))
    manifests = [write_manifest(tmp_path / "chunk_00000.tsv", rows[:7]), write_manifest(tmp_path / "chunk_00001.tsv", rows[7:])]

    samples = figures.sample_faces(manifests, identities=3, faces=2, seed=1)
    sizes = Counter(label for _, label in rows)
    assert len(samples) == 3 and [label for label, _, _ in samples] == sorted(label for label, _, _ in samples)
    for label, count, paths in samples:
        assert count == sizes[label]
        assert len(paths) == min(2, count) and all(path.startswith(f"{label}/") for path in paths)

    every = figures.sample_faces(manifests, identities=10, faces=10)
    assert sorted(label for label, _, _ in every) == sorted(sizes)
    sheet = tmp_path / "sheet.png"
    figures.draw_contact_sheet(every, images_dir, sheet, "five identities")
    assert all(shows_colour(sheet, colour) for colour in COLOURS)

    # Extraction copies whatever a record holds: bytes that are no image are shown, not fatal.
    (images_dir / rows[0][0]).write_bytes(b"not an image")
    assert figures.draw_contact_sheet(every, images_dir, tmp_path / "odd.png", "odd") == [rows[0][0]]
    assert all(shows_colour(tmp_path / "odd.png", colour) for colour in COLOURS)
    (images_dir / rows[0][0]).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(rows[0][0])):
        figures.draw_contact_sheet(every, images_dir, tmp_path / "missing.png", "missing")
    assert not (tmp_path / "missing.png").exists()


def histogram_bars(figure):
    """``[(left edge, right edge, height)]`` of the bars drawn in the figure's one axes."""
    (axes,) = figure.axes
    return [(bar.get_x(), bar.get_x() + bar.get_width(), bar.get_height()) for bar in axes.patches]


@pytest.mark.parametrize(
    ("counts", "path"),
    [
        (Counter({0: 1}), "one.svg"),
        (Counter({4: 3, 9: 3, 2: 7}), "three.svg"),
        (Counter({label: int(size) for label, size in enumerate(np.random.default_rng(0).zipf(1.8, 5000))}), "tail.png"),
    ],
    ids=["one identity", "three identities", "long tail"],
)
def test_identity_histogram_bars_count_the_identities_of_each_size(tmp_path, counts, path):
    figure = figures.plot_identity_histogram(counts, tmp_path / path, "title")
    bars = histogram_bars(figure)
    sizes = list(counts.values())
    for (_, right, _), (left, _, _) in zip(bars, bars[1:]):
        assert right == left  # adjacent: every size falls in one bar
    assert bars[0][0] < min(sizes) and max(sizes) < bars[-1][1]
    assert [height for _, _, height in bars] == [sum(left <= size < right for size in sizes) for left, right, _ in bars]
    written = (tmp_path / path).read_bytes()
    assert written.startswith(b"\x89PNG") if path.endswith(".png") else b"<svg" in written


def test_identity_histogram_of_few_images_has_a_bar_per_whole_number(tmp_path):
    figure = figures.plot_identity_histogram(Counter({4: 3, 9: 3, 2: 7}), tmp_path / "three.svg", "three")
    assert histogram_bars(figure) == [(2.5, 3.5, 2), (3.5, 4.5, 0), (4.5, 5.5, 0), (5.5, 6.5, 0), (6.5, 7.5, 1)]


def write_bin(path, images, issame):
    with open(path, "wb") as stream:
        pickle.dump([images, issame], stream)
    return path


def bin_summary(images, issame, reencoded):
    return {
        "pairs": len(issame), "same": sum(issame), "different": len(issame) - sum(issame),
        "images": len(images), "kept": len(images) - reencoded, "reencoded": reencoded,
        "reencode_reasons": {"bmp": reencoded} if reencoded else {},
        "bytes_in": 1000, "bytes_out": 900, "verified": True,
    }


def test_bin_pairs_are_decoded_from_the_reformatted_bin(tmp_path):
    outputs = [solid_jpeg(COLOURS[index % len(COLOURS)]) for index in range(40)]
    issame = [pair % 2 == 0 for pair in range(20)]
    sources = list(outputs)
    bmp = io.BytesIO()
    Image.new("RGB", (112, 112), COLOURS[3]).save(bmp, format="BMP")
    sources[13] = bmp.getvalue()  # the source held a BMP; the reformatted bin its JPEG
    reformatted = write_bin(tmp_path / "out.bin", outputs, issame)
    source = write_bin(tmp_path / "src.bin", sources, issame)

    figure = tmp_path / "pairs.png"
    shown = figures.draw_bin_pairs(reformatted, source, bin_summary(outputs, issame, 1), figure, "out", pairs=6)
    assert 6 in shown and len(shown) == 6  # pair 6 holds image 13, the re-encoded one
    assert all(shows_colour(figure, colour) for colour in COLOURS)

    outputs[9] = sources[13]  # a BMP left in the output: TF cannot read it, so no figure
    write_bin(reformatted, outputs, issame)
    with pytest.raises(ValueError, match=r"out\.bin: image 9: tf\.image\.decode_jpeg fails"):
        figures.decode_with_tensorflow(reformatted, outputs, [8, 9])


def test_extraction_speed_counts_only_timed_chunks(tmp_path):
    manifests = [write_manifest(tmp_path / f"chunk_{chunk}.tsv", [(f"0/{key}.jpg", 0) for key in range(size)])
                 for chunk, size in enumerate((30, 20, 10))]
    benchmarks = [tmp_path / f"{chunk}.tsv" for chunk in range(3)]
    for benchmark, seconds in zip(benchmarks[:2], ("1.5", "0.5")):
        benchmark.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t10.0\n")
    assert report_tables.extraction_speed(manifests, benchmarks) == (50, 2.0, 2)

    benchmarks[2].write_text("seconds\n1\n")
    with pytest.raises(ValueError, match=re.escape(str(benchmarks[2]))):
        report_tables.extraction_speed(manifests, benchmarks)


def test_bins_table_lists_reencoded_images_lowest_psnr_first_beyond_the_limit(tmp_path):
    psnrs = [40.0 - index * 0.5 for index in range(report_tables.REENCODED_ROWS_PER_BIN + 5)] + [None]
    entries = [
        {"image": index, "pair": index // 2, "reason": "reencode-all", "psnr_db": psnr,
         "mean_abs_diff": 1.0 + index / 10, "psnr_floor_db": 26.67}
        for index, psnr in enumerate(psnrs)
    ]
    few = {**bin_summary(range(4), [True, False], 1), "reencoded_images": entries[:1], "jpeg_quality": 95}
    many = {**bin_summary(range(len(entries)), [True] * (len(entries) // 2), len(entries)),
            "reencoded_images": entries, "jpeg_quality": 95}
    path = tmp_path / "bins.html"

    report_tables.write_bins_table(path, "faces", {"lfw": few, "cfp_fp": many})

    header, *rows = table_rows(path.read_text(), table=1)
    assert header == ["bin", "image", "pair", "reason", "PSNR dB", "mean |difference|", "floor dB"]
    assert rows[0] == ["lfw.bin", "0", "0", "reencode-all", "40.0", "1.00", "26.7"]
    # The 20 lowest PSNRs of cfp_fp in image order, then a row counting the 6 others.
    lowest = sorted(range(len(psnrs) - 1), key=lambda index: psnrs[index])[: report_tables.REENCODED_ROWS_PER_BIN]
    assert [int(row[1]) for row in rows[1:-1]] == sorted(lowest)
    rest = [psnrs[index] for index in range(len(psnrs)) if index not in lowest]
    assert rows[-1] == ["cfp_fp.bin", f"{len(rest)} more, each at {min(filter(None, rest)):.1f} dB or above"]
    assert "JPEG quality 95, 4:4:4" in path.read_text()


def test_rec_table_names_the_most_common_sizes_and_counts_the_others(tmp_path):
    sizes = {f"{side}x{side}": 1000 - side for side in range(100, 100 + report_tables.SIZES_SHOWN + 30)}
    summary = {"image_sizes": sizes, "layout": "im2rec", "images": sum(sizes.values()), "classes": 3,
               "records": sum(sizes.values()), "bytes": 10**6, "checked": "everything"}
    report_tables.write_rec_table(tmp_path / "rec.html", "d", "/data/rec", summary)
    cell = dict(table_rows((tmp_path / "rec.html").read_text()))["image sizes (width x height)"]
    shown = list(sizes.items())[: report_tables.SIZES_SHOWN]
    others = list(sizes.values())[report_tables.SIZES_SHOWN :]
    assert cell == ", ".join(f"{name}: {count:,}" for name, count in shown) + (
        f", and 30 other sizes of {sum(others):,} images (rec.json lists all)")


# --- the report of a workflow run ---------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    dataset = {
        "demo": {"images": 300, "identities": 12, "seed": 1},
        "images": str(root / "out" / "images"),
        "bins_out": str(root / "out" / "bins"),
        "bins": BINS,
    }
    config = write_config(root / "config.yaml", {DATASET: dataset}, chunk_size=100)
    work = root / "work"
    run_workflow(work, config)
    report_html = root / "report.html"
    run_workflow(work, config, "--report", str(report_html))
    return SimpleNamespace(
        html=report_html,
        work=work,
        results=report_data(report_html, "results"),
        categories=report_data(report_html, "categories"),
    )


def figure_path(name):
    return f"results/{DATASET}/report/{name}"


def embedded(entry):
    return base64.b64decode(entry["data_uri"].split("base64,", 1)[1])


def text_of(markup):
    return html.unescape(re.sub(r"<[^>]+>", " ", markup))


def table_rows(document, table=0):
    """Rows of the ``table``-th HTML table in ``document`` as lists of cell texts (header cells included)."""
    markup = re.findall(r"<table>(.*?)</table>", document, flags=re.S)[table]
    return [
        [" ".join(text_of(cell).split()) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", markup, flags=re.S)
    ]


@pytest.mark.e2e
def test_every_figure_is_embedded_with_its_caption_in_the_dataset_category(report):
    assert list(report.categories) == [DATASET]
    assert {subcategory: set(paths) for subcategory, paths in report.categories[DATASET].items()} == {
        "extraction": {figure_path(name) for name in ("extraction.html", "images_per_identity.svg", "contact_sheet.png")},
        "evaluation bins": {figure_path("bins.html")} | {figure_path(f"{name}_pairs.png") for name in BINS},
        "audit": {figure_path("audit.html")},
    }
    for path, entry in report.results.items():
        assert embedded(entry) == (report.work / path).read_bytes(), path
        caption = text_of(entry["caption"])
        assert DATASET in caption and len(caption) > 200, path
    for name in BINS:
        caption = " ".join(text_of(report.results[figure_path(f"{name}_pairs.png")]["caption"]).split())
        assert f"{name}.bin" in caption and "tf.image.decode_jpeg(x, channels=3)" in caption


@pytest.mark.e2e
def test_tables_hold_the_numbers_of_the_run(report):
    extraction = json.loads((report.work / "results" / DATASET / "extraction.json").read_text())
    rows = dict(table_rows(embedded(report.results[figure_path("extraction.html")]).decode()))
    assert rows["images"].startswith(f"{extraction['images']} ") and extraction["images"] == 300
    assert rows["identities"].startswith(f"{extraction['identities']} ") and extraction["identities"] == 12
    assert rows["chunks"].startswith("3 of up to 100")
    assert re.fullmatch(r"[\d,]+ images/s per job \(300 images in [\d.]+ s over 3 chunk jobs\)", rows["extraction speed"])
    assert rows["verification"].startswith("passed")

    bins_table = embedded(report.results[figure_path("bins.html")]).decode()
    header, *bin_rows = table_rows(bins_table)
    assert [row[0] for row in bin_rows] == [f"{name}.bin" for name in BINS]
    for name, row in zip(BINS, bin_rows):
        summary = json.loads((report.work / "results" / DATASET / "bins" / f"{name}.json").read_text())
        cells = dict(zip(header, row))
        for column, key in (("pairs", "pairs"), ("same", "same"), ("different", "different"),
                            ("images", "images"), ("kept", "kept"), ("re-encoded", "reencoded")):
            assert int(cells[column].replace(",", "")) == summary[key], (name, column)
        for reason, count in summary["reencode_reasons"].items():
            assert f"{reason}: {count}" in cells["reasons"]
        assert cells["verified"] == "yes"
    assert int(dict(zip(header, bin_rows[0]))["re-encoded"]) > 0
    header, *image_rows = table_rows(bins_table, table=1)
    expected = []
    for name in BINS:
        summary = json.loads((report.work / "results" / DATASET / "bins" / f"{name}.json").read_text())
        expected += [
            [f"{name}.bin", str(entry["image"]), str(entry["pair"]), entry["reason"], f"{entry['psnr_db']:.1f}",
             f"{entry['mean_abs_diff']:.2f}", f"{entry['psnr_floor_db']:.1f}"]
            for entry in summary["reencoded_images"]
        ]
    assert header == ["bin", "image", "pair", "reason", "PSNR dB", "mean |difference|", "floor dB"]
    assert image_rows == expected and expected


def pixels(png):
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)


@pytest.mark.e2e
def test_chromium_shows_the_figures(report, tmp_path):
    start = pixels(screenshot(open_view(report.html, tmp_path / "start.html"), tmp_path / "start.png"))
    for name in ("contact_sheet.png", "cfp_fp_pairs.png", "extraction.html"):
        page = open_view(report.html, tmp_path / f"{name}.html", result=figure_path(name))
        shown = pixels(screenshot(page, tmp_path / f"{name}.png"))
        # Right of the sidebar: the figure, not a blank page and not the start page.
        content, start_content = shown[:, 700:], start[:, 700:]
        ink = np.abs(content - 255).max(axis=2) > 30
        assert ink.mean() > 0.005, name
        assert (np.abs(content - start_content).max(axis=2) > 30).mean() > 0.01, name
        if name.endswith(".png"):
            # Photographs of faces bring thousands of colours; the report's own UI a few dozen.
            colours = np.unique(content.reshape(-1, 3).astype(np.uint8), axis=0)
            assert len(colours) > 3000, name

    dom = rendered_dom(open_view(report.html, tmp_path / "sheet.html", result=figure_path("contact_sheet.png")))
    assert f'src="{report.results[figure_path("contact_sheet.png")]["data_uri"]}"' in dom
    assert all(label in dom for label in ("contact sheet", "images per identity", "summary table"))

    info = rendered_dom(open_view(report.html, tmp_path / "info.html", result=figure_path("cfp_fp_pairs.png"), info=True))
    assert "cfp_fp.bin" in info and "tf.image.decode_jpeg(x, channels=3)" in info and "draw_bin_pairs" in info
