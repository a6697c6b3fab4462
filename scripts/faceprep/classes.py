"""The class index of a dataset: every distinct label, sorted as integers, numbered 0..C-1.

Training code wants classes 0..C-1, and labels need not be: im2rec datasets may skip
labels or start anywhere. The class of a label is its rank among the dataset's distinct
labels, so classes keep the labels' order. The table is ``classes.tsv``, one
``label<TAB>class`` line per class under a ``label\tclass`` header.
"""

import numpy as np

from faceprep.atomic import write_bytes
from faceprep.errors import DatasetError
from faceprep.insightface import image_labels

TABLE_HEADER = "label\tclass"


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
    names where the table came from in errors."""

    def __init__(self, labels, source="<class table>"):
        self.labels = np.asarray(labels, np.int64)
        self.source = source
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
        lines = [TABLE_HEADER, *(f"{label}\t{rank}" for rank, label in enumerate(self.labels.tolist()))]
        write_bytes(path, ("\n".join(lines) + "\n").encode())

    @classmethod
    def read(cls, path):
        """The table of a ``classes.tsv``, checked: labels ascending, classes 0..C-1 in order."""
        with open(path) as stream:
            header = stream.readline().rstrip("\n")
            if header != TABLE_HEADER:
                raise DatasetError(f"{path}: not a class table (header {header!r}, expected {TABLE_HEADER!r})")
            labels = []
            for line_number, line in enumerate(stream, start=2):
                fields = line.rstrip("\n").split("\t")
                try:
                    label, rank = (int(field) for field in fields)
                except ValueError:
                    raise DatasetError(f"{path}: line {line_number}: expected '<label>\\t<class>', got {line[:80]!r}") from None
                if rank != len(labels) or (labels and label <= labels[-1]):
                    raise DatasetError(
                        f"{path}: line {line_number}: label {label} class {rank}; expected class {len(labels)} "
                        "and labels in ascending order"
                    )
                labels.append(label)
        return cls(np.array(labels, np.int64), str(path))


def chunk_labels(rec_path, idx_path, rows, label_mode="first"):
    """The distinct labels of the image records at index ``rows``, as the extraction takes them."""
    return np.unique(image_labels(rec_path, idx_path, rows, label_mode))

