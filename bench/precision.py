"""`model.precision`, measured: the model's forward pass in bf16 beside fp32 (same weights,
interleaved in one run), and how far bf16 results agree with fp32 ones on real weights.

Speed: each architecture (random weights: the compute is real) at batch 1 and 16, the
fp32 model and its bf16 cast taking turns on the same input.
Agreement: the `imagenet-lite0` preset (real ImageNet weights) embeds clothing-small's
`train/` photos in fp32 as the catalog; every `validation/` photo is embedded in fp32 and
in bf16 and searched exactly (no graph, no re-ranking): per-photo cosine between its two
vectors, overlap of the two top-10 result lists, and category precision@1/@10 of each with
a paired bootstrap interval of the difference.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from engine.embedder import Embedder, load_embedder
from engine.evaluation.metrics import paired_bootstrap
from engine.precision import Precision, cpu_has_native_bf16

K = 10


def cast_copy(embedder: Embedder, precision: Precision) -> Embedder:
    """The same weights in another precision (the original stays as it is)."""
    if precision == embedder.precision:
        return embedder
    return Embedder(
        copy.deepcopy(embedder.model),
        embedder.preprocess,
        embedder.tokenizer,
        embedder.spec,
        embedder.device,
        embedder.pad_to_square,
        precision,
    )


def forward_speed(
    fp32: Embedder, batch_sizes: tuple[int, ...], repeats: int
) -> list[dict[str, Any]]:
    bf16 = cast_copy(fp32, "bf16")
    rows = []
    for batch in batch_sizes:
        pixels = torch.rand(batch, 3, fp32.image_size, fp32.image_size)
        inputs = {"fp32": pixels, "bf16": pixels.to(torch.bfloat16)}
        models = {"fp32": fp32.model, "bf16": bf16.model}
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        with torch.inference_mode():
            for name in times:  # warm both
                models[name].encode_image(inputs[name])
            for _ in range(repeats):  # interleaved: drift hits both alike
                for name in times:
                    started = time.perf_counter()
                    models[name].encode_image(inputs[name])
                    times[name].append((time.perf_counter() - started) * 1000)
        fp32_ms, bf16_ms = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        rows.append(
            {"batch": batch, "fp32_ms": fp32_ms, "bf16_ms": bf16_ms, "speedup": fp32_ms / bf16_ms}
        )
    return rows


def photos_of(folder: Path) -> tuple[list[Path], list[str]]:
    paths = sorted(folder.glob("*/*.jpg"))
    return paths, [path.parent.name for path in paths]


def embed_all(embedder: Embedder, paths: list[Path], batch: int = 32) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), batch):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch]]
        rows.append(embedder.embed_images(images))
    return np.concatenate(rows)


def agreement(
    dataset: Path, limit: int | None = None, model_cache: Path | None = None
) -> dict[str, Any]:
    settings: Settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    model = {"name": "imagenet-lite0", "precision": "fp32", "cache_dir": str(model_cache or "")}
    fp32 = load_embedder(settings.model.model_copy(update=model))
    bf16 = cast_copy(fp32, "bf16")
    catalog_paths, catalog_categories = photos_of(dataset / "train")
    query_paths, query_categories = photos_of(dataset / "validation")
    if limit:
        catalog_paths, catalog_categories = catalog_paths[::limit], catalog_categories[::limit]
        query_paths, query_categories = query_paths[: 4 * limit], query_categories[: 4 * limit]
    catalog = embed_all(fp32, catalog_paths)
    categories = np.asarray(catalog_categories)
    queries = {"fp32": embed_all(fp32, query_paths), "bf16": embed_all(bf16, query_paths)}
    k = min(K, len(catalog))
    top = {name: np.argsort(-(found @ catalog.T), axis=1)[:, :k] for name, found in queries.items()}
    cosine = (queries["fp32"] * queries["bf16"]).sum(axis=1)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top["fp32"], top["bf16"], strict=True)]
    truth = np.asarray(query_categories)[:, None]
    hits = {name: categories[found] == truth for name, found in top.items()}
    at1 = {name: hit[:, 0].astype(float) for name, hit in hits.items()}
    at10 = {name: hit.mean(axis=1) for name, hit in hits.items()}
    return {
        "model": "imagenet-lite0",
        "catalog": len(catalog_paths),
        "queries": len(query_paths),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top10_overlap": float(np.mean(overlap)),
        "precision_at_1": {name: float(v.mean()) for name, v in at1.items()},
        "precision_at_10": {name: float(v.mean()) for name, v in at10.items()},
        "difference_at_1": paired_bootstrap(at1["fp32"], at1["bf16"]).__dict__,
        "difference_at_10": paired_bootstrap(at10["fp32"], at10["bf16"]).__dict__,
    }


def measure(
    architectures: list[str],
    dataset: Path,
    quick: bool,
    random_embedder: Any,
    model_cache: Path | None = None,
) -> dict[str, Any]:
    repeats = 5 if quick else 15
    speed = {name: forward_speed(random_embedder(name), (1, 16), repeats) for name in architectures}
    result: dict[str, Any] = {"native_bf16": cpu_has_native_bf16(), "speed": speed}
    if dataset.is_dir():
        result["agreement"] = agreement(dataset, 20 if quick else None, model_cache)
    return result


def render(precision: dict[str, Any]) -> list[str]:
    lines = [
        "## 7. Model precision: bf16 beside fp32",
        "",
        f"This CPU {'has' if precision['native_bf16'] else 'has no'} native bf16 instructions"
        " (avx512_bf16, amx_bf16 or Arm's bf16 in /proc/cpuinfo). The model's weights cast"
        " to bf16 against the same weights in fp32, taking turns on the same input (a speed-up"
        ' below 1 means bf16 is slower; `model.precision = "auto"` then stays fp32 on CPUs):',
        "",
        "| architecture | batch | fp32 | bf16 | speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, rows in precision["speed"].items():
        lines += [
            f"| {name} | {r['batch']} | {r['fp32_ms']:.1f} ms | {r['bf16_ms']:.1f} ms | {r['speedup']:.2f}x |"
            for r in rows
        ]
    agreement = precision.get("agreement")
    if agreement:
        d1, d10 = agreement["difference_at_1"], agreement["difference_at_10"]
        p1, p10 = agreement["precision_at_1"], agreement["precision_at_10"]
        lines += [
            "",
            f"Agreement on real weights ({agreement['model']}; catalog = {agreement['catalog']:,}"
            f" clothing-small `train/` photos embedded in fp32, {agreement['queries']} `validation/`"
            " photos embedded in each precision, exact search, no re-ranking):",
            "",
            f"- cosine between a photo's fp32 and bf16 vectors: mean {agreement['cosine_mean']:.4f},"
            f" lowest {agreement['cosine_min']:.4f};",
            f"- top-10 results shared with fp32: **{agreement['top10_overlap']:.3f}** on average;",
            f"- category precision@1 fp32 {p1['fp32']:.3f}, bf16 {p1['bf16']:.3f} (difference"
            f" {d1['mean']:+.3f}, 95% interval [{d1['low']:+.3f}, {d1['high']:+.3f}]);"
            f" @10 fp32 {p10['fp32']:.3f}, bf16 {p10['bf16']:.3f} ({d10['mean']:+.3f},"
            f" [{d10['low']:+.3f}, {d10['high']:+.3f}]).",
        ]
    return [*lines, ""]
