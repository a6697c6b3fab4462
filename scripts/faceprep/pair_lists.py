"""The pairs of an evaluation set, from the files its authors ship, found by their content:

- LFW's official ``pairs.txt``: a first line ``<folds>\\t<pairs per fold>``, then per fold
  that many ``name\\tn1\\tn2`` lines (same person) and as many ``name1\\tn1\\tname2\\tn2``
  lines (different people); files are ``name/name_NNNN.<ext>``, the extension as found on
  disk. The header's counts are checked. LFW's View 1 files (``pairsDevTrain.txt``,
  ``pairsDevTest.txt``) are one fold, their first line its count alone; RFW's
  ``<race>_pairs.txt`` have the same lines and no header.
- Lines ``path1 path2 0|1`` (tab- or space-separated; with tabs, paths may hold spaces),
  paths relative to the images directory: insightface's ``pairs_label.txt``, and what
  ``export_bin_images`` writes.
- CALFW's and CPLFW's ``pairs_CALFW.txt``, ``pairs_CPLFW.txt``: a pair is two lines
  ``path label``, the same label on both, 0 for different people and not 0 for the same.
- CFP's protocol, given as its split directory (``Protocol/Split/FP`` or ``.../FF``): each
  fold directory holds ``same.txt`` and ``diff.txt``, lines ``i,j`` numbering images of
  ``Protocol/Pair_list_F.txt`` (frontal) and, for FP, ``Pair_list_P.txt`` (profile), whose
  lines ``i path`` hold paths relative to ``Protocol``. The images directory is the
  dataset's root (``Data/Images/...`` below it, as the lists lead). Pairs go fold by fold,
  each fold's same pairs before its different ones, so that the 10 consecutive folds
  insightface's verification cuts the bin into are the protocol's.

Every pair is ``(path a, path b, same, where)``: paths relative to the images directory,
each checked to be a file there, and ``where`` the file and line it came from, which every
error about it names.
"""

import os
import re

from faceprep.errors import DatasetError

LFW, PATH_LIST, TWO_LINE, CFP = "lfw", "path list", "two-line pairs", "cfp"
_LFW_HEADER = re.compile(r"(\d+)(?:\s+(\d+))?")  # folds and pairs per fold, or pairs alone
_CFP_PAIR = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")
# A CFP split directory's name: the image lists its pairs' first and second images number.
_CFP_LISTS = {"FP": ("Pair_list_F.txt", "Pair_list_P.txt"), "FF": ("Pair_list_F.txt", "Pair_list_F.txt")}
_CFP_FOLD_FILES = (("same.txt", True), ("diff.txt", False))


def _fields(line):
    return line.split("\t") if "\t" in line else line.split()


def _existing(images_dir, where, path):
    """``path`` (relative to ``images_dir``), stripped, once it is known to be a file there."""
    path = path.strip()
    if not os.path.isfile(os.path.join(images_dir, path)):
        raise DatasetError(f"{where}: no file {path} in {images_dir}")
    return path


def _read_lines(path):
    """``[(line number, line)]`` of a text file, blank lines left out."""
    try:
        with open(path, encoding="utf-8-sig") as stream:  # a byte order mark is not a path
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot be read as text ({error})") from None
    return [(number, line.rstrip("\r")) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _lfw_file(images_dir, where, name, number):
    """``name/name_NNNN.<ext>`` of an LFW pairs line, the extension as found on disk."""
    try:
        index = int(number)
    except ValueError:
        raise DatasetError(f"{where}: image number {number!r} is not an integer") from None
    stem = f"{name}_{index:04d}"
    directory = os.path.join(images_dir, name)
    found = sorted(entry for entry in (os.listdir(directory) if os.path.isdir(directory) else ())
                   if os.path.splitext(entry)[0] == stem)
    if len(found) != 1:
        problem = "no file" if not found else f"{len(found)} files ({', '.join(found)})"
        raise DatasetError(f"{where}: {problem} named {name}/{stem}.<ext> in {images_dir}")
    return f"{name}/{found[0]}"


def _is_lfw_pair(line):
    """Whether ``line`` is an LFW pair line: ``name n1 n2`` or ``name1 n1 name2 n2``."""
    fields = [field.strip() for field in _fields(line)]
    numbers = {3: fields[1:], 4: fields[1::2]}.get(len(fields), [None])
    return all(number and number.isdecimal() for number in numbers)


def _lfw_pairs(pairs_path, images_dir, lines):
    """LFW's pairs: after a header of counts, which are checked, or with none (RFW)."""
    first_number, header = lines[0]
    counts = _LFW_HEADER.fullmatch(header.strip())
    pairs = []
    for line_number, line in lines[1:] if counts else lines:
        where, fields = f"{pairs_path}: line {line_number}", _fields(line)
        if len(fields) == 3:
            name, first, second = fields
            pairs.append((_lfw_file(images_dir, where, name, first), _lfw_file(images_dir, where, name, second),
                          True, where))
        elif len(fields) == 4:
            name, first, other, second = fields
            pairs.append((_lfw_file(images_dir, where, name, first), _lfw_file(images_dir, where, other, second),
                          False, where))
        else:
            raise DatasetError(f"{where}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                               f"got {len(fields)} fields: {line[:80]!r}")
    if not counts:
        return pairs
    first, second = counts.groups()
    folds, per_fold = (int(first), int(second)) if second else (1, int(first))
    same = sum(1 for pair in pairs if pair[2])
    if (same, len(pairs) - same) != (folds * per_fold, folds * per_fold):
        raise DatasetError(
            f"{pairs_path}: line {first_number}: the header promises {folds} folds of {per_fold} same and {per_fold} "
            f"different pairs ({folds * per_fold} each), the file has {same} same and {len(pairs) - same} different"
        )
    return pairs


def _path_list_pairs(pairs_path, images_dir, lines):
    pairs = []
    for line_number, line in lines:
        where, fields = f"{pairs_path}: line {line_number}", _fields(line)
        if len(fields) != 3 or fields[2].strip() not in ("0", "1"):
            raise DatasetError(f"{where}: expected 'path1 path2 0|1', got {line[:80]!r}")
        first, second = (_existing(images_dir, where, field) for field in fields[:2])
        pairs.append((first, second, fields[2].strip() == "1", where))
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
        pairs.append((_existing(images_dir, f"{pairs_path}: line {first_number}", first),
                      _existing(images_dir, f"{pairs_path}: line {second_number}", second), int(label) != 0,
                      f"{pairs_path}: line {first_number}"))
    return pairs


def _cfp_layout(split_dir):
    """``(protocol directory, (first list, second list), [fold directory])`` of a CFP split directory."""
    split_dir = os.path.normpath(split_dir)
    name = os.path.basename(split_dir)
    if name not in _CFP_LISTS:
        raise DatasetError(f"{split_dir}: a CFP split directory is named {' or '.join(_CFP_LISTS)} "
                           f"(Protocol/Split/FP, Protocol/Split/FF)")
    protocol = os.path.dirname(os.path.dirname(split_dir))
    try:
        folds = sorted(entry.path for entry in os.scandir(split_dir) if entry.is_dir() and entry.name.isdecimal())
    except OSError as error:
        raise DatasetError(f"{split_dir}: cannot be listed ({error.strerror})") from None
    if not folds:
        raise DatasetError(f"{split_dir}: holds no fold directories (01, 02, ... with same.txt and diff.txt)")
    return protocol, tuple(os.path.join(protocol, list_name) for list_name in _CFP_LISTS[name]), folds


def _cfp_image_list(list_path, protocol):
    """``{number: (path relative to the images directory, where)}`` of a CFP image list (``i
    path`` lines, paths relative to the protocol directory, whose parent the images directory
    stands for). Only images that pairs use are looked for: an aligned copy may lack others."""
    images = {}
    for line_number, line in _read_lines(list_path):
        where, fields = f"{list_path}: line {line_number}", _fields(line)
        if len(fields) != 2 or not fields[0].strip().isdecimal():
            raise DatasetError(f"{where}: expected 'number path', got {line[:80]!r}")
        path = os.path.normpath(os.path.join(os.path.basename(protocol), fields[1].strip()))
        if path.startswith(os.pardir) or os.path.isabs(path):
            raise DatasetError(f"{where}: {fields[1].strip()} leads out of the dataset's root")
        images[int(fields[0])] = (path, where)
    return images


def _cfp_pairs(split_dir, images_dir):
    protocol, list_paths, folds = _cfp_layout(split_dir)
    lists = {path: _cfp_image_list(path, protocol) for path in set(list_paths)}  # FF: one list, read once
    first_images, second_images = (lists[path] for path in list_paths)
    pairs = []
    for fold in folds:
        for file_name, same in _CFP_FOLD_FILES:
            fold_file = os.path.join(fold, file_name)
            for line_number, line in _read_lines(fold_file):
                where, found = f"{fold_file}: line {line_number}", _CFP_PAIR.fullmatch(line)
                if not found:
                    raise DatasetError(f"{where}: expected 'i,j', got {line[:80]!r}")
                numbers = [int(number) for number in found.groups()]
                for images, number, list_path in zip((first_images, second_images), numbers, list_paths):
                    if number not in images:
                        raise DatasetError(f"{where}: image {number} is not in {list_path}")
                first, second = (_existing(images_dir, f"{image_where} ({where})", path) for path, image_where in
                                 (first_images[numbers[0]], second_images[numbers[1]]))
                pairs.append((first, second, same, where))
    return pairs


def pairs_files(pairs_path):
    """The files a pairs setting reads: the file itself, or a CFP split's lists and folds."""
    if not os.path.isdir(pairs_path):
        return [pairs_path]
    _, list_paths, folds = _cfp_layout(pairs_path)
    return sorted(set(list_paths)) + [os.path.join(fold, name) for fold in folds for name, _ in _CFP_FOLD_FILES]


def read_pairs(pairs_path, images_dir):
    """``(format, [(path a, path b, same, where)])`` of a pairs file or CFP split directory
    (see the module), paths relative to ``images_dir``, every file checked to be there."""
    if os.path.isdir(pairs_path):
        return CFP, _cfp_pairs(pairs_path, images_dir)
    lines = _read_lines(pairs_path)
    if not lines:
        raise DatasetError(f"{pairs_path}: holds no pairs")
    if _LFW_HEADER.fullmatch(lines[0][1].strip()) or _is_lfw_pair(lines[0][1]):
        return LFW, _lfw_pairs(pairs_path, images_dir, lines)
    if _is_two_line(lines[0][1]):
        return TWO_LINE, _two_line_pairs(pairs_path, images_dir, lines)
    return PATH_LIST, _path_list_pairs(pairs_path, images_dir, lines)
