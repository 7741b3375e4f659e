"""`model.precision`: resolved per device, recorded in the manifest, and comparable across
precisions (an fp32 index served in bf16 and the other way round)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import ModelSettings
from engine.embedder import ModelLoadError, load_embedder, model_identity
from engine.index import open_index
from engine.precision import PrecisionError, cpu_flags, resolve_precision
from engine.search import Engine
from tests.real_model import DEMO_SHOPPER, SHOPPER_FIXTURES, lite0_settings


def test_auto_is_fp16_on_cuda_int8_to_check_on_cpus_and_fp32_elsewhere() -> None:
    """bf16 is never picked by itself: measured slower than fp32 on this project's CPUs.
    int8 on a CPU is a candidate: load_embedder keeps it only where it agrees with fp32
    (tests/engine/test_quantize.py)."""
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") == "int8"
    assert resolve_precision("auto", "mps") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: obeyed
    with pytest.raises(PrecisionError, match='"bf16"'):
        resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(x86)
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_fp16_on_a_cpu_is_one_clear_line(tiny_model_files) -> None:
    config, checkpoint = tiny_model_files
    settings = ModelSettings(
        name=str(config), pretrained=str(checkpoint), device="cpu", precision="fp16"
    )
    with pytest.raises(ModelLoadError, match="fp16") as raised:
        load_embedder(settings)
    assert "\n" not in str(raised.value)


def shopper_photos() -> list[Image.Image]:
    paths = sorted(SHOPPER_FIXTURES.glob("*/*.jpg"))[::4] + sorted(DEMO_SHOPPER.glob("*.jpg"))
    return [Image.open(path).convert("RGB") for path in paths]


@pytest.mark.slow
async def test_bf16_vectors_agree_with_fp32_and_serve_each_others_index(
    lite0_cache, lite0_index
) -> None:
    """Real ImageNet weights: the same photos in fp32 and bf16 give nearly the same
    vectors, the same weights fingerprint, and an index built in one precision serves
    queries embedded in the other with the same first results."""
    models = {
        precision: load_embedder(
            lite0_settings(lite0_cache, lite0_index).model.model_copy(
                update={"precision": precision}
            )
        )
        for precision in ("fp32", "bf16")
    }
    fp32, bf16 = models["fp32"], models["bf16"]
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.fingerprint == bf16.fingerprint
    photos = shopper_photos()
    exact, rounded = fp32.embed_images(photos), bf16.embed_images(photos)
    assert rounded.dtype == np.float32
    cosine = (exact * rounded).sum(axis=1)
    assert cosine.min() >= 0.99, cosine.min()

    built_in = open_index(lite0_index).manifest.model.precision
    first_results = {}
    for precision, embedder in models.items():
        index = open_index(lite0_index, model_identity(embedder))  # allowed: no rebuild
        settings = lite0_settings(lite0_cache, lite0_index)
        engine = Engine(settings, embedder, index)
        try:
            with (DEMO_SHOPPER / "shoes.jpg").open("rb") as photo:
                page = await engine.search(photo.read(), k=5)
            first_results[precision] = [hit.product.product_id for hit in page.hits]
        finally:
            engine.close()
    assert built_in == "fp32"  # "auto" on a CPU: lite0's image tower has no Linear for int8
    shared = set(first_results["fp32"]) & set(first_results["bf16"])
    assert len(shared) >= 4, first_results
