"""Retrieval metrics on ranked product lists, and a paired bootstrap for comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """One query's results: product ids and their categories, best first."""

    products: Sequence[str]
    categories: Sequence[str]


def category_precision(ranked: Ranked, category: str, k: int) -> float:
    """Share of the top k results in the query's category."""
    top = list(ranked.categories[:k])
    return sum(c == category for c in top) / k if k else 0.0


def product_recall(ranked: Ranked, product_id: str, k: int) -> float:
    """1 when the known product is among the top k, else 0."""
    return float(product_id in ranked.products[:k])


def reciprocal_rank(ranked: Ranked, product_id: str | None, category: str | None) -> float:
    """1/rank of the known product; for category-only queries, of the first result in the
    query's category. 0 when absent."""
    for rank, (pid, cat) in enumerate(zip(ranked.products, ranked.categories, strict=True), 1):
        if (product_id is not None and pid == product_id) or (
            product_id is None and cat == category
        ):
            return 1.0 / rank
    return 0.0


def overlap(a: Sequence[str], b: Sequence[str], k: int) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    return len(set(a[:k]) & set(b[:k])) / k if k else 1.0


def top_is_duplicate(vectors: np.ndarray, threshold: float = 0.97) -> bool:
    """Whether the first result's image is a near-copy of another result's (a product
    listed twice): rows are unit vectors of each result's best image."""
    if len(vectors) < 2:
        return False
    return bool(np.max(vectors[1:] @ vectors[0]) >= threshold)


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], rounds: int = 2000, seed: int = 0
) -> Difference:
    """Mean of (b - a) over the same queries, with a 95% interval from resampling queries."""
    deltas = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(deltas) == 0:
        return Difference(0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(deltas), size=(rounds, len(deltas)))
    means = deltas[samples].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(float(deltas.mean()), float(low), float(high))
