"""Shard writers: a chunk's record stream as one WebDataset tar or one TFRecord file.

Both are writers of ``faceprep.extract.extract_chunk`` (``write(key, label, image)``,
``close()``, ``abort()``). A shard is written to ``<shard>.tmp``, hashed as it is written,
fsynced and renamed on ``close``; then its summary (file, images, bytes, SHA-256) is
written, the mark that the shard is done. Neither writer imports TensorFlow.

The tar headers and the tf.train.Example are encoded here rather than by ``tarfile`` and
protobuf: ``TarInfo.tobuf`` costs ~30 us a header, three headers an image, more than
reading and writing the image itself; both formats are small and fixed, and the tests read
the output with ``tar``, ``tarfile``, the ``webdataset`` library and TensorFlow's parser.
"""

import contextlib
import hashlib
import os
import struct

import crc32c
import numpy as np

from faceprep.atomic import CommitOnExit, create_file, naming, refuse_foreign, write_atomically, write_json
from faceprep.errors import DatasetError

# Format name in the config -> file extension of its shards.
SHARD_FORMATS = {"webdataset": "tar", "tfrecord": "tfrecord"}
SHARD_ORDERS = ("rec", "shuffled")
# Bytes buffered before a write() to the shard file.
WRITE_BUFFER = 1 << 20
# Rows gathered at a time by write_shuffled_rows.
ROWS_BLOCK = 1 << 20


def shard_file_name(dataset, chunk, shard_format):
    return f"{dataset}-{chunk:05d}.{SHARD_FORMATS[shard_format]}"


class _ShardFile(CommitOnExit):
    """The bytes of one shard: written to ``<path>.tmp``, counted and hashed.

    Both names are refused if a link or another non-file sits there (``atomic``), and a
    write error (a full disk) names the shard.
    """

    shard_format = None

    def __init__(self, path, summary_path, classes):
        self.path = os.fspath(path)
        self.summary_path = summary_path
        self.classes = classes
        self.images = self.size = 0
        self._hash = hashlib.sha256()
        refuse_foreign(self.path)
        self._stream = open(create_file(f"{self.path}.tmp"), "wb", buffering=WRITE_BUFFER)

    def _write(self, data):
        try:
            self._stream.write(data)
        except OSError as error:
            raise naming(error, self.path) from None
        self._hash.update(data)
        self.size += len(data)

    def _class_of(self, key, label):
        try:
            return self.classes.class_of(label)
        except DatasetError as error:
            raise DatasetError(f"{self.path}: image record key {key}: {error}") from None

    def _finish(self):
        """Bytes that end the file (the tar end-of-archive blocks)."""
        return b""

    def close(self):
        try:
            self._write(self._finish())
            self._stream.flush()
            os.fsync(self._stream.fileno())
            self._stream.close()
        except OSError as error:
            self.abort()
            raise naming(error, self.path) from None
        os.replace(f"{self.path}.tmp", self.path)
        write_json(self.summary_path, self.summary())

    def summary(self):
        return {
            "file": os.path.basename(self.path),
            "format": self.shard_format,
            "images": self.images,
            "bytes": self.size,
            "sha256": self._hash.hexdigest(),
        }

    def abort(self):
        with contextlib.suppress(OSError):  # a full disk fails the buffer's last flush too
            self._stream.close()
        os.unlink(f"{self.path}.tmp")


# --- WebDataset: a POSIX ustar archive, members <key>.jpg, <key>.cls, <key>.json per image.

TAR_BLOCK = 512
# The members of one image, in this order.
IMAGE_MEMBERS = (b".jpg", b".cls", b".json")
# tar pads the archive to records of 20 blocks; readers accept it either way.
TAR_RECORD = 20 * TAR_BLOCK
_NAME_SIZE = 100
# Header fields after name, mode, uid and gid: size (12), then mtime 0, checksum, type '0'
# (regular file), no link name, "ustar\0" "00", empty user/group names, devices 0, no prefix.
_MODE_OWNER = b"0000644\0" + b"0000000\0" * 2
_AFTER_SIZE = b"00000000000\0"
_AFTER_CHECKSUM = (
    b"0" + bytes(100) + b"ustar\x0000" + bytes(64) + b"0000000\0" * 2 + bytes(155) + bytes(12)
)
# The checksum counts its own field as 8 spaces.
_CONSTANT_SUM = sum(_MODE_OWNER) + sum(_AFTER_SIZE) + 8 * ord(" ") + sum(_AFTER_CHECKSUM)


def tar_header(name, size):
    """The 512-byte ustar header of a regular file ``name`` (bytes, < 100) of ``size`` bytes,
    owned by root, mode 0644, mtime 0: equal inputs give equal shards."""
    size_field = b"%011o\0" % size
    checksum = _CONSTANT_SUM + sum(name) + sum(size_field)
    header = b"".join((
        name.ljust(_NAME_SIZE, b"\0"), _MODE_OWNER, size_field, _AFTER_SIZE, b"%06o\0 " % checksum, _AFTER_CHECKSUM
    ))
    assert len(header) == TAR_BLOCK, len(header)
    return header


def _tar_padding(size):
    return bytes(-size % TAR_BLOCK)


class WebDatasetWriter(_ShardFile):
    """One WebDataset shard: per image ``<key>.jpg`` (the record's image bytes, untouched),
    ``<key>.cls`` (its class, ASCII decimal) and ``<key>.json`` (``{"key", "label", "class"}``)."""

    shard_format = "webdataset"

    def write(self, key, label, image):
        image_class = self._class_of(key, label)
        contents = (image, b"%d" % image_class, b'{"key": %d, "label": %d, "class": %d}' % (key, label, image_class))
        parts = []
        for suffix, data in zip(IMAGE_MEMBERS, contents):
            parts += [tar_header(b"%d%s" % (key, suffix), len(data)), data, _tar_padding(len(data))]
        self._write(b"".join(parts))  # one write and one hash update an image
        self.images += 1

    def _finish(self):
        end = self.size + 2 * TAR_BLOCK
        return bytes(2 * TAR_BLOCK + -end % TAR_RECORD)


# --- TFRecord: per record uint64 length, masked CRC32C of it, data, masked CRC32C of the data.

_CRC_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data):
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = crc32c.crc32c(data)
    return ((crc >> 15 | crc << 17) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def tfrecord_frame(data):
    """``data`` framed as one TFRecord record: ``(head, tail)`` to write around it."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", masked_crc32c(data))


_ONE_BYTE_VARINTS = [bytes((value,)) for value in range(0x80)]


def _varint(value):
    if 0 <= value < 0x80:
        return _ONE_BYTE_VARINTS[value]
    value &= (1 << 64) - 1  # int64 as protobuf stores it: two's complement, 10 bytes if negative
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Tags of the length-delimited fields (wire type 2) used: field 1, 2 and 3.
_FIELD1, _FIELD2, _FIELD3 = b"\x0a", b"\x12", b"\x1a"


def encode_example(features):
    """A ``tf.train.Example`` of ``{name: bytes or int}``, serialized as protobuf does with
    ``deterministic=True`` (map entries by name; int64 lists packed).

    Example { Features features = 1 }, Features { map<string, Feature> feature = 1 }, each map
    entry { string key = 1; Feature value = 2 }, Feature { BytesList bytes_list = 1 |
    Int64List int64_list = 3 }, both lists { repeated value = 1 }. Lengths are computed
    outward from the values, so each value is copied once, into the result.
    """
    parts = []
    for name in sorted(features):
        value = features[name]
        if isinstance(value, int):
            number = _varint(value)
            feature = (_FIELD3 + _varint(len(number) + 2) + _FIELD1 + _varint(len(number)) + number,)
        else:
            value_head = _FIELD1 + _varint(len(value))
            feature = (_FIELD1 + _varint(len(value_head) + len(value)) + value_head, value)
        feature_size = sum(map(len, feature))
        key = name.encode()
        head = _FIELD1 + _varint(len(key)) + key + _FIELD2 + _varint(feature_size)
        parts += [_FIELD1, _varint(len(head) + feature_size), head, *feature]
    return b"".join([_FIELD1, _varint(sum(map(len, parts))), *parts])


class TFRecordWriter(_ShardFile):
    """One TFRecord shard: a ``tf.train.Example`` per image with ``image/encoded`` (the
    record's image bytes), ``image/format`` (``jpeg``), ``image/class/label`` (class),
    ``image/key`` (record key) and ``image/label`` (raw label)."""

    shard_format = "tfrecord"

    def write(self, key, label, image):
        example = encode_example({
            "image/encoded": image,
            "image/format": b"jpeg",
            "image/class/label": self._class_of(key, label),
            "image/key": key,
            "image/label": label,
        })
        head, tail = tfrecord_frame(example)
        self._write(head + example + tail)
        self.images += 1


SHARD_WRITERS = {writer.shard_format: writer for writer in (WebDatasetWriter, TFRecordWriter)}


def write_shuffled_rows(rows_path, shuffled_path, seed):
    """Write a plan's image rows in the order of a permutation seeded with ``seed``, so that
    the plan's chunk ``[start, end)`` of the result is a random subset of the images.

    The permutation takes 8 bytes an image; rows are gathered from a mapping ROWS_BLOCK at a time.
    """
    rows = np.load(rows_path, mmap_mode="r")
    order = np.random.default_rng(seed).permutation(len(rows))

    def write(stream):
        np.lib.format.write_array_header_1_0(
            stream, {"descr": np.lib.format.dtype_to_descr(rows.dtype), "fortran_order": False, "shape": rows.shape}
        )
        for start in range(0, len(order), ROWS_BLOCK):
            stream.write(np.ascontiguousarray(rows[order[start : start + ROWS_BLOCK]]).tobytes())

    write_atomically(shuffled_path, write)
