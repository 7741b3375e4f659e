"""Performance benchmarks, each a ratio or comparison measured side by side in one run:
the engine against the bare model, micro-batching against bare batching, the index build
against bare embedding, USearch against exact numpy / FAISS HNSW / scikit-learn.

    python -m bench.perf            # full sizes (1M vectors: long)   make bench
    python -m bench.perf --quick    # small sizes, minutes             make bench-quick

Models are random-init at the real architectures (weights cannot be downloaded here), so
the compute is real; retrieval quality is measured elsewhere (docs/quality.md).
Writes docs/benchmarks.md and bench/results.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import usearch
from PIL import Image

from engine.config import DEFAULT_CONFIG_PATH, load_settings
from engine.embedder import Embedder, ModelSpec
from engine.index import open_index
from engine.search import Engine
from engine.types import Filters
from tests.fakes.synthetic import clip_like_vectors, write_synthetic_index

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
PHOTO = ROOT / "data" / "demo" / "images" / "dress-1.jpg"


def random_embedder(architecture: str) -> Embedder:
    """The real architecture with random weights, wrapped exactly as production wraps it."""
    model, _, preprocess = open_clip.create_model_and_transforms(architecture, pretrained=None)
    model.eval()
    tokenizer = open_clip.get_tokenizer(architecture)
    return Embedder(
        model, preprocess, tokenizer, ModelSpec(architecture, architecture, None), "cpu"
    )


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---- 1. query path -------------------------------------------------------------------


def engine_over(embedder: Embedder, index_dir: Path) -> Engine:
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        index={"dir": str(index_dir), "verify_checksums": False},
        search={"query_store": ""},
    )
    return Engine(settings, embedder, open_index(index_dir, verify=False))


def query_overhead(
    architecture: str, catalog_size: int, repeats: int, scratch: Path
) -> dict[str, Any]:
    embedder = random_embedder(architecture)
    index_dir = scratch / f"q-{architecture}-{catalog_size}"
    write_synthetic_index(index_dir, clip_like_vectors(catalog_size, dim=embedder.dim, seed=1))
    engine = engine_over(embedder, index_dir)
    photo = PHOTO.read_bytes()
    tensor = embedder.preprocess_image(Image.open(io.BytesIO(photo)).convert("RGB")).unsqueeze(0)

    def bare() -> None:
        with torch.inference_mode():
            embedder.model.encode_image(tensor)

    async def through_engine() -> dict[str, float]:
        page = await engine.search(image=photo, k=10)
        return page.timings_ms

    loop = asyncio.new_event_loop()
    try:
        bare()
        loop.run_until_complete(through_engine())  # warm both
        bare_ms, engine_ms, stages = [], [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            bare_ms.append(median_ms(bare, 1))
            started = time.perf_counter()
            stages.append(loop.run_until_complete(through_engine()))
            engine_ms.append((time.perf_counter() - started) * 1000)
    finally:
        loop.close()
        engine.close()
    bare_median, engine_median = statistics.median(bare_ms), statistics.median(engine_ms)
    return {
        "architecture": architecture,
        "catalog": catalog_size,
        "bare_ms": bare_median,
        "engine_ms": engine_median,
        "ratio": engine_median / bare_median,
        "embed_stage_ms": statistics.median(s["embed_ms"] for s in stages),
        "rank_stage_ms": statistics.median(s["rank_ms"] for s in stages),
    }


# ---- 2. concurrency ------------------------------------------------------------------


def concurrency(
    architecture: str, levels: list[int], rounds: int, scratch: Path
) -> list[dict[str, Any]]:
    embedder = random_embedder(architecture)
    index_dir = scratch / f"c-{architecture}"
    write_synthetic_index(index_dir, clip_like_vectors(10_000, dim=embedder.dim, seed=2))
    engine = engine_over(embedder, index_dir)
    photo = PHOTO.read_bytes()
    tensor = embedder.preprocess_image(Image.open(io.BytesIO(photo)).convert("RGB"))
    max_batch = engine.settings.model.max_batch
    rows = []
    loop = asyncio.new_event_loop()
    try:
        for level in levels:
            batch = torch.stack([tensor] * min(level, max_batch))

            def bare(batch: torch.Tensor = batch) -> None:
                with torch.inference_mode():
                    embedder.model.encode_image(batch)

            bare()
            bare_ms = median_ms(bare, rounds)
            bare_qps = len(batch) / (bare_ms / 1000)

            async def burst(level: int = level) -> list[float]:
                async def one() -> float:
                    started = time.perf_counter()
                    await engine.search(image=photo, k=10)
                    return (time.perf_counter() - started) * 1000

                return await asyncio.gather(*(one() for _ in range(level)))

            loop.run_until_complete(burst())
            started = time.perf_counter()
            latencies = [ms for _ in range(rounds) for ms in loop.run_until_complete(burst())]
            seconds = time.perf_counter() - started
            rows.append(
                {
                    "concurrent": level,
                    "engine_qps": level * rounds / seconds,
                    "bare_batched_qps": bare_qps,
                    "ratio": (level * rounds / seconds) / bare_qps,
                    "p50_ms": float(np.percentile(latencies, 50)),
                    "bare_batch_ms": bare_ms,
                }
            )
    finally:
        loop.close()
        engine.close()
    return rows


# ---- 3. index build ------------------------------------------------------------------


def build_throughput(architecture: str, images: int, scratch: Path) -> dict[str, Any]:
    import csv

    from engine.ingest.pipeline import build_index

    photos = sorted(DATASET.glob("train/*/*.jpg"))[:images]
    catalog = scratch / "build.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "url", "image", "category"])
        for n, photo in enumerate(photos):
            writer.writerow([f"B{n}", f"https://s.example/{n}", str(photo), photo.parent.name])
    embedder = random_embedder(architecture)
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        index={"dir": str(scratch / "build-index")}, search={"query_store": ""}
    )
    started = time.perf_counter()
    report = asyncio.run(
        build_index(settings, catalog, scratch / "build-index", embedder, show_progress=False)
    )
    build_s = time.perf_counter() - started

    decoded = [embedder.preprocess_image(Image.open(p).convert("RGB")) for p in photos]
    batch = settings.build.batch_size
    started = time.perf_counter()
    for start in range(0, len(decoded), batch):
        embedder.embed_image_tensors(decoded[start : start + batch])
    bare_s = time.perf_counter() - started
    return {
        "architecture": architecture,
        "images": report.images,
        "build_images_per_s": report.images / build_s,
        "bare_images_per_s": len(decoded) / bare_s,
        "ratio": (report.images / build_s) / (len(decoded) / bare_s),
    }


# ---- 4-6. vector search, start-up, filters --------------------------------------------


def exact_top(vectors16: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors16.T.astype(np.float32)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def vector_search(n: int, dim: int, queries: int, scratch: Path) -> dict[str, Any]:
    from usearch.index import Index

    vectors = clip_like_vectors(n, dim=dim, clusters=max(50, n // 500), seed=3)
    half = vectors.astype(np.float16)
    probe = clip_like_vectors(queries, dim=dim, clusters=max(50, n // 500), seed=4)
    truth = exact_top(half, probe, 10)
    results: dict[str, Any] = {"n": n, "dim": dim}

    def single_query_stats(
        search_one: Callable[[np.ndarray], np.ndarray],
    ) -> tuple[np.ndarray, float, float, float]:
        found, times = [], []
        for q in probe:
            started = time.perf_counter()
            found.append(search_one(q))
            times.append((time.perf_counter() - started) * 1000)
        return (
            np.array(found),
            float(np.percentile(times, 50)),
            float(np.percentile(times, 99)),
            len(probe) / (sum(times) / 1000),
        )

    for dtype in ("f16", "i8"):
        started = time.perf_counter()
        index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=16, expansion_add=128)
        index.add(np.arange(n, dtype=np.uint64), vectors)
        build_s = time.perf_counter() - started
        path = scratch / f"ann-{dtype}.usearch"
        index.save(str(path))
        index.expansion_search = 64
        found, p50, p99, qps = single_query_stats(lambda q, index=index: index.search(q, 10).keys)
        started = time.perf_counter()
        batched = index.search(probe, 10)
        batched_qps = len(probe) / (time.perf_counter() - started)
        results[f"usearch_{dtype}"] = {
            "recall_at_10": recall(found, truth),
            "p50_ms": p50,
            "p99_ms": p99,
            "qps": qps,
            "batched_qps": batched_qps,
            "batched_recall_at_10": recall(batched.keys, truth),
            "build_s": build_s,
            "bytes_per_vector": path.stat().st_size / n,
            # what an index directory holds per image: the graph file plus vectors.npy (f16)
            "served_bytes_per_vector": (path.stat().st_size + half.nbytes) / n,
        }
        del index
        gc.collect()

    # exact numpy brute force over the same f16 vectors
    as32 = half.astype(np.float32)
    _, p50, p99, qps = single_query_stats(lambda q: np.argpartition(-(as32 @ q), 10)[:10])
    results["numpy_exact"] = {"recall_at_10": 1.0, "p50_ms": p50, "p99_ms": p99, "qps": qps}

    try:
        import faiss

        started = time.perf_counter()
        graph = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 128
        graph.add(vectors)
        build_s = time.perf_counter() - started
        graph.hnsw.efSearch = 64

        def faiss_one(q: np.ndarray) -> np.ndarray:
            return graph.search(q[None, :], 10)[1][0]

        found, p50, p99, qps = single_query_stats(faiss_one)
        results["faiss_hnsw"] = {
            "recall_at_10": recall(found, truth),
            "p50_ms": p50,
            "p99_ms": p99,
            "qps": qps,
            "build_s": build_s,
        }
    except ImportError:
        results["faiss_hnsw"] = None

    try:
        from sklearn.neighbors import NearestNeighbors

        brute = NearestNeighbors(n_neighbors=10, algorithm="brute", metric="cosine").fit(vectors)
        sample = probe[: max(5, len(probe) // 10)]
        started = time.perf_counter()
        for q in sample:
            brute.kneighbors(q[None, :])
        results["sklearn_brute"] = {"qps": len(sample) / (time.perf_counter() - started)}
    except ImportError:
        results["sklearn_brute"] = None
    return results


def startup(n: int, dim: int, scratch: Path) -> dict[str, Any]:
    from usearch.index import Index

    index_dir = scratch / "startup"
    write_synthetic_index(index_dir, clip_like_vectors(n, dim=dim, seed=5))
    path = next((index_dir / "builds").glob("*/ann.usearch"))
    query = clip_like_vectors(1, dim=dim, seed=6)[0]
    out: dict[str, Any] = {"n": n, "file_mib": path.stat().st_size / 2**20}
    for mode in ("view", "load"):
        gc.collect()
        before = rss_mib()
        started = time.perf_counter()
        index = Index.restore(str(path), view=mode == "view")
        opened = time.perf_counter() - started
        index.search(query, 10)
        first = time.perf_counter() - started
        out[mode] = {"open_s": opened, "first_query_s": first, "rss_growth_mib": rss_mib() - before}
        del index
    started = time.perf_counter()
    served = open_index(index_dir, verify=False)
    out["open_index_s"] = time.perf_counter() - started
    served.close()
    return out


def filtered_recall(n: int, dim: int, queries: int, scratch: Path) -> dict[str, Any]:
    """A filter matching about 1% of the catalog (one category of 8, in stock, price band)."""
    from engine.ranking import RankingParams, rank

    index_dir = scratch / "filtered"
    write_synthetic_index(index_dir, clip_like_vectors(n, dim=dim, seed=7))
    index = open_index(index_dir, verify=False)
    filters = Filters(category="shoes", in_stock_only=True, max_price=26.0)
    allowed = index.catalog.keys_matching(filters)
    probe = clip_like_vectors(queries, dim=dim, seed=8)
    overlaps = []
    for q in probe:
        ann = rank(index, q, filters, 10, 0.0, RankingParams(4, 0))
        exact = rank(index, q, filters, 10, 0.0, RankingParams(4, n))
        overlaps.append(len({r.record.key for r in ann} & {r.record.key for r in exact}) / 10)
    index.close()
    return {"n": n, "share_matching": len(allowed) / n, "recall_at_10": float(np.mean(overlaps))}


# ---- report ------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"open_clip {open_clip.__version__}, usearch {usearch.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--architectures", default="ViT-B-32,ViT-B-16")
    args = parser.parse_args(argv)
    quick = args.quick
    big = 20_000 if quick else 1_000_000
    medium = 5_000 if quick else 100_000
    architectures = args.architectures.split(",")
    results: dict[str, Any] = {"quick": quick, "machine": machine()}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        results["query"] = [
            query_overhead(a, size, 5 if quick else 20, scratch)
            for a in architectures
            for size in (medium, big)
        ]
        results["concurrency"] = concurrency(
            architectures[0], [1, 4, 16] if quick else [1, 4, 16, 64], 2 if quick else 5, scratch
        )
        if DATASET.is_dir():
            results["build"] = build_throughput(architectures[0], 96 if quick else 3410, scratch)
        results["ann"] = [
            vector_search(n, 512, 50 if quick else 500, scratch) for n in (medium, big)
        ]
        results["startup"] = startup(big, 512, scratch)
        results["filtered"] = filtered_recall(big, 512, 20 if quick else 200, scratch)

    top = results["ann"][-1]
    headline = {
        "query_overhead_ratio": max(q["ratio"] for q in results["query"]),
        "concurrent_throughput_ratio_16": next(
            r["ratio"] for r in results["concurrency"] if r["concurrent"] == 16
        ),
        "build_throughput_ratio": results.get("build", {}).get("ratio"),
        f"ann_recall_at_10_{'20k' if quick else '1m'}": top["usearch_f16"]["recall_at_10"],
        f"ann_p99_ms_{'20k' if quick else '1m'}": top["usearch_f16"]["p99_ms"],
        f"ann_speedup_vs_sklearn_{'20k' if quick else '1m'}": (
            top["usearch_f16"]["qps"] / top["sklearn_brute"]["qps"]
            if top["sklearn_brute"]
            else None
        ),
        f"ann_qps_ratio_vs_faiss_{'20k' if quick else '1m'}": (
            top["usearch_f16"]["qps"] / top["faiss_hnsw"]["qps"] if top["faiss_hnsw"] else None
        ),
        "bytes_per_vector_f16": top["usearch_f16"]["bytes_per_vector"],
        "served_bytes_per_vector_f16": top["usearch_f16"]["served_bytes_per_vector"],
        f"index_open_s_{'20k' if quick else '1m'}": results["startup"]["open_index_s"],
        "filtered_recall_at_10": results["filtered"]["recall_at_10"],
    }
    results["headline"] = headline
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    text = render(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return results


def render(results: dict[str, Any]) -> str:
    size = "quick sizes" if results["quick"] else "full sizes"
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `python -m bench.perf{' --quick' if results['quick'] else ''}` ({size}); do not edit by hand.",
        f"Machine: {results['machine']}.",
        "Every figure is a ratio or a comparison measured side by side in the same run; absolute",
        "times appear only beside their reference. Models are random-init at the real architecture.",
        "",
        "## Headline",
        "",
        "| key | value |",
        "| --- | --- |",
        *(
            f"| `{k}` | {v:.3f} |" if isinstance(v, float) else f"| `{k}` | {v} |"
            for k, v in results["headline"].items()
        ),
        "",
        "## 1. One photo through the engine vs the bare model (batch 1)",
        "",
        "| architecture | catalog | bare encode_image | engine (decode, preprocess, embed, search, join) | ratio | embed stage | rank + join |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {q['architecture']} | {q['catalog']:,} | {q['bare_ms']:.1f} ms | {q['engine_ms']:.1f} ms | {q['ratio']:.3f} | {q['embed_stage_ms']:.1f} ms | {q['rank_stage_ms']:.1f} ms |"
            for q in results["query"]
        ),
        "",
        "## 2. Concurrent queries (micro-batching) vs bare batched encode_image",
        "",
        "| concurrent | engine queries/s | bare batched images/s | ratio | engine p50 | bare batch time |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['concurrent']} | {r['engine_qps']:.1f} | {r['bare_batched_qps']:.1f} | {r['ratio']:.3f} | {r['p50_ms']:.0f} ms | {r['bare_batch_ms']:.0f} ms |"
            for r in results["concurrency"]
        ),
        "",
    ]
    if "build" in results:
        b = results["build"]
        lines += [
            "## 3. Index build vs bare batched embedding of pre-decoded photos",
            "",
            f"{b['images']} clothing-small photos, {b['architecture']}: build {b['build_images_per_s']:.1f} images/s, "
            f"bare {b['bare_images_per_s']:.1f} images/s, ratio **{b['ratio']:.3f}**.",
            "",
        ]
    lines += [
        "## 4. Vector search: USearch vs exact numpy, FAISS HNSW, scikit-learn brute force",
        "",
        "CLIP-like synthetic unit vectors (clusters around a shared mean, low intrinsic dimension).",
        "",
        "| n | method | recall@10 | p50 | p99 | queries/s (batch 1) | batched q/s | build | graph bytes/vector | with stored f16 vectors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for ann in results["ann"]:
        for name in ("usearch_f16", "usearch_i8", "faiss_hnsw", "numpy_exact", "sklearn_brute"):
            r = ann.get(name)
            if not r:
                continue
            cells = [
                f"{r['recall_at_10']:.4f}" if "recall_at_10" in r else "1 (exact)",
                f"{r['p50_ms']:.2f} ms" if "p50_ms" in r else "",
                f"{r['p99_ms']:.2f} ms" if "p99_ms" in r else "",
                f"{r['qps']:.0f}",
                f"{r['batched_qps']:.0f}" if "batched_qps" in r else "",
                f"{r['build_s']:.1f} s" if "build_s" in r else "",
                f"{r['bytes_per_vector']:.0f}" if "bytes_per_vector" in r else "",
                f"{r['served_bytes_per_vector']:.0f}" if "served_bytes_per_vector" in r else "",
            ]
            lines.append(f"| {ann['n']:,} | {name} | " + " | ".join(cells) + " |")
    s = results["startup"]
    f = results["filtered"]
    lines += [
        "",
        f"## 5. Start-up with {s['n']:,} vectors ({s['file_mib']:.0f} MiB graph)",
        "",
        "| mode | open | open + first query | resident memory growth |",
        "| --- | --- | --- | --- |",
        *(
            f"| {mode} | {s[mode]['open_s'] * 1000:.1f} ms | {s[mode]['first_query_s'] * 1000:.1f} ms | {s[mode]['rss_growth_mib']:.0f} MiB |"
            for mode in ("view", "load")
        ),
        "",
        f"Opening the whole served index (graph view, vectors memmap, catalog): {s['open_index_s'] * 1000:.0f} ms.",
        "",
        "## 6. Filtered search",
        "",
        f"A filter matching {f['share_matching'] * 100:.1f}% of {f['n']:,} images: ANN with over-fetching and "
        f"post-filtering vs exact filtered search, recall@10 **{f['recall_at_10']:.3f}**.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
