"""Write an insightface-layout dataset (train.rec, train.idx, property) with MXNet's writer (test oracle).

Usage: write_insightface_rec.py --out DIR --images N --identities C --seed S
       [--label-style {scalar,array}] [--magic-every K] [--shuffle-physical] [--overlapping-identities]

Layout, as insightface's packers produce it:
- keys 1..N: image records, grouped by identity (identity i owns a contiguous key
  range; sizes vary, each at least 1). Label ``i`` (scalar, flag 0), or with
  ``--label-style array`` the pair ``[i, aligned]`` (aligned a random 0/1, flag 2).
  Written first; with ``--shuffle-physical`` in a shuffled key order, so readers
  cannot assume key order equals file order.
- keys N+1..N+C: one record per identity, label ``[start, end)`` of its image keys; with
  ``--overlapping-identities`` ``[start - 1, end + 1)`` instead, overlapping both neighbours
  as float32 rounding leaves Glint360K's identity records past 2^24.
- key 0: the header, label ``[N+1, N+1+C]``, written physically last.
- ``property``: "C,112,112".
Image payloads are pseudo-random bytes (200..3000 of them): extraction copies them
untouched, so they need not be JPEG. With ``--magic-every K`` every K-th image key
holds the RecordIO magic at several 4-aligned offsets (at the start of the image,
twice in a row, at the very end, and at a random place), which makes MXNet split the
record into continuation parts. Output is a function of the arguments alone.
"""

import argparse
import os
import random
import struct

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx

MAGIC_BYTES = struct.pack("<I", 0xCED7230A)


def identity_sizes(rng, images, identities):
    """Random sizes, each >= 1, summing to ``images``."""
    cuts = sorted(rng.sample(range(1, images), identities - 1))
    bounds = [0, *cuts, images]
    return [end - start for start, end in zip(bounds, bounds[1:])]


def image_bytes(rng, with_magic):
    data = bytearray(rng.randbytes(rng.randint(200, 3000)))
    if with_magic:
        # The IRHeader (24 or 32 bytes) keeps image offsets 4-aligned in the payload.
        del data[len(data) & ~3 :]
        data[0:4] = MAGIC_BYTES
        data[8:16] = MAGIC_BYTES * 2
        data[-4:] = MAGIC_BYTES
        middle = 4 * rng.randrange(5, len(data) // 4 - 2)
        data[middle : middle + 4] = MAGIC_BYTES
    return bytes(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--identities", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--label-style", choices=("scalar", "array"), default="scalar")
    parser.add_argument("--magic-every", type=int, default=0, help="0 disables")
    parser.add_argument("--shuffle-physical", action="store_true")
    parser.add_argument("--overlapping-identities", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.identities <= args.images:
        parser.error(f"need 1 <= identities <= images, got {args.identities} identities, {args.images} images")
    if args.magic_every < 0:
        parser.error(f"--magic-every must be >= 0, got {args.magic_every}")

    rng = random.Random(args.seed)
    images, identities = args.images, args.identities
    identity_ranges = []
    start = 1
    for size in identity_sizes(rng, images, identities):
        identity_ranges.append((start, start + size))
        start += size
    image_records = {}
    for identity, (first, end) in enumerate(identity_ranges):
        for key in range(first, end):
            label = identity if args.label_style == "scalar" else [identity, rng.randint(0, 1)]
            with_magic = args.magic_every > 0 and key % args.magic_every == 0
            header = mx.recordio.IRHeader(0, label, key, 0)
            image_records[key] = mx.recordio.pack(header, image_bytes(rng, with_magic))
    image_order = list(range(1, images + 1))
    if args.shuffle_physical:
        rng.shuffle(image_order)

    os.makedirs(args.out, exist_ok=True)
    writer = mx.recordio.MXIndexedRecordIO(
        os.path.join(args.out, "train.idx"), os.path.join(args.out, "train.rec"), "w"
    )
    for key in image_order:
        writer.write_idx(key, image_records[key])
    spread = 1 if args.overlapping_identities else 0
    for identity, (first, end) in enumerate(identity_ranges):
        header = mx.recordio.IRHeader(0, [float(first - spread), float(end + spread)], 0, 0)
        writer.write_idx(images + 1 + identity, mx.recordio.pack(header, b""))
    header = mx.recordio.IRHeader(0, [float(images + 1), float(images + 1 + identities)], 0, 0)
    writer.write_idx(0, mx.recordio.pack(header, b""))
    writer.close()
    with open(os.path.join(args.out, "property"), "w") as property_file:
        property_file.write(f"{identities},112,112\n")


if __name__ == "__main__":
    main()
