"""RecordIO as its specification spells it, for the tests: framing parsed by hand, the parts a
payload must be split into, random payloads holding the magic, and small recs written with
faceprep.recordio's writer."""

import struct

from faceprep.recordio import RecordWriter

# Spelled out from the format rather than imported, so the tests check the module's constants too.
MAGIC = struct.pack("<I", 0xCED7230A)
# Payload pieces the cases are built from: one aligned word, two words, a two-byte tail.
A, B, TAIL = b"AAAA", b"BBBBbbbb", b"tt"


def frames(data):
    """Parse RecordIO framing by the spec: ``[(cflag, data), ...]``; checks magic and zero padding."""
    parsed = []
    position = 0
    while position < len(data):
        assert data[position : position + 4] == MAGIC, f"no magic at byte {position}"
        (lrec,) = struct.unpack_from("<I", data, position + 4)
        cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        start, end = position + 8, position + 8 + length
        padded_end = start + (length + 3) // 4 * 4
        assert data[end:padded_end] == bytes(padded_end - end), f"non-zero padding after byte {end}"
        parsed.append((cflag, data[start:end]))
        position = padded_end
    assert position == len(data)
    return parsed


def expected_frames(payload):
    """The parts a payload must be framed into: split at every 4-aligned copy of the magic."""
    cuts = [p for p in range(0, len(payload) - 3, 4) if payload[p : p + 4] == MAGIC]
    if not cuts:
        return [(0, payload)]
    starts, ends = [0] + [cut + 4 for cut in cuts], cuts + [len(payload)]
    flags = [1] + [2] * (len(cuts) - 1) + [3]
    return [(flag, payload[start:end]) for flag, start, end in zip(flags, starts, ends)]


def random_payload(rng, max_length=300):
    """Random bytes with copies of the magic spliced in at aligned and unaligned offsets."""
    data = bytearray(rng.randbytes(rng.randint(0, max_length)))
    for _ in range(rng.randint(0, 6)):
        position = rng.randint(0, len(data))
        if rng.random() < 0.6:
            position -= position % 4
        data[position:position] = MAGIC
    return bytes(data)


def write_records(directory, records):
    """Write ``[(key, payload), ...]`` in list order with RecordWriter; returns (rec, idx) paths."""
    rec, idx = directory / "data.rec", directory / "data.idx"
    with RecordWriter(rec, idx) as writer:
        for key, payload in records:
            writer.write(key, payload)
    return rec, idx


def record_offset(idx, key):
    for line in idx.read_text().splitlines():
        line_key, offset = line.split("\t")
        if int(line_key) == key:
            return int(offset)
    raise KeyError(key)


def assert_message_names(error, *fragments):
    message = str(error.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"
