"""Decode image files with mx.image.imdecode, as insightface's MXFaceDataset does (test oracle;
runs in .venv-mxnet).

Usage: imdecode_files.py OUT_DIR FILE...

Saves each decoded image as OUT_DIR/<file name>.npy (HxWxC uint8, RGB) and prints JSON:
{file name: null, or the error's first line}.
"""

import json
import os
import sys

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx
import numpy as np


def main():
    out_dir, paths = sys.argv[1], sys.argv[2:]
    errors = {}
    for path in paths:
        name = os.path.basename(path)
        with open(path, "rb") as stream:
            data = stream.read()
        try:
            image = mx.image.imdecode(data).asnumpy()
        except Exception as error:  # MXNetError, or what OpenCV raises through it
            errors[name] = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            continue
        np.save(os.path.join(out_dir, name + ".npy"), image.astype(np.uint8))
        errors[name] = None
    json.dump(errors, sys.stdout)


if __name__ == "__main__":
    main()
