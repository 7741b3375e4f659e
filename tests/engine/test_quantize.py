"""`model.precision = "int8"`: the image tower's matrix products run int8 in ONNX Runtime,
refused off a CPU and for convolutional towers, and `auto` serves it only where the loaded
weights agree with fp32 on real photos."""

from __future__ import annotations

import asyncio
import logging
import os

import numpy as np
import onnx
import pytest
import torch

from engine import quantize
from engine.config import ModelSettings
from engine.embedder import Embedder, ModelLoadError, load_embedder, model_identity
from engine.index import open_index
from engine.onnx_int8 import OnnxInt8Tower, prune
from engine.precision import PrecisionError, resolve_precision
from engine.search import Engine
from tests.conftest import make_settings
from tests.fakes.demo import index_demo_catalog
from tests.real_model import DEMO_SHOPPER, lite0_settings

SHOPPER_PHOTOS = sorted(DEMO_SHOPPER.glob("*.jpg"))
TEXTS = ["a red dress", "black leather shoes", "a denim jacket"]


def tiny(tiny_model_files, precision: str) -> Embedder:
    config, checkpoint = tiny_model_files
    settings = ModelSettings(
        name=str(config), pretrained=str(checkpoint), device="cpu", precision=precision
    )
    return load_embedder(settings)


def plant_activation_outliers(embedder: Embedder, factor: float = 1000.0) -> None:
    """Give every image-tower block one residual channel `factor` times the others in
    the MLP's input, its weights into the MLP `factor` times smaller: the fp32 function is
    unchanged, but a per-tensor int8 scale must now span the outlier, as in real CLIP ViTs."""
    with torch.no_grad():
        for block in embedder.model.visual.transformer.resblocks:
            block.ln_2.weight[3] *= factor
            block.ln_2.bias[3] *= factor
            block.mlp.c_fc.weight[:, 3] /= factor


def int8_operators(embedder: Embedder) -> list[str]:
    assert isinstance(embedder.image_features, OnnxInt8Tower)
    assert embedder.image_features.model_file is not None
    graph = onnx.load(embedder.image_features.model_file).graph
    return [node.op_type for node in graph.node]


def test_int8_runs_every_matrix_product_of_the_image_tower_close_to_fp32(
    tiny_model_files,
) -> None:
    fp32, int8 = tiny(tiny_model_files, "fp32"), tiny(tiny_model_files, "int8")
    assert int8.precision == "int8" and int8.fingerprint == fp32.fingerprint
    blocks = fp32.model.visual.transformer.resblocks
    linear = sum(isinstance(m, torch.nn.Linear) for m in fp32.model.visual.modules())
    # each block's attention input projection too (not an nn.Linear: torch.ao left it fp32)
    assert int8_operators(int8).count("MatMulInteger") >= linear + len(blocks)
    photos = quantize.agreement_photos()
    images = (fp32.embed_images(photos) * int8.embed_images(photos)).sum(axis=1)
    assert images.min() >= 0.99, images
    assert images.max() < 1.0 - 1e-6  # really another arithmetic, not the same model
    # the text tower stays fp32
    assert np.array_equal(fp32.embed_texts(TEXTS), int8.embed_texts(TEXTS))
    # the torch copy of the image tower is freed: ONNX Runtime holds the int8 one
    assert all(p.device.type == "meta" for p in int8.model.visual.parameters())


def test_the_int8_tower_is_written_once_per_set_of_weights(tiny_model_files) -> None:
    fp32 = tiny(tiny_model_files, "fp32")
    first = fp32.in_precision("int8").image_features
    assert isinstance(first, OnnxInt8Tower)
    assert first.model_file is not None
    written = first.model_file.stat().st_ino
    again = fp32.in_precision("int8").image_features
    assert isinstance(again, OnnxInt8Tower) and again.model_file == first.model_file
    assert first.model_file.stat().st_ino == written  # read back, not written again
    plant_activation_outliers(fp32, factor=2.0)  # other weights, same function
    other = fp32.in_precision("int8").image_features
    assert isinstance(other, OnnxInt8Tower) and other.model_file != first.model_file


def test_an_unwritable_int8_cache_costs_a_warning_not_the_model(
    tiny_model_files, tmp_path, caplog
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    fp32 = tiny(tiny_model_files, "fp32")
    fp32.int8_cache = blocked / "int8"
    with caplog.at_level(logging.WARNING, logger="engine.onnx_int8"):
        int8 = fp32.in_precision("int8")
    assert "cannot cache the int8 image tower" in caplog.text
    assert isinstance(int8.image_features, OnnxInt8Tower)
    assert int8.image_features.model_file is None  # served from memory
    photos = quantize.agreement_photos()
    assert quantize.lowest_cosine(fp32, int8, photos) >= 0.99


def test_an_int8_vector_depends_on_its_pass_only_within_rounding(tiny_model_files) -> None:
    """Dynamic int8 scales each Linear layer's input by its largest value over the whole
    pass, so a photo's vector moves a little with the photos batched beside it (fp32's
    does not); by no more than int8's own rounding."""
    int8 = tiny(tiny_model_files, "int8")
    photos = quantize.agreement_photos()
    pixels = [int8.preprocess_image(photo) for photo in photos]
    together = int8.embed_image_tensors(pixels)
    alone = np.concatenate([int8.embed_image_tensors([p]) for p in pixels])
    assert (together * alone).sum(axis=1).min() >= 0.999


def test_int8_off_a_cpu_is_one_clear_line(tiny_model_files) -> None:
    with pytest.raises(PrecisionError, match=r'model\.device = "cpu"'):
        resolve_precision("int8", "cuda")
    config, checkpoint = tiny_model_files
    settings = ModelSettings(
        name=str(config), pretrained=str(checkpoint), device="cuda", precision="int8"
    )
    with pytest.raises(ModelLoadError, match="int8") as raised:
        load_embedder(settings)
    assert "\n" not in str(raised.value) and '"fp16"' in str(raised.value)


def test_auto_serves_int8_where_it_agrees_with_fp32(tiny_model_files, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="engine.quantize"):
        auto = tiny(tiny_model_files, "auto")
    assert auto.precision == "int8"
    assert any("lowest cosine" in r.getMessage() for r in caplog.records)
    fp32 = tiny(tiny_model_files, "fp32")
    photos = quantize.agreement_photos()
    measured = quantize.lowest_cosine(fp32, auto, photos)
    assert 0.99 <= measured < 1.0
    # the same check, asked for more agreement than int8 gives: fp32 stays, as it was
    before = fp32.embed_images(photos)
    assert quantize.int8_if_it_agrees(fp32, photos, min_cosine=measured + 1e-4) is fp32
    assert np.array_equal(fp32.embed_images(photos), before)
    assert quantize.int8_if_it_agrees(fp32, photos, min_cosine=measured).precision == "int8"


def test_auto_keeps_fp32_for_weights_with_activation_outliers(tiny_model_files) -> None:
    fp32 = tiny(tiny_model_files, "fp32")
    photos = quantize.agreement_photos()
    before = fp32.embed_images(photos)
    plant_activation_outliers(fp32)
    assert np.min((before * fp32.embed_images(photos)).sum(axis=1)) > 0.9999  # same in fp32
    assert quantize.lowest_cosine(fp32, fp32.in_precision("int8"), photos) < quantize.MIN_COSINE
    assert quantize.int8_if_it_agrees(fp32, photos) is fp32
    assert tiny(tiny_model_files, "int8").precision == "int8"  # asked for: always int8


def test_no_photos_to_check_keeps_fp32(tiny_model_files, tmp_path) -> None:
    assert quantize.agreement_photos(tmp_path) == []
    fp32 = tiny(tiny_model_files, "fp32")
    assert quantize.int8_if_it_agrees(fp32, []) is fp32


def test_an_fp32_index_serves_int8_queries(tiny_model_files, tmp_path) -> None:
    """The manifest records the precision a build ran in; the same weights in another
    precision still open it (same fingerprint), and the int8 shopper's nearest product
    is fp32's own."""
    settings = make_settings(tiny_model_files, tmp_path)
    models = {p: tiny(tiny_model_files, p) for p in ("fp32", "int8")}
    index_demo_catalog(settings, tmp_path, models["fp32"])
    assert open_index(tmp_path).manifest.model.precision == "fp32"

    async def first_results(embedder: Embedder) -> list[str]:
        engine = Engine(settings, embedder, open_index(tmp_path, model_identity(embedder)))
        try:
            pages = [await engine.search(p.read_bytes(), k=1) for p in SHOPPER_PHOTOS]
        finally:
            engine.close()
        return [page.hits[0].product.product_id for page in pages]

    served = {name: asyncio.run(first_results(m)) for name, m in models.items()}
    assert served["fp32"] == served["int8"] and len(served["int8"]) == len(SHOPPER_PHOTOS)


@pytest.mark.slow
def test_a_convolutional_tower_has_no_int8(lite0_cache, tmp_path) -> None:
    """Real ImageNet weights: lite0's image tower is convolutions and average pooling,
    no matrix product for int8 to quantise. Asked for, int8 is one clear line; `auto`
    keeps fp32 without a check."""
    settings = lite0_settings(lite0_cache, tmp_path)
    with pytest.raises(ModelLoadError, match="no matrix products") as raised:
        load_embedder(settings.model.model_copy(update={"precision": "int8"}))
    assert "\n" not in str(raised.value) and '"auto"' in str(raised.value)
    auto = load_embedder(settings.model.model_copy(update={"precision": "auto"}))
    assert auto.precision == "fp32"


class TowerWithoutOnnxForm(torch.nn.Module):
    """An image tower with a matrix product and an operator ONNX has no form for (a
    symmetric eigendecomposition): int8 cannot be exported."""

    image_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(64, 8)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        rows = self.project(pixels.mean(dim=1))  # batch x 64 x 8
        return torch.linalg.eigh(rows.transpose(1, 2) @ rows).eigenvalues


def test_a_tower_that_cannot_be_exported_serves_fp32_under_auto(tiny_model_files, caplog) -> None:
    fp32 = tiny(tiny_model_files, "fp32")
    fp32.model.visual = TowerWithoutOnnxForm()
    photos = quantize.agreement_photos()
    with caplog.at_level(logging.WARNING, logger="engine.quantize"):
        assert quantize.int8_if_it_agrees(fp32, photos) is fp32
    assert "could not be exported to ONNX" in caplog.text
    assert fp32.embed_images(photos).shape == (len(photos), 8)


def test_the_cache_keeps_the_most_recently_used_towers(tmp_path) -> None:
    for age, name in enumerate("abcdef"):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(b"int8")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))  # a: newest, f: oldest
    prune(tmp_path, keep=4, spare=tmp_path / "f.onnx")  # f: being opened, kept
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [f"{n}.onnx" for n in "abcdf"]
    prune(tmp_path, keep=4)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == [f"{n}.onnx" for n in "abcd"]
