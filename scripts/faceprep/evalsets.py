"""Evaluation sets both ways: your own images and pairs → a bin, a bin → images and pairs.

Three pairs formats are read, found by their content:

- LFW's official ``pairs.txt``: a first line ``<folds>\\t<pairs per fold>``, then per fold
  that many ``name\\tn1\\tn2`` lines (same person) and as many ``name1\\tn1\\tname2\\tn2``
  lines (different people); files are ``name/name_NNNN.<ext>``, the extension as found on
  disk. The header's counts are checked. LFW's View 1 files (``pairsDevTrain.txt``,
  ``pairsDevTest.txt``) are one fold, their first line its count alone.
- Lines ``path1 path2 0|1`` (tab- or space-separated; with tabs, paths may hold spaces),
  paths relative to the images directory: insightface's ``pairs_label.txt``, and what
  ``export_bin_images`` writes.
- CALFW's and CPLFW's ``pairs_CALFW.txt``, ``pairs_CPLFW.txt``: a pair is two lines
  ``path label``, the same label on both, 0 for different people and not 0 for the same.

The bin holds the images in pair order, each as its file's bytes when
``tf.io.decode_jpeg`` reads it, else re-encoded by ``reformat_bin``'s rule
(faceprep.bincodec). Every problem (a missing file, a bad line, counts that disagree with
the header, an unreadable image) stops the packing before anything is written, naming
the file and the line.
"""

import os
import re
import shutil

from faceprep.atomic import create_file, write_bytes
from faceprep.binfile import load_reformatted
from faceprep.errors import BinError, DatasetError

LFW, PATH_LIST, TWO_LINE = "lfw", "path list", "two-line pairs"
_LFW_HEADER = re.compile(r"(\d+)(?:\s+(\d+))?")  # folds and pairs per fold, or pairs alone
PAIRS_NAME = "pairs.txt"


def _lfw_file(images_dir, pairs_path, line_number, name, number):
    """``name/name_NNNN.<ext>`` of an LFW pairs line, the extension as found on disk."""
    try:
        index = int(number)
    except ValueError:
        raise DatasetError(f"{pairs_path}: line {line_number}: image number {number!r} is not an integer") from None
    stem = f"{name}_{index:04d}"
    directory = os.path.join(images_dir, name)
    found = sorted(entry for entry in (os.listdir(directory) if os.path.isdir(directory) else ())
                   if os.path.splitext(entry)[0] == stem)
    if len(found) != 1:
        problem = "no file" if not found else f"{len(found)} files ({', '.join(found)})"
        raise DatasetError(f"{pairs_path}: line {line_number}: {problem} named {name}/{stem}.<ext> in {images_dir}")
    return f"{name}/{found[0]}"


def _lfw_pairs(pairs_path, images_dir, lines):
    first_number, header = lines[0]
    first, second = _LFW_HEADER.fullmatch(header.strip()).groups()
    folds, per_fold = (int(first), int(second)) if second else (1, int(first))
    pairs = []
    for line_number, line in lines[1:]:
        fields = _fields(line)
        if len(fields) == 3:
            name, first, second = fields
            pairs.append((_lfw_file(images_dir, pairs_path, line_number, name, first),
                          _lfw_file(images_dir, pairs_path, line_number, name, second), True, line_number))
        elif len(fields) == 4:
            name, first, other, second = fields
            pairs.append((_lfw_file(images_dir, pairs_path, line_number, name, first),
                          _lfw_file(images_dir, pairs_path, line_number, other, second), False, line_number))
        else:
            raise DatasetError(f"{pairs_path}: line {line_number}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                               f"got {len(fields)} fields: {line[:80]!r}")
    same = sum(1 for pair in pairs if pair[2])
    if (same, len(pairs) - same) != (folds * per_fold, folds * per_fold):
        raise DatasetError(
            f"{pairs_path}: line {first_number}: the header promises {folds} folds of {per_fold} same and {per_fold} "
            f"different pairs ({folds * per_fold} each), the file has {same} same and {len(pairs) - same} different"
        )
    return pairs


def _fields(line):
    return line.split("\t") if "\t" in line else line.split()


def _existing(pairs_path, images_dir, line_number, path):
    """``path`` (relative to ``images_dir``), stripped, once it is known to be a file there."""
    path = path.strip()
    if not os.path.isfile(os.path.join(images_dir, path)):
        raise DatasetError(f"{pairs_path}: line {line_number}: no file {path} in {images_dir}")
    return path


def _path_list_pairs(pairs_path, images_dir, lines):
    pairs = []
    for line_number, line in lines:
        fields = _fields(line)
        if len(fields) != 3 or fields[2].strip() not in ("0", "1"):
            raise DatasetError(f"{pairs_path}: line {line_number}: expected 'path1 path2 0|1', got {line[:80]!r}")
        first, second = (_existing(pairs_path, images_dir, line_number, field) for field in fields[:2])
        pairs.append((first, second, fields[2].strip() == "1", line_number))
    return pairs


def _is_two_line(line):
    fields = _fields(line)
    return len(fields) == 2 and fields[1].strip().isdecimal()


def _two_line_pairs(pairs_path, images_dir, lines):
    if len(lines) % 2:
        raise DatasetError(f"{pairs_path}: line {lines[-1][0]}: the last pair has one line of two "
                           f"('path label' lines, two a pair)")
    pairs = []
    for (first_number, first_line), (second_number, second_line) in zip(lines[::2], lines[1::2]):
        for line_number, line in ((first_number, first_line), (second_number, second_line)):
            if not _is_two_line(line):
                raise DatasetError(f"{pairs_path}: line {line_number}: expected 'path label', got {line[:80]!r}")
        (first, label), (second, second_label) = _fields(first_line), _fields(second_line)
        if int(label) != int(second_label):
            raise DatasetError(f"{pairs_path}: lines {first_number} and {second_number}: one pair, labels "
                               f"{label.strip()} and {second_label.strip()} (the same label on both lines)")
        pairs.append((_existing(pairs_path, images_dir, first_number, first),
                      _existing(pairs_path, images_dir, second_number, second), int(label) != 0, first_number))
    return pairs


def read_pairs(pairs_path, images_dir):
    """``(format, [(path a, path b, same, line number)])`` of a pairs file, paths relative to
    ``images_dir``, every file checked to be there."""
    try:
        with open(pairs_path, encoding="utf-8-sig") as stream:  # a byte order mark is not a path
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{pairs_path}: cannot be read as text ({error})") from None
    lines = [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        raise DatasetError(f"{pairs_path}: holds no pairs")
    if _LFW_HEADER.fullmatch(lines[0][1].strip()):
        return LFW, _lfw_pairs(pairs_path, images_dir, lines)
    if _is_two_line(lines[0][1]):
        return TWO_LINE, _two_line_pairs(pairs_path, images_dir, lines)
    return PATH_LIST, _path_list_pairs(pairs_path, images_dir, lines)


def read_pair_images(pairs_path, images_dir):
    """``(format, images, issame, sources)``: the images' bytes in pair order, the pairs'
    flags, and for each image ``(relative path, line number)``."""
    pairs_format, pairs = read_pairs(pairs_path, images_dir)
    images, issame, sources = [], [], []
    for first, second, same, line_number in pairs:
        for path in (first, second):
            try:
                with open(os.path.join(images_dir, path), "rb") as stream:
                    images.append(stream.read())
            except OSError as error:
                raise DatasetError(f"{pairs_path}: line {line_number}: {os.path.join(images_dir, path)} cannot be "
                                   f"read ({error.strerror})") from None
            sources.append((path, line_number))
        issame.append(same)
    return pairs_format, images, issame, sources


def naming_image_source(error, pairs_path, images_dir, sources):
    """A BinError about ``image N`` of a packed set, with that image's file and pairs line."""
    found = re.search(r"image (\d+) \(pair \d+\)", str(error))
    if not found or int(found.group(1)) >= len(sources):
        return error
    path, line_number = sources[int(found.group(1))]
    return BinError(f"{os.path.join(images_dir, path)} ({pairs_path}: line {line_number}): {error}")


def export_bin_images(bin_path, directory):
    """Write every image of reformatted bin ``bin_path`` as ``directory/<i>.jpg`` and its pairs
    as ``directory/pairs.txt`` (``<a>.jpg <b>.jpg 1|0``), through ``<directory>.tmp``."""
    images, issame = load_reformatted(bin_path)
    temporary = f"{directory}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    for index, image in enumerate(images):
        with open(create_file(os.path.join(temporary, f"{index}.jpg")), "wb") as stream:
            stream.write(image)
    lines = "".join(f"{2 * pair}.jpg {2 * pair + 1}.jpg {int(same)}\n" for pair, same in enumerate(issame))
    write_bytes(os.path.join(temporary, PAIRS_NAME), lines.encode())
    if os.path.lexists(directory):
        shutil.rmtree(directory)
    os.rename(temporary, directory)
    return {"images": len(images), "pairs": len(issame), "same": sum(issame)}


def pack_evalset(images_dir, pairs_path, bin_path, read_path, reencode="needed", threads=1, jpeg_quality=None):
    """Write the bin of an evaluation set (see the module) and ``read_path``, the images it
    read (each path relative to ``images_dir`` once, a line; faceprep.changes sees them
    change); return reformat's summary with the pairs' format. Nothing is written when any
    image or line is wrong."""
    from faceprep import bincodec  # TensorFlow only when an image needs it

    pairs_format, images, issame, sources = read_pair_images(pairs_path, images_dir)
    try:
        summary = bincodec.reformat_images(images, issame, pairs_path, bin_path, reencode, threads,
                                           jpeg_quality or bincodec.JPEG_QUALITY)
    except BinError as error:
        raise naming_image_source(error, pairs_path, images_dir, sources) from None
    write_bytes(read_path, b"".join(os.fsencode(path) + b"\n" for path in dict.fromkeys(path for path, _ in sources)))
    return summary | {"pairs_format": pairs_format}
