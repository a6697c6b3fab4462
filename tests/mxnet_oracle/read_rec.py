"""Read every record of a .rec/.idx with MXNet and print it as JSON (test oracle; runs in .venv-mxnet).

Usage: read_rec.py REC IDX

Prints a list, in .idx line order, of
{"key", "flag", "label" (list of floats; one element when flag is 0), "id", "id2", "payload_hex"}
where payload_hex is the image part that ``mx.recordio.unpack`` returns.
"""

import argparse
import json
import sys

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rec")
    parser.add_argument("idx")
    args = parser.parse_args()
    reader = mx.recordio.MXIndexedRecordIO(args.idx, args.rec, "r")
    records = []
    for key in reader.keys:
        header, payload = mx.recordio.unpack(reader.read_idx(key))
        label = [float(header.label)] if header.flag == 0 else [float(value) for value in header.label]
        records.append(
            {
                "key": key,
                "flag": int(header.flag),
                "label": label,
                "id": int(header.id),
                "id2": int(header.id2),
                "payload_hex": payload.hex(),
            }
        )
    reader.close()
    json.dump(records, sys.stdout)


if __name__ == "__main__":
    main()
