"""Load an evaluation bin as insightface's load_bin does and decode every image with
mx.image.imdecode (test oracle; runs in .venv-mxnet).

Usage: load_bin.py BIN

Prints JSON: {"issame": [...], "images": [[height, width, channels, sum of pixels], ...]}.
"""

import json
import pickle
import sys

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx


def main():
    with open(sys.argv[1], "rb") as stream:
        bins, issame_list = pickle.load(stream, encoding="bytes")
    images = []
    for data in bins:
        image = mx.image.imdecode(data).asnumpy()
        images.append([*map(int, image.shape), int(image.astype("int64").sum())])
    json.dump({"issame": [bool(flag) for flag in issame_list], "images": images}, sys.stdout)


if __name__ == "__main__":
    main()
