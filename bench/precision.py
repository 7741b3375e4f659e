"""`model.precision`, measured: the model's forward pass in bf16 and int8 beside fp32
(same weights, interleaved in one run), and how far their results agree with fp32 ones on
real weights.

Speed: each architecture (random weights: the compute is real) at batch 1 and 16, the
fp32 image tower, its bf16 cast and its int8 one (ONNX Runtime, matrix products int8:
engine/onnx_int8.py) taking turns on the same input; plus what `auto`'s load-time int8
check costs and finds for those weights.
Agreement: the `imagenet-lite0` preset (real ImageNet weights) embeds clothing-small's
`train/` photos in fp32 as the catalog; every `validation/` photo is embedded in fp32 and
in bf16 (and in int8, for a tower with matrix products: lite0 has none) and searched
exactly (no graph, no re-ranking): per-photo cosine between its vectors, overlap of the
top-10 result lists, and category precision@1/@10 of each with a paired bootstrap
interval of the difference.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine import quantize
from engine.config import DEFAULT_CONFIG_PATH, Settings, load_settings
from engine.embedder import Embedder, load_embedder
from engine.evaluation.metrics import paired_bootstrap
from engine.precision import Precision, cpu_has_native_bf16

K = 10
COMPARED: tuple[Precision, ...] = ("bf16", "int8")


def forward_speed(
    fp32: Embedder, batch_sizes: tuple[int, ...], repeats: int
) -> list[dict[str, Any]]:
    models = {"fp32": fp32, **{p: fp32.in_precision(p) for p in COMPARED}}
    rows = []
    for batch in batch_sizes:
        pixels = torch.rand(batch, 3, fp32.image_size, fp32.image_size)
        inputs = {name: pixels.to(m.dtype) for name, m in models.items()}
        times: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for name in times:  # warm all
                models[name].image_features(inputs[name])
            for _ in range(repeats):  # interleaved: drift hits all alike
                for name in times:
                    started = time.perf_counter()
                    models[name].image_features(inputs[name])
                    times[name].append((time.perf_counter() - started) * 1000)
        ms = {name: statistics.median(t) for name, t in times.items()}
        rows.append(
            {
                "batch": batch,
                **{f"{name}_ms": value for name, value in ms.items()},
                "speedup": ms["fp32"] / ms["bf16"],
                "int8_speedup": ms["fp32"] / ms["int8"],
            }
        )
    return rows


def load_check(fp32: Embedder) -> dict[str, Any]:
    """`auto`'s start-up check for these weights: the lowest cosine it finds, and its cost
    (as load_embedder runs it: the int8 tower from the cache `forward_speed` filled, both
    precisions' passes over the photos)."""
    photos = quantize.agreement_photos()
    started = time.perf_counter()
    served, cosine = quantize.checked_int8(fp32, photos)
    return {
        "photos": len(photos),
        "check_ms": (time.perf_counter() - started) * 1000,
        "lowest_cosine": cosine,
        "serves": served.precision,
    }


def photos_of(folder: Path) -> tuple[list[Path], list[str]]:
    paths = sorted(folder.glob("*/*.jpg"))
    return paths, [path.parent.name for path in paths]


def embed_all(embedder: Embedder, paths: list[Path], batch: int = 32) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), batch):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + batch]]
        rows.append(embedder.embed_images(images))
    return np.concatenate(rows)


def compared(
    fp32: np.ndarray,
    other: np.ndarray,
    catalog: np.ndarray,
    categories: np.ndarray,
    truth: np.ndarray,
) -> dict[str, Any]:
    """One precision's query vectors against fp32's, over the same fp32 catalog."""
    k = min(K, len(catalog))
    top = {n: np.argsort(-(q @ catalog.T), axis=1)[:, :k] for n, q in (("a", fp32), ("b", other))}
    cosine = (fp32 * other).sum(axis=1)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top["a"], top["b"], strict=True)]
    hits = {name: categories[found] == truth[:, None] for name, found in top.items()}
    at1 = {name: hit[:, 0].astype(float) for name, hit in hits.items()}
    at10 = {name: hit.mean(axis=1) for name, hit in hits.items()}
    return {
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top10_overlap": float(np.mean(overlap)),
        "precision_at_1": {"fp32": float(at1["a"].mean()), "other": float(at1["b"].mean())},
        "precision_at_10": {"fp32": float(at10["a"].mean()), "other": float(at10["b"].mean())},
        "difference_at_1": paired_bootstrap(at1["a"], at1["b"]).__dict__,
        "difference_at_10": paired_bootstrap(at10["a"], at10["b"]).__dict__,
    }


def agreement(
    dataset: Path, limit: int | None = None, model_cache: Path | None = None
) -> dict[str, Any]:
    """bf16's figures at the top level (as the headline reads them), int8's under "int8"."""
    settings: Settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    model = {"name": "imagenet-lite0", "precision": "fp32", "cache_dir": str(model_cache or "")}
    fp32 = load_embedder(settings.model.model_copy(update=model))
    catalog_paths, catalog_categories = photos_of(dataset / "train")
    query_paths, query_categories = photos_of(dataset / "validation")
    if limit:
        catalog_paths, catalog_categories = catalog_paths[::limit], catalog_categories[::limit]
        query_paths, query_categories = query_paths[: 4 * limit], query_categories[: 4 * limit]
    catalog = embed_all(fp32, catalog_paths)
    exact = embed_all(fp32, query_paths)
    linear_layers = sum(isinstance(m, torch.nn.Linear) for m in fp32.model.visual.modules())
    runs = [p for p in COMPARED if p != "int8" or linear_layers > 0]
    found = {
        p: compared(
            exact,
            embed_all(fp32.in_precision(p), query_paths),
            catalog,
            np.asarray(catalog_categories),
            np.asarray(query_categories),
        )
        for p in runs
    }
    return {
        "model": "imagenet-lite0",
        "catalog": len(catalog_paths),
        "queries": len(query_paths),
        "image_tower_linear_layers": linear_layers,
        **_named(found["bf16"], "bf16"),
        **({"int8": _named(found["int8"], "int8")} if "int8" in found else {}),
    }


def _named(figures: dict[str, Any], precision: str) -> dict[str, Any]:
    """`compared`'s figures with "other" named after the precision."""
    renamed = dict(figures)
    for key in ("precision_at_1", "precision_at_10"):
        renamed[key] = {"fp32": figures[key]["fp32"], precision: figures[key]["other"]}
    return renamed


def measure(
    architectures: list[str],
    dataset: Path,
    quick: bool,
    random_embedder: Any,
    model_cache: Path | None = None,
) -> dict[str, Any]:
    repeats = 5 if quick else 15
    speed, checks = {}, {}
    for name in architectures:
        fp32 = random_embedder(name)
        speed[name] = forward_speed(fp32, (1, 16), repeats)
        checks[name] = load_check(fp32)
    result: dict[str, Any] = {
        "native_bf16": cpu_has_native_bf16(),
        "speed": speed,
        "load_check": checks,
        "min_cosine": quantize.MIN_COSINE,
    }
    if dataset.is_dir():
        result["agreement"] = agreement(dataset, 20 if quick else None, model_cache)
    return result


def _speed_row(name: str, r: dict[str, Any]) -> str:
    int8 = (
        f"{r['int8_ms']:.1f} ms | {r['int8_ms'] / r['fp32_ms']:.2f}x"
        if "int8_ms" in r
        else "not measured | -"
    )
    return (
        f"| {name} | {r['batch']} | {r['fp32_ms']:.1f} ms | {r['bf16_ms']:.1f} ms"
        f" | {r['speedup']:.2f}x | {int8} |"
    )


def _agreement_lines(figures: dict[str, Any], precision: str) -> list[str]:
    d1, d10 = figures["difference_at_1"], figures["difference_at_10"]
    p1, p10 = figures["precision_at_1"], figures["precision_at_10"]
    return [
        f"- {precision}: cosine between a photo's fp32 and {precision} vectors mean"
        f" {figures['cosine_mean']:.4f}, lowest {figures['cosine_min']:.4f}; top-10 results"
        f" shared with fp32 **{figures['top10_overlap']:.3f}** on average; category"
        f" precision@1 fp32 {p1['fp32']:.3f}, {precision} {p1[precision]:.3f} (difference"
        f" {d1['mean']:+.3f}, 95% interval [{d1['low']:+.3f}, {d1['high']:+.3f}]); @10 fp32"
        f" {p10['fp32']:.3f}, {precision} {p10[precision]:.3f} ({d10['mean']:+.3f},"
        f" [{d10['low']:+.3f}, {d10['high']:+.3f}]).",
    ]


def _load_check_lines(precision: dict[str, Any]) -> list[str]:
    checks = precision.get("load_check")
    if not checks:
        return []
    lines = [
        "",
        '`model.precision = "auto"` on a CPU serves int8 only where it agrees with fp32 on'
        " the weights actually loaded: at start it embeds demo-catalog photos both ways and"
        f" keeps int8 if every cosine is >= {precision['min_cosine']:.2f}, else fp32"
        " (engine/quantize.py; it logs the choice and the lowest cosine). For the random"
        " weights above (real ViTs have activation outliers these lack, so this row is the"
        " check's cost, not a verdict on real weights):",
        "",
        "| architecture | photos | check at start | lowest cosine | auto serves |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {c['photos']} | {c['check_ms']:.0f} ms | {c['lowest_cosine']:.4f} |"
        f" {c['serves']} |"
        for name, c in checks.items()
    ]
    return lines


def lite0_int8_note(layers: int) -> str:
    """What lite0's agreement can and cannot say about int8, given its image tower."""
    if layers == 0:
        what = (
            "imagenet-lite0's image tower has no matrix product (convolutions and average"
            " pooling, no projection head), so int8, which quantises matrix products only,"
            ' does not apply to it: `auto` serves it fp32 and an explicit "int8" is refused.'
        )
    else:
        what = (
            f"imagenet-lite0's image tower has {layers} Linear layer(s), its projection head"
            " (the rest is convolutions, which stay fp32), so its int8 figures speak for that"
            " layer only."
        )
    return (
        f"{what} For ViTs, whose matrix products (attention projections and MLP blocks) are"
        " most of the compute, the agreement is what the start-up check above measures, on"
        " the real weights, each time the model loads."
    )


def render(precision: dict[str, Any]) -> list[str]:
    lines = [
        "## 7. Model precision: bf16 and int8 beside fp32",
        "",
        f"This CPU {'has' if precision['native_bf16'] else 'has no'} native bf16 instructions"
        " (avx512_bf16, amx_bf16 or Arm's bf16 in /proc/cpuinfo). The image tower's weights"
        " cast to bf16, and its matrix products in int8 (exported to ONNX and run by ONNX"
        " Runtime, dynamic quantisation: int8 weights, activations quantised per pass;"
        " engine/onnx_int8.py), against the same weights in torch fp32, taking turns on the"
        " same input. bf16's speed-up is fp32's time over bf16's (below 1:"
        " slower, so `auto` does not pick bf16 on CPUs); int8's column is its time as a"
        " fraction of fp32's (below 1: faster):",
        "",
        "| architecture | batch | fp32 | bf16 | bf16 speed-up | int8 | int8 time / fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in precision["speed"].items():
        lines += [_speed_row(name, r) for r in rows]
    lines += _load_check_lines(precision)
    agreement = precision.get("agreement")
    if agreement:
        lines += [
            "",
            f"Agreement on real weights ({agreement['model']}; catalog = {agreement['catalog']:,}"
            f" clothing-small `train/` photos embedded in fp32, {agreement['queries']} `validation/`"
            " photos embedded in each precision, exact search, no re-ranking):",
            "",
            *_agreement_lines(agreement, "bf16"),
        ]
        if "int8" in agreement:
            lines += _agreement_lines(agreement["int8"], "int8")
        lines += ["", lite0_int8_note(agreement["image_tower_linear_layers"])]
    return [*lines, ""]
