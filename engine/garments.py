"""Garment finder: a street photo -> the garments in it (category, box, confidence).

A shopper photographs a look: jacket, jeans, shoes and a bag in one picture. Searching the
whole picture blurs them together; searching each garment's box finds each one.

How it works: the ImageNet EfficientNet-Lite0 trunk (the `imagenet-lite0` weights, frozen)
gives features at strides 8, 16 and 32; a small head trained on street-ccp
(bench/train_garments.py, `make train-garments`) predicts a class per stride-8 cell:
background, person (skin, hair), or a garment. Each garment class's cells become one box:
the union of its sizeable connected parts, so both shoes make one "shoes" box, as in the
data's own boxes. Only the head (< 1 MB) ships in the repository (engine/weights/).

A look gate on the same features (street photos against product photos) decides first
whether the photo is a look at all: product photos (a flat lay, a shoe on a floor) and
looks without any garment found give one garment covering the whole photo, so
single-product photos search exactly as before.
Nothing here raises for a bad photo: the fallback is always the whole photo.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine.finder_onnx import onnx_network
from engine.types import Garment, whole_photo

log = logging.getLogger(__name__)

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "garments.pt"
TRUNK_NAME = "tf_efficientnet_lite0"
TRUNK_STAGES = (2, 3, 4)  # strides 8, 16, 32
TRUNK_CHANNELS = (40, 112, 320)
CELL_STRIDE = 8
# Portrait street photos come in at ~2:3. The head is trained on photos scaled to 320 px
# on the long side; the finder runs at `garments.input_long_side` (288 by default: about
# a fifth less time, its quality cost measured in docs/garments.md).
INPUT_LONG_SIDE = 320
INPUT_MULTIPLE = 32  # the trunk's largest stride
PERSON = "person"
# clothing-small's ten categories plus bags (catalogs sell them; street photos show them).
GARMENT_CLASSES: tuple[str, ...] = ("bag", "dress", "hat", "longsleeve", "outwear", "pants")
GARMENT_CLASSES += ("shirt", "shoes", "shorts", "skirt", "t-shirt")
CLASSES = ("background", PERSON, *GARMENT_CLASSES)


def pooled(features: list[torch.Tensor]) -> torch.Tensor:
    """The photo's stride-16 and stride-32 features averaged over the photo: what the
    look gate reads."""
    return torch.cat([f.mean(dim=(-2, -1)) for f in features[1:]], dim=-1)


class LookGate(nn.Module):
    """Is this a look (someone wearing clothes) or a product photo? A logistic regression
    on pooled trunk features, trained on street photos against product photos. The cell
    head alone, trained on street photos only, sees garments in every flat lay."""

    def __init__(self) -> None:
        super().__init__()
        width = sum(TRUNK_CHANNELS[1:])
        self.linear = nn.Linear(width, 1)
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of "a look" for a batch of pooled feature rows."""
        logits: torch.Tensor = self.linear((features - self.mean) / self.scale)
        return logits.squeeze(-1)


class GarmentHead(nn.Module):
    """Per-cell classifier over the trunk's three scales: each scale projected to
    `hidden` channels and summed at stride 8 (projecting before upsampling keeps it cheap),
    then a 3x3 layer for neighbourhood context and a 1x1 classifier."""

    def __init__(self, hidden: int = 64, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in TRUNK_CHANNELS)
        self.context = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.classify = nn.Conv2d(hidden, classes, 1)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Class logits per stride-8 cell."""
        size = features[0].shape[-2:]
        mixed = self.project[0](features[0])
        for layer, scale in zip(self.project[1:], features[1:], strict=True):
            mixed = mixed + nn.functional.interpolate(
                layer(scale), size=size, mode="bilinear", align_corners=False
            )
        mixed = self.dropout(torch.relu(mixed))
        logits: torch.Tensor = self.classify(self.dropout(torch.relu(self.context(mixed))))
        return logits


def input_size(width: int, height: int, long_side: int = INPUT_LONG_SIDE) -> tuple[int, int]:
    """(width, height) fed to the trunk: the long side scaled to `long_side`, both sides
    rounded to the trunk's stride, never below one stride."""
    scale = long_side / max(width, height, 1)

    def rounded(side: int) -> int:
        return max(INPUT_MULTIPLE, round(side * scale / INPUT_MULTIPLE) * INPUT_MULTIPLE)

    return rounded(width), rounded(height)


# Photos more than this many times the input's size are first shrunk by whole steps
# (Pillow's box `reduce`: cheap, and the filtered resize then reads far fewer pixels).
REDUCING_GAP = 3


def photo_tensor(image: Image.Image, long_side: int = INPUT_LONG_SIDE) -> torch.Tensor:
    """1x3xHxW channels-last input scaled to [-1, 1] as EfficientNet-Lite was trained.
    Scaled by torch's antialiased bilinear filter on the 8-bit pixels: Pillow's BILINEAR
    resize to within one step of 255, in about a third of the time."""
    width, height = input_size(image.width, image.height, long_side)
    reduction = min(image.width // width, image.height // height) // REDUCING_GAP
    rgb = image.convert("RGB")
    if reduction > 1:
        rgb = rgb.reduce(reduction)
    pixels = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).unsqueeze(0)
    resized = nn.functional.interpolate(
        pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    scaled = resized.float().mul_(1 / 127.5).sub_(1.0)
    return scaled.contiguous(memory_format=torch.channels_last)


# Each block's convolution and the batch norm after it, by timm's names: folded into one
# convolution with a bias for inference (bench/perf.py's finder section measures it).
FOLDED_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    assert norm.running_var is not None and norm.running_mean is not None
    assert norm.weight is not None and norm.bias is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), False)
    conv.bias = nn.Parameter(shift, False)


def fold_batch_norms(trunk: nn.Module) -> nn.Module:
    """The same function with every batch norm folded into the convolution before it
    (its activation kept): fewer passes over the feature maps. Eval mode only."""
    for module in trunk.modules():
        for conv_name, norm_name in FOLDED_PAIRS.get(type(module).__name__, ()):
            conv, norm = getattr(module, conv_name), getattr(module, norm_name)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                _fold_into(conv, norm)
                # timm's BatchNormAct2d: norm, then dropout, then the activation.
                rest: list[nn.Module] = [getattr(norm, "drop", nn.Identity())]
                setattr(
                    module, norm_name, nn.Sequential(*rest, getattr(norm, "act", nn.Identity()))
                )
    return trunk


def fast_trunk(trunk: nn.Module) -> nn.Module:
    """The trunk as the finder runs it: batch norms folded, channels-last memory
    (oneDNN's depthwise convolutions are faster on NHWC)."""
    with torch.no_grad():
        folded = fold_batch_norms(trunk.eval())
    return folded.to(memory_format=torch.channels_last)


def load_trunk() -> nn.Module:
    """The frozen ImageNet trunk, from the imagenet-lite0 package's weights."""
    import timm

    from engine import lite0

    trunk = timm.create_model(
        TRUNK_NAME, features_only=True, out_indices=TRUNK_STAGES, pretrained=False
    )
    wanted = set(trunk.state_dict())
    state = {k: v for k, v in lite0.timm_state_dict().items() if k in wanted}
    trunk.load_state_dict(state, strict=True)
    return trunk.eval()


@dataclass(frozen=True)
class FinderParams:
    """What turns cell probabilities into garments; defaults chosen on the training split."""

    # A garment's kept cells must cover this share of the photo (street-ccp's own boxes
    # leave out garments under 1% of the photo).
    min_area: float = 0.006
    # Parts of one class smaller than this share of its largest part are stray cells.
    min_part: float = 0.25
    # Below this look-gate probability the photo is a product photo: searched whole.
    min_look: float = 0.5
    min_confidence: float = 0.3


@dataclass(frozen=True)
class CellRuns:
    """The horizontal runs of a boolean grid's True cells, row by row, left to right."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray  # exclusive

    @classmethod
    def of(cls, mask: np.ndarray) -> CellRuns:
        edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
        rows, starts = np.nonzero(edges == 1)
        _, ends = np.nonzero(edges == -1)  # row-major order: each end pairs with its start
        return cls(rows, starts, ends)

    def parts(self, row_count: int) -> list[np.ndarray]:
        """4-connected parts, each as the indices of its runs: runs on neighbouring rows
        that share a column are joined (union-find over runs, not cells: a few dozen
        Python steps per photo instead of one per cell)."""
        if not len(self.starts):
            return []
        parent = list(range(len(self.starts)))

        def root(run: int) -> int:
            while parent[run] != run:
                parent[run] = parent[parent[run]]
                run = parent[run]
            return run

        starts, ends = self.starts.tolist(), self.ends.tolist()
        first = np.searchsorted(self.rows, np.arange(row_count + 1)).tolist()
        for row in range(row_count - 1):
            upper, lower = first[row], first[row + 1]
            upper_end, lower_end = first[row + 1], first[row + 2]
            while upper < upper_end and lower < lower_end:
                if starts[upper] < ends[lower] and starts[lower] < ends[upper]:
                    parent[root(upper)] = root(lower)
                if ends[upper] < ends[lower]:
                    upper += 1
                else:
                    lower += 1
        roots = np.array([root(run) for run in range(len(parent))], dtype=np.int64)
        order = np.argsort(roots, kind="stable")
        return np.split(order, np.flatnonzero(np.diff(roots[order])) + 1)


def _class_box(
    labels: np.ndarray, probabilities: np.ndarray, index: int, params: FinderParams
) -> tuple[tuple[float, float, float, float], float] | None:
    """(box in grid units, confidence) of one class on the label grid, or None."""
    mask = labels == index
    if mask.sum() < params.min_area * mask.size:
        return None
    runs = CellRuns.of(mask)
    lengths = runs.ends - runs.starts
    parts = runs.parts(mask.shape[0])
    if not parts:
        return None
    sizes = np.array([lengths[part].sum() for part in parts])
    kept = np.concatenate(
        [p for p, size in zip(parts, sizes, strict=True) if size >= params.min_part * sizes.max()]
    )
    cells = int(lengths[kept].sum())
    if cells < params.min_area * mask.size:
        return None
    # Each run's probability sum from the row's running sums.
    sums = np.zeros((mask.shape[0], mask.shape[1] + 1))
    np.cumsum(probabilities[index], axis=1, out=sums[:, 1:])
    rows, starts, ends = runs.rows[kept], runs.starts[kept], runs.ends[kept]
    confidence = float((sums[rows, ends] - sums[rows, starts]).sum() / cells)
    box = (float(starts.min()), float(rows.min()), float(ends.max()), float(rows.max() + 1))
    return box, confidence


def garments_from_probabilities(
    probabilities: np.ndarray, width: int, height: int, params: FinderParams
) -> list[Garment]:
    """Classes x rows x cols probabilities (any grid over the whole photo) -> garments,
    most confident first."""
    labels = probabilities.argmax(axis=0)
    rows, cols = labels.shape
    found = []
    for index in range(2, len(CLASSES)):
        box = _class_box(labels, probabilities, index, params)
        if box is None or box[1] < params.min_confidence:
            continue
        (x0, y0, x1, y1), confidence = box
        pixels = (
            round(x0 * width / cols),
            round(y0 * height / rows),
            round(x1 * width / cols),
            round(y1 * height / rows),
        )
        found.append(Garment(CLASSES[index], pixels, round(confidence, 4)))
    return sorted(found, key=lambda g: -g.confidence)


# The label grid is the stride-8 logits upsampled this many times: boxes land on
# stride-4 steps instead of stride-8 ones, for a few hundred microseconds.
UPSAMPLE = 2


def upsampled_probabilities(head: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """Classes x rows x cols probabilities of one photo (stride 8 / UPSAMPLE)."""
    logits = nn.functional.interpolate(
        head(features), scale_factor=UPSAMPLE, mode="bilinear", align_corners=False
    )
    return torch.softmax(logits[0], dim=0)


def cell_probabilities(head: nn.Module, features: list[torch.Tensor]) -> np.ndarray:
    return upsampled_probabilities(head, features).numpy()


def look_score(gate: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """The probability that the photo is a look, as a 0-d tensor (traceable)."""
    return torch.sigmoid(gate(pooled(features)))[0]


def look_probability(gate: nn.Module, features: list[torch.Tensor]) -> float:
    return float(look_score(gate, features))


class FinderNetwork(nn.Module):
    """Trunk, head and look gate as one module: one photo's input -> (cell probabilities,
    the probability that the photo is a look)."""

    def __init__(self, trunk: nn.Module, head: GarmentHead, gate: LookGate) -> None:
        super().__init__()
        self.trunk, self.head, self.gate = trunk, head, gate

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(pixels)
        return upsampled_probabilities(self.head, features), look_score(self.gate, features)


def frozen_network(network: FinderNetwork, example: torch.Tensor) -> nn.Module:
    """The same network traced on `example` and frozen (TorchScript, weights as
    constants): the same arithmetic without Python's dispatch through timm's hundred-odd
    modules per pass (docs/garments.md measures it). Any input size works: the trace keeps
    the shapes symbolic, and the trunk's "same" padding is the same for every input that
    is a multiple of its stride (`input_size` guarantees it)."""
    with torch.no_grad(), warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.compile, measured no faster here
        # after a 90-second first call.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(network.eval(), example, check_trace=False)
        frozen: nn.Module = torch.jit.freeze(traced)
        return frozen


# How the network runs: ONNX Runtime (served: engine/finder_onnx.py says why), the
# TorchScript-frozen network (served before, and the fallback), or the eager modules
# (what the others are tested against).
Runtime = Literal["onnx", "torchscript", "eager"]
# One photo's input -> (cell probabilities, the probability that the photo is a look).
Network = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def built_network(weights: Path, long_side: int, runtime: Runtime) -> Network:
    """The finder's network loaded from `weights`, run by `runtime` (prepared on a
    `long_side` input; every input size works). A runtime that cannot take the network
    falls back to the next: ONNX Runtime, then TorchScript, then the eager modules."""
    stored = torch.load(weights, map_location="cpu", weights_only=True)
    head, gate = GarmentHead(hidden=int(stored["hidden"])), LookGate()
    head.load_state_dict(stored["head"])
    gate.load_state_dict(stored["gate"])
    network = FinderNetwork(fast_trunk(load_trunk()), head.eval(), gate.eval()).eval()
    if runtime == "eager":
        return network
    # A portrait street photo's input; the prepared network serves every size.
    width, height = input_size(2, 3, long_side)
    example = torch.zeros(1, 3, height, width).contiguous(memory_format=torch.channels_last)
    if runtime == "onnx":
        try:
            served = onnx_network(network, example)
            served(example)  # the first pass allocates: not in a shopper's search
        except Exception as exc:  # slower, never wrong
            log.warning("garment finder runs in torch, not ONNX Runtime: %s", exc)
        else:
            return served
    try:
        script = frozen_network(network, example)
    except Exception as exc:  # slower, never wrong
        log.warning("garment finder runs unfrozen: %s", exc)
        return network
    # Freezing copied the weights: the eager modules go before the first passes, so
    # their memory is reused for the activations instead of adding to the peak.
    del network, head, gate
    with torch.inference_mode():
        for _ in range(2):  # TorchScript optimises on its first calls
            script(example)
    return script


_shared_networks: dict[tuple[Path, int, int, Runtime], Network] = {}
_shared_networks_lock = threading.Lock()


def shared_network(weights: Path, long_side: int, runtime: Runtime) -> Network:
    """`built_network`, built once per process for the same weights file (as it is on
    disk now), input size and runtime. Building costs about a second of CPU (loading, the
    export, the warm-up pass); every engine in a process (the bots, a
    reloaded index, the tests' many engines) then shares one network: inference passes
    change nothing in it, so finders on different threads may run it at once."""
    resolved = weights.resolve()
    key = (resolved, resolved.stat().st_mtime_ns, long_side, runtime)
    with _shared_networks_lock:
        if key not in _shared_networks:
            _shared_networks[key] = built_network(resolved, long_side, runtime)
        return _shared_networks[key]


class GarmentFinder:
    """Loads its network on first use (never at import), then `find(image)`.
    Thread-safe: one pass at a time, as with the embedder. `runtime`: how its network
    runs (`Runtime`)."""

    def __init__(
        self,
        weights: Path = WEIGHTS_PATH,
        params: FinderParams | None = None,
        long_side: int = INPUT_LONG_SIDE,
        runtime: Runtime = "onnx",
    ) -> None:
        self.weights = weights
        self.params = params or FinderParams()
        self.long_side = long_side
        self.runtime: Runtime = runtime
        self._lock = threading.Lock()
        self._network: Network | None = None
        self._unavailable = False

    @property
    def loaded(self) -> bool:
        return self._network is not None

    def _load(self) -> bool:
        with self._lock:
            if self._network is not None:
                return True
            if self._unavailable:
                return False
            try:
                self._network = shared_network(self.weights, self.long_side, self.runtime)
            except Exception as exc:  # a finder that cannot load means whole-photo search
                log.warning("garment finder unavailable, searching whole photos: %s", exc)
                self._unavailable = True
                return False
            return True

    def analyse(self, image: Image.Image) -> tuple[np.ndarray, float]:
        """(cell probabilities, the probability that the photo is a look)."""
        with self._lock, torch.inference_mode():
            assert self._network is not None
            probabilities, look = self._network(photo_tensor(image, self.long_side))
            return probabilities.numpy(), float(look)

    def find(self, image: Image.Image) -> list[Garment]:
        """The garments in `image`, most confident first; one whole-photo garment when
        the photo is not a look, none is found, or anything goes wrong."""
        width, height = image.size
        fallback = [whole_photo(width, height)]
        if min(width, height) < INPUT_MULTIPLE or not self._load():
            return fallback
        try:
            probabilities, look = self.analyse(image)
            if look < self.params.min_look:
                return fallback
            found = garments_from_probabilities(probabilities, width, height, self.params)
        except Exception:  # a strange photo must never cost the shopper their search
            log.exception("garment finder failed on a %dx%d photo", width, height)
            return fallback
        return found or fallback
