"""The ANN graph: int8 quantisation, building the USearch HNSW graph, searching it.

The graph stores our unit-length vectors (f16, or int8 under one catalog-wide scale) and
compares them by inner product; i8 candidates are re-scored on the stored f16 rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from usearch.compiled import MetricKind, exact_search
from usearch.index import Index

# The graph's distance for our unit-length vectors: inner product, which equals cosine
# and needs one accumulator instead of three (1.2-1.9x the queries/s at the same recall,
# docs/benchmarks.md). Builds before i8 was scaled (see `graph_vectors`) used cosine for
# i8; a graph file records its own metric, and `graph_query` serves those too.
GRAPH_METRIC = "ip"

I8_LEVELS = 127


def to_int8(vectors: np.ndarray, scale: float) -> np.ndarray:
    # the largest component lands on 127 exactly, so rounding never leaves int8's range
    quantised: np.ndarray = np.rint(np.asarray(vectors, dtype=np.float32) * scale)
    return quantised.astype(np.int8)


def graph_vectors(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """What the graph stores. For i8, one scale for the whole catalog maps its largest
    component to 127. USearch's own cast multiplies by 127, which leaves the components of
    a unit-length 512-d embedding (about +-0.05) a dozen levels: recall@10 levels off near
    0.92 and needs cosine. Scaled, inner product of the int8 rows ranks like the floats'
    up to rounding (0.98 alone, 0.99+ after the f16 re-rank), and one scale for all rows
    keeps every inner product in the same proportion."""
    if dtype != "i8":
        return vectors
    largest = float(np.abs(vectors).max()) if len(vectors) else 0.0
    return to_int8(vectors, I8_LEVELS / largest if largest > 0 else 1.0)


def graph_query(query: np.ndarray, dtype: str) -> np.ndarray:
    """One query as the graph compares it. An i8 query gets its own scale: multiplying a
    query by a positive number changes no ranking, and its own largest component at 127
    keeps the most precision."""
    if dtype != "i8":
        return np.asarray(query, dtype=np.float32)
    largest = float(np.abs(query).max())
    return to_int8(query, I8_LEVELS / largest if largest > 0 else 1.0)


def search_graph(
    ann: Index, vectors: np.ndarray, dtype: str, query: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top `count` of one query: (keys, cosine similarities), best first.
    `vectors` are the stored f16 rows, row = key."""
    matches = ann.search(graph_query(query, dtype), count, threads=1)
    keys = matches.keys.astype(np.uint64)
    if dtype != "i8":
        return keys, 1.0 - matches.distances.astype(np.float32)
    if len(keys) == 0:
        return keys, np.empty(0, np.float32)
    # i8 scores are rounded: re-score the candidates on the stored f16 rows, with USearch's
    # f16 kernel (numpy converts f16 one value at a time: 3x the time for 40 rows)
    rows = np.ascontiguousarray(vectors[keys.astype(np.int64)])
    query16 = np.asarray(query, dtype=np.float16)[None, :]
    order, distances = exact_search(rows, query16, len(keys), threads=1, metric_kind=MetricKind.IP)[
        :2
    ]
    return keys[order[0].astype(np.int64)], 1.0 - distances[0].astype(np.float32)


def write_ann(
    vectors: np.ndarray, path: Path, dtype: str, connectivity: int, expansion: int
) -> None:
    ann = Index(
        ndim=vectors.shape[1],
        metric=GRAPH_METRIC,
        dtype=dtype,
        connectivity=connectivity,
        expansion_add=expansion,
    )
    if len(vectors):
        ann.add(np.arange(len(vectors), dtype=np.uint64), graph_vectors(vectors, dtype))
    ann.save(str(path))
