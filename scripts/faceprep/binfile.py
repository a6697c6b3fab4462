"""The evaluation bin's pickle: read what insightface's bins hold, write the reformatted bin and Python 2 bins.

A bin is a pickle ``(bins, issame_list)``: 2N encoded images forming pairs (2k, 2k+1) and
N flags saying whether pair k shows one person. Python 2 wrote the images as ``str`` (read
back as ``bytes`` with ``encoding='bytes'``); later bins hold uint8 numpy arrays as
``cv2.imencode`` returns them (shape ``(n, 1)``), which ``tf.image.decode_jpeg`` refuses.

The reformatted bin is ``[bins, issame_list]`` of plain ``bytes`` and plain ``bool``, so it
unpickles in any Python 3 without importing a module. ``write_py2_bin`` writes bins the way
insightface's Python 2 tooling pickled them (the demo dataset and the tests use it).
"""

import os
import pickle
import reprlib
import struct

import numpy as np

from faceprep.atomic import write_atomically, write_bytes
from faceprep.errors import BinError

# Protocol 4 loads in every Python >= 3.4 (protocol 5 would need 3.8).
PICKLE_PROTOCOL = 4


def image_position(path, index):
    return f"{path}: image {index} (pair {index // 2})"


def _describe(value):
    if isinstance(value, (tuple, list, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"{reprlib.repr(value)} (type {type(value).__name__})"


# --- insightface's bins --------------------------------------------------------------------


def _tensor_bytes(value):
    """Stands in for ``convert_to_tensor``: the original script pickled each EagerTensor as
    ``convert_to_tensor(<jpeg bytes>)``, so bins it rewrote load without TensorFlow."""
    if not isinstance(value, bytes):
        raise pickle.UnpicklingError(f"a pickled tensor holds {_describe(value)}, not image bytes")
    return value


_TENSOR_GLOBAL = ("tensorflow.python.framework.ops", "convert_to_tensor")
# Everything a bin's pickle refers to: numpy arrays and scalars (cv2.imencode output, numpy
# bools), bytes pickled by Python 3 at protocol <= 2 (_codecs.encode), bytearray, and the
# tensors above. Refusing the rest keeps a downloaded bin from running code while it loads.
_SOURCE_GLOBALS = frozenset(
    {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
    | {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
        ("builtins", "bytes"),
    }
    | {_TENSOR_GLOBAL}
)


class _BinUnpickler(pickle.Unpickler):
    def __init__(self, file, path, allowed_globals, refusal):
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed_globals = allowed_globals
        self._refusal = refusal
        # Python 2 pickles name numpy's globals again for every array (three lookups an image).
        self._found = {}

    def find_class(self, module, name):
        try:
            return self._found[module, name]
        except KeyError:
            pass
        if (module, name) not in self._allowed_globals:
            raise BinError(f"{self._path}: the pickle refers to {module}.{name}; {self._refusal}")
        found = _tensor_bytes if (module, name) == _TENSOR_GLOBAL else super().find_class(module, name)
        self._found[module, name] = found
        return found


def _unpickle(path, allowed_globals, refusal):
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            raise BinError(f"{path}: empty file, not a pickled evaluation bin")
        try:
            return _BinUnpickler(file, path, allowed_globals, refusal).load()
        except BinError:
            raise
        # A damaged pickle fails with whatever its next opcode raises (EOFError, KeyError,
        # UnicodeDecodeError, ...); all of them mean the same thing here.
        except Exception as error:
            raise BinError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from error


def _is_sequence(value):
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _image_bytes(path, index, element):
    if isinstance(element, (bytes, bytearray, memoryview)):
        return bytes(element)
    if (
        isinstance(element, np.ndarray)
        and element.dtype == np.uint8
        and (element.ndim == 1 or (element.ndim == 2 and element.shape[1] == 1))
    ):
        return element.tobytes()
    raise BinError(
        f"{image_position(path, index)} is {_describe(element)}; expected encoded image bytes"
        " (bytes, or a uint8 array of shape (n,) or (n, 1) as cv2.imencode returns)"
    )


def _issame_flag(path, pair, value):
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise BinError(
        f"{path}: issame_list[{pair}] (pair {pair}: images {2 * pair} and {2 * pair + 1}) is {value!r}; expected a bool"
    )


def load_bin(path):
    """Read an evaluation bin as ``(images, issame)``: a list of ``bytes`` and a list of ``bool``.

    Accepts what insightface's bins hold: Python 2 ``str``, bytes, bytearray, uint8 arrays of
    shape (n,) or (n, 1), tensors pickled by the original reformat script; bools, numpy bools
    or 0/1 as flags. The file is only read. Raises BinError naming the file (and the image
    index and pair) on anything else.
    """
    content = _unpickle(
        path,
        _SOURCE_GLOBALS,
        "no evaluation bin needs it, and unpickling it could run arbitrary code, so it is refused",
    )
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise BinError(f"{path}: expected a pickled pair (bins, issame_list), found {_describe(content)}")
    bins, issame = content
    if not _is_sequence(bins):
        raise BinError(f"{path}: bins (the first item) should be a list of encoded images, found {_describe(bins)}")
    images = [_image_bytes(path, index, element) for index, element in enumerate(bins)]
    if not images:
        raise BinError(f"{path}: holds no images")
    if len(images) % 2:
        raise BinError(f"{path}: holds {len(images)} images, an odd number; images come in pairs (2k, 2k+1)")
    if not _is_sequence(issame):
        raise BinError(f"{path}: issame_list (the second item) should be a list of bools, found {_describe(issame)}")
    if 2 * len(issame) != len(images):
        raise BinError(
            f"{path}: {len(images)} images make {len(images) // 2} pairs, but issame_list has {len(issame)} entries"
        )
    return images, [_issame_flag(path, pair, value) for pair, value in enumerate(issame)]


# --- the reformatted bin -------------------------------------------------------------------


def load_reformatted(path):
    """Read a reformatted bin, insisting on exactly what reformat_bin writes."""
    content = _unpickle(path, frozenset(), "a reformatted bin must load without importing any module")
    if type(content) is not list or len(content) != 2:
        raise BinError(f"{path}: expected a pickled list [bins, issame_list], found {_describe(content)}")
    bins, issame = content
    if type(bins) is not list:
        raise BinError(f"{path}: bins should be a list, found {_describe(bins)}")
    for index, element in enumerate(bins):
        if type(element) is not bytes:
            raise BinError(f"{image_position(path, index)} is {_describe(element)}, not plain bytes")
    if type(issame) is not list:
        raise BinError(f"{path}: issame_list should be a list, found {_describe(issame)}")
    for pair, flag in enumerate(issame):
        if type(flag) is not bool:
            raise BinError(f"{path}: issame_list[{pair}] (pair {pair}) is {_describe(flag)}, not a plain bool")
    return bins, issame


def write_reformatted(path, images, issame):
    """Write ``[images, issame]`` (plain bytes, plain bools) as ``load_reformatted`` reads it.

    Each image is pickled as an object of its own (pickle refers back to an object it has
    already written), so equal inputs give equal files however the images were shared.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images = [bytes(memoryview(image)) for image in images]
    write_atomically(path, lambda file: pickle.dump([images, issame], file, protocol=PICKLE_PROTOCOL))


# --- Python 2 bins -------------------------------------------------------------------------

# Python 2's pickle, protocol 2, as insightface's tooling wrote the bins, less the memo
# opcodes (BINPUT, BINGET) a real pickler adds: it unpickles to the same objects as the bins
# Python 2.7 wrote in tests/fixtures/py2_bins. A py2 ``str`` is SHORT_BINSTRING/BINSTRING,
# which Python 3 loads as bytes with encoding='bytes'.
def _py2_str(data):
    if len(data) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(data)]) + data
    return pickle.BINSTRING + struct.pack("<i", len(data)) + data


def _py2_int(value):
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if 0 <= value < 65536:
        return pickle.BININT2 + struct.pack("<H", value)
    return pickle.BININT + struct.pack("<i", value)


def _py2_list(items):
    """A list pickled as py2's pickler does: APPENDS per batch of 1000 items, APPEND for a lone one."""
    parts = [pickle.EMPTY_LIST]
    for start in range(0, len(items), 1000):
        batch = items[start:start + 1000]
        parts += [pickle.MARK, *batch, pickle.APPENDS] if len(batch) > 1 else [*batch, pickle.APPEND]
    return b"".join(parts)


# numpy 1.x's ndarray.__reduce__: _reconstruct(ndarray, (0,), 'b') then __setstate__.
# Spelled with numpy.core so numpy 1.x (MXNet's) and numpy 2.x both load it.
_PY2_NDARRAY = (pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n"
                + _py2_int(0) + pickle.TUPLE1 + _py2_str(b"b") + pickle.TUPLE3 + pickle.REDUCE)
_PY2_UINT8_DTYPE = (pickle.GLOBAL + b"numpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1)
                    + pickle.TUPLE3 + pickle.REDUCE + pickle.MARK + _py2_int(3) + _py2_str(b"|")
                    + pickle.NONE * 3 + pickle.BININT + struct.pack("<i", -1) + pickle.BININT
                    + struct.pack("<i", -1) + _py2_int(0) + pickle.TUPLE + pickle.BUILD)


def _py2_uint8_array(array):
    shape = pickle.MARK + b"".join(_py2_int(n) for n in array.shape) + pickle.TUPLE
    state = (pickle.MARK + _py2_int(1) + shape + _PY2_UINT8_DTYPE + pickle.NEWFALSE
             + _py2_str(np.ascontiguousarray(array).tobytes()) + pickle.TUPLE)
    return _PY2_NDARRAY + state + pickle.BUILD


def write_py2_bin(path, images, issame):
    """Write an evaluation bin ``(images, issame)`` as a Python 2 protocol-2 pickle.

    Each image is ``bytes`` (pickled as a py2 ``str``, like lfw.bin) or a uint8 numpy
    array (pickled as numpy 1.x did, like ``cv2.imencode`` output in cfp_fp.bin);
    ``issame`` holds one bool per pair. ``pickle.load(f, encoding='bytes')`` returns
    bytes and arrays. Written to a temporary name and renamed.
    """
    if len(images) != 2 * len(issame):
        raise ValueError(f"{path}: {len(images)} images for {len(issame)} pairs, expected {2 * len(issame)}")
    encoded = []
    for index, image in enumerate(images):
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise ValueError(f"{path}: image {index} is a {image.dtype} array, expected uint8")
            encoded.append(_py2_uint8_array(image))
        elif isinstance(image, (bytes, bytearray, memoryview)):
            encoded.append(_py2_str(bytes(image)))
        else:
            raise TypeError(f"{path}: image {index} is a {type(image).__name__}, expected bytes or a uint8 array")
    flags = [pickle.NEWTRUE if same else pickle.NEWFALSE for same in issame]
    write_bytes(path, pickle.PROTO + b"\x02" + _py2_list(encoded) + _py2_list(flags)
                      + pickle.TUPLE2 + pickle.STOP)
