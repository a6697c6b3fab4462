"""A small synthetic faces_emore-like dataset that the workflow builds for itself.

``make_demo_dataset`` writes ``train.rec``/``train.idx`` in insightface's layout, the
``property`` file and the evaluation bins ``lfw.bin``, ``cfp_fp.bin`` and
``agedb_30.bin``. The faces are drawn with numpy (``draw_face``) so that, in the
report's contact sheets, images of one identity look alike and different
identities look different. ``write_py2_bin`` writes bins the way insightface's
Python 2 tooling pickled them.
"""

import io
import logging
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from faceprep.atomic import write_bytes
from faceprep.binfile import write_py2_bin
from faceprep.recordio import RecordWriter, pack_header

log = logging.getLogger(__name__)

IMAGE_SIZE = 112
JPEG_QUALITY = 90
BIN_NAMES = ("lfw", "cfp_fp", "agedb_30")
BIN_PAIRS = 100
# Formats planted once in cfp_fp and agedb_30 (lfw is plain JPEG like the real one).
# tf.io.decode_jpeg reads the first group; the second needs another decoder.
TF_READABLE_EXTRA_FORMATS = ("png", "jpeg_progressive", "jpeg_grayscale", "jpeg_cmyk")
TF_UNREADABLE_FORMATS = ("bmp", "jpeg_12bit", "jpeg_lossless")
# Faces sit where insightface's 112x112 alignment puts them (eyes near row 52).
FACE_CENTRE = (56.0, 60.0)
BLUSH = np.array([1.1, 0.75, 0.75], dtype=np.float32)  # reddened skin on the cheeks
MOUTH_LEVEL = 0.58  # mouth height below the face centre, as a fraction of face_height

SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 163), (232, 190, 150), (224, 172, 135),
     (198, 134, 94), (161, 102, 65), (112, 70, 45), (80, 52, 35)], dtype=np.float32)
HAIR_COLOURS = np.array(
    [(25, 20, 18), (60, 40, 28), (105, 70, 40), (140, 60, 30), (220, 190, 120),
     (190, 170, 130), (150, 150, 150), (230, 230, 225), (180, 70, 30), (40, 70, 160),
     (200, 90, 150)], dtype=np.float32)
EYE_COLOURS = np.array(
    [(90, 55, 30), (45, 30, 20), (70, 120, 190), (80, 130, 70), (120, 130, 140), (130, 100, 50)],
    dtype=np.float32)
LIP_TINTS = np.array([(190, 90, 90), (160, 70, 80), (200, 110, 100), (140, 60, 60)], dtype=np.float32)
FRAME_COLOURS = np.array([(20, 20, 20), (120, 80, 40), (180, 30, 40), (40, 60, 150), (200, 190, 170)],
                         dtype=np.float32)
# Hairline geometry per style: cap (width, height, centre) as fractions of the face,
# hairline height, how far it drops at the temples, long hair behind, curly outline.
HAIR_STYLES = {
    "short": dict(cap=(1.07, 1.0, -0.12), hairline=-0.52, temples=0.45, long=False, curly=False),
    "fringe": dict(cap=(1.12, 1.05, -0.1), hairline=-0.3, temples=0.2, long=False, curly=False),
    "side_part": dict(cap=(1.1, 1.02, -0.12), hairline=-0.5, temples=0.4, long=False, curly=False),
    "long": dict(cap=(1.14, 1.04, -0.1), hairline=-0.42, temples=0.3, long=True, curly=False),
    "curly": dict(cap=(1.3, 1.12, -0.2), hairline=-0.45, temples=0.35, long=False, curly=True),
    "bald": dict(cap=(1.05, 0.98, -0.1), hairline=-1.15, temples=1.05, long=False, curly=False),
}
BEARDS = ("none", "none", "none", "moustache", "goatee", "full", "stubble")


@dataclass(frozen=True)
class FaceTraits:
    """What stays the same across the images of one identity.

    Lengths are in pixels; ``eye_level`` and ``nose_length`` are fractions of
    ``face_height``, ``jaw`` how much the face narrows towards the chin.
    """

    face_width: float
    face_height: float
    jaw: float
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    hair_part: float
    eye_colour: np.ndarray
    eye_spacing: float
    eye_width: float
    eye_height: float
    eye_level: float
    brow_thickness: float
    brow_length: float
    brow_tilt: float
    brow_arch: float
    brow_gap: float
    nose_length: float
    nose_width: float
    mouth_width: float
    lips: np.ndarray
    lip_thickness: float
    smile: float
    blush: float
    beard: str
    glasses: np.ndarray | None
    glasses_roundness: float
    tinted_glasses: bool
    clothing: np.ndarray


def random_face_traits(rng):
    """Draw one identity's traits."""
    def pick(palette, jitter):
        return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)

    face_width = rng.uniform(29, 36)
    hair_style = list(HAIR_STYLES)[rng.integers(len(HAIR_STYLES))]
    has_glasses = rng.random() < 0.3
    return FaceTraits(
        face_width=face_width,
        face_height=rng.uniform(38, 45),
        jaw=rng.uniform(0.1, 0.45),
        skin=pick(SKIN_TONES, 6),
        hair=pick(HAIR_COLOURS, 8),
        hair_style=hair_style,
        hair_part=rng.choice([-1, 1]) * rng.uniform(0.1, 0.3) if hair_style == "side_part" else rng.normal(0, 0.05),
        eye_colour=pick(EYE_COLOURS, 10),
        eye_spacing=rng.uniform(0.42, 0.52) * face_width,
        eye_width=rng.uniform(5.5, 7.5),
        eye_height=rng.uniform(2.6, 3.6),
        eye_level=rng.uniform(-0.16, -0.06),
        brow_thickness=rng.uniform(1.1, 2.8),
        brow_length=rng.uniform(7, 10),
        brow_tilt=rng.uniform(-0.25, 0.2),
        brow_arch=rng.uniform(-0.5, 2.5),
        brow_gap=rng.uniform(5.5, 8.5),
        nose_length=rng.uniform(0.26, 0.38),
        nose_width=rng.uniform(3.5, 5.5),
        mouth_width=rng.uniform(8, 12),
        lips=pick(LIP_TINTS, 10),
        lip_thickness=rng.uniform(1.2, 3.2),
        smile=rng.uniform(-0.3, 1.0),
        blush=rng.uniform(0.1, 0.3) if rng.random() < 0.5 else 0.0,
        beard=BEARDS[rng.integers(len(BEARDS))],
        glasses=pick(FRAME_COLOURS, 10) if has_glasses else None,
        glasses_roundness=rng.uniform(2, 4),
        tinted_glasses=has_glasses and rng.random() < 0.25,
        clothing=rng.uniform(20, 235, 3).astype(np.float32),
    )


@cache
def _pixel_grid():
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    return xs, ys


def _soft(distance_inside, scale):
    """Antialiased coverage from a signed distance (face units, positive inside)."""
    coverage = distance_inside * scale
    coverage += 0.5
    # ufuncs with out=: np.clip's Python wrapper costs more than the arithmetic on small windows.
    return np.minimum(np.maximum(coverage, 0, out=coverage), 1, out=coverage)


def _ellipse(u, v, ru, rv, scale):
    """Coverage of the ellipse with radii (ru, rv) centred on the local origin."""
    radius = u / ru
    radius *= radius
    across = v / rv
    across *= across
    radius += across
    np.sqrt(radius, out=radius)
    edge = min(ru, rv) * scale
    radius *= -edge
    radius += edge + 0.5
    return np.minimum(np.maximum(radius, 0, out=radius), 1, out=radius)


class _Canvas:
    """An image under construction, addressed in face units: rotated, shifted and scaled pixels."""

    def __init__(self, centre, angle, scale):
        xs, ys = _pixel_grid()
        self.centre, self.scale = centre, scale
        self.cos, self.sin = math.cos(angle), math.sin(angle)
        dx, dy = xs - centre[0], ys - centre[1]
        self.u = (self.cos * dx + self.sin * dy) / scale
        self.v = (self.cos * dy - self.sin * dx) / scale
        # Channels first: blending a 2-D alpha into contiguous planes is several times faster.
        self.pixels = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)

    def region(self, cu, cv, radius):
        """Pixel window holding the disc of ``radius`` around (cu, cv), and local u, v in it."""
        x = self.centre[0] + self.scale * (self.cos * cu - self.sin * cv)
        y = self.centre[1] + self.scale * (self.sin * cu + self.cos * cv)
        reach = radius * self.scale + 2
        window = (slice(max(0, int(y - reach)), max(0, min(IMAGE_SIZE, int(y + reach) + 2))),
                  slice(max(0, int(x - reach)), max(0, min(IMAGE_SIZE, int(x + reach) + 2))))
        return window, self.u[window] - cu, self.v[window] - cv

    def paint(self, window, alpha, colour):
        """Blend ``colour`` (an RGB triple or a (3, h, w) array) over ``window`` with coverage ``alpha``."""
        target = self.pixels[(slice(None), *window)]
        colour = np.asarray(colour, dtype=np.float32)
        target += alpha * ((colour[:, None, None] if colour.ndim == 1 else colour) - target)


def _face_shape(u, v, traits, scale, grow=1.0):
    """Coverage and normalised radius of the egg-shaped face outline (narrower at the chin)."""
    height = traits.face_height * grow
    width = traits.face_width * grow * (1 - traits.jaw * np.clip(v / height, 0, 1) ** 2)
    radius = np.sqrt((u / width) ** 2 + (v / height) ** 2)
    return _soft(1 - radius, traits.face_width * scale), radius


@cache
def _hair_texture():
    """Brightness of strands running downwards, fixed to the pixel grid (poses turn only a little)."""
    xs, ys = _pixel_grid()
    return 1 + np.sin(xs * 1.7 + 3 * np.sin(ys * 0.09)) * 0.05 + np.sin(xs * 4.3 - ys * 0.5) * 0.03


def _hair_colour(window, traits):
    return traits.hair[:, None, None] * _hair_texture()[window]


def _draw_hair(canvas, traits, back):
    """The hair behind the head (``back``) or the cap over the forehead."""
    style = HAIR_STYLES[traits.hair_style]
    fw, fh, scale = traits.face_width, traits.face_height, canvas.scale
    if back:
        if not style["long"]:
            return
        window, u, v = canvas.region(0, 0.35 * fh, 1.5 * fh)
        alpha = _ellipse(u, v, 1.38 * fw, 1.4 * fh, scale)
        canvas.paint(window, alpha, _hair_colour(window, traits) * 0.85)
        return
    cap_width, cap_height, cap_centre = style["cap"]
    window, u, v = canvas.region(0, cap_centre * fh, cap_height * fh * 1.15)
    ru, rv = cap_width * fw, cap_height * fh
    if style["curly"]:
        angle = np.arctan2(v, u)
        bumps = 1 + 0.05 * np.sin(11 * angle) + 0.03 * np.sin(17 * angle + 1)
        alpha = _soft(bumps - np.sqrt((u / ru) ** 2 + (v / rv) ** 2), fw * scale)
    else:
        alpha = _ellipse(u, v, ru, rv, scale)
    v_face = v + cap_centre * fh
    hairline = fh * style["hairline"] + traits.hair_part * u + style["temples"] * fh * (u / fw) ** 2
    alpha *= _soft(hairline - v_face, 0.7 * scale)
    canvas.paint(window, alpha, _hair_colour(window, traits))


def _draw_eye(canvas, traits, side, shift, openness, gaze):
    scale = canvas.scale
    cu, cv = side * traits.eye_spacing + shift, traits.eye_level * traits.face_height
    width, height = traits.eye_width, traits.eye_height * openness
    window, u, v = canvas.region(cu, cv, width * 1.6)
    canvas.paint(window, 0.45 * _ellipse(u, v + 1.5, width * 1.45, traits.eye_height * 2.3, scale),
                 traits.skin * 0.78)
    canvas.paint(window, _ellipse(u, v + 0.5, width + 0.8, height + 1.0, scale), (45, 32, 30))
    sclera = _ellipse(u, v, width, height, scale)
    canvas.paint(window, sclera, (238, 234, 228))
    iris_radius = min(traits.eye_height * 1.05, width * 0.62)
    iu = u - gaze * width * 0.3
    canvas.paint(window, sclera * _ellipse(iu, v, iris_radius, iris_radius, scale), traits.eye_colour)
    canvas.paint(window, sclera * _ellipse(iu, v, iris_radius * 0.45, iris_radius * 0.45, scale), (18, 14, 14))
    glint = 0.35 * iris_radius
    canvas.paint(window, 0.8 * sclera * _ellipse(iu + glint, v + glint, 0.7, 0.7, scale), (255, 255, 255))


def _draw_brow(canvas, traits, side, shift, lift):
    cu = side * (traits.eye_spacing + 1) + shift
    cv = traits.eye_level * traits.face_height - traits.brow_gap - lift
    window, u, v = canvas.region(cu, cv, traits.brow_length + 2)
    tilt = side * traits.brow_tilt
    along = math.cos(tilt) * u + math.sin(tilt) * v
    across = math.cos(tilt) * v - math.sin(tilt) * u + traits.brow_arch * (1 - (along / traits.brow_length) ** 2)
    alpha = _ellipse(along, across, traits.brow_length, traits.brow_thickness, canvas.scale)
    canvas.paint(window, alpha, traits.hair * 0.7 + 10)


def _draw_nose(canvas, traits, shift, light_side):
    scale, skin, width = canvas.scale, traits.skin, traits.nose_width
    tip = traits.nose_length * traits.face_height
    window, u, v = canvas.region(shift, tip * 0.5, tip * 0.75 + width)
    v_tip = v - tip * 0.5
    bridge = _ellipse(u + light_side * width * 0.7, v_tip + tip * 0.5, 1.6, tip * 0.55, scale)
    canvas.paint(window, 0.3 * bridge, skin * 0.7)
    canvas.paint(window, 0.5 * _ellipse(u, v_tip - 2.6, width * 1.05, 1.6, scale), skin * 0.75)
    canvas.paint(window, 0.5 * _ellipse(u, v_tip - 0.5, width * 0.8, width * 0.55, scale), skin * 1.08)
    for side in (-1, 1):
        canvas.paint(window, 0.8 * _ellipse(u - side * width * 0.5, v_tip - 1.3, 1.5, 0.9, scale), skin * 0.42)


def _draw_mouth(canvas, traits, shift, smile, opening):
    scale, width = canvas.scale, traits.mouth_width
    cv = MOUTH_LEVEL * traits.face_height
    window, u, v = canvas.region(shift, cv, width + 4)
    # Lips thin out towards the corners, which rise with a smile.
    envelope = np.sqrt(np.clip(1 - (u / width) ** 2, 0, 1))
    centre_line = -smile * 3 * (u / width) ** 2
    edge = _soft(1 - np.abs(u) / width, width * scale)
    top = centre_line - opening / 2
    bottom = centre_line + opening / 2
    upper = _soft(np.minimum(top - v, v - (top - traits.lip_thickness * 0.8 * envelope)), scale)
    lower = _soft(np.minimum(v - bottom, bottom + traits.lip_thickness * envelope - v), scale)
    canvas.paint(window, edge * upper, traits.lips * 0.85)
    canvas.paint(window, edge * lower, traits.lips)
    gap = edge * _soft(np.minimum(v - top, bottom - v) + 0.45, scale)
    canvas.paint(window, gap, (70, 28, 30))
    if opening > 1:
        teeth = edge * _soft(np.minimum(v - top, bottom - v) - 0.4, scale) * _soft(width * 0.75 - np.abs(u), scale)
        canvas.paint(window, teeth, (235, 230, 218))


def _draw_beard(canvas, traits, shift):
    """Full beard, stubble or goatee; painted before the mouth so the lips stay visible."""
    fw, fh, scale = traits.face_width, traits.face_height, canvas.scale
    if traits.beard in ("full", "stubble"):
        window, u, v = canvas.region(0, 0.75 * fh, 1.25 * fw)
        v = v + 0.75 * fh
        outline, _ = _face_shape(u, v, traits, scale, grow=1.04)
        alpha = outline * _soft(v - fh * (0.52 - 0.14 * (u / fw) ** 2), 0.5 * scale)
        density = 0.3 if traits.beard == "stubble" else 0.92
        canvas.paint(window, alpha * density, _hair_colour(window, traits) * 0.85)
    elif traits.beard == "goatee":
        window, u, v = canvas.region(shift, 0.92 * fh, 0.3 * fw)
        # Local coordinates for the goatee's own ellipse, face coordinates for the chin.
        face_u, face_v = u + shift, v + 0.92 * fh
        outline, _ = _face_shape(face_u, face_v, traits, scale, grow=1.03)
        alpha = outline * _ellipse(u, v, 0.24 * fw, 0.22 * fh, scale)
        alpha *= _soft(face_v - (MOUTH_LEVEL * fh + 3.5), 0.5 * scale)
        canvas.paint(window, 0.9 * alpha, traits.hair * 0.8)


def _draw_moustache(canvas, traits, shift):
    width = traits.mouth_width
    window, u, v = canvas.region(shift, MOUTH_LEVEL * traits.face_height - 3.5, width * 1.3)
    alpha = _ellipse(u, v - 0.08 * u ** 2 / width, width * 1.15, 2.3, canvas.scale)
    canvas.paint(window, 0.92 * alpha, traits.hair * 0.8)


def _draw_glasses(canvas, traits, shift):
    scale, half_width, half_height = canvas.scale, traits.eye_width * 1.6, traits.eye_height * 2.7
    eye_v = traits.eye_level * traits.face_height
    power = traits.glasses_roundness
    window, u, v = canvas.region(shift, eye_v, traits.face_width)
    frame = np.zeros(u.shape, dtype=np.float32)
    for side in (-1, 1):
        du = np.abs(u - side * traits.eye_spacing) / half_width
        dv = np.abs(v) / half_height
        radius = (du ** power + dv ** power) ** (1 / power)
        if traits.tinted_glasses:
            canvas.paint(window, 0.6 * _soft(1 - radius, half_height * scale), (30, 35, 40))
        frame = np.maximum(frame, _soft(0.9 - np.abs(radius - 1) * half_height, scale))
    # One horizontal bar, kept between the lenses (bridge) and from the lenses to the ears (temples).
    bar = _soft(0.7 - np.abs(v + half_height * 0.3), scale)
    across = np.abs(u)
    bridge = _soft(traits.eye_spacing - half_width - across, scale)
    temples = _soft(across - traits.eye_spacing - half_width, scale) * _soft(traits.face_width - across, scale)
    canvas.paint(window, np.maximum(frame, bar * (bridge + temples)), traits.glasses)


def draw_face(traits, rng):
    """One 112x112 RGB uint8 image of the identity ``traits`` under a fresh pose, light and expression."""
    fw, fh = traits.face_width, traits.face_height
    centre = (FACE_CENTRE[0] + rng.normal(0, 2.0), FACE_CENTRE[1] + rng.normal(0, 2.0))
    canvas = _Canvas(centre, rng.normal(0, math.radians(4)), rng.uniform(0.96, 1.04))
    scale, u, v = canvas.scale, canvas.u, canvas.v
    yaw = rng.normal(0, 0.08)

    background = rng.uniform(50, 235, 3).astype(np.float32)
    fade = 1 - _pixel_grid()[1] * (rng.uniform(0.1, 0.4) / IMAGE_SIZE)
    np.multiply(background[:, None, None], fade, out=canvas.pixels)
    window, su, sv = canvas.region(0, 1.95 * fh, 2.4 * fw)
    canvas.paint(window, _ellipse(su, sv, 2.3 * fw, 0.8 * fh, scale), traits.clothing)
    _draw_hair(canvas, traits, back=True)
    window, nu, nv = canvas.region(0, 1.1 * fh, 0.6 * fh)
    neck = _soft(0.45 * fw - np.abs(nu), scale) * _soft(nv + 0.55 * fh, scale)
    canvas.paint(window, neck, traits.skin * 0.78)
    for side in (-1, 1):
        window, eu, ev = canvas.region(side * 0.97 * fw, traits.eye_level * fh + 5, 10)
        canvas.paint(window, _ellipse(eu, ev, 5, 9, scale), traits.skin * 0.92)
        canvas.paint(window, 0.5 * _ellipse(eu - side * 1.2, ev, 2.5, 5.5, scale), traits.skin * 0.7)

    face_alpha, radius = _face_shape(u, v, traits, scale)
    # Darker towards the outline, so the face reads as round.
    rounding = 1 - 0.2 * np.minimum(radius, 1) ** 4
    canvas.paint((slice(None), slice(None)), face_alpha, traits.skin[:, None, None] * rounding)
    if traits.blush:
        for side in (-1, 1):
            window, cu, cv = canvas.region(side * 0.55 * fw, 0.25 * fh, 8)
            canvas.paint(window, traits.blush * _ellipse(cu, cv, 7, 5, scale), traits.skin * BLUSH)

    feature_shift = yaw * fw
    _draw_nose(canvas, traits, feature_shift * 0.45, rng.choice([-1, 1]))
    _draw_beard(canvas, traits, feature_shift * 0.3)
    smile = traits.smile + rng.normal(0, 0.3)
    opening = max(0.0, rng.normal(-0.5, 1.2)) if smile > 0.3 else 0.0
    _draw_mouth(canvas, traits, feature_shift * 0.3, smile, opening)
    if traits.beard in ("moustache", "goatee", "full"):
        _draw_moustache(canvas, traits, feature_shift * 0.3)
    openness = float(np.clip(rng.normal(1.0, 0.1), 0.65, 1.15))
    gaze = rng.normal(0, 0.4)
    lift = rng.normal(0, 0.8)
    for side in (-1, 1):
        _draw_eye(canvas, traits, side, feature_shift * 0.25, openness, gaze)
        _draw_brow(canvas, traits, side, feature_shift * 0.25, lift)
    _draw_hair(canvas, traits, back=False)
    if traits.glasses is not None:
        _draw_glasses(canvas, traits, feature_shift * 0.25)

    light_angle = rng.uniform(0, 2 * math.pi)
    shading = 1 + rng.uniform(0, 0.25) * (math.cos(light_angle) * u + math.sin(light_angle) * v) / fw
    tint = (rng.uniform(0.8, 1.15) * (1 + rng.normal(0, 0.03, 3))).astype(np.float32)
    canvas.pixels *= shading
    canvas.pixels *= tint[:, None, None]
    # Uniform sensor noise: rng.bytes is ten times faster than normal deviates.
    noise = np.frombuffer(rng.bytes(canvas.pixels.size), dtype=np.uint8).reshape(canvas.pixels.shape)
    strength = rng.uniform(1, 4) / 74
    canvas.pixels += np.multiply(noise, strength, dtype=np.float32)
    canvas.pixels -= 127.5 * strength  # zero mean
    np.clip(canvas.pixels, 0, 255, out=canvas.pixels)
    return np.ascontiguousarray(canvas.pixels.astype(np.uint8).transpose(1, 2, 0))


def _pillow_bytes(image, **options):
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def encode_image(pixels, image_format="jpeg"):
    """Encode an RGB uint8 image as ``image_format`` (``jpeg`` or one of the planted bin formats)."""
    image = Image.fromarray(pixels)
    if image_format == "jpeg":
        return _pillow_bytes(image, format="JPEG", quality=JPEG_QUALITY)
    if image_format == "jpeg_progressive":
        return _pillow_bytes(image, format="JPEG", quality=JPEG_QUALITY, progressive=True)
    if image_format == "jpeg_grayscale":
        return _pillow_bytes(image.convert("L"), format="JPEG", quality=JPEG_QUALITY)
    if image_format == "jpeg_cmyk":
        return _pillow_bytes(image.convert("CMYK"), format="JPEG", quality=JPEG_QUALITY)
    if image_format == "png":
        return _pillow_bytes(image, format="PNG")
    if image_format == "bmp":
        return _pillow_bytes(image, format="BMP")
    if image_format == "jpeg_12bit":
        # Spread 8 bits over 12 (v * 16 + v // 16) so that 4095 is white.
        wide = pixels.astype(np.uint16) * 16 + pixels // 16
        return bytes(imagecodecs.jpeg8_encode(wide, level=JPEG_QUALITY, bitspersample=12))
    if image_format == "jpeg_lossless":
        return bytes(imagecodecs.jpeg8_encode(pixels, lossless=True))
    raise ValueError(f"unknown demo image format {image_format!r}")


def _identity_sizes(images, identities, rng):
    """Images per identity: uneven, every identity at least one."""
    weights = rng.lognormal(0, 0.5, identities)
    return 1 + rng.multinomial(images - identities, weights / weights.sum())


def _write_rec(out_dir, traits, sizes, rng):
    images = int(sizes.sum())
    with RecordWriter(out_dir / "train.rec", out_dir / "train.idx") as writer:
        key = 1
        for label, (identity, count) in enumerate(zip(traits, sizes)):
            for _ in range(count):
                writer.write(key, pack_header(float(label), encode_image(draw_face(identity, rng)), key))
                key += 1
        start = 1
        for label, count in enumerate(sizes):
            writer.write(images + 1 + label, pack_header([start, start + count], b""))
            start += count
        writer.write(0, pack_header([images + 1, images + 1 + len(sizes)], b""))


def _write_demo_bin(path, traits, rng, planted_formats, as_arrays):
    """Write BIN_PAIRS pairs (half same identity) with ``planted_formats`` at random images."""
    issame = [index % 2 == 0 for index in range(BIN_PAIRS)]
    formats = ["jpeg"] * (2 * BIN_PAIRS)
    for position, image_format in zip(rng.choice(2 * BIN_PAIRS, len(planted_formats), replace=False),
                                      planted_formats):
        formats[position] = image_format
    images = []
    for pair, same in enumerate(issame):
        first, second = rng.choice(len(traits), 2, replace=False)
        for index, identity in ((2 * pair, first), (2 * pair + 1, first if same else second)):
            encoded = encode_image(draw_face(traits[identity], rng), formats[index])
            images.append(np.frombuffer(encoded, dtype=np.uint8).reshape(-1, 1) if as_arrays else encoded)
    write_py2_bin(path, images, issame)
    return formats


def make_demo_dataset(out_dir, images=2000, identities=40, seed=0):
    """Write a faces_emore-like dataset into ``out_dir``; the same arguments give identical bytes.

    Returns ``{bin name: [format of each image]}`` (formats as in ``encode_image``).
    """
    if identities < 1 or images < identities:
        raise ValueError(f"demo dataset needs at least one identity and one image per identity, "
                         f"got images={images}, identities={identities}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Independent streams, so that e.g. the number of images does not change the bins.
    traits_rng, sizes_rng, rec_rng, bins_rng = map(np.random.default_rng, np.random.SeedSequence(seed).spawn(4))
    traits = [random_face_traits(traits_rng) for _ in range(identities)]
    # Different-identity pairs need two people; a lone identity gets a stranger for them.
    bin_traits = traits if identities > 1 else traits + [random_face_traits(traits_rng)]
    sizes = _identity_sizes(images, identities, sizes_rng)

    _write_rec(out_dir, traits, sizes, rec_rng)
    log.info("%s: train.rec with %d images of %d identities", out_dir, images, identities)
    write_bytes(out_dir / "property", f"{identities},{IMAGE_SIZE},{IMAGE_SIZE}".encode())
    formats = {}
    for name in BIN_NAMES:
        planted = () if name == "lfw" else TF_READABLE_EXTRA_FORMATS + TF_UNREADABLE_FORMATS
        formats[name] = _write_demo_bin(out_dir / f"{name}.bin", bin_traits, bins_rng, planted, as_arrays=name != "lfw")
        log.info("%s: %s.bin with %d pairs, planted formats %s", out_dir, name, BIN_PAIRS, ", ".join(planted) or "none")
    return formats
