"""`model.precision = "int8"`: the Linear layers quantised, refused off a CPU, and `auto`
serving it only where the loaded weights agree with fp32 on real photos."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from engine import quantize
from engine.config import ModelSettings
from engine.embedder import Embedder, ModelLoadError, load_embedder, model_identity
from engine.index import open_index
from engine.precision import PrecisionError, resolve_precision
from engine.search import Engine
from tests.fakes.demo import index_demo_catalog
from tests.real_model import DEMO_SHOPPER, lite0_settings

SHOPPER_PHOTOS = sorted(DEMO_SHOPPER.glob("*.jpg"))
QUANTISED = torch.ao.nn.quantized.dynamic.Linear
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


def test_int8_runs_the_linear_layers_quantised_close_to_fp32(tiny_model_files) -> None:
    fp32, int8 = tiny(tiny_model_files, "fp32"), tiny(tiny_model_files, "int8")
    assert int8.precision == "int8" and int8.fingerprint == fp32.fingerprint
    quantised = [m for m in int8.model.modules() if isinstance(m, QUANTISED)]
    plain = [m for m in int8.model.modules() if type(m) is torch.nn.Linear]
    assert len(quantised) >= 8 and plain == []  # both towers' MLPs, every block
    assert not any(isinstance(m, QUANTISED) for m in fp32.model.modules())
    photos = quantize.agreement_photos()
    images = (fp32.embed_images(photos) * int8.embed_images(photos)).sum(axis=1)
    texts = (fp32.embed_texts(TEXTS) * int8.embed_texts(TEXTS)).sum(axis=1)
    assert images.min() >= 0.99 and texts.min() >= 0.99, (images, texts)
    assert images.max() < 1.0 - 1e-6  # really another arithmetic, not the same model


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
    assert not any(isinstance(m, QUANTISED) for m in fp32.model.modules())
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


@pytest.mark.slow
def test_an_fp32_index_serves_int8_queries_with_the_same_first_results(
    lite0_cache, tmp_path
) -> None:
    """Real ImageNet weights. lite0's image tower has no Linear layer (convolutions, then
    average pooling), so int8 only quantises its unused text tower and the image vectors
    are fp32's own: this proves the plumbing (an fp32 manifest opens for an int8 model,
    same fingerprint, same results), not int8's accuracy, which `auto` measures at load."""
    settings = lite0_settings(lite0_cache, tmp_path)
    models = {
        p: load_embedder(settings.model.model_copy(update={"precision": p}))
        for p in ("fp32", "int8")
    }
    assert models["int8"].precision == "int8"
    assert not any(isinstance(m, QUANTISED) for m in models["int8"].model.visual.modules())
    index_demo_catalog(settings, tmp_path, models["fp32"])
    assert open_index(tmp_path).manifest.model.precision == "fp32"

    async def first_results(embedder: Embedder) -> list[list[str]]:
        engine = Engine(settings, embedder, open_index(tmp_path, model_identity(embedder)))
        try:
            pages = [await engine.search(p.read_bytes(), k=5) for p in SHOPPER_PHOTOS]
        finally:
            engine.close()
        return [[hit.product.product_id for hit in page.hits] for page in pages]

    served = {name: asyncio.run(first_results(m)) for name, m in models.items()}
    assert served["fp32"] == served["int8"] and all(len(r) == 5 for r in served["int8"])
    shopper = [Image.open(p).convert("RGB") for p in SHOPPER_PHOTOS]
    assert quantize.lowest_cosine(models["fp32"], models["int8"], shopper) > 0.9999
    # Nothing int8 would change in what lite0 serves: `auto` keeps fp32 without a check.
    auto = load_embedder(settings.model.model_copy(update={"precision": "auto"}))
    assert auto.precision == "fp32"
    assert not any(isinstance(m, QUANTISED) for m in auto.model.modules())
