"""A tiny random-init open_clip model, for tests and for offline smoke runs.

Its weights are random, so its rankings mean nothing: it exists so that the whole path
(config -> open_clip loading -> embedding -> index -> bots) runs on machines that cannot
download real weights. It goes through exactly the production loading code:
`model.name = <this JSON>`, `model.pretrained = <this checkpoint>`.

    python -m engine.devmodel OUT_DIR   # writes OUT_DIR/tiny-random.json and .pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import torch

TINY_MODEL_NAME = "tiny-random"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_model(out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the JSON config and a random-init checkpoint (once; reused when present)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / f"{TINY_MODEL_NAME}.json"
    checkpoint_path = out_dir / f"{TINY_MODEL_NAME}.pt"
    if not config_path.is_file():
        config_path.write_text(json.dumps(TINY_CONFIG, indent=2), encoding="utf-8")
    open_clip.add_model_config(config_path)  # registers the architecture as "tiny-random"
    if checkpoint_path.is_file():
        return config_path, checkpoint_path
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_MODEL_NAME, pretrained=None)
    tmp = checkpoint_path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict()}, tmp)
    tmp.replace(checkpoint_path)
    return config_path, checkpoint_path


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "data/models")
    config, checkpoint = write_tiny_model(target)
    print(f"tiny random model: model.name={config} model.pretrained={checkpoint}")
