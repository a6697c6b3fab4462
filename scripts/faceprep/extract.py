"""insightface RecordIO datasets -> ``<images>/<label>/<key>.jpg`` trees, chunk by chunk.

A dataset's key 0 is a header record labelled ``[N+1, N+1+C]``: images are keys
1..N and keys N+1..N+C are identity records. ``plan_chunks`` turns that header
into key ranges; ``extract_chunk`` writes one range and then, atomically, its
manifest, which is the only mark that the chunk is done.
"""

import errno
import math
import os
import struct
import zipfile
import zlib
from array import array
from pathlib import Path

import numpy as np

from faceprep.atomic import write_atomically
from faceprep.recordio import IR_FORMAT, IR_SIZE, IndexedRecordReader, RecordIOError

MANIFEST_COLUMNS = ("path", "label", "bytes", "crc32")
_IR_HEAD = struct.Struct(IR_FORMAT)
_FIRST_LABEL = struct.Struct("<f")
# Index entries formed and written at a time by build_index.
NPZ_BLOCK = 1 << 16
# Problems named in a failed verification's message (all are counted).
SHOWN_PROBLEMS = 20


class DatasetError(ValueError):
    """A dataset that is not what its header, index or property file promise."""


# Labels and keys end up in int64 arrays (the index's image_classes).
_LARGEST_COUNT = 2**63 - 1


def _count(value, what, where):
    """``value`` as a non-negative integer that fits int64, or a DatasetError naming ``where``."""
    if not math.isfinite(value) or value < 0 or value != int(value) or value > _LARGEST_COUNT:
        raise DatasetError(f"{where}: {what} is {value!r}, expected a non-negative integer below 2**63")
    return int(value)


def read_dataset_header(reader):
    """``(num_images, num_identities)`` from the header record (key 0), checked against the index."""
    where = f"{reader.rec_path}: header record (key 0)"
    if 0 not in reader:
        raise DatasetError(f"{reader.idx_path}: no entry for key 0, the insightface header record")
    header, _ = reader.read_unpacked(0)
    if header.flag < 2:
        raise DatasetError(
            f"{where}: label is {header.label!r}, expected the array [N+1, N+1+C] of an insightface dataset"
        )
    images_end = _count(header.label[0], "label[0] (one past the last image key)", where)
    identities_end = _count(header.label[1], "label[1] (one past the last identity key)", where)
    if images_end < 1:
        raise DatasetError(f"{where}: label[0] is {images_end}, expected at least 1 (images are keys 1..label[0]-1)")
    if identities_end < images_end:
        raise DatasetError(f"{where}: label {list(header.label)} ends before it starts")
    for first, end, what in ((1, images_end, "image"), (images_end, identities_end, "identity")):
        missing = reader.missing_keys(np.arange(first, end))
        if len(missing):
            raise DatasetError(
                f"{reader.idx_path}: the header record promises {what} keys {first}..{end - 1}, "
                f"but {len(missing)} are missing from the index (first: key {int(missing[0])})"
            )
    return images_end - 1, identities_end - images_end


def read_property(path):
    """``(num_identities, height, width)`` from an insightface ``property`` file."""
    text = Path(path).read_text().strip()
    try:
        identities, height, width = (int(field) for field in text.split(","))
    except ValueError:
        raise DatasetError(f"{path}: expected 'identities,height,width', got {text[:80]!r}") from None
    return identities, height, width


def plan_chunks(rec_path, idx_path, property_path, chunk_size, offsets_path):
    """The chunk plan of a dataset: its sizes and the image key range ``[start, end)`` of every chunk.

    Also saves the parsed index as ``offsets_path`` (``.npy``), which chunk jobs
    memory-map instead of each parsing a multi-million-line ``.idx`` again.
    """
    with IndexedRecordReader(rec_path, idx_path) as reader:
        num_images, num_identities = read_dataset_header(reader)
        write_atomically(offsets_path, lambda stream: np.save(stream, reader.offsets))
    plan = {"images": num_images, "identities": num_identities, "chunk_size": chunk_size}
    if property_path is not None:
        property_identities, height, width = read_property(property_path)
        if property_identities != num_identities:
            raise DatasetError(
                f"{property_path}: says {property_identities} identities, but the header record of "
                f"{rec_path} says {num_identities}"
            )
        plan["image_size"] = [height, width]
    plan["chunks"] = [
        [start, min(start + chunk_size, num_images + 1)] for start in range(1, num_images + 1, chunk_size)
    ]
    return plan


def image_label(payload, mode, where):
    """The class of an image record: its label (``mode='first'``: scalar or label[0]; ``'sum'``: np.sum)."""
    flag, label = _IR_HEAD.unpack_from(payload)[:2]
    if flag > 0:
        if len(payload) < IR_SIZE + 4 * flag:
            raise RecordIOError(f"{where}: IRHeader announces {flag} float32 labels but the payload ends first")
        if mode == "sum":
            label = np.frombuffer(payload, np.float32, flag, IR_SIZE).sum()
        else:
            label = _FIRST_LABEL.unpack_from(payload, IR_SIZE)[0]
    if mode == "sum":
        # The original script's int(np.sum(label)): float32 sum, truncated.
        if not math.isfinite(label) or label < 0 or label > _LARGEST_COUNT:
            raise DatasetError(f"{where}: label sum is {label!r}, expected a non-negative number below 2**63")
        return int(label), IR_SIZE + 4 * max(flag, 0)
    return _count(label, "label", where), IR_SIZE + 4 * max(flag, 0)


class _LabelDirectories:
    """Open descriptors of ``<images_dir>/<label>`` directories, created on first use.

    Opening each image relative to its label directory spares the kernel a path walk per
    file. Records of a label usually lie together, so a few open directories suffice.
    """

    OPEN_AT_MOST = 64

    def __init__(self, images_dir):
        os.makedirs(images_dir, exist_ok=True)
        self._root = os.open(images_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._open = {}

    def __getitem__(self, label):
        descriptor = self._open.get(label)
        if descriptor is None:
            if len(self._open) >= self.OPEN_AT_MOST:
                os.close(self._open.pop(next(iter(self._open))))
            name = str(label)
            try:
                os.mkdir(name, dir_fd=self._root)
            except FileExistsError:
                pass
            descriptor = self._open[label] = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._root
            )
        return descriptor

    def close(self):
        for descriptor in [*self._open.values(), self._root]:
            os.close(descriptor)
        self._open.clear()


def extract_chunk(rec_path, idx_path, offsets_path, key_range, images_dir, manifest_path, label="first", progress=None):
    """Write images ``key_range = [start, end)`` as ``<images_dir>/<label>/<key>.jpg``, then the manifest.

    Records are read in file-offset order from a mapping of the rec whose pages are
    released behind the reader, so memory stays flat whatever the size of the rec.
    Files are written in place: an interrupted chunk has no manifest and is rewritten
    whole (names are deterministic), so the manifest, renamed into place last, is the
    commit. Every file is checked to be written whole (a short write means a full disk).
    ``progress`` is called with the number of images written since the last call.
    """
    images_dir = os.fspath(images_dir)
    start, end = key_range
    rows = []
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    offsets = np.load(offsets_path, mmap_mode="r")
    directories = _LabelDirectories(images_dir)
    try:
        with IndexedRecordReader(rec_path, idx_path, offsets) as reader:
            for count, (key, payload) in enumerate(reader.iter_keys(np.arange(start, end)), start=1):
                class_label, image_start = image_label(payload, label, f"{rec_path}: image record key {key}")
                image = memoryview(payload)[image_start:]
                name = f"{key}.jpg"
                try:
                    descriptor = os.open(name, flags, 0o644, dir_fd=directories[class_label])
                    try:
                        if os.write(descriptor, image) != len(image):
                            raise OSError(errno.ENOSPC, "short write (disk full?)")
                    finally:
                        os.close(descriptor)
                except OSError as error:
                    path = os.path.join(images_dir, str(class_label), name)
                    raise OSError(error.errno, f"writing image record key {key}: {error.strerror}", path) from None
                rows.append(f"{class_label}/{name}\t{class_label}\t{len(image)}\t{zlib.crc32(image):08x}\n")
                if progress is not None and count % 1000 == 0:
                    progress(1000)
    finally:
        directories.close()
    if progress is not None and len(rows) % 1000:
        progress(len(rows) % 1000)
    write_manifest(manifest_path, rows)
    return len(rows)


def write_manifest(path, rows):
    header = "\t".join(MANIFEST_COLUMNS) + "\n"
    write_atomically(path, lambda stream: stream.write("".join([header, *rows]).encode()))


def read_manifest(path):
    """Rows of a chunk manifest as ``(path, label, bytes, crc32)`` tuples."""
    with open(path) as stream:
        header = stream.readline().rstrip("\n").split("\t")
        if tuple(header) != MANIFEST_COLUMNS:
            raise DatasetError(f"{path}: not a chunk manifest (header {header!r})")
        rows = []
        for line_number, line in enumerate(stream, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 4:
                raise DatasetError(f"{path}: line {line_number}: expected 4 tab-separated fields")
            try:
                rows.append((fields[0], int(fields[1]), int(fields[2]), int(fields[3], 16)))
            except ValueError:
                raise DatasetError(
                    f"{path}: line {line_number}: expected an integer label and size and a hex CRC32, got {fields[1:]!r}"
                ) from None
    return rows


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


def verify_extraction(plan, manifest_paths, images_dir, label="first", check_crc=False):
    """Check the tree against the plan and the manifests; return a summary or raise DatasetError.

    Every manifest row must name a file of its label directory. Directories are listed
    (once per chunk) rather than each file stat'ed: extract_chunk already checked that
    every file was written whole. ``check_crc`` reads every file back and compares its
    size and CRC32 with the manifest.
    """
    # Only the first few file problems are kept: a tree deleted by mistake would otherwise
    # hold one message per image in memory.
    file_problems, file_problem_count = [], 0
    images = total_bytes = 0
    labels = set()
    for manifest_path in manifest_paths:
        rows = read_manifest(manifest_path)
        images += len(rows)
        listed_directory, listed = None, set()
        for relative, class_label, size, crc in sorted(rows):
            total_bytes += size
            labels.add(class_label)
            directory, _, name = relative.rpartition("/")
            if directory != listed_directory:
                listed_directory = directory
                try:
                    listed = set(os.listdir(os.path.join(images_dir, directory)))
                except FileNotFoundError:
                    listed = set()
            path = os.path.join(images_dir, relative)
            problem = None
            if name not in listed:
                problem = f"{path}: listed in {manifest_path} but missing"
            elif check_crc:
                with open(path, "rb") as stream:
                    data = stream.read()
                if len(data) != size:
                    problem = f"{path}: {len(data)} bytes, {manifest_path} says {size}"
                elif zlib.crc32(data) != crc:
                    problem = f"{path}: CRC32 differs from {manifest_path}"
            if problem:
                file_problem_count += 1
                if len(file_problems) < SHOWN_PROBLEMS:
                    file_problems.append(problem)
    problems = []
    if len(manifest_paths) != len(plan["chunks"]):
        problems.append(f"{len(manifest_paths)} chunk manifests, the plan has {len(plan['chunks'])} chunks")
    if images != plan["images"]:
        problems.append(f"{images} images extracted, the header record says {plan['images']}")
    if label == "first" and len(labels) != plan["identities"]:
        problems.append(
            f"{len(labels)} distinct labels extracted, the header record says {plan['identities']} identities"
        )
    summary = {
        "images": images,
        "expected_images": plan["images"],
        "identities": plan["identities"],
        "distinct_labels": len(labels),
        "bytes": total_bytes,
        "chunks": len(manifest_paths),
        "crc_checked": check_crc,
    }
    if problems or file_problems:
        count = len(problems) + file_problem_count
        shown = "\n  ".join(problems + file_problems)
        unshown = file_problem_count - len(file_problems)
        more = f"\n  ... and {unshown} more files" if unshown else ""
        raise DatasetError(f"verification of {images_dir} failed ({count} problems):\n  {shown}{more}")
    return summary
