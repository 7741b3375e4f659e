"""Synthetic CLIP-like indexes: clustered unit vectors around a shared mean direction
(real CLIP embeddings are far from uniform noise, which makes ANN search too easy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.catalog import ImageRecord
from engine.config import IndexSettings
from engine.graph import GRAPH_METRIC
from engine.store import (
    Manifest,
    ModelIdentity,
    finish_build,
    new_build_id,
    publish,
    write_build_files,
)
from engine.types import Product

CATEGORIES = ("dress", "hat", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt")


def clip_like_vectors(
    count: int, dim: int = 512, clusters: int = 200, seed: int = 0, intrinsic_dim: int = 32
) -> np.ndarray:
    """`count` unit vectors: a shared mean direction + one of `clusters` centres + variation
    in a low-dimensional subspace (CLIP embeddings have a low intrinsic dimension) + a
    little full-dimensional noise. The structure (mean, centres, subspace) depends only on
    `dim`, `clusters` and `intrinsic_dim`; `seed` draws the samples, so queries drawn with
    another seed come from the same distribution as the catalog."""
    world = np.random.default_rng(dim * 7919 + clusters * 31 + intrinsic_dim)
    mean = world.standard_normal(dim)
    mean /= np.linalg.norm(mean)
    centres = world.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = world.standard_normal((intrinsic_dim, dim))
    rng = np.random.default_rng(seed)
    local = rng.standard_normal((count, intrinsic_dim)) @ basis
    local /= np.linalg.norm(local, axis=1, keepdims=True)
    noise = rng.standard_normal((count, dim)) / np.sqrt(dim)
    vectors = mean + 0.8 * centres[rng.integers(0, clusters, count)] + 0.6 * local + 0.1 * noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def write_synthetic_index(
    index_dir: Path,
    vectors: np.ndarray,
    identity: ModelIdentity | None = None,
    settings: IndexSettings | None = None,
    graph: Path | None = None,
    category_probe: bool = False,
) -> Path:
    """Publish an index whose image i belongs to product P<i>, category CATEGORIES[i % 8].
    `graph`: a USearch graph already built over exactly `vectors` with `settings` (a 1M
    graph takes half an hour on 2 cores), copied instead of built again. No category probe
    unless asked: these categories have nothing to do with the vectors, so a probe learns
    nothing from them, and training it takes longer than building a 10k graph."""
    products = [
        Product(
            product_id=f"P{i}",
            title=f"Product {i}",
            url=f"https://shop.example.com/p/{i}",
            image=f"https://img.example.com/{i}.jpg",
            price=float(10 + i % 90),
            currency="EUR",
            category=CATEGORIES[i % len(CATEGORIES)],
            in_stock=i % 3 != 0,
        )
        for i in range(len(vectors))
    ]
    records = [ImageRecord(i, f"P{i}", p.image, None, f"{i:064x}") for i, p in enumerate(products)]
    build_id = new_build_id()
    tmp = index_dir / "builds" / f".tmp-{build_id}"
    tmp.mkdir(parents=True)
    settings = settings or IndexSettings()
    write_build_files(tmp, vectors, products, records, settings, graph, category_probe)
    identity = identity or ModelIdentity("synthetic", "", vectors.shape[1], "0" * 16)
    manifest = Manifest(
        build_id,
        identity,
        settings.dtype,
        GRAPH_METRIC,
        products=len(products),
        images=len(records),
    )
    finish_build(tmp, manifest)
    return publish(index_dir, tmp, build_id)
