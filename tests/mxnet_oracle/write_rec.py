"""Write a .rec/.idx with MXNet's own writer from a JSON spec (test oracle; runs in .venv-mxnet).

Usage: write_rec.py SPEC_JSON REC IDX

SPEC_JSON holds a list of records, written in list order:
{"key": int, "label": number or list of numbers, "id": int, "id2": int, "payload_hex": str}
Each record is ``mx.recordio.pack(IRHeader(0, label, id, id2), payload)``.
"""

import argparse
import json

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("rec")
    parser.add_argument("idx")
    args = parser.parse_args()
    with open(args.spec) as spec_file:
        records = json.load(spec_file)
    writer = mx.recordio.MXIndexedRecordIO(args.idx, args.rec, "w")
    for record in records:
        header = mx.recordio.IRHeader(0, record["label"], record["id"], record["id2"])
        writer.write_idx(record["key"], mx.recordio.pack(header, bytes.fromhex(record["payload_hex"])))
    writer.close()


if __name__ == "__main__":
    main()
