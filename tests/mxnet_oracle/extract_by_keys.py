"""Extract a rec with MXNet the way arcface_torch's MXFaceDataset reads it (test oracle; runs in .venv-mxnet).

Usage: extract_by_keys.py {insightface,im2rec} READ_DIR SAVE_DIR

insightface: the images are keys 1..int(label[0])-1 of key 0's header record; im2rec: every
key of the idx (``imgrec.keys``) is an image. (MXFaceDataset picks the first when key 0 has
flag > 0, which takes an im2rec image at key 0 with an array label for a header: the layout
is given here instead.) An image's class is its label, or label[0] when the label is an
array. Each image is written to SAVE_DIR/<class>/<key>.jpg.
"""

import argparse
import numbers
import os

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("layout", choices=("insightface", "im2rec"))
    parser.add_argument("read_dir")
    parser.add_argument("save_dir")
    args = parser.parse_args()
    imgrec = mx.recordio.MXIndexedRecordIO(
        os.path.join(args.read_dir, "train.idx"), os.path.join(args.read_dir, "train.rec"), "r"
    )
    if args.layout == "insightface":
        header, _ = mx.recordio.unpack(imgrec.read_idx(0))
        keys = range(1, int(header.label[0]))
    else:
        keys = list(imgrec.keys)
    for key in keys:
        header, image = mx.recordio.unpack(imgrec.read_idx(key))
        label = header.label if isinstance(header.label, numbers.Number) else header.label[0]
        directory = os.path.join(args.save_dir, str(int(label)))
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"{key}.jpg"), "wb") as stream:
            stream.write(image)


if __name__ == "__main__":
    main()
