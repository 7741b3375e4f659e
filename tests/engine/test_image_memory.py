"""Issue 15, item 10: what decoding a photo may cost. A small PNG can decode to 160 MB of
pixels; every full-size copy made on the way to RGB used to add as much again."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from engine import images as im
from engine.config import ImageSettings
from tests.fakes.hostile_images import huge_transparent_png
from tests.fakes.memory import PeakMemory


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return huge_transparent_png()


def test_a_huge_png_costs_its_decoded_pixels_once(huge_png: bytes) -> None:
    assert len(huge_png) < 200_000  # 6300 x 6300 RGBA: under the 40-megapixel cap
    with PeakMemory() as peak:
        image = im.decode_image(huge_png, draft_size=224)
    assert image.mode == "RGB" and min(image.size) >= 2 * 224
    assert peak.growth_mb < 220  # 160 MB of pixels; 900 MB with full-size copies


def test_concurrent_decodes_wait_for_memory(huge_png: bytes) -> None:
    limits = ImageSettings(max_decoding_mb=200)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(im.DECODING.in_use)
            stop.wait(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with PeakMemory() as peak, ThreadPoolExecutor(4) as pool:
            decoded = list(pool.map(lambda _: im.decode_image(huge_png, limits, 224), range(4)))
    finally:
        stop.set()
        watcher.join()
    assert all(image.size == decoded[0].size for image in decoded)
    assert max(seen) <= 200_000_000 and im.DECODING.in_use == 0
    assert peak.growth_mb < 300  # one at a time: four at once were +3.5 GB


def _noise(mode: str, size: tuple[int, int], seed: int = 15) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "I;16":
        sixteen = Image.new("I;16", size)
        sixteen.putdata(rng.integers(300, 40_000, size[0] * size[1]).tolist())
        return sixteen
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "RGB", "L", "CMYK"])
@pytest.mark.parametrize(("size", "draft_size"), [((1500, 1000), 224), ((300, 700), None)])
def test_strips_give_the_pixels_a_whole_picture_would(
    mode: str, size: tuple[int, int], draft_size: int | None
) -> None:
    picture = _noise(mode, size)
    kwargs = {"transparency": 7} if mode == "P" else {}
    data = io.BytesIO()
    picture.save(data, format="TIFF" if mode == "CMYK" else "PNG", **kwargs)
    whole = im._to_rgb(Image.open(io.BytesIO(data.getvalue())))
    factor = im._reduction(size, draft_size)
    expected = whole.reduce(factor) if factor > 1 else whole
    decoded = im.decode_image(data.getvalue(), draft_size=draft_size)
    assert factor == (2 if draft_size else 1) and decoded.size == expected.size
    difference = np.abs(np.asarray(decoded, np.int16) - np.asarray(expected, np.int16))
    assert difference.max() == 0
