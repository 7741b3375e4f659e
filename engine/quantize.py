"""The load-time check that decides whether `model.precision = "auto"` serves int8 on a
CPU (engine/onnx_int8.py runs it).

Dynamic quantisation stores the image tower's matrix weights as int8 once and quantises
each pass's activations on the fly, per tensor. That per-tensor scale is what real CLIP
ViTs can break: a few residual channels carry values orders of magnitude above the rest
(activation outliers), and one scale for all leaves the others a handful of levels.
Random-init models have no such outliers, and the product's weights cannot be downloaded
everywhere it is tested, so the agreement is measured on the weights actually loaded, at
start, on photos bundled with the repository. The same per-tensor scale makes a photo's
int8 vector depend, within that rounding (cosine >= 0.999 on the test model), on the other
photos of its forward pass: a shopper's results can differ in their last decimals with
who else searched in the same moment.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from engine.config import PROJECT_ROOT
from engine.onnx_int8 import Int8Unavailable, has_linear_layers

if TYPE_CHECKING:
    from engine.embedder import Embedder

log = logging.getLogger(__name__)

# The demo catalog's product photos: real photos of the garments the bot searches for.
AGREEMENT_PHOTOS = PROJECT_ROOT / "data" / "demo" / "images"
AGREEMENT_PHOTO_COUNT = 8
# Lowest cosine to fp32 any photo may have for `auto` to serve int8. bf16 on
# real weights (imagenet-lite0) kept cosine >= 0.996, 95% of each photo's top-10 results
# and its category precision within the bootstrap interval (docs/benchmarks.md, section
# 7); 0.99 allows int8 a little more rounding than that, and
# random-init ViTs, which have no outliers, stay at 0.9998-0.9999. One planted outlier
# channel per block (100x) brings the tiny test model to 0.995, 1000x to 0.964: refused
# (tests/engine/test_quantize.py).
MIN_COSINE = 0.99


def agreement_photos(
    folder: Path = AGREEMENT_PHOTOS, count: int = AGREEMENT_PHOTO_COUNT
) -> list[Image.Image]:
    """`count` photos spread over the folder's (sorted) files; none if it is missing."""
    paths = sorted(folder.glob("*.jpg"))
    step = max(1, len(paths) // count) if paths else 1
    return [Image.open(path).convert("RGB") for path in paths[::step][:count]]


def lowest_cosine(fp32: Embedder, other: Embedder, photos: list[Image.Image]) -> float:
    """The lowest cosine between two models' vectors of the same photos."""
    exact, measured = fp32.embed_images(photos), other.embed_images(photos)
    return float(np.min((exact * measured).sum(axis=1)))


def int8_if_it_agrees(
    fp32: Embedder, photos: list[Image.Image] | None = None, min_cosine: float = MIN_COSINE
) -> Embedder:
    """`auto` on a CPU: an int8 embedder sharing `fp32`'s torch model, if every photo's
    vector stays within `min_cosine` of fp32's, else `fp32` itself."""
    return checked_int8(fp32, photos, min_cosine)[0]


def checked_int8(
    fp32: Embedder, photos: list[Image.Image] | None = None, min_cosine: float = MIN_COSINE
) -> tuple[Embedder, float | None]:
    """`int8_if_it_agrees`, with the lowest cosine the check measured (None where it did
    not run: nothing to quantise, no photos, or an image tower that cannot be exported).
    Logs the choice, the lowest cosine and what the check cost."""
    started = time.perf_counter()
    if not has_linear_layers(fp32.model.visual):
        # A convolutional image tower (imagenet-lite0): int8 quantises matrix products
        # only, so it would change no vector; not worth the check or the label.
        log.info('model.precision "auto": fp32 (no Linear layer in the image tower)')
        return fp32, None
    photos = agreement_photos() if photos is None else photos
    if not photos:
        log.warning("no photos in %s to check int8 against: serving fp32", AGREEMENT_PHOTOS)
        return fp32, None
    try:
        int8 = fp32.in_precision("int8")
    except Int8Unavailable as exc:
        log.warning('model.precision "auto": fp32 (int8: %s)', exc)
        return fp32, None
    cosine = lowest_cosine(fp32, int8, photos)
    chosen = int8 if cosine >= min_cosine else fp32
    log.info(
        'model.precision "auto": %s (int8 against fp32 on %d photos: lowest cosine %.4f, '
        "threshold %.3f; checked in %.0f ms)",
        chosen.precision,
        len(photos),
        cosine,
        min_cosine,
        (time.perf_counter() - started) * 1000,
    )
    return chosen, cosine
