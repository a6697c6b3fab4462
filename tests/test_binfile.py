"""Tests of scripts/faceprep/binfile.py: reading insightface's bins and writing Python 2 ones."""

import hashlib
import io
import json
import os
import pickle
import pickletools

import numpy as np
import pytest
from PIL import Image

import bin_samples
from bin_samples import PY2_BIN_NAMES, PY2_BINS, pixels_for
from faceprep.binfile import load_bin, write_py2_bin
from faceprep.errors import BinError


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bytearray_buffers_numpy_flags_and_tuples_are_accepted(tmp_path):
    images = [bin_samples.encode(pixels_for(index), "baseline") for index in range(4)]
    bins = (
        bytearray(images[0]),
        pickle.PickleBuffer(bytearray(images[1])),  # in-band BYTEARRAY8
        pickle.PickleBuffer(images[2]),  # read-only buffer: in-band bytes
        np.frombuffer(images[3], np.uint8),  # 1-D uint8 array
    )
    source = tmp_path / "agedb_30.bin"
    bin_samples.write_pickled_bin(source, bins, np.array([True, False]), protocol=5)

    loaded, flags = load_bin(source)
    assert loaded == images and all(type(image) is bytes for image in loaded)
    assert flags == [True, False] and all(type(flag) is bool for flag in flags)


# --- validation ------------------------------------------------------------------------------


class RunsShell:
    """Pickles as a call to os.system: what a malicious bin could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _jpegs(count):
    return [bin_samples.encode(pixels_for(index), "baseline") for index in range(count)]


def _cut(path, images, issame):
    write_py2_bin(path, images, issame)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickled(content):
    return lambda path: path.write_bytes(pickle.dumps(content, protocol=4))


INVALID_BINS = {
    "empty file": (lambda path: path.write_bytes(b""), "empty file"),
    "text file": (lambda path: path.write_bytes(b"Abraham_Lincoln 1 2\n"), "not a readable pickle"),
    "cut pickle": (lambda path: _cut(path, _jpegs(4), [True, False]), "not a readable pickle"),
    "dict": (_pickled({"bins": [], "issame_list": []}), r"expected a pickled pair \(bins, issame_list\), found a dict"),
    "three items": (_pickled((_jpegs(2), [True], [])), "found a tuple of 3 items"),
    "bins not a list": (
        _pickled((42, [True])),
        r"bins \(the first item\) should be a list of encoded images, found 42 \(type int\)",
    ),
    "str image": (
        _pickled((_jpegs(3) + ["not bytes"], [True, True])),
        r"image 3 \(pair 1\) is 'not bytes' \(type str\)",
    ),
    "int16 array": (
        _pickled((_jpegs(2) + [np.zeros(9, np.int16)] + _jpegs(1), [True, True])),
        r"image 2 \(pair 1\) is a int16 array",
    ),
    "decoded pixels": (
        _pickled(([pixels_for(0)] + _jpegs(1), [True])),
        r"image 0 \(pair 0\) is a uint8 array of shape \(112, 112, 3\)",
    ),
    "no images": (_pickled(([], [])), "holds no images"),
    "odd count": (_pickled((_jpegs(3), [True])), "holds 3 images, an odd number"),
    "count mismatch": (
        _pickled((_jpegs(4), [True, False, True])),
        "4 images make 2 pairs, but issame_list has 3 entries",
    ),
    "issame not a list": (_pickled((_jpegs(2), "T")), r"issame_list \(the second item\) should be a list of bools"),
    "issame str": (_pickled((_jpegs(4), [True, "yes"])), r"issame_list\[1\] \(pair 1: images 2 and 3\) is 'yes'"),
    "issame 2": (_pickled((_jpegs(4), [2, True])), r"issame_list\[0\] \(pair 0: images 0 and 1\) is 2"),
    "issame None": (_pickled((_jpegs(2), [None])), r"issame_list\[0\] .* is None"),
}


@pytest.mark.parametrize("case", INVALID_BINS)
def test_invalid_bins_are_refused_naming_file_and_position(tmp_path, case):
    write, message = INVALID_BINS[case]
    source = tmp_path / "bad.bin"
    write(source)
    before = sha256(source)

    with pytest.raises(BinError, match=message) as raised:
        load_bin(source)

    assert str(raised.value).startswith(f"{source}: ")
    assert sha256(source) == before


def test_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    source = tmp_path / "evil.bin"
    source.write_bytes(pickle.dumps((_jpegs(1) + [RunsShell(marker)], [True])))

    with pytest.raises(BinError, match=r"refers to (posix|os)\.system.*refused") as raised:
        load_bin(source)

    assert str(source) in str(raised.value)
    assert not marker.exists()


def test_missing_source_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_bin(tmp_path / "absent.bin")


# --- Python 2 bins ---------------------------------------------------------------------------


def plain_load(path):
    with open(path, "rb") as file:
        return pickle.load(file, encoding="bytes")


def opcodes(path):
    return [(opcode.name, argument) for opcode, argument, _ in pickletools.genops(path.read_bytes())]


def image_format(data):
    """contents.json's name for an image's format, found by Pillow from its bytes."""
    with Image.open(io.BytesIO(data)) as image:
        name = image.format.lower()
        if image.info.get("progressive"):
            return f"{name}-progressive"
        return f"{name}-grayscale" if name == "jpeg" and image.mode == "L" else name


def test_py2_fixture_bins_hold_what_their_description_says():
    contents = json.loads((PY2_BINS / "contents.json").read_text())
    assert sorted(name for name in contents if name.endswith(".bin")) == sorted(PY2_BIN_NAMES)
    for name in PY2_BIN_NAMES:
        bins, issame = plain_load(PY2_BINS / name)
        described = contents[name]
        if described["pickled_as"] == "str":
            assert all(type(image) is bytes for image in bins), name
        else:
            assert described["pickled_as"] == "uint8 arrays of shape (n, 1)"
            assert all(image.dtype == np.uint8 and image.shape == (image.size, 1) for image in bins), name
        images, _ = bin_samples.read_pickled_bin(PY2_BINS / name)
        assert described["images"] == [{"format": image_format(data), "bytes": len(data)} for data in images], name
        assert type(issame) is list and all(type(flag) is bool for flag in issame), name
        assert described["issame"] == issame, name
        pickled = opcodes(PY2_BINS / name)
        # Written by a real pickler at protocol 2: it memoises what it writes, as write_py2_bin does not.
        assert pickled[0] == ("PROTO", 2) and "BINPUT" in {opcode for opcode, _ in pickled}, name


@pytest.mark.parametrize("name", PY2_BIN_NAMES)
def test_py2_fixture_bins_load_to_their_exact_bytes(name):
    images, issame = load_bin(PY2_BINS / name)

    assert (images, issame) == bin_samples.read_pickled_bin(PY2_BINS / name)
    assert all(type(image) is bytes for image in images) and all(type(flag) is bool for flag in issame)


def pickled_structure(value):
    """What a loaded pickle holds, down to array layout, in a form == compares."""
    if isinstance(value, (tuple, list)):
        return type(value).__name__, [pickled_structure(item) for item in value]
    if isinstance(value, np.ndarray):
        return "ndarray", value.dtype.str, value.shape, value.flags.c_contiguous, value.tobytes()
    return type(value).__name__, value


@pytest.mark.parametrize("name", PY2_BIN_NAMES)
def test_write_py2_bin_loads_as_python_2_wrote_the_same_bin(tmp_path, name):
    fixture = PY2_BINS / name
    bins, issame = plain_load(fixture)
    written = tmp_path / name

    write_py2_bin(written, bins, issame)

    # Not byte for byte: Python 2's pickler adds memo opcodes and refers back to repeated globals.
    assert pickled_structure(plain_load(written)) == pickled_structure(plain_load(fixture))

    def globals_named(path):
        return {argument for opcode, argument in opcodes(path) if opcode == "GLOBAL"}

    # The same numpy names, which load_bin allows and numpy 1.x and 2.x both resolve.
    assert globals_named(written) == globals_named(fixture)


def test_write_py2_bin_round_trips_mixed_images(tmp_path):
    path = tmp_path / "mixed.bin"
    # More than pickle's 1000-item batches, short (SHORT_BINSTRING) and long (BINSTRING) strings, arrays.
    images = [bytes([index % 256]) * (index % 300) for index in range(1200)]
    images += [np.arange(n, dtype=np.uint8).reshape(-1, 1) for n in (0, 5, 70000)]
    images.append(b"\xff\xd8")
    issame = [index % 3 == 0 for index in range(len(images) // 2)]
    write_py2_bin(path, images, issame)
    with open(path, "rb") as file:
        loaded_images, loaded_issame = pickle.load(file, encoding="bytes")
    assert loaded_issame == issame
    for written, loaded in zip(images, loaded_images, strict=True):
        if isinstance(written, np.ndarray):
            np.testing.assert_array_equal(loaded, written)
            assert loaded.dtype == np.uint8
        else:
            assert type(loaded) is bytes and loaded == written
    assert not (tmp_path / "mixed.bin.tmp").exists()


def test_write_py2_bin_rejects_bad_input(tmp_path):
    path = tmp_path / "bad.bin"
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        write_py2_bin(path, [b"a", b"b", b"c"], [True])
    with pytest.raises(ValueError, match="image 1 is a float64 array"):
        write_py2_bin(path, [b"a", np.zeros(3)], [True])
    with pytest.raises(TypeError, match="image 0 is a str"):
        write_py2_bin(path, ["a", b"b"], [True])
    assert not path.exists()
