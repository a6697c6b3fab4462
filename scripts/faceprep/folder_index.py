"""The Keras_insightface index ``<images>_shuffle.npz`` of an extracted tree, from its chunk manifests."""

import os
import zipfile
from array import array

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.folders import read_manifest
from faceprep.insightface import DatasetError

# Index entries formed and written at a time by build_index.
NPZ_BLOCK = 1 << 16


def _indexed_images(manifest_paths):
    """``(labels, keys, longest path)`` of every image the manifests list, as int64 arrays."""
    labels, keys = array("q"), array("q")
    longest = 0
    for manifest_path in manifest_paths:
        for relative, label, _, _ in read_manifest(manifest_path):
            directory, _, name = relative.partition("/")
            stem = name[: -len(".jpg")]
            if directory != str(label) or not name.endswith(".jpg") or not stem.isdigit():
                raise DatasetError(f"{manifest_path}: path {relative!r} is not <label>/<key>.jpg of label {label}")
            labels.append(label)
            keys.append(int(stem))
            longest = max(longest, len(relative))
    return np.frombuffer(labels, np.int64), np.frombuffer(keys, np.int64), longest


def build_index(manifest_paths, images_dir, index_path, seed=0):
    """Write the Keras_insightface ``<images>_shuffle.npz`` index from the chunk manifests.

    Keys ``image_names`` (paths of every image) and ``image_classes`` (int labels),
    shuffled as ``pre_process_folder`` does, but with a fixed seed so reruns agree.
    Paths are only formed block by block while writing, so memory is 24 bytes per
    image (label, key, order) rather than the whole array of path strings.
    """
    images_dir = os.path.abspath(images_dir)
    labels, keys, longest = _indexed_images(manifest_paths)
    order = np.random.default_rng(seed).permutation(len(labels))

    def names(block):
        return np.array([f"{images_dir}/{label}/{key}.jpg" for label, key in zip(labels[block].tolist(), keys[block].tolist())])

    # An empty str array is '<U1', as np.array([], dtype=str) makes it.
    name_type = np.dtype(f"<U{len(images_dir) + 1 + longest if len(order) else 1}")
    write_npz(index_path, {"image_names": (name_type, names), "image_classes": (np.int64, labels.__getitem__)}, order)
    return len(order)


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
