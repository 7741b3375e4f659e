"""`build.crop_to_category` with the real imagenet-lite0 model and the shipped finder: a
product worn in a street photo is indexed as its garment; product photos are untouched."""

from __future__ import annotations

import asyncio
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.catalog_crop import CategoryCropper, finder_class
from engine.config import DEFAULT_GARMENT_SYNONYMS, Settings
from engine.embedder import Embedder, model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from tests.conftest import DEMO_IMAGES, REPO_ROOT
from tests.fakes.demo import write_catalog
from tests.real_model import lite0_settings

STREET = REPO_ROOT / "tests" / "fixtures" / "street"
# (street photo, the product's category as a shop names it, the items.csv category)
WORN = (("0016.jpg", "jeans", "pants"), ("0021.jpg", "sneakers", "shoes"))
PRODUCT_PHOTOS = (("pants-1.jpg", "pants"), ("shoes-1.jpg", "shoes"))


def true_box(photo: str, category: str) -> tuple[int, int, int, int]:
    with (STREET / "items.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["photo"] == photo and row["category"] == category:
                return tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))  # type: ignore[return-value]
    raise LookupError(photo, category)


def garment_vector(embedder: Embedder, photo: str, category: str) -> np.ndarray:
    """The embedding of the annotated garment alone, padded like a product shot."""
    image = Image.open(STREET / photo).convert("RGB").crop(true_box(photo, category))
    pixels = replace(embedder.image_preprocessor, pad_to_square=True)(image)
    return embedder.embed_image_tensors([pixels])[0]


def settings_with_crop(base: Settings, crop: bool) -> Settings:
    return base.with_overrides(build={"crop_to_category": crop})


def build_vectors(settings: Settings, catalog: Path, index_dir: Path, embedder: Embedder):
    asyncio.run(build_index(settings, catalog, index_dir, embedder, show_progress=False))
    index = open_index(index_dir, model_identity(embedder))
    try:
        keys = {r.product_id: r.key for r in index.catalog.iter_images()}
        return {pid: np.asarray(index.vectors[key], dtype=np.float32) for pid, key in keys.items()}
    finally:
        index.close()


@pytest.fixture(scope="module")
def built(lite0_cache, lite0_embedder, tmp_path_factory):
    """One catalog built without and with the setting: street photos as worn products,
    flat lays as product photos."""
    folder = tmp_path_factory.mktemp("crop-catalog")
    rows = [
        {"product_id": f"worn-{photo}", "title": category, "url": "https://s.example/p",
         "image": str(STREET / photo), "category": category, "price": "10"}
        for photo, category, _ in WORN
    ] + [
        {"product_id": f"product-{name}", "title": category, "url": "https://s.example/p",
         "image": str(DEMO_IMAGES / name), "category": category, "price": "10"}
        for name, category in PRODUCT_PHOTOS
    ]  # fmt: skip
    catalog = write_catalog(folder / "catalog.csv", rows)
    base = lite0_settings(lite0_cache, folder / "unused")
    base = base.with_overrides(build={"image_roots": [str(STREET), str(DEMO_IMAGES)]})
    plain = build_vectors(
        settings_with_crop(base, False), catalog, folder / "plain", lite0_embedder
    )
    cropped = build_vectors(
        settings_with_crop(base, True), catalog, folder / "cropped", lite0_embedder
    )
    return plain, cropped


@pytest.mark.parametrize(("photo", "category", "garment"), WORN)
def test_a_worn_product_is_indexed_nearer_its_garment(
    built, lite0_embedder, photo: str, category: str, garment: str
) -> None:
    plain, cropped = built
    wanted = garment_vector(lite0_embedder, photo, garment)
    whole_similarity = float(plain[f"worn-{photo}"] @ wanted)
    cropped_similarity = float(cropped[f"worn-{photo}"] @ wanted)
    assert cropped_similarity > whole_similarity + 0.2, (whole_similarity, cropped_similarity)


@pytest.mark.parametrize(("name", "category"), PRODUCT_PHOTOS)
def test_a_product_photo_is_indexed_exactly_as_without_the_setting(
    built, name: str, category: str
) -> None:
    plain, cropped = built
    before, after = plain[f"product-{name}"], cropped[f"product-{name}"]
    # the same pixels through the same model; only float rounding may differ (a batch of
    # other crops beside it, the f16 storage)
    assert float(before @ after) / float(np.linalg.norm(before) * np.linalg.norm(after)) > 0.9999


def test_the_cropper_leaves_categories_the_finder_does_not_know_alone(lite0_embedder) -> None:
    cropper = CategoryCropper(
        Settings().garments, Settings().images, lite0_embedder.image_preprocessor
    )
    data = (STREET / "0016.jpg").read_bytes()
    plain = lite0_embedder.image_preprocessor.from_bytes(data, Settings().images)
    assert torch.equal(cropper.pixels(data, "sunglasses", "digest"), plain)
    assert torch.equal(cropper.pixels(data, "", "digest"), plain)
    assert cropper.cropped == 0 and not cropper.finder.loaded  # never ran


def test_catalog_names_map_to_the_finder_classes() -> None:
    synonyms = DEFAULT_GARMENT_SYNONYMS
    assert finder_class("Jeans", synonyms) == "pants"
    assert finder_class("sneakers", synonyms) == "shoes"
    assert finder_class("Handbag", synonyms) == "bag"
    assert finder_class("socks", synonyms) is None
