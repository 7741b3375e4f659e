"""A photo's garment colour as a small histogram, for "this, in this colour".

Image models (CNN or CLIP) are partly colour-blind: a red and a blue shirt of the same cut
sit close together. Each build stores one colour descriptor per catalog image beside the
index (`colour.npz`, checksummed like the category probe; an index built without one
simply has no colour re-score). At query time the engine adds `search.colour_weight` x
the colour similarity of the query photo and each of the top candidates to their
ordering relevance (the similarity shown stays the cosine). Measured in docs/quality.md.

The descriptor: the photo reduced to SIDE x SIDE pixels; the plain background (the
border's colour, when the border is near-uniform) left out; the rest weighted towards the
centre (where the garment is); each pixel's HSV colour soft-binned into HUE_BINS hues x
2 lightness levels for coloured pixels and ACHROMATIC_BINS lightness levels for greys.
The histogram is stored as its square root (unit length), so two descriptors' dot product
is their Bhattacharyya coefficient: 1 = the same colours, 0 = none in common.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.catalog import ImageRecord
from engine.config import ImageSettings
from engine.images import ImageError, decode_image

log = logging.getLogger(__name__)

COLOUR_FILE = "colour.npz"
# Bumped whenever the descriptor changes: an older file is then ignored (no re-score)
# instead of being compared with descriptors of another kind.
DESCRIPTOR_VERSION = 1
SIDE = 48
HUE_BINS = 12
ACHROMATIC_BINS = 4
SIZE = 2 * HUE_BINS + ACHROMATIC_BINS
BORDER = 3  # pixels of the reduced photo that show the background, if it is plain
# The border counts as a plain background when most of it is this close to its median
# colour (RGB distance, 0..1 scale); pixels this close to it are background too.
BACKGROUND_DISTANCE = 0.12
PLAIN_BORDER_SHARE = 0.7
# A garment nearly the background's colour (a white shirt on white) leaves few pixels:
# below this share of the weight, the background is kept rather than describing noise.
MIN_FOREGROUND_SHARE = 0.08
CENTRE_SIGMA = 0.35  # of the side: the centre weighting's spread
DECODE_THREADS = 4  # build time: files decoded at once


def _soft_bins(position: np.ndarray, bins: int, circular: bool) -> tuple[np.ndarray, ...]:
    """(lower bin, upper bin, upper's share) of positions in [0, bins) bin units, each
    value split linearly between the two nearest bin centres."""
    centred = position - 0.5
    lower = np.floor(centred)
    upper_share = centred - lower
    lower_bin = lower.astype(np.int64)
    upper_bin = lower_bin + 1
    if circular:
        return lower_bin % bins, upper_bin % bins, upper_share
    low_clipped = np.clip(lower_bin, 0, bins - 1)
    high_clipped = np.clip(upper_bin, 0, bins - 1)
    return low_clipped, high_clipped, upper_share


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in [0, 1), saturation and value in [0, 1] of float RGB pixels (N x 3, 0..1)."""
    value = rgb.max(axis=1)
    spread = value - rgb.min(axis=1)
    saturation = np.where(value > 0, spread / np.maximum(value, 1e-6), 0.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(spread, 1e-6)
    hue = np.where(
        value == r, (g - b) / safe, np.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    return (hue / 6.0) % 1.0, saturation, value


def _centre_weights() -> np.ndarray:
    offsets = (np.arange(SIDE) + 0.5) / SIDE - 0.5
    weights: np.ndarray = np.exp(
        -(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * CENTRE_SIGMA**2)
    )
    return weights


_CENTRE = _centre_weights()
_RING = np.ones((SIDE, SIDE), dtype=bool)
_RING[BORDER:-BORDER, BORDER:-BORDER] = False


def _weights(pixels: np.ndarray) -> np.ndarray:
    """Each pixel's weight (SIDE x SIDE): centre-weighted, plain background left out."""
    border = pixels[_RING]
    background = np.median(border, axis=0)
    near = np.linalg.norm(border - background, axis=1) < BACKGROUND_DISTANCE
    if near.mean() < PLAIN_BORDER_SHARE:
        return _CENTRE
    foreground = np.linalg.norm(pixels - background, axis=2) >= BACKGROUND_DISTANCE
    kept: np.ndarray = _CENTRE * foreground
    return kept if kept.sum() >= MIN_FOREGROUND_SHARE * _CENTRE.sum() else _CENTRE


def describe(image: Image.Image) -> np.ndarray:
    """The colour descriptor (SIZE floats, unit length, non-negative) of an RGB photo."""
    small = image.convert("RGB") if image.mode != "RGB" else image
    small = small.resize((SIDE, SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    weights = _weights(pixels).reshape(-1)
    hue, saturation, value = _hsv(pixels.reshape(-1, 3))
    # How coloured a pixel is: greys, near-blacks and washed-out pixels go to lightness bins.
    chroma = np.clip((saturation - 0.15) / 0.2, 0, 1) * np.clip((value - 0.15) / 0.15, 0, 1)
    coloured = weights * chroma
    grey = weights * (1 - chroma)
    low, high, share = _soft_bins(hue * HUE_BINS, HUE_BINS, circular=True)
    dark, bright, bright_share = _soft_bins(value * 2, 2, circular=False)
    grey_low, grey_high, grey_share = _soft_bins(value * ACHROMATIC_BINS, ACHROMATIC_BINS, False)
    bins = [
        (level * HUE_BINS + hue_bin, coloured * hue_share * level_share)
        for hue_bin, hue_share in ((low, 1 - share), (high, share))
        for level, level_share in ((dark, 1 - bright_share), (bright, bright_share))
    ]
    bins += [
        (2 * HUE_BINS + grey_low, grey * (1 - grey_share)),
        (2 * HUE_BINS + grey_high, grey * grey_share),
    ]
    histogram = np.bincount(
        np.concatenate([b for b, _ in bins]),
        weights=np.concatenate([w for _, w in bins]),
        minlength=SIZE,
    )
    total = histogram.sum()
    if total <= 0:
        return np.zeros(SIZE, dtype=np.float32)
    descriptor: np.ndarray = np.sqrt(histogram / total).astype(np.float32)
    return descriptor


def combine(descriptors: Sequence[np.ndarray]) -> np.ndarray | None:
    """One descriptor for several photos (an album is one look): their histograms'
    mean, or None for none."""
    if not descriptors:
        return None
    mean = np.mean([d.astype(np.float64) ** 2 for d in descriptors], axis=0)
    combined: np.ndarray = np.sqrt(mean / max(float(mean.sum()), 1e-12)).astype(np.float32)
    return combined


@dataclass(frozen=True)
class ColourTable:
    """The catalog's descriptors, one row per index key; `known` is False for images whose
    file was not on this machine at build time (they get no colour term)."""

    descriptors: np.ndarray  # keys x SIZE, float16
    known: np.ndarray  # keys, bool

    def similarities(self, query: np.ndarray, keys: Sequence[int]) -> np.ndarray:
        """Bhattacharyya coefficients of `query` with the images `keys` (0 where unknown)."""
        rows = np.asarray(keys, dtype=np.int64)
        inside = rows < len(self.known)
        safe = np.where(inside, rows, 0)
        values = self.descriptors[safe].astype(np.float32) @ query.astype(np.float32)
        similarities: np.ndarray = np.where(inside & self.known[safe], values, 0.0)
        return similarities

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(
                handle,
                version=np.int64(DESCRIPTOR_VERSION),
                descriptors=self.descriptors.astype(np.float16),
                known=self.known.astype(bool),
            )

    @classmethod
    def load(cls, path: Path) -> ColourTable | None:
        """The table, or None when it holds descriptors of another version."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != DESCRIPTOR_VERSION:
                log.warning(
                    "%s has colour descriptors of another version: no colour re-score", path
                )
                return None
            return cls(data["descriptors"].astype(np.float16), data["known"].astype(bool))


def describe_bytes(data: bytes, limits: ImageSettings) -> np.ndarray | None:
    """The descriptor of an encoded photo (decoded at reduced scale), or None where it
    does not decode."""
    try:
        image = decode_image(data, limits, draft_size=SIDE)
    except (OSError, ImageError):
        return None
    return describe(image)


def _describe_file(record: ImageRecord, limits: ImageSettings) -> np.ndarray | None:
    if not record.local_path:
        return None
    try:
        data = Path(record.local_path).read_bytes()
    except OSError:
        return None  # the row is in the index, so it was readable once; no colour for it
    return describe_bytes(data, limits)


def colour_table(
    records: Sequence[ImageRecord],
    limits: ImageSettings,
    reuse: Mapping[str, np.ndarray] | None = None,
) -> ColourTable:
    """Descriptors of the images `records` (row = key): taken from `reuse` (by content
    digest) where there, else decoded from their local files (on a few threads: decoding
    releases the GIL)."""
    count = max((r.key for r in records), default=-1) + 1
    descriptors = np.zeros((count, SIZE), dtype=np.float16)
    known = np.zeros(count, dtype=bool)
    reuse = reuse or {}
    fresh = [r for r in records if r.sha256 not in reuse]
    for record in records:
        if record.sha256 in reuse:
            descriptors[record.key] = reuse[record.sha256]
            known[record.key] = True
    with ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="colour") as pool:
        for record, described in zip(
            fresh, pool.map(lambda r: _describe_file(r, limits), fresh), strict=True
        ):
            if described is not None:
                descriptors[record.key] = described
                known[record.key] = True
    return ColourTable(descriptors, known)
