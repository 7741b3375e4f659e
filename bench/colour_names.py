"""A garment photo's basic colour name, for judging the colour re-score (bench.quality).

Deliberately not the engine's descriptor (engine/colour.py): another colour space (CIELAB,
not HSV), another region (the photo's central box, no background model), and a hard
decision (the nearest of eleven basic colour terms, Berlin & Kay) instead of a soft
histogram. A photo is named only when one name covers at least CLEAR_SHARE of its central
box, i.e. when its garment is clearly one colour. What agreement of these names measures,
and how the namer was checked by eye, is written in docs/quality.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from engine.images import decode_image

NAMES = (
    "black",
    "grey",
    "white",
    "beige",
    "brown",
    "red",
    "pink",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
)
_INDEX = {name: i for i, name in enumerate(NAMES)}
ACHROMATIC_CHROMA = 12.0  # C*ab below this: a grey, named by lightness alone
SIDE = 64
CENTRE = (0.3, 0.7)  # the central box, as shares of width and height
CLEAR_SHARE = 0.5


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """N x 3 sRGB in 0..1 -> N x 3 CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=np.float32,
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack(
        [116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1
    )


def name_shares(image: Image.Image) -> np.ndarray:
    """The share of the central box's pixels nearest to each basic colour (NAMES order)."""
    small = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX)
    low, high = (int(SIDE * share) for share in CENTRE)
    box = np.asarray(small, dtype=np.float32)[low:high, low:high].reshape(-1, 3) / 255.0
    names = [_name(*pixel) for pixel in _srgb_to_lab(box).tolist()]
    shares: np.ndarray = np.bincount([_INDEX[n] for n in names], minlength=len(NAMES)) / len(names)
    return shares


def _name(lightness: float, a: float, b: float) -> str:
    """A basic colour term from CIELAB lightness, chroma and hue angle."""
    chroma = math.hypot(a, b)
    if chroma < ACHROMATIC_CHROMA:
        return "black" if lightness < 25 else "white" if lightness > 82 else "grey"
    hue = math.degrees(math.atan2(b, a)) % 360
    if hue >= 330 or hue < 20:
        return "pink" if lightness > 60 else "red"
    if hue < 100 and lightness > 65 and chroma < 30:
        return "beige"
    if hue < 50:
        return "pink" if lightness > 65 else "brown" if chroma < 35 else "red"
    if hue < 75:
        return "orange" if lightness > 55 else "brown"
    if hue < 110:
        return "yellow" if lightness > 55 else "brown"
    if hue < 200:
        return "green"
    return "blue" if hue < 300 else "purple"


def clear_name(image: Image.Image) -> str | None:
    """The photo's colour name when one covers CLEAR_SHARE of its centre, else None."""
    shares = name_shares(image)
    best = int(np.argmax(shares))
    return NAMES[best] if shares[best] >= CLEAR_SHARE else None


def name_of_file(path: Path) -> str | None:
    try:
        return clear_name(decode_image(path.read_bytes(), draft_size=SIDE))
    except (OSError, ValueError):
        return None
