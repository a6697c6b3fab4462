"""The original MXNet extraction of an insightface train.rec into <label>/<key>.jpg (reference behaviour).

Usage: original_extract.py READ_DIR SAVE_DIR

Kept as the original script does it, including the folder name ``int(np.sum(label))``
(so a ``[label, aligned]`` array label lands in ``label + aligned``) and the loop bound
``int(rec_header.label[0])`` from the key-0 header. Only the paths are parameters, and
tqdm is optional because the oracle venv installs nothing beyond mxnet and numpy;
mxnet_numpy_compat comes first so that mxnet imports with the numpy of Python 3.12+.
"""

import argparse
import os

import mxnet_numpy_compat  # noqa: F401  (before mxnet: numpy names it needs)
import mxnet as mx
import numpy as np

try:
    from tqdm import tqdm
except ImportError:

    def tqdm(iterable):
        return iterable


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("read_dir")
    parser.add_argument("save_dir")
    args = parser.parse_args()
    read_dir, save_dir = args.read_dir, args.save_dir
    idx_path = os.path.join(read_dir, "train.idx")
    bin_path = os.path.join(read_dir, "train.rec")
    imgrec = mx.recordio.MXIndexedRecordIO(idx_path, bin_path, "r")
    rec_header, _ = mx.recordio.unpack(imgrec.read_idx(0))
    for ii in tqdm(range(1, int(rec_header.label[0]))):
        img_info = imgrec.read_idx(ii)
        header, img = mx.recordio.unpack(img_info)
        img_idx = str(int(np.sum(header.label)))
        img_save_dir = os.path.join(save_dir, img_idx)
        if not os.path.exists(img_save_dir):
            os.makedirs(img_save_dir)
        with open(os.path.join(img_save_dir, str(ii) + ".jpg"), "wb") as ff:
            ff.write(img)


if __name__ == "__main__":
    main()
