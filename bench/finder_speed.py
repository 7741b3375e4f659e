"""The garment finder's time beside the model's own: `make bench`'s "finder" section.

Street photos (street-ccp, or the test fixtures where the shared data is absent) are
decoded once; then, photo by photo and taking turns (drift hits every variant alike), on
one torch thread:
- the embedder's own forward pass (`imagenet-lite0`, real weights, batch 1, the served
  precision): the reference every other figure is a ratio to;
- the finder's whole pass (`GarmentFinder.find`: resize, trunk, head, look gate, boxes)
  at the served input size and at the size the head was trained at, on the calling
  thread (like the model) and on a thread of its own (as the engine runs it), run by
  ONNX Runtime on one thread of its own (served), by the frozen TorchScript network
  (served before; on one torch thread, and on two as the engine ran it) and by its eager
  modules;
- scaling the photo to the finder's input: torch's uint8 resize (served) against
  Pillow's BILINEAR resize (before);
- the trunk alone in the variants tried: as loaded, batch norms folded, folded and
  channels-last, the same in bf16, and on smaller inputs;
- decoding the photo's JPEG as a garment search does (`DECODE_SIDE`): what a search
  saves by reusing the photo `find_garments` decoded.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine import garments as finder_module
from engine.config import DEFAULT_CONFIG_PATH, load_settings
from engine.embedder import load_embedder
from engine.garment_search import DECODE_SIDE, configured_finder
from engine.images import decode_image

ROOT = Path(__file__).resolve().parent.parent
STREET = ROOT.parent / "shared" / "datasets" / "street-ccp" / "photos"
FIXTURES = ROOT / "tests" / "fixtures" / "street"
SMALLER_SIDE = 256


def street_photos(count: int) -> list[bytes]:
    folder = STREET if STREET.is_dir() else FIXTURES
    return [p.read_bytes() for p in sorted(folder.glob("*.jpg"))[:count]]


def _timed(run: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    run(*args, **kwargs)
    return (time.perf_counter() - started) * 1000


# The engine runs the finder on a thread of its own (engine/garment_search.py); everything
# else here runs on the calling thread, as the model does on its batcher's thread.
FINDER_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="garment-finder")


def _on_thread(run: Callable[..., Any], *args: Any) -> Any:
    return FINDER_THREAD.submit(run, *args).result()


def pillow_input(image: Image.Image, side: int) -> torch.Tensor:
    """The finder's input as it was made before torch's resize: Pillow's BILINEAR."""
    size = finder_module.input_size(image.width, image.height, side)
    resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32).copy())
    return (pixels.permute(2, 0, 1).unsqueeze(0) / 127.5) - 1.0


def _trunk_variants(
    plain: torch.nn.Module, served_side: int
) -> dict[str, tuple[torch.nn.Module, Any, int]]:
    """name -> (trunk, (input dtype, memory layout), input long side)."""
    trained = finder_module.INPUT_LONG_SIDE
    folded = finder_module.fold_batch_norms(copy.deepcopy(plain)).eval()
    fast = finder_module.fast_trunk(copy.deepcopy(plain))
    bf16 = copy.deepcopy(fast).to(torch.bfloat16)
    nchw, last = (torch.float32, torch.contiguous_format), (torch.float32, torch.channels_last)
    return {
        f"trunk as loaded, {trained} px": (plain, nchw, trained),
        f"trunk, batch norms folded, {trained} px": (folded, nchw, trained),
        f"trunk, folded + channels-last, {trained} px": (fast, last, trained),
        f"trunk, folded + channels-last, bf16, {trained} px": (
            bf16,
            (torch.bfloat16, torch.channels_last),
            trained,
        ),
        f"trunk, folded + channels-last, {served_side} px (shipped)": (fast, last, served_side),
        f"trunk, folded + channels-last, {SMALLER_SIDE} px": (fast, last, SMALLER_SIDE),
    }


def measure(
    quick: bool, model_cache: Path | None = None, photos: int | None = None
) -> dict[str, Any]:
    """`photos`: how many street photos (by default 8 quick, 30 not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _measure(quick, model_cache, photos or (8 if quick else 30), threads)
    finally:
        torch.set_num_threads(threads)


def _measure(
    quick: bool, model_cache: Path | None, photo_count: int, process_threads: int
) -> dict[str, Any]:
    """`process_threads`: the torch threads the engine's TorchScript finder ran on."""
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    model = {"name": "imagenet-lite0", "cache_dir": str(model_cache or "")}
    embedder = load_embedder(settings.model.model_copy(update=model))
    finder = configured_finder(settings.garments)
    trained_finder = finder_module.GarmentFinder(params=finder.params)
    script_finder, eager_finder = (
        finder_module.GarmentFinder(params=finder.params, long_side=finder.long_side, runtime=r)
        for r in ("torchscript", "eager")
    )
    photos = street_photos(photo_count)
    images = [decode_image(data, draft_size=DECODE_SIDE) for data in photos]
    finder.find(images[0])  # loads them
    trained_finder.find(images[0])
    eager_finder.find(images[0])
    script_finder.find(images[0])
    served, trained = finder.long_side, finder_module.INPUT_LONG_SIDE
    variants = _trunk_variants(finder_module.load_trunk(), served)
    whole = {
        f"finder, whole pass, {served} px, ONNX Runtime (shipped)": finder,
        f"finder, whole pass, {trained} px": trained_finder,
        f"finder, whole pass, {served} px, TorchScript (before)": script_finder,
        f"finder, whole pass, {served} px, eager modules": eager_finder,
    }
    script_served_before = (
        f"finder, whole pass, {served} px, TorchScript on {process_threads} torch threads"
        " (as served before)"
    )
    own_thread = f"finder, whole pass, {served} px, on a thread of its own (as served)"
    times: dict[str, list[float]] = {"model forward (reference)": []}
    times.update({name: [] for name in whole})
    times[own_thread] = []
    times[script_served_before] = []
    times.update({name: [] for name in variants})
    resizes: dict[str, Callable[[Image.Image, int], torch.Tensor]] = {
        f"photo to input, torch uint8 resize, {served} px (shipped)": finder_module.photo_tensor,
        f"photo to input, Pillow BILINEAR, {served} px (before)": pillow_input,
    }
    times.update({name: [] for name in resizes})
    times["decode for the garment search"] = []
    with torch.inference_mode():
        for _ in range(2 if quick else 3):
            for data, image in zip(photos, images, strict=True):
                pixels = embedder.model_input(embedder.preprocess_image(image).unsqueeze(0))
                times["model forward (reference)"].append(
                    _timed(embedder.model.encode_image, pixels)
                )
                for name, each in whole.items():
                    times[name].append(_timed(each.find, image))
                times[own_thread].append(_timed(_on_thread, finder.find, image))
                torch.set_num_threads(process_threads)
                times[script_served_before].append(_timed(script_finder.find, image))
                torch.set_num_threads(1)
                for name, (trunk, (dtype, layout), side) in variants.items():
                    tensor = finder_module.photo_tensor(image, side)
                    tensor = tensor.to(dtype).contiguous(memory_format=layout)
                    times[name].append(_timed(trunk, tensor))
                for name, resize in resizes.items():
                    times[name].append(_timed(resize, image, served))
                times["decode for the garment search"].append(
                    _timed(decode_image, data, draft_size=DECODE_SIDE)
                )
    reference = statistics.median(times["model forward (reference)"])
    return {
        "photos": len(photos),
        "photo_size": f"{images[0].width}x{images[0].height}",
        "model": "imagenet-lite0",
        "model_precision": embedder.precision,  # as load_embedder resolved "auto"
        "model_input": embedder.image_size,
        "rows": [
            {
                "name": name,
                "median_ms": statistics.median(values),
                "min_ms": min(values),
                "ratio_to_model": statistics.median(values) / reference,
            }
            for name, values in times.items()
        ],
    }


def render(finder: dict[str, Any]) -> list[str]:
    lines = [
        "## 8. Garment finder beside the model",
        "",
        f"{finder['photos']} street photos (e.g. {finder['photo_size']}), decoded once; per photo,"
        " taking turns, on one torch thread (ONNX Runtime on one thread of its own): the"
        " embedder's own forward pass"
        f" ({finder['model']}, {finder['model_precision']}, {finder['model_input']} px, batch 1)"
        " and the garment finder (`engine/garments.py`): its whole pass (resize, trunk, head,"
        " look gate, boxes) and its trunk alone in the variants tried (input scaled to the"
        " given long side). Medians, and their ratio to the model's median:",
        "",
        "| pass | median | fastest | ratio to the model |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['name']} | {r['median_ms']:.1f} ms | {r['min_ms']:.1f} ms | {r['ratio_to_model']:.2f}x |"
        for r in finder["rows"]
    ]
    return [*lines, ""]


def main() -> None:
    result = measure(quick=True)
    print("\n".join(render(result)))


if __name__ == "__main__":
    main()
