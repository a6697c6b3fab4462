"""WebDataset shards: POSIX ustar archives with members ``<key>.jpg``, ``<key>.cls`` and
``<key>.json`` per image, in that order; written here and walked here, from one table of
header fields.

The headers are encoded here rather than by ``tarfile``: ``TarInfo.tobuf`` costs ~30 us a
header, three headers an image, more than reading and writing the image itself. The tests
read the shards with ``tar``, ``tarfile`` and the ``webdataset`` library.
"""

import os

from faceprep.errors import DatasetError
from faceprep.outputs.shard_file import ShardFile, ShardFormat

BLOCK = 512
# The members of one image, in this order.
IMAGE_MEMBERS = (b".jpg", b".cls", b".json")
# tar pads the archive to records of 20 blocks; readers accept it either way.
RECORD = 20 * BLOCK
# The ustar header fields this module writes or reads: (start, end) in the 512-byte block.
NAME, MODE, UID, GID, SIZE, MTIME, CHECKSUM = (0, 100), (100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156)
TYPEFLAG, MAGIC, VERSION, DEVMAJOR, DEVMINOR = (156, 157), (257, 263), (263, 265), (329, 337), (337, 345)
USTAR = b"ustar\0"


def _template():
    """A header of a regular file owned by root, mode 0644, mtime 0, no name and no size yet,
    its checksum field as the 8 spaces the checksum counts it as."""
    header = bytearray(BLOCK)
    for field, value in ((MODE, b"0000644\0"), (UID, b"0000000\0"), (GID, b"0000000\0"), (MTIME, b"00000000000\0"),
                         (CHECKSUM, b" " * 8), (TYPEFLAG, b"0"), (MAGIC, USTAR), (VERSION, b"00"),
                         (DEVMAJOR, b"0000000\0"), (DEVMINOR, b"0000000\0")):
        header[slice(*field)] = value
    return bytes(header)


_TEMPLATE = _template()
_TEMPLATE_SUM = sum(_TEMPLATE)


def tar_header(name, size):
    """The 512-byte ustar header of a regular file ``name`` (bytes, < 100) of ``size`` bytes:
    equal inputs give equal shards."""
    size_field = b"%011o\0" % size
    header = bytearray(_TEMPLATE)
    header[NAME[0] : NAME[0] + len(name)] = name
    header[slice(*SIZE)] = size_field
    header[slice(*CHECKSUM)] = b"%06o\0 " % (_TEMPLATE_SUM + sum(name) + sum(size_field))
    return bytes(header)


def _padding(size):
    return bytes(-size % BLOCK)


class WebDatasetWriter(ShardFile):
    """One WebDataset shard: per image ``<key>.jpg`` (the record's image bytes, untouched),
    ``<key>.cls`` (its class, ASCII decimal) and ``<key>.json`` (``{"key", "label", "class"}``)."""

    def write(self, key, label, image):
        image_class = self._class_of(key, label)
        contents = (image, b"%d" % image_class, b'{"key": %d, "label": %d, "class": %d}' % (key, label, image_class))
        parts = []
        for suffix, data in zip(IMAGE_MEMBERS, contents):
            parts += [tar_header(b"%d%s" % (key, suffix), len(data)), data, _padding(len(data))]
        self._write(b"".join(parts))  # one write and one hash update an image
        self.images += 1

    def _finish(self):
        end = self.size + 2 * BLOCK
        return bytes(2 * BLOCK + -end % RECORD)


def count_images(path, stream):
    """Images of a shard read from ``stream``, walking the tar headers: every image is
    ``<key>.jpg``, ``<key>.cls``, ``<key>.json`` in that order, and the archive ends in zero
    blocks. Header checksums are not summed here: the SHA-256 covers damage."""
    offset, members, key = 0, 0, None
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK:
            raise DatasetError(f"{path}: byte {offset}: archive ends without its end-of-archive zero blocks")
        if header.count(0) == BLOCK:
            break
        if header[slice(*MAGIC)] != USTAR:
            raise DatasetError(f"{path}: byte {offset}: no ustar header where member {members + 1} should start")
        name = header[slice(*NAME)].rstrip(b"\0")
        try:
            member_size = int(header[slice(*SIZE)].rstrip(b"\0 "), 8)
        except ValueError:
            raise DatasetError(f"{path}: byte {offset}: member {name!r} has no octal size") from None
        stem, dot, suffix = name.partition(b".")
        if dot + suffix != IMAGE_MEMBERS[members % 3] or (members % 3 and stem != key):
            raise DatasetError(f"{path}: byte {offset}: member {name.decode(errors='replace')} out of place "
                               "(each image is <key>.jpg, <key>.cls, <key>.json)")
        key = stem
        members += 1
        data_size = member_size + -member_size % BLOCK
        stream.seek(data_size, os.SEEK_CUR)
        offset += BLOCK + data_size
    rest = stream.read()
    if members % 3 or len(rest) < BLOCK or rest.count(0) != len(rest):
        raise DatasetError(f"{path}: byte {offset}: archive ends without its end-of-archive zero blocks")
    return members // 3


FORMAT = ShardFormat(
    name="webdataset",
    extension="tar",
    writer=WebDatasetWriter,
    count_images=count_images,
    members={"<key>.jpg": "the record's image bytes", "<key>.cls": "class, ASCII decimal",
             "<key>.json": '{"key", "label", "class"}'},
    # Three headers and, on average, half a block of padding for each of three members.
    bytes_per_image=3 * BLOCK + 3 * BLOCK // 2,
)
