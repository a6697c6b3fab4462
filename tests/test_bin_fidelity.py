"""Re-encoding fidelity and the verification's bound (reformat_bin, verify_bin): every valid bin
reformats and verifies whatever its pictures hold; swapped, shifted or replaced images do not.

Expected differences are computed here from the pictures behind the sources, with Pillow
decoding the outputs (libjpeg's accurate integer IDCT, as verify_bin asks TF for).
"""

import io
import pickle

import imagecodecs
import numpy as np
import pytest
from PIL import Image

import bin_samples
from faceprep.bincodec import reformat_bin, verify_bin
from faceprep.binfile import write_py2_bin
from faceprep.errors import BinError
from faceprep.demo import TF_UNREADABLE_FORMATS, draw_face, make_demo_dataset, random_face_traits
from faceprep.jpeg import CHROMA_QUANTISATION, LUMA_QUANTISATION, quantisation_table

# Sources the test knows the pixels of exactly: lossless, 8 bits or a multiple of them.
LOSSLESS_KINDS = ("bmp", "png", "tiff", "jpeg-lossless", "jpeg-lossless16")


def noise(seed, height=112, width=112):
    """Random texture: the hardest picture for JPEG, every coefficient busy."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def gray(pixels):
    return np.repeat(pixels[..., :1], 3, axis=2)


def flat(colour, height=112, width=112):
    return np.full((height, width, 3), colour, dtype=np.uint8)


def drawn_faces(count, seed=0):
    """Pairs of drawn faces, each pair one identity: the closest different pictures of a bin."""
    rng = np.random.default_rng(seed)
    faces = []
    for _ in range(count // 2):
        traits = random_face_traits(rng)
        faces += [draw_face(traits, rng), draw_face(traits, rng)]
    return faces


def pillow_decoded(data):
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def psnr(reference, pixels):
    mean_square = np.mean((reference.astype(np.float64) - pixels) ** 2)
    return 10 * np.log10(255**2 / mean_square)


def load_output(path):
    with open(path, "rb") as file:
        return pickle.load(file, encoding="bytes")


def reformat_and_verify(tmp_path, images, quality=95, reencode="needed", as_arrays=False):
    source, output = tmp_path / "cfp_fp.bin", tmp_path / "out" / "cfp_fp.bin"
    bins = bin_samples.as_imencode_arrays(images) if as_arrays else images
    write_py2_bin(source, bins, [pair % 2 == 0 for pair in range(len(images) // 2)])
    summary = reformat_bin(source, output, reencode=reencode, threads=2, jpeg_quality=quality)
    verified = verify_bin(source, output, threads=2, jpeg_quality=quality)
    counts = bin_samples.counts_from_bins(source, output)
    assert {key: summary[key] for key in counts} == counts
    assert {key: verified[key] for key in counts} == counts
    return source, output, verified


@pytest.mark.parametrize("quality", [1, 50, 90, 95, 100])
def test_the_floor_is_derived_from_the_tables_tf_encodes_with_and_chroma_is_kept_whole(tf, quality):
    data = tf.io.encode_jpeg(noise(0), quality=quality, chroma_downsampling=False).numpy()
    with Image.open(io.BytesIO(data)) as image:
        tables, layers = image.quantization, image.layer
    assert sorted(tables[0]) == sorted(quantisation_table(LUMA_QUANTISATION, quality))
    assert sorted(tables[1]) == sorted(quantisation_table(CHROMA_QUANTISATION, quality))
    assert [(horizontal, vertical) for _, horizontal, vertical, _ in layers] == [(1, 1)] * 3  # 4:4:4


CONTENTS = {
    "noise": noise(1),
    "gray noise": gray(noise(2)),
    "drawn face": drawn_faces(2)[0],
    "smooth picture": bin_samples.face_like(3),
    "flat colour": flat((200, 30, 90)),
    "black and white dots": (noise(4) > 127).astype(np.uint8) * 255,
    "one pixel": noise(5, 1, 1),
    "3x5 noise": noise(6, 3, 5),
    "9x9 noise": noise(7, 9, 9),
    "large noise": noise(8, 1000, 750),
}


@pytest.mark.parametrize("quality", [90, 95, 100])
def test_reencoded_pictures_of_any_content_and_size_verify(tmp_path, quality):
    pictures = list(CONTENTS.values())
    images = [bin_samples.encode(pixels, "bmp") for pixels in pictures]

    _, output, verified = reformat_and_verify(tmp_path, images, quality)

    outputs, _ = load_output(output)
    entries = verified["reencoded_images"]
    assert [entry["image"] for entry in entries] == list(range(len(images)))
    for name, pixels, entry, result in zip(CONTENTS, pictures, entries, outputs, strict=True):
        decoded = pillow_decoded(result)
        assert decoded.shape == pixels.shape, name
        assert entry["reason"] == "bmp" and entry["pair"] == entry["image"] // 2
        if name == "flat colour" and entry["psnr_db"] is None:  # came back exact
            assert np.array_equal(decoded, pixels)
            continue
        assert entry["psnr_db"] == pytest.approx(psnr(pixels, decoded), abs=0.01), name
        assert entry["mean_abs_diff"] == pytest.approx(np.abs(pixels.astype(float) - decoded).mean(), abs=0.001)
        assert entry["psnr_db"] >= entry["psnr_floor_db"], name
    by_name = dict(zip(CONTENTS, entries))
    if quality == 95:
        # Noise is the worst case: 35.8 dB against a floor of 26.7 dB for a 112x112 picture.
        assert by_name["noise"]["psnr_db"] - by_name["noise"]["psnr_floor_db"] > 6
        # A face pair partner (the nearest other picture of a bin) is far below the floor.
        first, second = drawn_faces(2)
        assert psnr(first, second) < by_name["drawn face"]["psnr_floor_db"] - 3
    assert "4:4:4" in verified["reencoded_images_note"] and "rounded to 8 bits" in verified["reencoded_images_note"]


# The bin: cfp_fp-shaped (cv2.imencode arrays), random-texture pictures, a few of
# them in other encodings, including the two that MXNet's imdecode cannot read.
PLANTED = {3: "bmp", 10: "png", 57: "cmyk", 101: "progressive", 150: "grayscale", 203: "bmp"}
PLANTED |= {230: "jpeg12", 251: "jpeg-lossless", 280: "tiff"}


def texture_bin_images():
    pictures = [noise(seed) for seed in range(300)]
    images = [bin_samples.encode(pixels, PLANTED.get(index, "baseline")) for index, pixels in enumerate(pictures)]
    return pictures, images


def reference_pixels(kind, data, pixels):
    """The source as 8-bit pixels, decoded here: a 12-bit JPEG is rounded from 0-4095."""
    if kind == "jpeg12":
        return np.rint(imagecodecs.jpeg8_decode(data) * (255 / 4095))
    assert kind in LOSSLESS_KINDS
    return pixels


def test_texture_bin_with_planted_formats_reformats_and_verifies(tmp_path):
    pictures, images = texture_bin_images()

    _, output, verified = reformat_and_verify(tmp_path, images, as_arrays=True)

    outputs, _ = load_output(output)
    reencoded = {entry["image"]: entry for entry in verified["reencoded_images"]}
    # TF reads PNG, CMYK, progressive and gray JPEGs: kept, byte for byte, like the baseline ones.
    assert sorted(reencoded) == [3, 203, 230, 251, 280]
    assert all(outputs[index] == image for index, image in enumerate(images) if index not in reencoded)
    assert {index: entry["reason"] for index, entry in reencoded.items()} == {
        3: "bmp",
        203: "bmp",
        230: "jpeg-12bit",
        251: "jpeg-lossless",
        280: "tiff",
    }
    for index, entry in reencoded.items():
        reference = reference_pixels(PLANTED[index], images[index], pictures[index])
        assert entry["psnr_db"] == pytest.approx(psnr(reference, pillow_decoded(outputs[index])), abs=0.01)
        assert entry["psnr_db"] > entry["psnr_floor_db"] + 6


def test_texture_bin_reencoded_whole_verifies(tmp_path):
    pictures, images = texture_bin_images()

    _, output, verified = reformat_and_verify(tmp_path, images, reencode="all", as_arrays=True)

    entries = verified["reencoded_images"]
    assert len(entries) == len(images) and verified["kept"] == 0
    assert min(entry["psnr_db"] - entry["psnr_floor_db"] for entry in entries) > 6
    outputs, _ = load_output(output)
    for index in (3, 251):  # BMP and lossless JPEG: the source's pixels are known
        expected = psnr(pictures[index], pillow_decoded(outputs[index]))
        assert entries[index]["psnr_db"] == pytest.approx(expected, abs=0.01)


# --- what verify_bin must catch ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reencoded_noise(tmp_path_factory):
    """A bin of 16 BMP noise pictures, every one re-encoded: the loosest case for the bound."""
    pictures = [noise(seed) for seed in range(16)]
    tmp_path = tmp_path_factory.mktemp("noise")
    source, output, _ = reformat_and_verify(tmp_path, [bin_samples.encode(pixels, "bmp") for pixels in pictures])
    return source, output


def tampered(tmp_path, output, change):
    bins, issame = load_output(output)
    change(bins)
    path = tmp_path / "tampered.bin"
    with open(path, "wb") as file:
        pickle.dump([bins, issame], file, protocol=4)
    return path


def swap(first, second):
    def change(bins):
        bins[first], bins[second] = bins[second], bins[first]

    return change


def test_swapped_reencoded_images_are_caught_naming_both(tmp_path, reencoded_noise):
    source, output = reencoded_noise
    with pytest.raises(
        BinError, match=r"image 5 \(pair 2\) matches source image 6 \(pair 3, PSNR 3\d\.\d dB\), not its own"
    ) as raised:
        verify_bin(source, tampered(tmp_path, output, swap(5, 6)))
    assert "images swapped or out of order?" in str(raised.value)


def test_shifted_images_are_caught(tmp_path, reencoded_noise):
    source, output = reencoded_noise

    def shift(bins):  # one image dropped at 8, the rest moved up, the last repeated
        bins[8:] = bins[9:] + bins[-1:]

    with pytest.raises(BinError, match=r"image 8 \(pair 4\) matches source image 9 \(pair 4, PSNR"):
        verify_bin(source, tampered(tmp_path, output, shift))


def test_replaced_image_is_caught(tmp_path, reencoded_noise, tf):
    source, output = reencoded_noise

    def replace(bins):
        bins[11] = tf.io.encode_jpeg(noise(99), quality=95, chroma_downsampling=False).numpy()

    with pytest.raises(BinError, match=r"image 11 \(pair 5\) differs from its source image more than re-encoding"):
        verify_bin(source, tampered(tmp_path, output, replace))


def test_swapped_faces_of_one_identity_are_caught(tmp_path):
    faces = drawn_faces(8, seed=5)
    closest = max(range(0, 8, 2), key=lambda pair: psnr(faces[pair], faces[pair + 1]))
    source, output, _ = reformat_and_verify(tmp_path, [bin_samples.encode(face, "bmp") for face in faces])

    with pytest.raises(BinError, match=rf"image {closest} \(pair {closest // 2}\) matches source image {closest + 1}"):
        verify_bin(source, tampered(tmp_path, output, swap(closest, closest + 1)))


def test_a_swap_no_pixel_check_can_see_passes(tmp_path):
    """Two flat pictures one level apart differ less than re-encoding may change either: that
    swap changes what an evaluation sees by less than a legitimate re-encode, and passes."""
    pictures = [flat((120, 120, 120)), flat((121, 120, 120)), flat((10, 200, 30)), flat((250, 5, 5))]
    source, output, _ = reformat_and_verify(tmp_path, [bin_samples.encode(pixels, "bmp") for pixels in pictures])

    verified = verify_bin(source, tampered(tmp_path, output, swap(0, 1)))

    floor = verified["reencoded_images"][0]["psnr_floor_db"]
    assert psnr(pictures[0], pictures[1]) > floor
    with pytest.raises(BinError, match=r"image 2 \(pair 1\) matches source image 3"):
        verify_bin(source, tampered(tmp_path, output, swap(2, 3)))


def test_demo_bins_reformat_and_verify(tmp_path):
    formats = make_demo_dataset(tmp_path / "demo", images=8, identities=4, seed=1)
    for name, image_formats in formats.items():
        source, output = tmp_path / "demo" / f"{name}.bin", tmp_path / "out" / f"{name}.bin"
        reformat_bin(source, output, threads=2)
        verified = verify_bin(source, output, threads=2)
        planted = {index for index, image_format in enumerate(image_formats) if image_format in TF_UNREADABLE_FORMATS}
        assert {entry["image"] for entry in verified["reencoded_images"]} == planted, name
        assert all(entry["psnr_db"] > entry["psnr_floor_db"] for entry in verified["reencoded_images"]), name
