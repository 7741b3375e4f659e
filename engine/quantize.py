"""int8 for the model's Linear layers, and the load-time check that decides whether
`model.precision = "auto"` serves it on a CPU.

Dynamic quantisation: Linear weights are stored as int8 once, each batch's activations
are quantised on the fly (per tensor), the rest of the model stays fp32. That per-tensor
activation scale is what real CLIP ViTs can break: a few residual channels carry values
orders of magnitude above the rest (activation outliers), and one scale for all leaves
the others a handful of levels. Random-init models have no such outliers, and the
product's weights cannot be downloaded everywhere it is tested, so the agreement is
measured on the weights actually loaded, at start, on photos bundled with the repository.
The same per-tensor scale makes a photo's int8 vector depend, within that rounding
(cosine >= 0.999 on the test model), on the other photos of its forward pass: a shopper's
results can differ in their last decimals with who else searched in the same moment.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from engine.config import PROJECT_ROOT

if TYPE_CHECKING:
    from engine.embedder import Embedder

log = logging.getLogger(__name__)

# The demo catalog's product photos: real photos of the garments the bot searches for.
AGREEMENT_PHOTOS = PROJECT_ROOT / "data" / "demo" / "images"
AGREEMENT_PHOTO_COUNT = 8
# Text queries embedded both ways where the text tower is used (text search, refinement).
AGREEMENT_TEXTS = ("a red summer dress", "black leather boots", "a striped shirt")
# Lowest cosine to fp32 any photo (or text) may have for `auto` to serve int8. bf16 on
# real weights (imagenet-lite0) kept cosine >= 0.996, 95% of each photo's top-10 results
# and its category precision within the bootstrap interval (docs/benchmarks.md, section
# 7); 0.99 allows int8 a little more rounding than that, and
# random-init ViTs, which have no outliers, stay at 0.9995-0.9999. One planted outlier
# channel per block (100x) brings the tiny test model to 0.983, 1000x to 0.965: refused
# (tests/engine/test_quantize.py).
MIN_COSINE = 0.99


def quantize_linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its Linear layers swapped, in place, for int8 ones (dynamic
    quantisation, CPU only); `plain_linear_layers` taken before can put them back.

    torch.ao.quantization is deprecated in favour of torchao, but torchao's eager CPU
    int8 path (Int8DynamicActivationInt8WeightConfig) is slower than this one without
    torch.compile (pytorch/ao#4365, #3157), and torchao is not installable here;
    torch.ao's kernels still ship in torch 2.14. So only its deprecation notices are
    silenced, here, where the choice was made."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel"
        )
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True
        )
    for module in quantized.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            # open_clip reads its text tower's input dtype off the first MLP's weight, which
            # a quantised Linear has as a method; this is open_clip's own int8 hook
            # (open_clip.utils.convert_int8_model_to_inference_mode): activations are fp32.
            module.int8_original_dtype = torch.float32  # type: ignore[assignment]  # not a tensor
    return quantized


def agreement_photos(
    folder: Path = AGREEMENT_PHOTOS, count: int = AGREEMENT_PHOTO_COUNT
) -> list[Image.Image]:
    """`count` photos spread over the folder's (sorted) files; none if it is missing."""
    paths = sorted(folder.glob("*.jpg"))
    step = max(1, len(paths) // count) if paths else 1
    return [Image.open(path).convert("RGB") for path in paths[::step][:count]]


def plain_linear_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The Linear layers quantisation swaps out, by name (the objects themselves)."""
    return {name: m for name, m in model.named_modules() if type(m) is torch.nn.Linear}


def put_back(model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> None:
    """Undo `quantize_linear_layers`: the fp32 Linear layers in their places again."""
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)


def vectors(embedder: Embedder, photos: list[Image.Image]) -> list[np.ndarray]:
    """The photos' vectors, and the texts' where the text tower serves searches."""
    found = [embedder.embed_images(photos)]
    if embedder.text_search:
        found.append(embedder.embed_texts(AGREEMENT_TEXTS))
    return found


def lowest_cosine_of(exact: list[np.ndarray], other: list[np.ndarray]) -> float:
    return min(float(np.min((a * b).sum(axis=1))) for a, b in zip(exact, other, strict=True))


def lowest_cosine(fp32: Embedder, other: Embedder, photos: list[Image.Image]) -> float:
    """The lowest cosine between two models' vectors of the same photos (and texts)."""
    return lowest_cosine_of(vectors(fp32, photos), vectors(other, photos))


def int8_if_it_agrees(
    fp32: Embedder, photos: list[Image.Image] | None = None, min_cosine: float = MIN_COSINE
) -> Embedder:
    """`auto` on a CPU: `fp32` quantised (in place: no second model in memory) if every
    photo's vector stays within `min_cosine` of fp32's, else `fp32` as it was."""
    return checked_int8(fp32, photos, min_cosine)[0]


def checked_int8(
    fp32: Embedder, photos: list[Image.Image] | None = None, min_cosine: float = MIN_COSINE
) -> tuple[Embedder, float | None]:
    """`int8_if_it_agrees`, with the lowest cosine the check measured (None where it did
    not run: nothing to quantise, or no photos). Logs the choice, the lowest cosine and
    what the check cost."""
    started = time.perf_counter()
    if not fp32.text_search and not plain_linear_layers(fp32.model.visual):
        # A convolutional image tower and no text search (imagenet-lite0): int8 would
        # change no vector the engine uses, so it is not worth the check or the label.
        log.info('model.precision "auto": fp32 (no Linear layer in the image tower)')
        return fp32, None
    photos = agreement_photos() if photos is None else photos
    if not photos:
        log.warning("no photos in %s to check int8 against: serving fp32", AGREEMENT_PHOTOS)
        return fp32, None
    exact = vectors(fp32, photos)
    layers = plain_linear_layers(fp32.model)
    int8 = fp32.in_precision("int8", keep_this=False)
    cosine = lowest_cosine_of(exact, vectors(int8, photos))
    chosen = int8 if cosine >= min_cosine else fp32
    if chosen is fp32:
        put_back(fp32.model, layers)
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
