"""The ``.idx`` of a rec: ``key<TAB>offset`` lines parsed into an array of ``[key, offset]`` rows.

Keys may start anywhere, have gaps and exceed 2^32 (im2rec writes whatever keys its list
file holds). Blocks of lines as MXNet writes them are parsed with array operations
(``text_columns``); any other block line by line, so that an error names its line.
"""

import numpy as np

from faceprep.errors import RecordIOError
from faceprep.text_columns import count_lines, decimals, line_blocks, tab_fields

# Keys and offsets are int64 everywhere (never float: keys past 2^24 stay exact).
LARGEST_KEY = 2**63 - 1


def read_index(idx_path):
    """Parse a ``.idx`` file (``key<TAB>offset`` lines) into an ``(n, 2)`` int64 array of
    ``[key, offset]`` rows sorted by key.

    Keys may start anywhere, have gaps and exceed 2^32 (im2rec writes whatever keys its
    list file holds); a sorted array costs 16 bytes a record and finds a key by bisection.
    """
    # Allocated once and filled block by block: 16 bytes a record at the peak.
    index = np.zeros((count_lines(idx_path), 2), dtype=np.int64)
    filled = 0
    with open(idx_path, "rb") as idx:
        for first_line, block in line_blocks(idx):
            rows = _index_rows(block)
            if rows is None:
                rows = _index_rows_line_by_line(block, first_line, idx_path)
            index[filled : filled + len(rows)] = rows
            filled += len(rows)
    index = index[:filled]
    # Most indexes are written in key order; sorting is needed only for the others.
    if len(index) > 1 and not np.all(index[1:, 0] > index[:-1, 0]):
        # In place, as records of one structure: an argsort and a sorted copy would hold the
        # index twice and a half (insightface idx files end with key 0, so this is common).
        index.view([("key", "<i8"), ("offset", "<i8")]).ravel().sort(order="key", kind="stable")
        repeated = np.flatnonzero(index[1:, 0] == index[:-1, 0])
        if len(repeated):
            raise RecordIOError(f"{idx_path}: key {int(index[repeated[0], 0])} appears more than once")
    return index


def _index_rows(block):
    """The ``[key, offset]`` rows of a block of idx lines as MXNet writes them, or None."""
    fields = tab_fields(block, 2)
    if fields is None:
        return None
    buffer, starts, ends = fields
    keys = decimals(buffer, starts[:, 0], ends[:, 0])
    offsets = decimals(buffer, starts[:, 1], ends[:, 1])
    return None if keys is None or offsets is None else np.stack([keys, offsets], axis=1)


def _index_rows_line_by_line(block, first_line, idx_path):
    """The rows of a block of idx lines in any whitespace, blank lines skipped; an error
    names the line."""
    rows = []
    for line_number, line in enumerate(block.split(b"\n")[:-1], start=first_line):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            key, offset = int(fields[0]), int(fields[1])
            if not (0 <= key <= LARGEST_KEY and 0 <= offset <= LARGEST_KEY):
                raise ValueError
        except ValueError:
            raise RecordIOError(
                f"{idx_path}: line {line_number}: expected '<key>\\t<offset>' with integers from 0 to 2**63-1, "
                f"got {line[:80]!r}"
            ) from None
        rows.append((key, offset))
    return np.array(rows, dtype=np.int64).reshape(-1, 2)
