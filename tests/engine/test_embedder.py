from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import ModelSettings
from engine.devmodel import TINY_CONFIG
from engine.embedder import ModelLoadError, load_embedder, resolve_model_spec
from tests.conftest import DEMO_IMAGES


def test_presets_resolve_to_open_clip_arguments(tmp_path: Path) -> None:
    spec = resolve_model_spec("marqo-fashionclip", "")
    assert (spec.open_clip_name, spec.pretrained) == ("hf-hub:Marqo/marqo-fashionCLIP", None)
    spec = resolve_model_spec("vit-b-32", "")
    assert (spec.open_clip_name, spec.pretrained) == ("ViT-B-32", "laion2b_s34b_b79k")
    spec = resolve_model_spec("marqo-fashionsiglip", "")
    assert spec.open_clip_name == "hf-hub:Marqo/marqo-fashionSigLIP"
    checkpoint = tmp_path / "weights.bin"
    checkpoint.write_bytes(b"")
    spec = resolve_model_spec("marqo-fashionclip", str(checkpoint))
    assert (spec.open_clip_name, spec.pretrained) == ("ViT-B-16", str(checkpoint))
    spec = resolve_model_spec("marqo-fashionclip", str(tmp_path))
    assert spec.open_clip_name == f"local-dir:{tmp_path}"
    assert resolve_model_spec("hf-hub:org/repo", "").open_clip_name == "hf-hub:org/repo"
    assert resolve_model_spec("ViT-L-14", "openai").pretrained == "openai"


def test_tiny_model_loads_through_the_production_path(embedder) -> None:
    assert embedder.dim == TINY_CONFIG["embed_dim"]
    assert embedder.image_size == 64
    photos = [DEMO_IMAGES / "dress-1.jpg", DEMO_IMAGES / "shoes-1.jpg"]
    from PIL import Image

    vectors = embedder.embed_images([Image.open(p).convert("RGB") for p in photos])
    assert vectors.shape == (2, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    texts = embedder.embed_texts(["a red dress", "black leather shoes"])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_same_weights_same_fingerprint_other_weights_other(
    tiny_model_files, embedder, tmp_path
) -> None:
    config, checkpoint = tiny_model_files
    again = load_embedder(ModelSettings(name=str(config), pretrained=str(checkpoint)))
    assert again.fingerprint == embedder.fingerprint
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    first = next(k for k in sorted(state) if k.startswith("visual."))
    state[first] = state[first] + 0.01
    changed = tmp_path / "changed.pt"
    torch.save({"state_dict": state}, changed)
    other = load_embedder(ModelSettings(name=str(config), pretrained=str(changed)))
    assert other.fingerprint != embedder.fingerprint


def test_a_downloaded_model_folder_loads_offline(tiny_model_files, embedder, tmp_path) -> None:
    """The 'Offline servers' recipe: an hf-hub snapshot folder given as model.pretrained."""
    _, checkpoint = tiny_model_files
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CONFIG, "preprocess_cfg": {"size": 64}})
    )
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    loaded = load_embedder(ModelSettings(name="marqo-fashionclip", pretrained=str(folder)))
    assert loaded.fingerprint == embedder.fingerprint


def test_missing_weights_explain_what_to_set(tiny_model_files, tmp_path: Path) -> None:
    config, _ = tiny_model_files
    with pytest.raises(ModelLoadError) as missing:
        load_embedder(ModelSettings(name=str(config), pretrained=str(tmp_path / "nope.pt")))
    assert "FASHIONBOT_MODEL__PRETRAINED" in str(missing.value)
    with pytest.raises(ModelLoadError, match="marqo-fashionCLIP"):
        load_embedder(ModelSettings(name="marqo-fashionclip"))  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(ModelLoadError, match="not found"):
        load_embedder(ModelSettings(name=str(tmp_path / "missing.json")))


def test_config_file_copied_elsewhere_registers_by_its_name(tiny_model_files, tmp_path) -> None:
    config, checkpoint = tiny_model_files
    renamed = tmp_path / "shop-model.json"
    shutil.copy(config, renamed)
    loaded = load_embedder(ModelSettings(name=str(renamed), pretrained=str(checkpoint)))
    assert loaded.spec.open_clip_name == "shop-model"


def test_decode_threads_get_uint8_and_the_model_sees_open_clips_exact_input(embedder) -> None:
    """Decode workers stop at uint8 pixels (no torch arithmetic off the model's thread);
    scaling on the model's thread reproduces open_clip's own transform bit for bit."""
    from PIL import Image

    photo = Image.open(DEMO_IMAGES / "dress-1.jpg").convert("RGB")
    pixels = embedder.preprocess_image(photo)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 64)
    model_input = embedder.model_input([pixels])[0]  # in the model's precision
    assert torch.equal(model_input, embedder.preprocess(photo).to(embedder.dtype))
    assert np.array_equal(
        embedder.embed_image_tensors([pixels]),
        embedder.embed_image_tensors(embedder.preprocess(photo).unsqueeze(0)),
    )


def test_a_transform_of_another_shape_runs_whole_in_the_decode_threads(tiny_model_files) -> None:
    from PIL import Image

    from engine.embedder import Embedder

    config, checkpoint = tiny_model_files
    embedder = load_embedder(
        ModelSettings(name=str(config), pretrained=str(checkpoint), precision="fp32")
    )

    def custom(image: Image.Image) -> torch.Tensor:  # not Compose(..., ToTensor, Normalize)
        return embedder.preprocess(image)

    other = Embedder(embedder.model, custom, embedder.tokenizer, embedder.spec, embedder.device)
    assert other.pixel_scale is None
    photo = Image.open(DEMO_IMAGES / "dress-1.jpg").convert("RGB")
    pixels = other.preprocess_image(photo)
    assert pixels.dtype == torch.float32
    assert np.allclose(other.embed_image_tensors([pixels]), embedder.embed_images([photo]))
    with pytest.raises(ValueError, match="uint8"):
        other.model_input(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
