"""The Keras_insightface index ``<images>_shuffle.npz`` of an extracted tree and its
``<images>_classes.tsv`` label table, from the chunk manifests."""

import os
import zipfile

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.classes import ClassTable, distinct_labels
from faceprep.folders import read_manifest_images

# Index entries formed and written at a time by build_index.
NPZ_BLOCK = 1 << 16


def build_index(manifest_paths, images_dir, index_path, classes_path, seed=0, identities=None):
    """Write the Keras_insightface index ``<images>_shuffle.npz`` and its class table.

    The index holds exactly the keys ``image_names`` (paths of every image) and
    ``image_classes``, what Keras_insightface's ``pre_process_folder`` computes for the
    same tree: an image's class is the rank of its folder name among all folder names
    sorted as integers, so classes run 0..C-1 whatever the labels (a third key would make
    it read the file as a dataset with embeddings). Shuffled as it does, but with a fixed
    seed so reruns agree. ``classes_path`` gets the ``label -> class`` table (TSV), with a
    folder tree's ``identities`` (each class's directory) when given.
    Paths are only formed block by block while writing, so memory is 24 bytes per image
    (label, key, order) rather than the whole array of path strings.
    Returns ``(images, classes)``.
    """
    images_dir = os.path.abspath(images_dir)
    images = read_manifest_images(manifest_paths)
    labels, keys = images.labels, images.keys
    # Folder names are the labels in decimal: sorted as integers, they are the sorted labels,
    # so the folder ranks are the dataset's class table (the shards' classes too).
    table = ClassTable(distinct_labels(labels), os.fspath(classes_path), identities)
    # Shuffled in place as int32 (4 bytes an image, not 8): Generator.permutation(n) is this
    # same shuffle of an int64 arange, so the order is the same.
    order = np.arange(len(labels), dtype=np.int32 if len(labels) < 2**31 else np.int64)
    np.random.default_rng(seed).shuffle(order)

    def names(block):
        return np.array([f"{images_dir}/{label}/{key}.jpg" for label, key in zip(labels[block].tolist(), keys[block].tolist())])

    def classes(block):
        return table.classes_of(labels[block])

    # An empty str array is '<U1', as np.array([], dtype=str) makes it.
    name_type = np.dtype(f"<U{len(images_dir) + 1 + images.longest if len(order) else 1}")
    write_npz(index_path, {"image_names": (name_type, names), "image_classes": (np.int64, classes)}, order)
    table.write(classes_path)
    return len(order), len(table)


def write_npz(path, arrays, order):
    """Write ``.npy`` members as ``np.savez_compressed`` does, with fixed timestamps (equal
    arrays give equal bytes), each array made a block at a time.

    ``arrays`` maps member names to ``(dtype, block)``, where ``block(positions)`` returns
    the elements at those positions; member element ``i`` is at position ``order[i]``.
    """

    def write(stream):
        with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, (dtype, block) in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.compress_type = zipfile.ZIP_DEFLATED
                # Shuffled paths take zlib's default level 6 about twice as long as level 1
                # (the index's tail on the run's critical path), for a quarter less size.
                # ZipFile.open(ZipInfo) takes the level from the
                # ZipInfo (_compresslevel up to Python 3.12, an alias of compress_level since).
                member._compresslevel = 1
                with archive.open(member, "w", force_zip64=True) as npy:
                    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
                    np.lib.format.write_array_header_1_0(npy, {**header, "shape": (len(order),)})
                    for start in range(0, len(order), NPZ_BLOCK):
                        npy.write(np.asarray(block(order[start : start + NPZ_BLOCK]), dtype).tobytes())

    write_atomically(path, write)
