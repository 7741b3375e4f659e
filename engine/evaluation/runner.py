"""Run a query set through the engine and summarise the metrics."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.evaluation.metrics import (
    Ranked,
    category_precision,
    overlap,
    product_recall,
    reciprocal_rank,
    top_is_duplicate,
)
from engine.evaluation.queries import EvalQuery
from engine.images import ImageError
from engine.index import VectorIndex
from engine.ranking import RankingParams, rank
from engine.search import Engine
from engine.types import Filters, Hit


@dataclass
class Outcome:
    query: EvalQuery
    hits: list[Hit]
    ann_overlap: float
    duplicate_top: bool
    latency_ms: float

    @property
    def ranked(self) -> Ranked:
        return Ranked(
            [h.product.product_id for h in self.hits], [h.product.category for h in self.hits]
        )

    def precision(self, k: int) -> float | None:
        return (
            category_precision(self.ranked, self.query.category, k) if self.query.category else None
        )

    def recall(self, k: int) -> float | None:
        return (
            product_recall(self.ranked, self.query.product_id, k) if self.query.product_id else None
        )

    def reciprocal_rank(self) -> float:
        return reciprocal_rank(self.ranked, self.query.product_id, self.query.category)


@dataclass
class Run:
    outcomes: list[Outcome]
    unusable: list[str]


def top_products(
    index: VectorIndex, params: RankingParams, query: np.ndarray, k: int, exact: bool
) -> list[str]:
    """Product ids of the top `k`, by the ANN graph or by exact brute force (for
    measuring what the approximation costs)."""
    limit = index.size if exact else 0
    params = RankingParams(params.overfetch, limit)
    return [r.record.product_id for r in rank(index, query, Filters(), k, 0.0, params)]


async def run_queries(engine: Engine, queries: Sequence[EvalQuery], k: int) -> Run:
    """Each query alone (a shopper's view of latency), top `k`."""
    outcomes, unusable = [], []
    for query in queries:
        started = time.perf_counter()
        try:
            page = await engine.search(image=query.photo, k=k)
        except ImageError:
            unusable.append(query.name)
            continue
        latency = (time.perf_counter() - started) * 1000
        vector = engine.queries.get(page.query_key)
        params = RankingParams.from_settings(engine.settings.search)
        approximate = top_products(engine.index, params, vector, k, exact=False)
        exact = top_products(engine.index, params, vector, k, exact=True)
        keys = np.array([h.key for h in page.hits], dtype=np.uint64)
        vectors = engine.index.vectors_for(keys) if len(keys) else np.empty((0, 1))
        outcomes.append(
            Outcome(
                query, page.hits, overlap(approximate, exact, k), top_is_duplicate(vectors), latency
            )
        )
    return Run(outcomes, unusable)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def summarise_group(outcomes: list[Outcome], ks: Sequence[int]) -> dict[str, float | int | None]:
    row: dict[str, float | int | None] = {"queries": len(outcomes)}
    for k in ks:
        row[f"precision@{k}"] = _mean([o.precision(k) for o in outcomes])
        row[f"recall@{k}"] = _mean([o.recall(k) for o in outcomes])
    row["mrr"] = _mean([o.reciprocal_rank() for o in outcomes])
    row["duplicate_top_share"] = _mean([float(o.duplicate_top) for o in outcomes])
    row[f"ann_overlap@{max(ks)}"] = _mean([o.ann_overlap for o in outcomes])
    latencies = [o.latency_ms for o in outcomes]
    row["latency_p50_ms"] = float(np.percentile(latencies, 50)) if latencies else None
    row["latency_p95_ms"] = float(np.percentile(latencies, 95)) if latencies else None
    return row


def summarise(run: Run, ks: Sequence[int]) -> dict[str, object]:
    by_category: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in run.outcomes:
        by_category[outcome.query.category or "(none)"].append(outcome)
    return {
        "overall": summarise_group(run.outcomes, ks),
        "by_category": {c: summarise_group(o, ks) for c, o in sorted(by_category.items())},
        "unusable_queries": run.unusable,
    }


def per_query(run: Run, metric: str, k: int) -> list[float]:
    """One number per query, for paired comparisons (missing values count as 0)."""
    if metric == "precision":
        return [o.precision(k) or 0.0 for o in run.outcomes]
    if metric == "recall":
        return [o.recall(k) or 0.0 for o in run.outcomes]
    return [o.reciprocal_rank() for o in run.outcomes]
