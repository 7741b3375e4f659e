"""Train the garment finder's head on street-ccp and measure it on a held-out split.

    python -m bench.train_garments [--dataset ../shared/datasets/street-ccp]
                                   [--cache /tmp/garments-cache] [--epochs N]
                                   [--out engine/weights/garments.pt] [--doc docs/garments.md]

The split is fixed by photo id (crc32 % 5 == 0: validation), so every run trains and
measures on the same photos. Frozen trunk features are cached per photo; the head trains
on them mirrored at random (a mirrored photo's features are close to its features
mirrored, and extracting both would double the slowest step).
Validation photos are never used to choose anything: epochs and post-processing were
chosen on a fold of the training photos (`--dev`).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from engine import garments as finder
from engine.evaluation.garments import match_garment

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "street-ccp"
VALIDATION_FOLD = 0
DEV_FOLD = 1  # inside the training photos: what `--dev` measures on
FOLDS = 5
IGNORE = -1

# street-ccp label name -> finder class. Garments without a class of their own (top,
# vest, romper, ...) are neither background nor a known garment: their cells are left
# out of the loss rather than taught as either.
LABEL_CLASSES = {
    "skin": "person",
    "hair": "person",
    "bag": "bag",
    "purse": "bag",
    "dress": "dress",
    "hat": "hat",
    **dict.fromkeys(("sweater", "jumper", "cardigan", "sweatshirt", "hoodie"), "longsleeve"),
    **dict.fromkeys(("coat", "jacket", "blazer", "cape"), "outwear"),
    **dict.fromkeys(("pants", "jeans", "leggings"), "pants"),
    **dict.fromkeys(("shirt", "blouse"), "shirt"),
    **dict.fromkeys(
        (
            "shoes",
            "boots",
            "heels",
            "sneakers",
            "sandals",
            "flats",
            "loafers",
            "pumps",
            "wedges",
            "clogs",
        ),
        "shoes",
    ),
    "shorts": "shorts",
    "skirt": "skirt",
    "t-shirt": "t-shirt",
}
IGNORED_LABELS = ("top", "vest", "romper", "bodysuit", "suit", "swimwear", "intimate")


def photo_fold(photo_id: str) -> int:
    return zlib.crc32(photo_id.encode()) % FOLDS


def label_lookup(dataset: Path) -> np.ndarray:
    """street-ccp label value -> finder class index (or IGNORE)."""
    names = (dataset / "labels.txt").read_text(encoding="utf-8").split()
    lookup = np.zeros(256, dtype=np.int64)
    for value, name in enumerate(names):
        if name in IGNORED_LABELS:
            lookup[value] = IGNORE
        elif name in LABEL_CLASSES:
            lookup[value] = finder.CLASSES.index(LABEL_CLASSES[name])
    return lookup


def cell_targets(mask: Image.Image, size: tuple[int, int], lookup: np.ndarray) -> np.ndarray:
    """(classes + 1) x rows x cols pixel counts per stride-8 cell; the last channel
    counts ignored pixels."""
    labels = lookup[np.asarray(mask.resize(size, Image.Resampling.NEAREST))]
    rows, cols = size[1] // finder.CELL_STRIDE, size[0] // finder.CELL_STRIDE
    channel = np.where(labels == IGNORE, len(finder.CLASSES), labels)
    cells = channel.reshape(rows, finder.CELL_STRIDE, cols, finder.CELL_STRIDE)
    counts = np.stack([(cells == c).sum(axis=(1, 3)) for c in range(len(finder.CLASSES) + 1)])
    return counts.astype(np.uint8)


@dataclass
class Sample:
    photo_id: str
    size: tuple[int, int]  # the original photo's (width, height)
    features: list[np.ndarray]  # one per trunk stage, float16, C x H x W
    targets: np.ndarray


def _extract(trunk: nn.Module, image: Image.Image) -> list[np.ndarray]:
    with torch.inference_mode():
        return [f[0].half().numpy() for f in trunk(finder.photo_tensor(image))]


@functools.cache
def shared_trunk() -> nn.Module:
    """Loaded once, and only when some photo's features are not cached yet."""
    return finder.load_trunk()


def cache_folder(cache: Path, kind: str) -> Path:
    """Per input size: features of another size are another cache."""
    folder = cache / f"{kind}-{finder.INPUT_LONG_SIDE}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cached_samples(dataset: Path, cache: Path, photo_ids: list[str]) -> list[Sample]:
    """Trunk features and cell targets per photo."""
    folder = cache_folder(cache, "lite0")
    lookup = label_lookup(dataset)
    samples = []
    for photo_id in photo_ids:
        path = folder / f"{photo_id}.npz"
        if not path.exists():
            image = Image.open(dataset / "photos" / f"{photo_id}.jpg").convert("RGB")
            mask = Image.open(dataset / "masks" / f"{photo_id}.png")
            features = _extract(shared_trunk(), image)
            targets = cell_targets(mask, finder.input_size(*image.size), lookup)
            partial = path.with_suffix(".partial.npz")  # a killed run leaves no half file
            np.savez(partial, *features, targets=targets, size=np.array(image.size))
            partial.replace(path)
        with np.load(path) as data:
            features = [data[f"arr_{i}"] for i in range(len(finder.TRUNK_STAGES))]
            size = (int(data["size"][0]), int(data["size"][1]))
            samples.append(Sample(photo_id, size, features, data["targets"]))
    return samples


def class_weights(samples: list[Sample]) -> torch.Tensor:
    """Inverse square root of each class's cell share: shoes and hats (a few cells)
    count, without letting rare classes swamp the background."""
    totals = sum(s.targets[: len(finder.CLASSES)].sum(axis=(1, 2)) for s in samples)
    share = np.maximum(totals / totals.sum(), 1e-4)
    weights = 1.0 / np.sqrt(share)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def soft_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against each cell's class shares, ignored pixels left out."""
    counts = targets[:, :-1].float()
    known = counts.sum(dim=1, keepdim=True).clamp(min=1.0)
    shares = counts / known
    per_cell = -(shares * weights.view(1, -1, 1, 1) * torch.log_softmax(logits, dim=1)).sum(1)
    cell_weight = counts.sum(dim=1) / (counts.sum(dim=1) + targets[:, -1].float()).clamp(min=1)
    return (per_cell * cell_weight).sum() / cell_weight.sum().clamp(min=1.0)


def _batches(samples: list[Sample], size: int, rng: np.random.Generator):
    """Shuffled batches of samples with equal feature shapes."""
    groups: dict[tuple[int, ...], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.features[0].shape].append(sample)
    batches = []
    for group in groups.values():
        order = rng.permutation(len(group))
        batches += [[group[i] for i in order[s : s + size]] for s in range(0, len(group), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def train_head(samples: list[Sample], epochs: int, hidden: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = finder.GarmentHead(hidden=hidden)
    weights = class_weights(samples)
    optimiser = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-3)
    steps = epochs * len(_batches(samples, 16, rng))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    head.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in _batches(samples, 16, rng):
            features = [
                torch.from_numpy(np.stack([s.features[i] for s in batch])).float()
                for i in range(len(finder.TRUNK_STAGES))
            ]
            targets = torch.from_numpy(np.stack([s.targets for s in batch]))
            if rng.random() < 0.5:  # a mirrored look is as likely: flip cells and targets
                features = [f.flip(-1) for f in features]
                targets = targets.flip(-1)
            loss = soft_loss(head(features), targets, weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        if epoch % 5 == 4 or epoch == epochs - 1:
            print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(samples):.4f}", flush=True)
    return head.eval()


def predict(head: nn.Module, gate: nn.Module, sample: Sample, params: finder.FinderParams) -> list:
    """What the finder finds, from cached trunk features ([] when the gate says the photo
    is not a look: the whole photo is searched)."""
    with torch.inference_mode():
        features = [torch.from_numpy(f).float().unsqueeze(0) for f in sample.features]
        if finder.look_probability(gate, features) < params.min_look:
            return []
        probabilities = finder.cell_probabilities(head, features)
    return finder.garments_from_probabilities(probabilities, *sample.size, params)


def product_photos(folder: Path, count: int) -> list[Path]:
    """A deterministic spread of `count` photos over a clothing-small split."""
    photos = sorted(folder.glob("*/*.jpg"))
    step = max(1, len(photos) // count)
    return photos[::step][:count]


def cached_pooled(trunk_cache: Path, photos: list[Path]) -> np.ndarray:
    """The look gate's input for product photos, one row each (cached per photo)."""
    folder = cache_folder(trunk_cache, "pooled")
    rows = []
    for photo in photos:
        path = folder / f"{photo.parent.parent.name}-{photo.parent.name}-{photo.stem}.npy"
        if not path.exists():
            with torch.inference_mode():
                pixels = finder.photo_tensor(Image.open(photo).convert("RGB"))
                features = shared_trunk()(pixels)
                partial = path.with_suffix(".partial.npy")
                np.save(partial, finder.pooled(features)[0].numpy())
                partial.replace(path)
        rows.append(np.load(path))
    return np.stack(rows)


def street_pooled(samples: list[Sample]) -> np.ndarray:
    features = [[torch.from_numpy(f).float() for f in s.features] for s in samples]
    return np.stack([finder.pooled(f).numpy() for f in features])


def train_gate(looks: np.ndarray, products: np.ndarray, seed: int = 0) -> finder.LookGate:
    """Logistic regression, looks against product photos, classes weighted equally."""
    torch.manual_seed(seed)
    gate = finder.LookGate()
    data = torch.from_numpy(np.concatenate([looks, products])).float()
    gate.mean.copy_(data.mean(dim=0))
    gate.scale.copy_(data.std(dim=0).clamp(min=1e-3))
    labels = torch.cat([torch.ones(len(looks)), torch.zeros(len(products))])
    weights = torch.cat([torch.full((len(looks),), 0.5 / len(looks))] * 1)
    weights = torch.cat([weights, torch.full((len(products),), 0.5 / len(products))])
    optimiser = torch.optim.Adam(gate.parameters(), lr=0.01, weight_decay=1e-2)
    for _ in range(300):
        loss = nn.functional.binary_cross_entropy_with_logits(
            gate(data), labels, weight=weights, reduction="sum"
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return gate.eval()


def look_rate(gate: nn.Module, rows: np.ndarray, params: finder.FinderParams) -> float:
    with torch.inference_mode():
        return float(
            (torch.sigmoid(gate(torch.from_numpy(rows).float())) >= params.min_look).float().mean()
        )


def read_items(dataset: Path) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    items: dict[str, list[tuple[str, tuple[float, ...]]]] = defaultdict(list)
    with (dataset / "items.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            items[Path(row["photo"]).stem].append((row["category"], box))
    return items


def add_bag_items(dataset: Path, photo_ids: list[str], items: dict) -> None:
    """items.csv has no bags (clothing-small sells none), but catalogs do and the masks
    outline them: a bag row per photo whose bag and purse pixels cover 1% of it, the box
    drawn as street-ccp draws the others'."""
    names = (dataset / "labels.txt").read_text(encoding="utf-8").split()
    bag_values = [names.index("bag"), names.index("purse")]
    for photo_id in photo_ids:
        mask = np.isin(np.asarray(Image.open(dataset / "masks" / f"{photo_id}.png")), bag_values)
        if mask.mean() < 0.01:
            continue
        rows, cols = np.nonzero(mask)
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        items[photo_id].append(("bag", box))


def measure(
    head: nn.Module, gate: nn.Module, samples: list[Sample], items, params: finder.FinderParams
) -> dict:
    """Found rate, mean IoU of found garments, category accuracy of found garments,
    overall and per category; plus how often a photo found nothing."""
    rows: dict[str, list[tuple[bool, float, bool]]] = defaultdict(list)
    empty = 0
    for sample in samples:
        found = predict(head, gate, sample, params)
        empty += not found
        for category, box in items.get(sample.photo_id, []):
            garment, iou = match_garment(found, category, box)  # type: ignore[arg-type]
            hit = garment is not None
            rows[category].append((hit, iou or 0.0, hit and garment.category == category))
    return summarise_rows(rows, empty, len(samples))


def summarise_rows(rows: dict[str, list[tuple[bool, float, bool]]], empty: int, photos: int):
    def figures(group: list[tuple[bool, float, bool]]) -> dict[str, float | int]:
        found = [r for r in group if r[0]]
        return {
            "garments": len(group),
            "garment_found_rate": len(found) / len(group) if group else 0.0,
            "box_iou_mean": float(np.mean([r[1] for r in found])) if found else 0.0,
            "category_accuracy": float(np.mean([r[2] for r in found])) if found else 0.0,
        }

    # The figures are over items.csv's rows; bag rows (from the masks) stand apart.
    everything = [r for category, group in rows.items() if category != "bag" for r in group]
    return {
        "overall": {**figures(everything), "photos": photos, "photos_without_garment": empty},
        "by_category": {c: figures(g) for c, g in sorted(rows.items())},
    }


def time_finder(weights: Path, dataset: Path, photo_ids: list[str], repeats: int = 3) -> dict:
    """Milliseconds per photo of the shipped finder (decoded photo -> garments), on one
    photo at a time as a shopper's query runs; the best of `repeats` per photo, since
    other processes on a shared machine only ever add time."""
    garment_finder = finder.GarmentFinder(weights)
    images = [Image.open(dataset / "photos" / f"{p}.jpg").convert("RGB") for p in photo_ids]
    garment_finder.find(images[0])  # loads the trunk and head
    best = []
    for image in images:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            garment_finder.find(image)
            runs.append((time.perf_counter() - started) * 1000)
        best.append(min(runs))
    return {
        "photos": len(images),
        "median_ms": float(np.median(best)),
        "p90_ms": float(np.percentile(best, 90)),
        "torch_threads": torch.get_num_threads(),
    }


def save_weights(head: nn.Module, gate: nn.Module, hidden: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {
        "hidden": hidden,
        "classes": list(finder.CLASSES),
        "head": {k: v.detach().clone() for k, v in head.state_dict().items()},
        "gate": {k: v.detach().clone() for k, v in gate.state_dict().items()},
    }
    torch.save(stored, path)


def _table(figures: dict) -> list[str]:
    lines = [
        "| category | garments | found rate | mean box IoU | category accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    groups = [("**all of items.csv**", figures["overall"]), *figures["by_category"].items()]
    for name, row in groups:
        lines.append(
            f"| {name} | {row['garments']} | {row['garment_found_rate']:.3f} "
            f"| {row['box_iou_mean']:.3f} | {row['category_accuracy']:.3f} |"
        )
    return lines


FINDER_SECTION = "## Garment finder (validation split)"


def write_doc(path: Path, figures: dict, timing: dict, settings: dict) -> None:
    """Rewrite the finder's section of `path`, keeping any other section in it."""
    overall, gate = figures["overall"], figures["gate"]
    section = [
        FINDER_SECTION,
        "",
        "Produced by `make train-garments` (bench/train_garments.py); do not edit by hand.",
        f"Trained on {settings['train_photos']} street-ccp photos, "
        f"measured on the {overall['photos']} held-out validation photos "
        "(photo id crc32 % 5 == 0), never used to choose anything.",
        "A garment is found when a found box overlaps its annotated box at IoU >= 0.3 "
        "(the box overlapping most); the IoU and the category accuracy are over found "
        f"garments. Photos where nothing was found: {overall['photos_without_garment']}. "
        "Bags are not in items.csv: their rows come from the masks (bag and purse pixels "
        "covering 1% of the photo).",
        "",
        *_table(figures),
        "",
        f"Finder time (decoded photo -> garments, {timing['photos']} validation photos, "
        f"{timing['torch_threads']} torch threads, best of 3 per photo on a shared 2-core "
        f"machine): median **{timing['median_ms']:.1f} ms**, p90 {timing['p90_ms']:.1f} ms.",
        f"Look gate: {gate['street_look_rate']:.3f} of the validation street photos are "
        f"looks, {gate['product_look_rate']:.3f} of clothing-small's {gate['product_photos']} "
        "validation photos (single products; never trained on) are; the "
        "others are searched whole.",
        f"Training: {settings['epochs']} epochs, head width {settings['hidden']}, "
        f"{settings['train_seconds']:.0f} s on CPU (features cached).",
        "",
    ]
    replace_section(path, FINDER_SECTION, section)


def replace_section(doc: Path, title: str, lines: list[str]) -> None:
    """Rewrite the section headed `title` (up to the next `## `), keeping the others, so
    the finder's and the retrieval figures can be regenerated apart."""
    old = doc.read_text(encoding="utf-8") if doc.exists() else "# Garment finder\n"
    head, _, rest = old.partition(title)
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    doc.write_text(head.rstrip() + "\n\n" + "\n".join(lines) + "\n" + tail, encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/garments-cache"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--out", type=Path, default=finder.WEIGHTS_PATH)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "garments.md")
    parser.add_argument(
        "--products",
        type=Path,
        default=ROOT.parent / "shared" / "datasets" / "clothing-small",
        help="product photos for the look gate (train/) and its check (validation/)",
    )
    parser.add_argument("--head-from", type=Path, help="reuse this file's cell head")
    parser.add_argument(
        "--dev", action="store_true", help="train without fold 1 and measure on it (tuning)"
    )
    return parser.parse_args(argv)


def fit_finder(args: argparse.Namespace, train: list[Sample]) -> tuple[nn.Module, nn.Module]:
    """The cell head (trained, or read back with --head-from) and the look gate."""
    if args.head_from:
        head = finder.GarmentHead(hidden=args.hidden)
        head.load_state_dict(torch.load(args.head_from, weights_only=True)["head"])
    else:
        head = train_head(train, args.epochs, args.hidden)
    products = cached_pooled(args.cache, product_photos(args.products / "train", 600))
    gate = train_gate(street_pooled(train), products)
    return head.eval(), gate


def gate_figures(args: argparse.Namespace, gate: nn.Module, held: list[Sample]) -> dict:
    """How often the gate calls a photo a look: held-out street photos (should be
    all) and clothing-small's validation photos (products; should be few)."""
    params = finder.FinderParams()
    checks = cached_pooled(args.cache, product_photos(args.products / "validation", 10_000))
    return {
        "street_look_rate": look_rate(gate, street_pooled(held), params),
        "product_look_rate": look_rate(gate, checks, params),
        "product_photos": len(checks),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # One thread: on a shared machine, OpenMP teams spin-waiting on busy cores made
    # feature extraction ten times slower than a single thread.
    torch.set_num_threads(1)
    photo_ids = sorted(p.stem for p in (args.dataset / "photos").glob("*.jpg"))
    held_fold = DEV_FOLD if args.dev else VALIDATION_FOLD
    train_ids = [p for p in photo_ids if photo_fold(p) not in (VALIDATION_FOLD, held_fold)]
    held_ids = [p for p in photo_ids if photo_fold(p) == held_fold]
    print(f"{len(train_ids)} training photos, {len(held_ids)} held out", flush=True)
    train = cached_samples(args.dataset, args.cache, train_ids)
    held = cached_samples(args.dataset, args.cache, held_ids)
    started = time.perf_counter()
    head, gate = fit_finder(args, train)
    train_seconds = time.perf_counter() - started
    items = read_items(args.dataset)
    add_bag_items(args.dataset, held_ids, items)
    figures = measure(head, gate, held, items, finder.FinderParams())
    figures["gate"] = gate_figures(args, gate, held)
    print(json.dumps(figures, indent=1))
    if args.dev:
        return 0
    save_weights(head, gate, args.hidden, args.out)
    timing = time_finder(args.out, args.dataset, held_ids[:40])
    print(json.dumps(timing))
    settings = {
        "train_photos": len(train_ids),
        "epochs": args.epochs,
        "hidden": args.hidden,
        "train_seconds": train_seconds,
    }
    write_doc(args.doc, figures, timing, settings)
    print(f"wrote {args.out} and {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
