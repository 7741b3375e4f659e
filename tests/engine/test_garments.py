"""The garment finder (real imagenet-lite0 trunk + the shipped head), searching by garment,
and the street-photo evaluation."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import index_builder
from engine.config import DEFAULT_GARMENT_SYNONYMS
from engine.evaluation.garments import box_iou, match_garment
from engine.finder_onnx import OnnxFinderNetwork
from engine.garment_search import catalog_category
from engine.garments import (
    CLASSES,
    WEIGHTS_PATH,
    FinderParams,
    Garment,
    GarmentFinder,
    garments_from_probabilities,
    whole_photo,
)
from tests.conftest import DEMO_IMAGES, REPO_ROOT

STREET = REPO_ROOT / "tests" / "fixtures" / "street"
# Flat lays and products on a floor: nobody wears them.
FLAT_LAYS = ("pants-1.jpg", "shoes-1.jpg", "t-shirt-1.jpg", "shirt-1.jpg", "skirt-1.jpg")


@pytest.fixture(scope="session")
def finder() -> GarmentFinder:
    return GarmentFinder()


def street_items() -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    items: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    with (STREET / "items.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            items.setdefault(row["photo"], []).append((row["category"], box))
    return items


def open_photo(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def valid(garments: list[Garment], width: int, height: int) -> bool:
    return bool(garments) and all(
        0 <= g.box[0] < g.box[2] <= width and 0 <= g.box[1] < g.box[3] <= height for g in garments
    )


def test_street_photos_show_several_garments_with_plausible_boxes(finder) -> None:
    matched, rows = 0, 0
    for name, items in street_items().items():
        photo = open_photo(STREET / name)
        garments = finder.find(photo)
        assert valid(garments, *photo.size)
        assert len(garments) >= 3 and not any(g.whole_photo for g in garments)
        shoes = [g for g in garments if g.category == "shoes"]
        true_shoes = next(box for category, box in items if category == "shoes")
        assert shoes and box_iou(shoes[0].box, true_shoes) >= 0.5, name
        for category, box in items:
            rows += 1
            matched += match_garment(garments, category, box)[0] is not None  # type: ignore[arg-type]
    assert matched / rows >= 0.8


@pytest.mark.parametrize("name", FLAT_LAYS)
def test_a_flat_lay_is_one_whole_photo_garment(finder, name: str) -> None:
    photo = open_photo(DEMO_IMAGES / name)
    assert finder.find(photo) == [whole_photo(*photo.size)]


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


# Built inside the test (a 40-megapixel photo is 120 MB: not for the whole session).
HOSTILE_PHOTOS = {
    "1px": lambda: Image.new("RGB", (1, 1)),
    "tiny": lambda: Image.new("RGB", (20, 31), "white"),
    "small-noise": lambda: noise(33, 40),
    "strip": lambda: noise(4000, 40),
    "grey": lambda: noise(40, 600, "L"),
    "rgba": lambda: noise(300, 200, "RGBA"),
    "black": lambda: Image.new("RGB", (640, 480), "black"),
    "40mp": lambda: Image.new("RGB", (7300, 5480), (200, 180, 160)),
}


@pytest.mark.parametrize("name", HOSTILE_PHOTOS)
def test_bad_photos_give_what_they_can_never_an_error(finder, name: str) -> None:
    image = HOSTILE_PHOTOS[name]()
    garments = finder.find(image)
    assert valid(garments, *image.size)


def test_half_a_person_still_finds_what_is_there(finder) -> None:
    photo = open_photo(STREET / "0021.jpg")
    lower = photo.crop((0, photo.height // 2, photo.width, photo.height))
    categories = {g.category for g in finder.find(lower)}
    assert "shoes" in categories or "pants" in categories


def test_the_fast_trunk_computes_the_trunk_as_loaded() -> None:
    """Batch norms folded into the convolutions and channels-last memory: the same
    features (what the head was trained on), on a real photo's input."""
    import copy

    import torch

    from engine.garments import fast_trunk, load_trunk, photo_tensor

    loaded = load_trunk()
    fast = fast_trunk(copy.deepcopy(loaded))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    pixels = photo_tensor(open_photo(STREET / "0016.jpg"), 288)
    with torch.inference_mode():
        expected = loaded(pixels)
        found = fast(pixels.contiguous(memory_format=torch.channels_last))
    for want, got in zip(expected, found, strict=True):
        assert torch.allclose(want, got, atol=1e-3, rtol=1e-3)


def same_garments(served: GarmentFinder, expected: GarmentFinder) -> None:
    """Both find the same garments, on portrait photos and on shapes neither was
    prepared on."""
    photos = [open_photo(path) for path in sorted(STREET.glob("*.jpg"))]
    photos += [photos[0].rotate(90, expand=True), photos[1].crop((0, 0, 400, 400))]
    for photo in photos:
        found, wanted = served.find(photo), expected.find(photo)
        assert [(g.category, g.box) for g in found] == [(g.category, g.box) for g in wanted]
        for got, want in zip(found, wanted, strict=True):
            assert got.confidence == pytest.approx(want.confidence, abs=1e-3)


def test_the_served_network_finds_what_the_eager_modules_find(finder) -> None:
    """The served network runs in ONNX Runtime, exported at load: the same garments as the
    torch modules it came from."""
    same_garments(finder, GarmentFinder(runtime="eager"))
    assert isinstance(finder._network, OnnxFinderNetwork)  # not a torch fallback


def test_a_network_onnx_cannot_take_runs_frozen_in_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An export that fails (an operator a future exporter drops) costs speed, with a
    warning, never the finder: the TorchScript-frozen network serves instead."""
    import shutil

    import torch

    import engine.garments

    def unexportable(*args: object) -> OnnxFinderNetwork:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' is not supported")

    monkeypatch.setattr(engine.garments, "onnx_network", unexportable)
    weights = tmp_path / "garments.pt"  # a network of its own, not the shared one
    shutil.copy(WEIGHTS_PATH, weights)
    fallback = GarmentFinder(weights=weights)
    with caplog.at_level(logging.WARNING, logger="engine.garments"):
        assert fallback._load()
    assert isinstance(fallback._network, torch.jit.ScriptModule)
    assert "not ONNX Runtime: Exporting the operator 'aten::frobnicate'" in caplog.text
    same_garments(fallback, GarmentFinder(runtime="eager"))


def test_finders_in_one_process_share_one_built_network(tmp_path: Path) -> None:
    """Building the network (load, export) costs about a second: every finder of
    the same weights, size and runtime gets the one already built; another size, runtime or
    weights file (a retrained head) gets its own."""
    import shutil

    first, second = GarmentFinder(long_side=288), GarmentFinder(long_side=288)
    assert first._load() and second._load()
    assert first._network is second._network
    other_size = GarmentFinder(long_side=256)
    eager = GarmentFinder(long_side=288, runtime="eager")
    retrained = tmp_path / "garments.pt"
    shutil.copy(WEIGHTS_PATH, retrained)
    other_weights = GarmentFinder(weights=retrained, long_side=288)
    for finder in (other_size, eager, other_weights):
        assert finder._load() and finder._network is not first._network


def test_the_photo_is_scaled_like_pillows_bilinear_resize() -> None:
    """torch's antialiased resize of the 8-bit pixels: what the head was trained on
    (Pillow's BILINEAR) to within one step of 255, channels-last for the trunk."""
    import torch

    from engine.garments import input_size, photo_tensor

    photo = open_photo(STREET / "0016.jpg")
    pixels = photo_tensor(photo, 288)
    width, height = input_size(photo.width, photo.height, 288)
    pillow = np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    expected = torch.from_numpy(pillow).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1
    assert pixels.shape == (1, 3, height, width)
    assert pixels.is_contiguous(memory_format=torch.channels_last)
    assert (pixels - expected).abs().max() * 127.5 <= 1.0 + 1e-4
    assert (pixels - expected).abs().mean() * 127.5 < 0.05


def flood_fill_parts(mask: np.ndarray) -> set[frozenset[tuple[int, int]]]:
    """4-connected parts, one cell at a time: the reference for CellRuns.parts."""
    parts, seen = set(), np.zeros_like(mask)
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        seen[start], stack, cells = True, [start], set()
        while stack:
            row, col = stack.pop()
            cells.add((int(row), int(col)))
            for near in ((row + 1, col), (row - 1, col), (row, col + 1), (row, col - 1)):
                inside = 0 <= near[0] < mask.shape[0] and 0 <= near[1] < mask.shape[1]
                if inside and mask[near] and not seen[near]:
                    seen[near] = True
                    stack.append(near)
        parts.add(frozenset(cells))
    return parts


@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.9])
def test_runs_join_into_the_same_parts_as_a_flood_fill(density: float) -> None:
    from engine.garments import CellRuns

    rng = np.random.default_rng(int(density * 100))
    for shape in ((1, 1), (1, 9), (9, 1), (24, 16), (72, 48)):
        mask = rng.random(shape) < density
        runs = CellRuns.of(mask)
        found = {
            frozenset(
                (int(runs.rows[i]), col)
                for i in part
                for col in range(int(runs.starts[i]), int(runs.ends[i]))
            )
            for part in runs.parts(shape[0])
        }
        assert found == flood_fill_parts(mask)


def test_the_finder_runs_at_the_configured_input_size() -> None:
    from engine.config import Settings
    from engine.garment_search import GarmentSearch

    settings = Settings().with_overrides(garments={"input_long_side": 256})
    search = GarmentSearch(settings.garments, settings.images)
    try:
        assert search.finder.long_side == 256
    finally:
        search.close()


def test_without_weights_every_photo_is_searched_whole(tmp_path: Path) -> None:
    missing = GarmentFinder(weights=tmp_path / "nothing.pt")
    photo = open_photo(STREET / "0016.jpg")
    assert missing.find(photo) == [whole_photo(*photo.size)]


def grid(shape: tuple[int, int], **areas: tuple[slice, slice]) -> np.ndarray:
    """Probabilities: background everywhere, certain classes in the given cells."""
    labels = np.zeros(shape, dtype=int)
    for name, (rows, cols) in areas.items():
        labels[rows, cols] = CLASSES.index(name.replace("_", "-"))
    return np.eye(len(CLASSES))[labels].transpose(2, 0, 1)


def test_both_shoes_make_one_box_and_stray_cells_are_dropped() -> None:
    probabilities = grid((40, 20), person=(slice(0, 6), slice(8, 12)))
    shoes, stray = CLASSES.index("shoes"), (slice(20, 21), slice(0, 1))
    probabilities[:, 36:40, 4:8] = np.eye(len(CLASSES))[shoes][:, None, None]
    probabilities[:, 36:40, 12:16] = np.eye(len(CLASSES))[shoes][:, None, None]
    probabilities[:, stray[0], stray[1]] = np.eye(len(CLASSES))[shoes][:, None, None]
    (found,) = garments_from_probabilities(probabilities, 200, 400, FinderParams())
    assert found.category == "shoes" and found.box == (40, 360, 160, 400)


def test_garments_too_small_to_search_are_left_out() -> None:
    probabilities = grid(
        (40, 20), hat=(slice(0, 2), slice(0, 2)), pants=(slice(5, 35), slice(5, 15))
    )
    found = garments_from_probabilities(probabilities, 200, 400, FinderParams())
    assert [g.category for g in found] == ["pants"]


def test_catalog_names_and_synonyms() -> None:
    synonyms = DEFAULT_GARMENT_SYNONYMS
    jeans = Garment("pants", (0, 0, 1, 1), 0.9)
    assert catalog_category(jeans, ["Jeans", "Shoes"], synonyms) == "Jeans"
    assert catalog_category(jeans, ["pants", "jeans"], synonyms) == "jeans"  # first by name
    assert catalog_category(Garment("shoes", (0, 0, 1, 1), 0.9), ["Sneakers"], synonyms)
    assert catalog_category(Garment("bag", (0, 0, 1, 1), 0.9), ["shoes"], synonyms) is None
    assert catalog_category(whole_photo(10, 10), ["shoes"], synonyms) is None


def test_crop_box_grows_by_the_margin_within_the_photo() -> None:
    garment = Garment("hat", (10, 10, 30, 50), 0.9)
    assert garment.crop_box(100, 100, 0.1) == (8, 6, 32, 54)
    assert Garment("hat", (0, 0, 100, 100), 0.9).crop_box(100, 100, 0.5) == (0, 0, 100, 100)


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_the_engine_searches_every_garment_in_one_model_batch(engine) -> None:
    photo = (STREET / "0016.jpg").read_bytes()

    async def scenario():
        garments = await engine.find_garments(photo)
        passes = engine.batcher.stats.batches
        results = await engine.search_garments(photo, k=3)
        return garments, engine.batcher.stats.batches - passes, results

    garments, passes, results = asyncio.run(scenario())
    assert [g for g, _ in results] == garments and len(garments) >= 3
    assert passes == 1
    for garment, page in results:
        assert len(page.hits) == 3
        if garment.category in engine.categories():  # the demo catalog has no bags
            assert page.category_first == garment.category
            assert all(hit.product.category == garment.category for hit in page.hits)


def test_a_garment_search_pages_on_with_its_category(engine) -> None:
    photo = (STREET / "0021.jpg").read_bytes()

    async def scenario():
        first = await engine.search(image=photo, garment=0, k=2)
        later = await engine.search(query_key=first.query_key, k=2, offset=2)
        return first, later

    first, later = asyncio.run(scenario())
    assert first.category_first and later.category_first == first.category_first


def test_shop_the_look_decodes_the_photo_once(engine, monkeypatch) -> None:
    """find_garments, then search(garment=...) of the same photo: one decode; another
    photo with the same length is decoded afresh."""
    import engine.garment_search as garment_search

    decodes: list[int] = []
    real_decode = garment_search.decode_image

    def counting_decode(data: bytes, *args, **kwargs):
        decodes.append(len(data))
        return real_decode(data, *args, **kwargs)

    monkeypatch.setattr(garment_search, "decode_image", counting_decode)
    photo = (STREET / "0016.jpg").read_bytes()
    middle = len(photo) // 2  # same length, one bit of the picture's data flipped
    changed = photo[:middle] + bytes([photo[middle] ^ 1]) + photo[middle + 1 :]

    async def scenario():
        garments = await engine.find_garments(photo)
        page = await engine.search(image=bytes(photo), garment=garments[0], k=2)
        await engine.find_garments(changed)
        return page

    page = asyncio.run(scenario())
    assert page.hits and len(decodes) == 2


def test_a_product_photo_searches_as_before(engine) -> None:
    photo = (DEMO_IMAGES / "pants-1.jpg").read_bytes()

    async def scenario():
        return await engine.search(image=photo, k=4), await engine.search(
            image=photo, garment=0, k=4
        )

    plain, by_garment = asyncio.run(scenario())
    assert [h.product.product_id for h in plain.hits] == [
        h.product.product_id for h in by_garment.hits
    ]


def test_eval_of_street_photos_reports_the_issue_keys(
    tiny_model_files, demo_index_dir, monkeypatch, capsys
) -> None:
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", str(config))
    monkeypatch.setenv("FASHIONBOT_MODEL__PRETRAINED", str(checkpoint))
    arguments = ["eval", str(STREET / "items.csv"), "--index", str(demo_index_dir), "--json"]
    assert index_builder.main(arguments) == 0
    summary = json.loads(capsys.readouterr().out)
    keys = {"precision@1", "precision@5", "precision@10", "mrr", "garment_found_rate"}
    keys |= {"box_iou_mean", "queries"}
    assert keys <= set(summary["overall"]) and summary["overall"]["queries"] == 11
    assert summary["overall"]["garment_found_rate"] >= 0.8
    assert set(summary["by_category"]) == {
        "hat",
        "outwear",
        "pants",
        "shoes",
        "shirt",
        "longsleeve",
        "skirt",
    }
    assert all(keys <= set(row) for row in summary["by_category"].values())
