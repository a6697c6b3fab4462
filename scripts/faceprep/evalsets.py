"""Evaluation sets both ways: your own images and pairs → a bin, a bin → images and pairs.

The pairs come from the files an evaluation set ships (faceprep.pair_lists: LFW's, RFW's,
CALFW's, CPLFW's, CFP's, or ``path1 path2 0|1`` lines).

The bin holds the images in pair order, each as its file's bytes when
``tf.io.decode_jpeg`` reads it, else re-encoded by ``reformat_bin``'s rule
(faceprep.bincodec). Every problem (a missing file, a bad line, counts that disagree with
the header, an unreadable image) stops the packing before anything is written, naming
the file and the line.
"""

import os
import re
import shutil

from faceprep.atomic import create_file, write_bytes
from faceprep.binfile import load_reformatted
from faceprep.errors import BinError, DatasetError
from faceprep.pair_lists import read_pairs

PAIRS_NAME = "pairs.txt"


def read_pair_images(pairs_path, images_dir):
    """``(format, images, issame, sources)``: the images' bytes in pair order, the pairs'
    flags, and for each image ``(relative path, where)``: the pairs file and line it is from."""
    pairs_format, pairs = read_pairs(pairs_path, images_dir)
    images, issame, sources = [], [], []
    for first, second, same, where in pairs:
        for path in (first, second):
            try:
                with open(os.path.join(images_dir, path), "rb") as stream:
                    images.append(stream.read())
            except OSError as error:
                raise DatasetError(f"{where}: {os.path.join(images_dir, path)} cannot be read ({error.strerror})") from None
            sources.append((path, where))
        issame.append(same)
    return pairs_format, images, issame, sources


def naming_image_source(error, images_dir, sources):
    """A BinError about ``image N`` of a packed set, with that image's file and pairs line."""
    found = re.search(r"image (\d+) \(pair \d+\)", str(error))
    if not found or int(found.group(1)) >= len(sources):
        return error
    path, where = sources[int(found.group(1))]
    return BinError(f"{os.path.join(images_dir, path)} ({where}): {error}")


def export_bin_images(bin_path, directory):
    """Write every image of reformatted bin ``bin_path`` as ``directory/<i>.jpg`` and its pairs
    as ``directory/pairs.txt`` (``<a>.jpg <b>.jpg 1|0``), through ``<directory>.tmp``."""
    images, issame = load_reformatted(bin_path)
    temporary = f"{directory}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    for index, image in enumerate(images):
        with open(create_file(os.path.join(temporary, f"{index}.jpg")), "wb") as stream:
            stream.write(image)
    lines = "".join(f"{2 * pair}.jpg {2 * pair + 1}.jpg {int(same)}\n" for pair, same in enumerate(issame))
    write_bytes(os.path.join(temporary, PAIRS_NAME), lines.encode())
    if os.path.lexists(directory):
        shutil.rmtree(directory)
    os.rename(temporary, directory)
    return {"images": len(images), "pairs": len(issame), "same": sum(issame)}


def pack_evalset(images_dir, pairs_path, bin_path, read_path, reencode="needed", threads=1, jpeg_quality=None):
    """Write the bin of an evaluation set (see the module) and ``read_path``, the images it
    read (each path relative to ``images_dir`` once, a line; faceprep.changes sees them
    change); return reformat's summary with the pairs' format. Nothing is written when any
    image or line is wrong."""
    from faceprep import bincodec  # TensorFlow only when an image needs it

    pairs_format, images, issame, sources = read_pair_images(pairs_path, images_dir)
    try:
        summary = bincodec.reformat_images(images, issame, pairs_path, bin_path, reencode, threads,
                                           jpeg_quality or bincodec.JPEG_QUALITY)
    except BinError as error:
        raise naming_image_source(error, images_dir, sources) from None
    write_bytes(read_path, b"".join(os.fsencode(path) + b"\n" for path in dict.fromkeys(path for path, _ in sources)))
    return summary | {"pairs_format": pairs_format}
