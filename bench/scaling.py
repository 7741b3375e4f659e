"""docs/scaling.md: sizing from the figures of the last `make bench` (bench/results.json).

    python -m bench.scaling        # rerun after `make bench`; make bench does it too

Measured here: bytes per image, index build and query throughput per CPU core, search
latency. Derived, and labelled as such: other architectures by their FLOPs per image
(counted by torch on the real architecture), GPUs by FLOPs at an assumed utilisation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# Dense fp16/bf16 tensor throughput from the vendors' data sheets (TFLOP/s), and the share
# of it an image encoder sustains in batched inference: an assumption, not a measurement
# (no GPU here). Bigger batches and torch.compile move it; memory-bound small models less.
GPU_TFLOPS = {"NVIDIA T4": 65, "NVIDIA L4": 121, "NVIDIA A100": 312, "NVIDIA H100 SXM": 989}
ASSUMED_UTILISATION = 0.35
PAGE_CACHE_SHARE = 0.6  # of a machine's RAM left to the graph's pages (model, OS, bots)


def _fmt_count(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:,.0f}"


def render(results: dict[str, Any]) -> str:
    top = results["ann"][-1]
    dim = top["dim"]
    f16 = top["usearch_f16"]["bytes_per_vector"]
    i8 = top["usearch_i8"]["bytes_per_vector"]
    served = top["summary"]["served"]
    default = served.removeprefix("usearch_")
    graph = top[served]["bytes_per_vector"]
    vectors = dim * 2
    catalog = results["startup"].get("catalog_bytes_per_image", 0.0)
    build = results.get("build")
    flops = results.get("gflops_per_image", {})
    cores = results.get("cores", 2)
    concurrency = results["concurrency"]
    best = max(concurrency, key=lambda r: r["engine_qps"])
    query_rows = {q["architecture"]: q for q in results["query"]}
    measured_arch = build["architecture"] if build else concurrency_arch(results)
    lines = [
        "# Scaling and sizing",
        "",
        "Produced by `python -m bench.scaling` from `bench/results.json` "
        f"({'quick sizes' if results['quick'] else 'full sizes'}); do not edit by hand.",
        f"Measured on: {results['machine']}.",
        "Figures marked *derived* are computed from measured ones, with the rule given.",
        "",
        "## Bytes per catalog image",
        "",
        f"From the {top['n']:,} x {dim} index of the benchmark.",
        "",
        f"| part | f16 graph{' (default)' * (default == 'f16')} | i8 graph{' (default)' * (default == 'i8')} | where it lives |",
        "| --- | --- | --- | --- |",
        f"| `ann.usearch` (vectors + HNSW links) | {f16:,.0f} B | {i8:,.0f} B | memory-mapped; hot pages in RAM |",
        f"| `vectors.npy` (f16 embeddings) | {vectors:,} B | {vectors:,} B | memory-mapped; read for re-ranking, MMR and rebuilds |",
        f"| `catalog.sqlite` (product rows) | {catalog:,.0f} B | {catalog:,.0f} B | read per hit (depends on titles and extra columns) |",
        f"| **on disk** | **{f16 + vectors + catalog:,.0f} B** | **{i8 + vectors + catalog:,.0f} B** | |",
        "",
        "Search latency stays low while the graph's pages stay in the page cache: plan RAM for",
        f"the graph file ({default}, the default: {graph / 1024:.2f} KB per image) plus the model "
        "(about 0.6 GB for ViT-B-16), and the f16 vectors of the candidates it re-scores.",
        f"An i8 graph needs {i8 / f16:.0%} of an f16 graph's bytes; re-scoring its candidates on the "
        "f16 vectors keeps its recall level with the f16 graph's (docs/benchmarks.md).",
        "",
        "| images | f16 graph in RAM | i8 graph in RAM | disk (f16) |",
        "| --- | --- | --- | --- |",
    ]
    for images in (100_000, 1_000_000, 10_000_000, 50_000_000):
        lines.append(
            f"| {_fmt_count(images)} | {images * f16 / 2**30:,.1f} GiB | {images * i8 / 2**30:,.1f} GiB "
            f"| {images * (f16 + vectors + catalog) / 2**30:,.1f} GiB |"
        )
    lines += ["", "## Building the index", ""]
    if build:
        per_core = build["build_images_per_s"] / cores
        lines += [
            f"Measured: `index_builder.py build` over {build['images']:,} clothing-small photos with "
            f"{build['architecture']} embedded **{build['build_images_per_s']:.1f} images/s on {cores} cores** "
            f"({per_core:.1f} per core; more cores scale about linearly, as torch splits each "
            f"batch over them), {build['ratio']:.2f} of the bare model's batched throughput "
            "(decoding and downloads are hidden behind the model).",
            "",
        ]
        if flops:
            base = flops.get(build["architecture"])
            lines += [
                f"*Derived* for other architectures by FLOPs per image (counted by `torch.utils.flop_counter` "
                f"on the real architecture; {build['architecture']} = {base:.1f} GFLOPs), and for GPUs by "
                f"their data-sheet fp16 throughput at an assumed {ASSUMED_UTILISATION:.0%} utilisation:",
                "",
                "| architecture | GFLOPs/image | images/s per CPU core | "
                + " | ".join(f"{gpu} (images/s)" for gpu in GPU_TFLOPS)
                + " |",
                "| --- | --- | --- | " + " | ".join("---" for _ in GPU_TFLOPS) + " |",
            ]
            for arch, gflops in flops.items():
                cpu = per_core * base / gflops
                gpus = [
                    tflops * 1e12 * ASSUMED_UTILISATION / (gflops * 1e9)
                    for tflops in GPU_TFLOPS.values()
                ]
                lines.append(
                    f"| {arch} | {gflops:.1f} | {cpu:.1f} | "
                    + " | ".join(f"{g:,.0f}" for g in gpus)
                    + " |"
                )
            b16 = flops.get("ViT-B-16")
            if b16:
                cpu_b16 = per_core * base / b16
                lines += [
                    "",
                    "Time to embed a catalog with the default model (ViT-B-16), *derived* from the table:",
                    "",
                    "| images | one 32-core CPU server | 8 x 32-core CPU nodes (Ray) | one A100 (Ray or local) | 8 x A100 (Ray) |",
                    "| --- | --- | --- | --- | --- |",
                ]
                a100 = GPU_TFLOPS["NVIDIA A100"] * 1e12 * ASSUMED_UTILISATION / (b16 * 1e9)
                for images in (100_000, 1_000_000, 10_000_000):
                    cells = [
                        images / (cpu_b16 * 32),
                        images / (cpu_b16 * 256),
                        images / a100,
                        images / (a100 * 8),
                    ]
                    lines.append(
                        f"| {_fmt_count(images)} | "
                        + " | ".join(_duration(s) for s in cells)
                        + " |"
                    )
    photo = results.get("large_photo")
    if photo and flops.get("ViT-B-16"):
        a100 = GPU_TFLOPS["NVIDIA A100"] * 1e12 * ASSUMED_UTILISATION / (flops["ViT-B-16"] * 1e9)
        lines += [
            "",
            f"Decoding is what a GPU waits for: a {photo['pixels']} JPEG costs {photo['draft_ms']:.0f} ms "
            "of CPU to decode (at reduced scale) and preprocess, so one A100 embedding such photos "
            f"with ViT-B-16 (about {a100:,.0f}/s, *derived*) needs about "
            f"{a100 * photo['draft_ms'] / 1000:,.0f} CPU cores of decoding. On GPU nodes `--ray` gives "
            "every CPU not driving a GPU to download/decode workers; thumbnails of about 512 px "
            "in the feed cut that cost several times.",
        ]
    ann_build = top[served]["build_s"]
    per_core_vectors = top["n"] / ann_build / cores
    ten_million_32 = 10_000_000 / (per_core_vectors * 32) * (np.log(10_000_000) / np.log(top["n"]))
    lines += [
        "",
        f"The HNSW graph itself ({default}): {top['n']:,} vectors took {ann_build:.0f} s on {cores} cores "
        f"({per_core_vectors:,.0f} vectors/s per core). Insertion parallelises over cores and "
        "costs about n log n, so 10M vectors on a 32-core machine take about "
        f"{_duration(ten_million_32)} (*derived*). Embedding dominates a first build by far; an "
        "incremental rebuild re-embeds only new or changed photos, then rebuilds the graph.",
        "",
        "## Serving queries",
        "",
        f"Measured with {concurrency_arch(results)} on {cores} cores: **{best['engine_qps']:.1f} queries/s** at "
        f"{best['concurrent']} concurrent shoppers (micro-batched; {best['ratio']:.2f} of the bare "
        f"model's batched throughput), p50 latency {concurrency[0]['p50_ms']:.0f} ms for a lone query.",
    ]
    if flops and measured_arch in flops:
        lines += [
            "",
            "| architecture | queries/s per replica with 2 cores (*derived* by FLOPs) | per 16-core replica |",
            "| --- | --- | --- |",
        ]
        for arch, gflops in flops.items():
            qps = best["engine_qps"] * flops[measured_arch] / gflops
            lines.append(f"| {arch} | {qps:.1f} | {qps * 8:.0f} |")
    rank_ms = max(q["rank_stage_ms"] for q in results["query"])
    lines += [
        "",
        f"Search and the catalog join take at most {rank_ms:.1f} ms of a query even at "
        f"{max(q['catalog'] for q in results['query']):,} images "
        f"(p99 of the graph search alone: {top['summary']['p99_ms']:.2f} ms), against "
        f"{min(q['bare_ms'] for q in query_rows.values()):.0f}+ ms for the model: the model is the "
        "cost of a query, so replicas scale queries/s linearly. Each replica memory-maps the same "
        "read-only index (Telegram webhook mode behind a load balancer; README, Deploy).",
        "",
        "## Where one index per machine ends, and what comes next",
        "",
    ]
    for ram in (64, 256):
        images = ram * 2**30 * PAGE_CACHE_SHARE / graph
        lines.append(
            f"- A {ram} GiB server keeps the {default} graph of about **{_fmt_count(images)} images** "
            f"in RAM ({PAGE_CACHE_SHARE:.0%} of it for the graph)."
        )
    lines += [
        "- Below that, one index per machine is the simplest and fastest design: no network hop, "
        "atomic publishes, replicas for query load.",
        "- Beyond it, or when one machine's build time for the graph gets too long:",
        "  1. **Shard by category** (dresses, shoes, ...): one index directory per shard, built "
        "independently (`index_builder.py build` per feed slice). A query with a category "
        "filter goes to its shard; an unfiltered query fans out to all shards and merges the "
        "top k by score (cosine scores are comparable across shards built with the same model).",
        "  2. **A distributed vector database**, e.g. Qdrant (HNSW with int8/f16 quantisation and "
        "re-scoring, payload filters, sharding and replication built in). The engine's "
        "`VectorIndex` maps onto it one to one: `ann_search(query, count)` -> a top-`count` "
        "query with `hnsw_ef = index.expansion_search`; `exact_search(query, count, keys)` -> the "
        "same query with `exact=true` and an id filter; `vectors_for(keys)` -> retrieving points "
        "with their vectors; `catalog.keys_matching(filters)` -> payload filters (category, "
        "price range, in stock) evaluated inside the database instead of key lists; the "
        "manifest's model identity -> collection metadata checked at start-up. Ranking "
        "(one result per product, MMR, paging) stays in `engine/ranking.py` unchanged.",
        "",
    ]
    return "\n".join(lines)


def concurrency_arch(results: dict[str, Any]) -> str:
    return results.get("concurrency_architecture") or results["query"][0]["architecture"]


def _duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.md")
    args = parser.parse_args(argv)
    text = render(json.loads(args.results.read_text(encoding="utf-8")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return text


if __name__ == "__main__":
    main()
