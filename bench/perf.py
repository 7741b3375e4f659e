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

from bench import album_latency, finder_speed
from bench import precision as model_precision
from bench.reference import (
    SERVED_PRECISION,
    bare_forward,
    bare_model_input,
    median_ms,
    on_bare_thread,
    random_embedder,
)
from bench.steal import recorded
from engine.config import DEFAULT_CONFIG_PATH, load_settings
from engine.embedder import Embedder
from engine.graph import GRAPH_METRIC, graph_query, graph_vectors, search_graph
from engine.index import open_index
from engine.precision import Precision
from engine.search import Engine
from engine.types import Filters
from tests.fakes.synthetic import clip_like_vectors, write_synthetic_index

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT.parent / "shared" / "datasets" / "clothing-small"
PHOTO = ROOT / "data" / "demo" / "images" / "dress-1.jpg"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gflops_per_image(architecture: str) -> float:
    """FLOPs of one image through the image tower, counted by torch on the architecture."""
    from torch.utils.flop_counter import FlopCounterMode

    embedder = random_embedder(architecture)
    pixels = torch.zeros(1, 3, embedder.image_size, embedder.image_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        embedder.model.encode_image(pixels)
    return counter.get_total_flops() / 1e9


# ---- 1. query path -------------------------------------------------------------------


def engine_over(embedder: Embedder, index_dir: Path) -> Engine:
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        index={"dir": str(index_dir), "verify_checksums": False},
        search={"query_store": ""},
    )
    return Engine(settings, embedder, open_index(index_dir, verify=False))


def clip_like(count: int, catalog_size: int, dim: int, seed: int) -> np.ndarray:
    """Catalog (seed 3) and query vectors from one distribution per catalog size."""
    return clip_like_vectors(count, dim=dim, clusters=max(50, catalog_size // 500), seed=seed)


CATALOG_SEED = 3


def synthetic_index(
    scratch: Path,
    size: int,
    dim: int = 512,
    graph: Path | None = None,
    vectors: np.ndarray | None = None,
) -> Path:
    """One published synthetic index per size, built with config.toml's index settings and
    shared by the sections; `graph` reuses the vector-search section's graph over the same
    vectors (a 1M graph is the longest step of the run)."""
    index_dir = scratch / f"synthetic-{size}-{dim}"
    if not (index_dir / "CURRENT").is_file():
        defaults = load_settings(DEFAULT_CONFIG_PATH, environ={})
        if vectors is None:
            vectors = clip_like(size, size, dim, CATALOG_SEED)
        # with the probe a build trains, so that served queries pay for it as they do in use
        write_synthetic_index(
            index_dir,
            vectors,
            settings=defaults.index,
            graph=graph,
            category_probe=defaults.build.category_probe,
        )
    return index_dir


def query_overhead(
    architecture: str,
    catalog_size: int,
    repeats: int,
    scratch: Path,
    precision: Precision = SERVED_PRECISION,
) -> dict[str, Any]:
    """The engine in `precision` against the bare fp32 model: what the product gains over
    the plain way of running the model, precision included."""
    reference = random_embedder(architecture)
    embedder = reference.in_precision(precision)
    engine = engine_over(embedder, synthetic_index(scratch, catalog_size, embedder.dim))
    photo = PHOTO.read_bytes()
    bare = bare_forward(reference, photo)

    async def through_engine() -> tuple[dict[str, float], str]:
        page = await engine.search(image=photo, k=10)
        return page.timings_ms, page.query_key

    async def more_like_this(query_key: str) -> None:
        # The next page of the same search: the stored query vector, no model pass.
        await engine.search(query_key=query_key, k=10, offset=10)

    loop = asyncio.new_event_loop()
    try:
        bare()
        loop.run_until_complete(through_engine())  # warm both
        bare_ms, engine_ms, page_ms, stages = [], [], [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            bare_ms.append(median_ms(bare, 1))
            started = time.perf_counter()
            timings, query_key = loop.run_until_complete(through_engine())
            engine_ms.append((time.perf_counter() - started) * 1000)
            stages.append(timings)
            started = time.perf_counter()
            loop.run_until_complete(more_like_this(query_key))
            page_ms.append((time.perf_counter() - started) * 1000)
    finally:
        loop.close()
        engine.close()
    bare_median, engine_median = statistics.median(bare_ms), statistics.median(engine_ms)
    return {
        "architecture": architecture,
        "catalog": catalog_size,
        "precision": precision,
        "bare_ms": bare_median,
        "engine_ms": engine_median,
        "ratio": engine_median / bare_median,
        "embed_stage_ms": statistics.median(s["embed_ms"] for s in stages),
        "rank_stage_ms": statistics.median(s["rank_ms"] for s in stages),
        "page_ms": statistics.median(page_ms),
    }


def large_photo_decode(architecture: str, repeats: int) -> dict[str, Any]:
    """What decoding big JPEGs at reduced scale (draft mode) saves: a 12-megapixel photo,
    decoded and preprocessed with and without `draft_size`."""
    from engine.images import decode_image

    embedder = random_embedder(architecture)
    big = Image.open(PHOTO).convert("RGB").resize((3000, 4000), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()

    def prepare(draft: int | None) -> Callable[[], Any]:
        return lambda: embedder.preprocess_image(decode_image(data, draft_size=draft))

    full = median_ms(prepare(None), repeats)
    draft = median_ms(prepare(embedder.image_size), repeats)
    return {"pixels": "3000x4000", "full_ms": full, "draft_ms": draft, "speedup": full / draft}


# ---- 2. concurrency ------------------------------------------------------------------


def concurrency(
    architecture: str, levels: list[int], rounds: int, scratch: Path, catalog_size: int = 10_000
) -> list[dict[str, Any]]:
    """Bursts of `level` simultaneous searches through the engine (in the served precision)
    against the bare fp32 model encoding one batch of the same size (capped at
    model.max_batch), round by round interleaved, so the drift of a shared machine hits
    both sides alike."""
    reference = random_embedder(architecture)
    embedder = reference.in_precision(SERVED_PRECISION)
    engine = engine_over(embedder, synthetic_index(scratch, catalog_size, embedder.dim))
    photo = PHOTO.read_bytes()
    tensor = bare_model_input(reference, photo)[0]
    max_batch = engine.settings.model.max_batch
    rows = []
    loop = asyncio.new_event_loop()
    try:
        for level in levels:
            batch = torch.stack([tensor] * min(level, max_batch))

            @on_bare_thread
            def bare(batch: torch.Tensor = batch) -> None:
                with torch.inference_mode():
                    reference.model.encode_image(batch)

            async def burst(level: int = level) -> list[float]:
                async def one() -> float:
                    started = time.perf_counter()
                    await engine.search(image=photo, k=10)
                    return (time.perf_counter() - started) * 1000

                return await asyncio.gather(*(one() for _ in range(level)))

            bare()
            loop.run_until_complete(burst())  # warm both
            stats = engine.batcher.stats
            batches_before, items_before = stats.batches, stats.items
            bare_ms, burst_s, latencies = [], [], []
            for _ in range(rounds):
                bare_ms.append(median_ms(bare, 1))
                started = time.perf_counter()
                latencies += loop.run_until_complete(burst())
                burst_s.append(time.perf_counter() - started)
            bare_qps = len(batch) * rounds / (sum(bare_ms) / 1000)
            engine_qps = level * rounds / sum(burst_s)
            rows.append(
                {
                    "concurrent": level,
                    "precision": embedder.precision,
                    "engine_qps": engine_qps,
                    "bare_batched_qps": bare_qps,
                    "ratio": engine_qps / bare_qps,
                    "p50_ms": float(np.percentile(latencies, 50)),
                    "bare_batch_ms": statistics.median(bare_ms),
                    "mean_batch": (stats.items - items_before)
                    / max(stats.batches - batches_before, 1),
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

    photos = sorted(DATASET.glob("*/*/*.jpg"))[:images]
    catalog = scratch / "build.csv"
    with catalog.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["product_id", "url", "image", "category"])
        for n, photo in enumerate(photos):
            writer.writerow([f"B{n}", f"https://s.example/{n}", str(photo), photo.parent.name])
    reference = random_embedder(architecture)  # the bare side: fp32
    embedder = reference.in_precision(SERVED_PRECISION)
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        index={"dir": str(scratch / "build-index")},
        search={"query_store": ""},
        build={"image_roots": [str(DATASET)]},  # the feed names the dataset's photos
    )
    started = time.perf_counter()
    report = asyncio.run(
        build_index(settings, catalog, scratch / "build-index", embedder, show_progress=False)
    )
    build_s = time.perf_counter() - started

    decoded = [embedder.preprocess_image(Image.open(p).convert("RGB")) for p in photos]
    batch = settings.build.batch_size

    @on_bare_thread
    def embed_all() -> None:
        for start in range(0, len(decoded), batch):
            reference.embed_image_tensors(decoded[start : start + batch])

    started = time.perf_counter()
    embed_all()
    bare_s = time.perf_counter() - started
    return {
        "architecture": architecture,
        "precision": embedder.precision,
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


EXPANSIONS = (16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256, 384)
TARGET_RECALL = 0.99


def vector_search(n: int, dim: int, queries: int, scratch: Path) -> dict[str, Any]:
    """USearch as the engine builds and queries it (f16 graph; i8 graph of scaled int8 rows
    with its top `overfetch x 10` re-scored on the f16 vectors; both inner product) against
    exact numpy, FAISS HNSW at the same graph degree, and scikit-learn brute force, over a
    sweep of the search expansion (efSearch), one thread per query."""
    from usearch.index import Index

    defaults = load_settings(DEFAULT_CONFIG_PATH, environ={})
    connectivity, expansion_add = defaults.index.connectivity, defaults.index.expansion_add
    candidates = defaults.search.overfetch * 10
    vectors = clip_like(n, n, dim, CATALOG_SEED)
    half = vectors.astype(np.float16)
    as32 = half.astype(np.float32)
    probe = clip_like(queries, n, dim, seed=4)
    truth = exact_top(half, probe, 10)
    results: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "connectivity": connectivity,
        "expansion_add": expansion_add,
    }

    def single_query_stats(search_one: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        found, times = [], []
        for q in probe:
            started = time.perf_counter()
            found.append(search_one(q))
            times.append((time.perf_counter() - started) * 1000)
        return {
            "recall_at_10": recall(np.array(found), truth),
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
            "qps": len(probe) / (sum(times) / 1000),
        }

    def sweep(set_expansion: Callable[[int], None], search_one: Callable) -> list[dict]:
        rows = []
        for expansion in EXPANSIONS:
            set_expansion(expansion)
            rows.append({"expansion": expansion, **single_query_stats(search_one)})
        return rows

    def engine_top10(index: Index, dtype: str) -> Callable[[np.ndarray], np.ndarray]:
        """What VectorIndex.ann_search does when a page of 10 is asked for; f16 scores are
        exact, so a longer list would not change its top 10."""
        count = 10 if dtype == "f16" else candidates
        return lambda q: search_graph(index, half, dtype, q, count)[0][:10]

    graph_files: dict[str, Path] = {}
    faiss_search: Callable[[np.ndarray], np.ndarray] | None = None
    for dtype in ("f16", "i8"):
        started = time.perf_counter()
        index = Index(
            ndim=dim,
            metric=GRAPH_METRIC,
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
        )
        index.add(np.arange(n, dtype=np.uint64), graph_vectors(half, dtype))
        build_s = time.perf_counter() - started
        path = graph_files[dtype] = scratch / f"ann-{dtype}.usearch"
        index.save(str(path))
        if dtype == defaults.index.dtype:  # the engine's own graph: later sections serve it
            synthetic_index(scratch, n, dim, graph=path, vectors=half)

        def set_expansion(value: int, index: Index = index) -> None:
            index.expansion_search = value

        rows = sweep(set_expansion, engine_top10(index, dtype))
        index.expansion_search = defaults.index.expansion_search
        as_graph_compares = np.stack([graph_query(q, dtype) for q in probe])
        started = time.perf_counter()
        index.search(as_graph_compares, 10)  # the graph alone, all cores
        batched_qps = len(probe) / (time.perf_counter() - started)
        results[f"usearch_{dtype}"] = {
            "sweep": rows,
            "batched_qps": batched_qps,
            "build_s": build_s,
            "bytes_per_vector": path.stat().st_size / n,
            # what an index directory holds per image: the graph file plus vectors.npy (f16)
            "served_bytes_per_vector": (path.stat().st_size + half.nbytes) / n,
        }
        del index
        gc.collect()

    # What choosing inner product over cosine for the f16 graph buys (engine.graph.GRAPH_METRIC)
    if n <= 100_000:
        index = Index(
            ndim=dim,
            metric="cos",
            dtype="f16",
            connectivity=connectivity,
            expansion_add=expansion_add,
        )
        index.add(np.arange(n, dtype=np.uint64), half)
        index.expansion_search = defaults.index.expansion_search
        results["usearch_f16_cos"] = single_query_stats(
            lambda q: index.search(q, 10, threads=1).keys
        )
        del index

    results["numpy_exact"] = single_query_stats(lambda q: np.argpartition(-(as32 @ q), 10)[:10])

    try:
        import faiss

        started = time.perf_counter()
        graph = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = expansion_add
        graph.add(vectors)
        build_s = time.perf_counter() - started

        def set_ef(value: int) -> None:
            graph.hnsw.efSearch = value

        def faiss_search(q: np.ndarray) -> np.ndarray:
            return graph.search(q[None, :], 10)[1][0]

        rows = sweep(set_ef, faiss_search)
        graph.hnsw.efSearch = defaults.index.expansion_search
        started = time.perf_counter()
        graph.search(probe, 10)
        results["faiss_hnsw"] = {
            "sweep": rows,
            "batched_qps": len(probe) / (time.perf_counter() - started),
            "build_s": build_s,
            "bytes_per_vector": (graph.ntotal * dim * 4 + graph.hnsw.neighbors.size() * 4) / n,
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

    def first_reaching(rows: list[dict]) -> dict | None:
        return next((r for r in rows if r["recall_at_10"] >= TARGET_RECALL), None)

    served = f"usearch_{defaults.index.dtype}"
    at_default = next(
        r for r in results[served]["sweep"] if r["expansion"] == defaults.index.expansion_search
    )
    ours = first_reaching(results[served]["sweep"])
    theirs = first_reaching(results["faiss_hnsw"]["sweep"]) if results["faiss_hnsw"] else None
    results["summary"] = {
        "served": served,
        "default_expansion": defaults.index.expansion_search,
        "recall_at_10": at_default["recall_at_10"],
        "p99_ms": at_default["p99_ms"],
        "qps": at_default["qps"],
        "speedup_vs_sklearn": (
            at_default["qps"] / results["sklearn_brute"]["qps"]
            if results["sklearn_brute"]
            else None
        ),
        # queries/s of each at the smallest expansion reaching TARGET_RECALL
        "usearch_at_target": ours,
        "faiss_at_target": theirs,
        "qps_ratio_vs_faiss_at_target": None,
    }
    if ours and theirs and faiss_search is not None:
        served_graph = Index.restore(str(graph_files[defaults.index.dtype]), view=True)
        served_graph.expansion_search = ours["expansion"]
        graph.hnsw.efSearch = theirs["expansion"]
        served_search = engine_top10(served_graph, defaults.index.dtype)
        duel = head_to_head(served_search, faiss_search, probe, rounds=15)
        results["summary"]["head_to_head"] = duel
        results["summary"]["qps_ratio_vs_faiss_at_target"] = duel["ratio"]
        if defaults.index.dtype == "i8":
            # What the served search pays beyond its graph walk: the f16 re-score.
            count = candidates

            def walk_only(q: np.ndarray) -> Any:
                return served_graph.search(graph_query(q, "i8"), count, threads=1)

            walk = head_to_head(served_search, walk_only, probe, rounds=7)
            results["summary"]["rescore_share"] = 1.0 - walk["ratio"]
    return results


def head_to_head(
    ours: Callable[[np.ndarray], Any],
    theirs: Callable[[np.ndarray], Any],
    queries: np.ndarray,
    rounds: int,
) -> dict[str, Any]:
    """Queries/s of two searches over the same queries, alternating round by round (and
    which goes first), so that drift of a shared machine falls on both; the ratio is the
    median of the rounds' ratios."""
    ours_qps, theirs_qps = [], []

    def qps(search: Callable[[np.ndarray], Any]) -> float:
        started = time.perf_counter()
        for q in queries:
            search(q)
        return len(queries) / (time.perf_counter() - started)

    for round_ in range(rounds):
        if round_ % 2:
            theirs_qps.append(qps(theirs))
            ours_qps.append(qps(ours))
        else:
            ours_qps.append(qps(ours))
            theirs_qps.append(qps(theirs))
    ratios = [a / b for a, b in zip(ours_qps, theirs_qps, strict=True)]
    return {
        "rounds": rounds,
        "ours_qps": float(np.median(ours_qps)),
        "theirs_qps": float(np.median(theirs_qps)),
        "ratios": ratios,
        "ratio": float(np.median(ratios)),
    }


def startup(n: int, dim: int, scratch: Path) -> dict[str, Any]:
    from usearch.index import Index

    index_dir = synthetic_index(scratch, n, dim)
    path = next((index_dir / "builds").glob("*/ann.usearch"))
    query = clip_like(1, n, dim, seed=6)[0]
    dtype = load_settings(DEFAULT_CONFIG_PATH, environ={}).index.dtype
    out: dict[str, Any] = {"n": n, "file_mib": path.stat().st_size / 2**20}
    catalog = next((index_dir / "builds").glob("*/catalog.sqlite"))
    out["catalog_bytes_per_image"] = catalog.stat().st_size / n
    for mode in ("view", "load"):
        gc.collect()
        before = rss_mib()
        started = time.perf_counter()
        index = Index.restore(str(path), view=mode == "view")
        opened = time.perf_counter() - started
        after_open = rss_mib() - before
        index.search(graph_query(query, dtype), 10)
        first = time.perf_counter() - started
        out[mode] = {
            "open_s": opened,
            "first_query_s": first,
            "rss_growth_after_open_mib": after_open,
            "rss_growth_mib": rss_mib() - before,
        }
        del index
    started = time.perf_counter()
    served = open_index(index_dir, verify=False)
    out["open_index_s"] = time.perf_counter() - started
    served.close()
    return out


def filtered_recall(n: int, dim: int, queries: int, scratch: Path) -> dict[str, Any]:
    """A filter matching about 1% of the catalog (one category of 8, in stock, price band)."""
    from engine.ranking import RankingParams, rank

    index = open_index(synthetic_index(scratch, n, dim), verify=False)
    filters = Filters(category="shoes", in_stock_only=True, max_price=26.0)
    allowed = index.catalog.keys_matching(filters)
    probe = clip_like(queries, n, dim, seed=8)
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


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The keys the issue asks for, from the sections' results."""
    quick = results["quick"]
    top = results["ann"][-1]
    size = "20k" if quick else "1m"
    precision = results.get("precision", {}).get("agreement")
    big = max(q["catalog"] for q in results["query"])  # the section's large catalog
    page_rows = [q["page_ms"] for q in results["query"] if q["catalog"] == big and "page_ms" in q]
    album = results.get("album")
    return {
        "query_ratio_vs_fp32": max(q["ratio"] for q in results["query"]),
        "album_latency_ratio_vs_fp32": max(r["ratio"] for r in album) if album else None,
        "build_ratio_vs_fp32": results.get("build", {}).get("ratio"),
        f"page_ms_{size}": max(page_rows) if page_rows else None,
        "bf16_top10_overlap": precision["top10_overlap"] if precision else None,
        "concurrent_throughput_ratio_16": next(
            r["ratio"] for r in results["concurrency"] if r["concurrent"] == 16
        ),
        f"ann_recall_at_10_{size}": top["summary"]["recall_at_10"],
        f"ann_p99_ms_{size}": top["summary"]["p99_ms"],
        f"ann_speedup_vs_sklearn_{size}": top["summary"]["speedup_vs_sklearn"],
        f"ann_qps_ratio_vs_faiss_{size}": top["summary"]["qps_ratio_vs_faiss_at_target"],
        "bytes_per_vector_f16": top["usearch_f16"]["bytes_per_vector"],
        "served_bytes_per_vector_f16": top["usearch_f16"]["served_bytes_per_vector"],
        f"index_open_s_{size}": results["startup"]["open_index_s"],
        "filtered_recall_at_10": results["filtered"]["recall_at_10"],
    }


SECTIONS = (
    "query",
    "album",
    "concurrency",
    "build",
    "ann",
    "startup",
    "filtered",
    "flops",
    "precision",
    "finder",
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--architectures", default="ViT-B-32,ViT-B-16")
    parser.add_argument(
        "--only",
        help=f"rerun these sections ({','.join(SECTIONS)}) into the existing results.json",
    )
    parser.add_argument(
        "--ann-sizes",
        help="with --only ann: rerun these catalog sizes only (e.g. 100000), keeping the others",
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the documents from results.json (after changing the report)",
    )
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.json.read_text(encoding="utf-8"))
        results["headline"] = headline(results)  # derived: follows the report's keys
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        return write_reports(results, args.out, args.json)
    quick = args.quick
    big = 20_000 if quick else 1_000_000
    medium = 5_000 if quick else 100_000
    architectures = args.architectures.split(",")
    wanted = set(args.only.split(",")) if args.only else set(SECTIONS)
    results: dict[str, Any] = {}
    if args.only:
        results = json.loads(args.json.read_text(encoding="utf-8"))
        if results["quick"] != quick:
            parser.error("--only must use the same size (--quick or not) as results.json")
        # The machine line stays the one of the first run; a rerun on another names its own.
        results.setdefault("reruns", []).append(
            f"{time.strftime('%Y-%m-%d %H:%M')}: {','.join(sorted(wanted))} on {machine()}"
        )
    else:
        results.update(quick=quick, machine=machine(), cores=os.cpu_count())
    steal = results.setdefault("steal", {})
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        if "flops" in wanted:
            results["gflops_per_image"] = {a: gflops_per_image(a) for a in architectures}
        if "ann" in wanted:
            with recorded(steal, "ann"):
                sizes = (
                    [int(n) for n in args.ann_sizes.split(",")] if args.ann_sizes else [medium, big]
                )
                fresh = {n: vector_search(n, 512, 50 if quick else 500, scratch) for n in sizes}
            kept = [a for a in results.get("ann", []) if a["n"] not in fresh]
            results["ann"] = sorted([*kept, *fresh.values()], key=lambda a: a["n"])
        if "query" in wanted:
            with recorded(steal, "query"):
                results["query"] = [
                    query_overhead(a, size, 5 if quick else 15, scratch)
                    for a in architectures
                    for size in (medium if quick else 10_000, big)
                ]
        if "album" in wanted:
            with recorded(steal, "album"):
                results["album"] = album_latency.measure(architectures, 4 if quick else 15)
        if "query" in wanted:
            results["large_photo"] = large_photo_decode(architectures[0], 5 if quick else 15)
        if "concurrency" in wanted:
            results["concurrency_architecture"] = architectures[0]
            with recorded(steal, "concurrency"):
                results["concurrency"] = concurrency(
                    architectures[0],
                    [1, 4, 16] if quick else [1, 4, 16, 64],
                    2 if quick else 5,
                    scratch,
                )
        if "build" in wanted and DATASET.is_dir():
            with recorded(steal, "build"):
                results["build"] = build_throughput(
                    architectures[0], 96 if quick else 3410, scratch
                )
        if "startup" in wanted:
            results["startup"] = startup(big, 512, scratch)
        if "filtered" in wanted:
            results["filtered"] = filtered_recall(big, 512, 20 if quick else 200, scratch)
        if "precision" in wanted:
            with recorded(steal, "precision"):
                results["precision"] = model_precision.measure(
                    architectures, DATASET, quick, random_embedder
                )
        if "finder" in wanted:
            with recorded(steal, "finder"):
                results["finder"] = finder_speed.measure(quick)

    results["headline"] = headline(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return write_reports(results, args.out, args.json)


def write_reports(results: dict[str, Any], out: Path, results_json: Path) -> dict[str, Any]:
    from bench import scaling

    text = render(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    scaling.main(["--results", str(results_json), "--out", str(out.parent / "scaling.md")])
    return results


def page_cell(row: dict[str, Any]) -> str:
    return f"{row['page_ms']:.1f} ms" if "page_ms" in row else "(not measured)"


def album_section(results: dict[str, Any]) -> list[str]:
    if "album" not in results:
        return []
    return [
        "## 1b. A photo through the real Telegram bot on loopback vs the bare model",
        "",
        "`bench/album_latency.py`: python-telegram-bot polling the fake Bot API in the same",
        "process, config.toml's settings (the garment finder runs on every new photo, analytics",
        "recorded), the demo catalog indexed with each model. Album = from the shopper's update",
        "being queued to the bot's sendMediaGroup request arriving; the fake API stamps each",
        "request on arrival. Chat flow = the shared flow's answer without a chat (finder, search,",
        "records), so album - chat flow is what the Telegram side adds. Medians of the rounds;",
        "the first album uploads the product photos, later ones reuse Telegram's file ids.",
        "",
        *album_latency.report(results["album"]),
        "",
        *(
            f"- {r['architecture']}: the engine's search is {r['engine_ms'] / r['bare_ms']:.2f}x the bare "
            f"model; the garment finder and the flow's records add {r['flow_ms'] - r['engine_ms']:.0f} ms; "
            f"the Telegram side adds {r['album_ms'] - r['flow_ms']:.0f} ms (update to download: "
            f"{r['download_ms']:.0f} ms)."
            for r in results["album"]
        ),
        "",
        "The album is the engine's search plus the garment finder's pass (section 8; ONNX",
        "Runtime on one thread of its own) plus the Telegram side: python-telegram-bot's",
        "polling, getFile and the download, each a request through its HTTP client. No chat",
        "action is sent for an album this quick (`telegram.chat_action_after_ms`).",
        "",
    ]


def render(results: dict[str, Any]) -> str:
    size = "quick sizes" if results["quick"] else "full sizes"
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `python -m bench.perf{' --quick' if results['quick'] else ''}` ({size}); do not edit by hand.",
        f"Machine: {results['machine']}.",
        "Every figure is a ratio or a comparison measured side by side in the same run; absolute",
        "times appear only beside their reference. Models are random-init at the real architecture.",
        *(
            [
                f"Sections rerun later into these results (each section is still one run): {'; '.join(results['reruns'])}."
            ]
            if results.get("reruns")
            else []
        ),
        *(
            [
                "CPU time the hypervisor gave to other machines (steal) while each section ran, as"
                " a share of all CPU time (a busy host slows two-thread passes most, the bare fp32"
                " reference among them): "
                + ", ".join(f"{name} {share:.0%}" for name, share in results["steal"].items())
                + "."
            ]
            if results.get("steal")
            else []
        ),
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
        "The bare model runs in fp32; the engine in the precision config.toml's `model.precision`",
        '("auto") resolves to on this CPU: int8 where it agrees with fp32 on the loaded weights, which',
        "these random-init weights do (section 7 measures the precisions against each other and",
        "gives the start-up check's figures).",
        "",
        '| architecture | catalog | bare fp32 encode_image | engine precision | engine (decode, preprocess, embed, search, join) | ratio | embed stage | rank + join | next page ("More like this") |',
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {q['architecture']} | {q['catalog']:,} | {q['bare_ms']:.1f} ms | {q.get('precision', 'fp32')} | {q['engine_ms']:.1f} ms | {q['ratio']:.3f} | {q['embed_stage_ms']:.1f} ms | {q['rank_stage_ms']:.1f} ms | {page_cell(q)} |"
            for q in results["query"]
        ),
        "",
        "The next page is the same search again from its stored query vector (no model pass), as",
        "the chat buttons ask for it: its engine time is the last column.",
        "",
        *album_section(results),
        "## 2. Concurrent queries (micro-batching) vs bare batched encode_image",
        "",
        "Each round: the bare model (fp32) encodes one batch, then the engine (in the served",
        f"precision, {results['concurrency'][0].get('precision', 'fp32')}) answers one burst. The engine",
        "decodes and resizes photos on two threads (to uint8 pixels); its model thread scales and",
        "embeds whole batches.",
        "",
        "| concurrent | engine queries/s | bare batched images/s | ratio | engine p50 | bare batch time | images per forward pass |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['concurrent']} | {r['engine_qps']:.1f} | {r['bare_batched_qps']:.1f} | {r['ratio']:.3f} | {r['p50_ms']:.0f} ms | {r['bare_batch_ms']:.0f} ms | {r.get('mean_batch', float('nan')):.1f} |"
            for r in results["concurrency"]
        ),
        "",
    ]
    if "build" in results:
        b = results["build"]
        lines += [
            "## 3. Index build vs bare batched embedding of pre-decoded photos",
            "",
            f"{b['images']} clothing-small photos, {b['architecture']}: build (model in {b.get('precision', 'fp32')}) {b['build_images_per_s']:.1f} images/s, "
            f"bare fp32 {b['bare_images_per_s']:.1f} images/s, ratio **{b['ratio']:.3f}**.",
            "",
        ]
    lines += [
        "## 4. Vector search: USearch vs exact numpy, FAISS HNSW, scikit-learn brute force",
        "",
        "CLIP-like synthetic unit vectors (clusters around a shared mean, low intrinsic dimension).",
        "One thread per query, as the engine searches (`engine.graph.search_graph`). USearch i8 =",
        "a graph of the embeddings scaled to int8 (inner product), whose top `overfetch x 10`",
        "candidates are re-scored on the stored f16 vectors; USearch f16 = a graph of the f16",
        "vectors (inner product, exact scores, top 10 asked). FAISS HNSW (f32) has the same graph",
        "degree and construction expansion. `expansion` = USearch expansion_search / FAISS efSearch",
        "(USearch searches with at least as many as it is asked for: i8 rows below 40 search at 40).",
        "",
    ]
    for ann in results["ann"]:
        summary = ann["summary"]
        lines += [
            f"### {ann['n']:,} x {ann['dim']} (connectivity {ann['connectivity']}, expansion_add {ann['expansion_add']})",
            "",
            "| method | expansion | recall@10 | p50 | p99 | queries/s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name in ("usearch_f16", "usearch_i8", "faiss_hnsw"):
            for r in (ann.get(name) or {}).get("sweep", []):
                lines.append(
                    f"| {name} | {r['expansion']} | {r['recall_at_10']:.4f} | {r['p50_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['qps']:.0f} |"
                )
        exact = ann["numpy_exact"]
        lines.append(
            f"| numpy exact | - | 1 | {exact['p50_ms']:.2f} ms | {exact['p99_ms']:.2f} ms | {exact['qps']:.0f} |"
        )
        if ann.get("sklearn_brute"):
            lines.append(f"| scikit-learn brute | - | 1 | | | {ann['sklearn_brute']['qps']:.1f} |")
        lines += [
            "",
            "| index | build | batched q/s (all cores) | bytes/vector (graph file) | with stored f16 vectors |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in ("usearch_f16", "usearch_i8", "faiss_hnsw"):
            r = ann.get(name)
            if r:
                served = (
                    f"{r['served_bytes_per_vector']:.0f}"
                    if "served_bytes_per_vector" in r
                    else "(f32 in the index)"
                )
                lines.append(
                    f"| {name} | {r['build_s']:.1f} s | {r['batched_qps']:.0f} | {r['bytes_per_vector']:.0f} | {served} |"
                )
        if ann.get("usearch_f16_cos"):
            cos = ann["usearch_f16_cos"]
            ip = next(
                r
                for r in ann["usearch_f16"]["sweep"]
                if r["expansion"] == summary["default_expansion"]
            )
            lines += [
                "",
                f"The same f16 graph with cosine instead of inner product (expansion {summary['default_expansion']}): "
                f"recall@10 {cos['recall_at_10']:.4f}, {cos['qps']:.0f} q/s; inner product: {ip['recall_at_10']:.4f}, "
                f"{ip['qps']:.0f} q/s (**{ip['qps'] / cos['qps']:.2f}x**).",
            ]
        ours, theirs = summary["usearch_at_target"], summary["faiss_at_target"]
        served_dtype = summary["served"].removeprefix("usearch_")
        lines += [
            "",
            f"As served ({served_dtype}), at the default expansion_search {summary['default_expansion']}: recall@10 **{summary['recall_at_10']:.4f}**, "
            f"p99 **{summary['p99_ms']:.2f} ms**, "
            + (
                f"**{summary['speedup_vs_sklearn']:.0f}x** scikit-learn brute force queries/s. "
                if summary["speedup_vs_sklearn"]
                else ""
            )
            + (
                equal_recall_sentence(summary, served_dtype)
                if ours and theirs
                else f"One of USearch / FAISS did not reach recall {TARGET_RECALL} in the sweep."
            ),
            "",
        ]
    s = results["startup"]
    f = results["filtered"]
    lines += [
        "",
        f"## 5. Start-up with {s['n']:,} vectors ({s['file_mib']:.0f} MiB graph)",
        "",
        "| mode | open | open + first query | resident memory growth after open | after the first query |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {mode} | {s[mode]['open_s'] * 1000:.1f} ms | {s[mode]['first_query_s'] * 1000:.1f} ms | {s[mode].get('rss_growth_after_open_mib', float('nan')):.0f} MiB | {s[mode]['rss_growth_mib']:.0f} MiB |"
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
    if "precision" in results:
        lines += model_precision.render(results["precision"])
    if "finder" in results:
        lines += finder_speed.render(results["finder"])
    lines += settings_section(results)
    return "\n".join(lines)


def equal_recall_sentence(summary: dict[str, Any], served_dtype: str) -> str:
    ours, theirs = summary["usearch_at_target"], summary["faiss_at_target"]
    where = (
        f"At recall >= {TARGET_RECALL} (the smallest expansion reaching it): USearch {served_dtype} "
        f"at expansion {ours['expansion']} (recall {ours['recall_at_10']:.4f}), FAISS HNSW at efSearch "
        f"{theirs['expansion']} (recall {theirs['recall_at_10']:.4f})"
    )
    duel = summary["head_to_head"]
    return (
        f"{where}, measured head to head in {duel['rounds']} alternating rounds of the same queries: "
        f"median {duel['ours_qps']:.0f} vs {duel['theirs_qps']:.0f} q/s, ratio **{duel['ratio']:.2f}** "
        f"(rounds {min(duel['ratios']):.2f}-{max(duel['ratios']):.2f}).{rescore_sentence(summary)}"
    )


def rescore_sentence(summary: dict[str, Any]) -> str:
    """Why the served i8 search can trail FAISS on a small catalog, from this run's figures."""
    share = summary.get("rescore_share")
    if share is None:
        return ""
    text = (
        f" Of the served search's time, {share:.0%} is the f16 re-score of its candidates "
        "(the served search against its own graph walk alone, same run)"
    )
    if summary["head_to_head"]["ratio"] >= 1.0:
        return text + "."
    walk_alone = summary["head_to_head"]["ratio"] / (1.0 - share)
    return (
        text + f" (the walk alone would be {walk_alone:.2f}x FAISS's queries/s): FAISS's f32 "
        "graph needs no re-score. On a small graph the walk is short, so this "
        "fixed step weighs most; on the large one the int8 walk's savings outweigh it. What "
        "would close the gap here: re-scoring inside USearch's own search call (one call, no "
        "second gather of the candidates' rows), or serving the f16 graph, which needs no "
        "re-score, below some catalog size (it trails FAISS's f32 kernel at equal expansion "
        "on this CPU, table above)."
    )


def settings_section(results: dict[str, Any]) -> list[str]:
    """What each speed setting in config.toml buys, from this run's figures."""
    ann = results["ann"][-1]
    summary = ann["summary"]
    lone = results["concurrency"][0]
    most = results["concurrency"][-1]
    burst = next((r for r in results["concurrency"] if r["concurrent"] == 16), None)
    served = summary["served"]
    f16, i8 = ann["usearch_f16"], ann["usearch_i8"]
    sweep = {r["expansion"]: r for r in ann[served]["sweep"]}

    def reaching(graph: dict[str, Any]) -> str:
        row = next((r for r in graph["sweep"] if r["recall_at_10"] >= TARGET_RECALL), None)
        if row is None:
            return f"never reaches {TARGET_RECALL}"
        return f"reaches {row['recall_at_10']:.3f} at expansion {row['expansion']}, {row['qps']:.0f} q/s"

    rows = [
        (
            "`index.dtype`",
            served.removeprefix("usearch_"),
            f"at {ann['n']:,} vectors: the i8 graph (scaled int8 rows, candidates re-scored on f16) "
            f"{reaching(i8)}, {i8['bytes_per_vector']:.0f} bytes/vector, built in {i8['build_s']:.0f} s; "
            f"the f16 graph {reaching(f16)}, {f16['bytes_per_vector']:.0f} bytes/vector, built in "
            f"{f16['build_s']:.0f} s",
        ),
        (
            "`index.expansion_search`",
            str(summary["default_expansion"]),
            "recall@10 / p99 at "
            + ", ".join(
                f"{e}: {r['recall_at_10']:.3f} / {r['p99_ms']:.2f} ms" for e, r in sweep.items()
            ),
        ),
        (
            "`index.connectivity`, `index.expansion_add`",
            f"{ann['connectivity']}, {ann['expansion_add']}",
            f"graph build {f16['build_s']:.0f} s for {ann['n']:,} vectors on this machine; more of either "
            "raises recall per expansion_search and build time",
        ),
        (
            "`model.max_wait_ms`",
            "0",
            f"a lone query's p50 is {lone['p50_ms']:.0f} ms against {lone['bare_batch_ms']:.0f} ms for the bare "
            f"model ({lone['p50_ms'] / lone['bare_batch_ms']:.2f}x); waiting for companions would add the wait to it",
        ),
        *(
            [
                (
                    "`model.companion_wait_ms`",
                    "25",
                    f"a burst of {burst['concurrent']} shoppers rode {burst['mean_batch']:.1f} photos per forward "
                    f"pass, at {burst['ratio']:.2f} of bare batched throughput",
                )
            ]
            if burst and "mean_batch" in burst
            else []
        ),
        (
            "`model.max_batch`",
            "16",
            f"{most['concurrent']} concurrent queries reach {most['ratio']:.2f} of bare batched throughput",
        ),
        ("`model.threads`", "0 (all cores)", "torch's intra-op threads for the one model worker"),
    ]
    if "large_photo" in results:
        photo = results["large_photo"]
        rows.append(
            (
                "JPEG draft decoding (always on)",
                "-",
                f"a {photo['pixels']} photo: decode + preprocess {photo['draft_ms']:.0f} ms instead of "
                f"{photo['full_ms']:.0f} ms ({photo['speedup']:.1f}x)",
            )
        )
    return [
        "## What the speed settings buy",
        "",
        "| setting | default | measured in this run |",
        "| --- | --- | --- |",
        *(f"| {name} | {default} | {effect} |" for name, default, effect in rows),
        "",
    ]


if __name__ == "__main__":
    main()
