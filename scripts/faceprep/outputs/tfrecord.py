"""TFRecord shards: one ``tf.train.Example`` per image, framed as TFRecord records; written
here and walked here, without TensorFlow (the tests read them with TensorFlow's parser).

The Example is encoded here rather than by protobuf: the message is small and fixed, and
each image's bytes are then copied once, into the record.
"""

import functools
import struct

import crc32c

from faceprep.errors import DatasetError
from faceprep.image_header import image_format
from faceprep.outputs.shard_file import ShardFile, ShardFormat

_CRC_MASK_DELTA = 0xA282EAD8
# Per record: uint64 length, masked CRC32C of it, data, masked CRC32C of the data.
_HEAD = struct.Struct("<QI")


def masked_crc32c(data):
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant."""
    crc = crc32c.crc32c(data)
    return ((crc >> 15 | crc << 17) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame(data):
    """``data`` framed as one TFRecord record: ``(head, tail)`` to write around it."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)), struct.pack("<I", masked_crc32c(data))


# Varints of 0..2^14-1 (one or two bytes: every length and most values of an Example), made once.
_TABLED_VARINTS = 1 << 14
_VARINTS = [bytes((value,)) if value < 0x80 else bytes((value & 0x7F | 0x80, value >> 7))
            for value in range(_TABLED_VARINTS)]


def _varint(value):
    if 0 <= value < _TABLED_VARINTS:
        return _VARINTS[value]
    value &= (1 << 64) - 1  # int64 as protobuf stores it: two's complement, 10 bytes if negative
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Tags of the length-delimited fields (wire type 2) used: field 1, 2 and 3.
_FIELD1, _FIELD2, _FIELD3 = b"\x0a", b"\x12", b"\x1a"


@functools.cache
def _entry_head(name):
    """A feature map entry's bytes before its Feature's length: the key field and the value's tag."""
    key = name.encode()
    return _FIELD1 + _varint(len(key)) + key + _FIELD2


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
            # A varint is at most 10 bytes: the list's and the Feature's lengths are one byte.
            feature = bytes((_FIELD3[0], len(number) + 2, _FIELD1[0], len(number))) + number
            head = _entry_head(name) + _VARINTS[len(feature)]
            parts += [_FIELD1, _varint(len(head) + len(feature)), head, feature]
        else:
            value_head = _FIELD1 + _varint(len(value))
            list_head = _FIELD1 + _varint(len(value_head) + len(value)) + value_head
            feature_size = len(list_head) + len(value)
            head = _entry_head(name) + _varint(feature_size)
            parts += [_FIELD1, _varint(len(head) + feature_size), head, list_head, value]
    return b"".join([_FIELD1, _varint(sum(map(len, parts))), *parts])


class TFRecordWriter(ShardFile):
    """One TFRecord shard: a ``tf.train.Example`` per image with ``image/encoded`` (the
    record's image bytes), ``image/format`` (what its bytes are: ``jpeg``, ``png``, ``gif``,
    ``bmp``, ``webp`` or ``unknown``; a folder tree holds all of these), ``image/class/label``
    (class), ``image/key`` (record key) and ``image/label`` (raw label)."""

    def write(self, key, label, image):
        example = encode_example({
            "image/encoded": image,
            "image/format": (image_format(image) or "unknown").encode(),
            "image/class/label": self._class_of(key, label),
            "image/key": key,
            "image/label": label,
        })
        head, tail = frame(example)
        self._write(head + example + tail)
        self.images += 1


def count_images(path, stream):
    """Records of a shard read from ``stream``, each length and data checked against its
    masked CRC32C."""
    offset, records = 0, 0
    while head := stream.read(_HEAD.size):
        if len(head) < _HEAD.size:
            raise DatasetError(f"{path}: byte {offset}: file ends inside record {records}'s header")
        length, length_crc = _HEAD.unpack(head)
        if masked_crc32c(head[:8]) != length_crc:
            raise DatasetError(f"{path}: byte {offset}: record {records}'s length fails its CRC")
        data = stream.read(length + 4)
        if len(data) < length + 4:
            raise DatasetError(f"{path}: byte {offset}: record {records} of {length} bytes runs past the end")
        if masked_crc32c(data[:length]) != struct.unpack_from("<I", data, length)[0]:
            raise DatasetError(f"{path}: byte {offset}: record {records}'s data fails its CRC")
        offset += _HEAD.size + length + 4
        records += 1
    return records


FORMAT = ShardFormat(
    name="tfrecord",
    extension="tfrecord",
    writer=TFRecordWriter,
    count_images=count_images,
    members={"image/encoded": "bytes: the record's image bytes",
             "image/format": "bytes: jpeg, png, gif, bmp, webp or unknown", "image/class/label": "int64: class",
             "image/key": "int64: record key", "image/label": "int64: raw label"},
    # Framing, feature names and the varints around them.
    bytes_per_image=120,
)
