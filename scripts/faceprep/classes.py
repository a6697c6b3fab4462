"""The class index of a dataset: every distinct label, sorted as integers, numbered 0..C-1.

Training code wants classes 0..C-1, and labels need not be: im2rec datasets may skip
labels or start anywhere. The class of a label is its rank among the dataset's distinct
labels, so classes keep the labels' order. The table is ``classes.tsv``, one
``label<TAB>class`` line per class under a ``label\tclass`` header. A folder tree's classes
are its identity directories (in ``identity_positions``' order), and their table has a
third column, ``identity`` (the directory's path relative to the tree, bytes as on disk),
so a class of the shards or of the normalised tree leads back to its identity.
"""

import numpy as np

from faceprep.atomic import write_bytes
from faceprep.errors import DatasetError
from faceprep.insightface import image_labels

TABLE_HEADER = "label\tclass"
IDENTITY_COLUMN = "identity"


def distinct_labels(*label_arrays):
    """The distinct labels of every array given, sorted, as int64."""
    if not label_arrays:
        return np.empty(0, np.int64)
    labels = np.asarray(label_arrays[0], np.int64) if len(label_arrays) == 1 else np.concatenate(
        [np.asarray(labels, np.int64) for labels in label_arrays])
    # A dataset's labels are most often sorted already (a rec sorted by identity): then the
    # first of each run is enough, without np.unique's sorted copy of every label.
    if np.all(labels[1:] >= labels[:-1]):
        return labels[np.concatenate(([True], labels[1:] != labels[:-1]))] if len(labels) else labels
    return np.unique(labels)


class ClassTable:
    """The classes of a dataset's sorted distinct ``labels`` (an int64 array); ``source``
    names where the table came from in errors; ``identities``, a folder tree's identity of
    each class (bytes), or None."""

    def __init__(self, labels, source="<class table>", identities=None):
        self.labels = np.asarray(labels, np.int64)
        self.source = source
        if identities is not None and len(identities) != len(self.labels):
            raise DatasetError(f"{source}: {len(identities)} identities for {len(self.labels)} classes")
        self.identities = identities
        self._known = {}  # label -> class, for class_of

    def __len__(self):
        return len(self.labels)

    def classes_of(self, labels):
        """The class of every label of an int array; a label not in the table is an error."""
        labels = np.asarray(labels, np.int64)
        classes = np.searchsorted(self.labels, labels)
        inside = classes < len(self.labels)
        inside[inside] = self.labels[classes[inside]] == labels[inside]
        if not inside.all():
            raise DatasetError(f"{self.source}: has no class for label {int(labels[~inside][0])}")
        return classes

    def class_of(self, label):
        found = self._known.get(label)
        if found is None:  # looked up once per label: jobs ask label by label, shuffled too
            found = self._known[label] = int(self.classes_of([label])[0])
        return found

    def write(self, path):
        lines = [f"{label}\t{rank}".encode() for rank, label in enumerate(self.labels.tolist())]
        header = TABLE_HEADER.encode()
        if self.identities is not None:
            header += f"\t{IDENTITY_COLUMN}".encode()
            lines = [line + b"\t" + identity for line, identity in zip(lines, self.identities)]
        write_bytes(path, b"".join(line + b"\n" for line in [header, *lines]))

    @classmethod
    def read(cls, path):
        """The table of a ``classes.tsv``, checked: labels ascending, classes 0..C-1 in order;
        a folder tree's identities with it."""
        with open(path, "rb") as stream:
            header = stream.readline().rstrip(b"\n").decode(errors="backslashreplace")
            with_identities = header == f"{TABLE_HEADER}\t{IDENTITY_COLUMN}"
            if header != TABLE_HEADER and not with_identities:
                raise DatasetError(f"{path}: not a class table (header {header!r}, expected {TABLE_HEADER!r})")
            labels, identities = [], [] if with_identities else None
            for line_number, line in enumerate(stream, start=2):
                fields = line.rstrip(b"\n").split(b"\t", 2)
                try:
                    if with_identities:
                        identities.append(fields.pop())
                    label, rank = (int(field) for field in fields)
                except (ValueError, IndexError):
                    expected = "<label>\\t<class>" + ("\\t<identity>" if with_identities else "")
                    got = line[:80].decode(errors="backslashreplace")
                    raise DatasetError(f"{path}: line {line_number}: expected '{expected}', got {got!r}") from None
                if rank != len(labels) or (labels and label <= labels[-1]):
                    raise DatasetError(
                        f"{path}: line {line_number}: label {label} class {rank}; expected class {len(labels)} "
                        "and labels in ascending order"
                    )
                labels.append(label)
        return cls(np.array(labels, np.int64), str(path), identities)


def identity_positions(names):
    """Positions of identity ``names`` (a folder tree's) in class order: as integers when every
    name is one (Keras_insightface's order), else ``sorted()``."""
    numeric = bool(names) and all(name.isdecimal() for name in names)
    return sorted(range(len(names)), key=(lambda at: int(names[at])) if numeric else names.__getitem__)


def identity_order(names):
    """Identity names in class order (``identity_positions``)."""
    names = list(names)
    return [names[at] for at in identity_positions(names)]


def chunk_labels(rec_path, idx_path, rows, label_mode="first"):
    """The distinct labels of the image records at index ``rows``, as the extraction takes them."""
    return np.unique(image_labels(rec_path, idx_path, rows, label_mode))

