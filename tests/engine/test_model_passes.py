"""A look's garment crops go through the model at most `garments.crops_per_pass` at a
time (a fraction of the memory of one pass over all of them), with the vectors of one pass
over all of them; shoppers' photos still share one pass per batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import GarmentSettings, ImageSettings
from engine.embedder import Embedder, model_identity
from engine.garment_search import GarmentSearch
from engine.index import open_index
from engine.query_encoder import _embed_in_passes, _ModelJob, _run_model_jobs
from engine.search import Engine
from engine.types import Garment
from tests.conftest import REPO_ROOT, make_settings

STREET = REPO_ROOT / "tests" / "fixtures" / "street"


def recording_passes(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of images of each forward pass the embedder runs from now on."""
    passes: list[int] = []
    real: Callable[[Sequence[torch.Tensor]], np.ndarray] = embedder.embed_image_tensors

    def recorded(pixels: Sequence[torch.Tensor]) -> np.ndarray:
        passes.append(len(pixels))
        return real(pixels)

    monkeypatch.setattr(embedder, "embed_image_tensors", recorded)
    return passes


def look_crops(embedder: Embedder, name: str) -> tuple[list[Garment], list[torch.Tensor]]:
    """A street photo's garments, found, and their crops as the garment search makes them."""
    search = GarmentSearch(GarmentSettings(), ImageSettings())
    try:
        image = search.decode((STREET / name).read_bytes())
        garments = search.find(image)
        return garments, search.crop_pixels(image, garments, embedder.image_preprocessor)
    finally:
        search.close()


def garment_search_passes(
    tiny_model_files, demo_index_dir, embedder, monkeypatch, crops_per_pass: int
) -> tuple[int, list[int]]:
    settings = make_settings(
        tiny_model_files, demo_index_dir, garments={"crops_per_pass": crops_per_pass}
    )
    engine = Engine(settings, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        photo = (STREET / "0016.jpg").read_bytes()
        garments = asyncio.run(engine.find_garments(photo))
        passes = recording_passes(embedder, monkeypatch)
        asyncio.run(engine.search_garments(photo, k=2))
        return len(garments), passes
    finally:
        engine.close()


def test_a_looks_crops_go_through_the_model_in_passes_of_the_configured_size(
    tiny_model_files, demo_index_dir, embedder, monkeypatch
) -> None:
    garments, passes = garment_search_passes(
        tiny_model_files, demo_index_dir, embedder, monkeypatch, crops_per_pass=2
    )
    assert garments >= 5
    assert passes == [2] * (garments // 2) + [garments % 2] * (garments % 2)


def test_passes_as_large_as_the_look_embed_it_at_once(
    tiny_model_files, demo_index_dir, embedder, monkeypatch
) -> None:
    garments, passes = garment_search_passes(
        tiny_model_files, demo_index_dir, embedder, monkeypatch, crops_per_pass=16
    )
    assert passes == [garments]


@pytest.fixture(scope="module")
def fp32_embedder(tiny_model_files) -> Embedder:
    """The tiny model in fp32, where a row's vector does not depend on the other rows of
    its pass (in int8 it does, within quantisation noise: tests/engine/test_quantize.py)."""
    from engine.config import ModelSettings
    from engine.embedder import load_embedder

    config, checkpoint = tiny_model_files
    return load_embedder(
        ModelSettings(name=str(config), pretrained=str(checkpoint), precision="fp32")
    )


def test_a_batch_splits_crops_into_passes_and_each_job_gets_its_own_rows(
    fp32_embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chat flow's picker: single crops of several garment searches, one look's crops
    and a shopper's photo in one micro-batch, with a text between them."""
    embedder = fp32_embedder
    colours = ("red", "green", "blue", "white", "black", "yellow", "grey")
    pixels = [embedder.preprocess_image(Image.new("RGB", (64, 96), c)) for c in colours]
    jobs = [
        _ModelJob(together=(pixels[0],)),
        _ModelJob(together=tuple(pixels[1:4])),
        _ModelJob(text="a red dress"),
        _ModelJob(pixels=pixels[4]),
        _ModelJob(together=(pixels[5],)),
        _ModelJob(pixels=pixels[6]),
    ]
    alone = embedder.embed_image_tensors(pixels)
    passes = recording_passes(embedder, monkeypatch)
    out = _run_model_jobs(embedder, jobs, crops_per_pass=2)
    assert passes == [2, 2, 2, 1]  # the two photos, then five crops two at a time
    assert len(out) == len(jobs)
    np.testing.assert_allclose(out[0], alone[0:1], atol=1e-5)
    np.testing.assert_allclose(out[1], alone[1:4], atol=1e-5)
    np.testing.assert_allclose(out[2], embedder.embed_texts(["a red dress"])[0], atol=1e-5)
    np.testing.assert_allclose(out[3], alone[4], atol=1e-5)
    np.testing.assert_allclose(out[4], alone[5:6], atol=1e-5)
    np.testing.assert_allclose(out[5], alone[6], atol=1e-5)


def test_shoppers_photos_share_one_pass_whatever_the_crops_per_pass(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of plain searches is batched as before the setting."""
    photos = [embedder.preprocess_image(Image.new("RGB", (64, 64), (i, 0, 0))) for i in range(5)]
    passes = recording_passes(embedder, monkeypatch)
    out = _run_model_jobs(embedder, [_ModelJob(pixels=p) for p in photos], crops_per_pass=1)
    assert passes == [5] and len(out) == 5


@pytest.mark.parametrize("crops_per_pass", [1, 2, 3])
def test_garment_vectors_are_those_of_one_pass_over_the_look(
    lite0_embedder: Embedder, crops_per_pass: int
) -> None:
    """Precision untouched: with the real model, a crop's vector does not depend on
    which other crops share its pass, to the bit."""
    garments, crops = look_crops(lite0_embedder, "0016.jpg")
    assert len(garments) >= 5
    at_once = lite0_embedder.embed_image_tensors(crops)
    in_passes = _embed_in_passes(lite0_embedder, crops, crops_per_pass)
    assert np.array_equal(in_passes, at_once)
