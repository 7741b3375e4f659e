"""The colour figures of docs/quality.md: how often the top results are named the query's
colour (bench.colour_names, not the engine's descriptor), and what the re-score costs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.colour_names import clear_name, name_of_file
from engine import colour
from engine.catalog import Catalog
from engine.config import ImageSettings
from engine.evaluation.queries import EvalQuery
from engine.evaluation.runner import Run
from engine.images import ImageError, decode_image
from engine.index import VectorIndex
from engine.ranking import REORDER_POOL


@dataclass(frozen=True)
class ColourNames:
    """The clear colour name (or None) of each catalog product and of each query."""

    of_product: dict[str, str | None]
    of_query: dict[str, str | None]

    @classmethod
    def of(cls, catalog: Catalog, queries: Sequence[EvalQuery]) -> ColourNames:
        products: dict[str, str | None] = {}
        for record in sorted(catalog.iter_images(), key=lambda r: r.key):
            if record.product_id not in products and record.local_path:
                products[record.product_id] = name_of_file(Path(record.local_path))
        return cls(products, {q.name: _name_of_photo(q.photo) for q in queries})

    def named_queries(self) -> int:
        return sum(name is not None for name in self.of_query.values())

    def agreement(self, run: Run, k: int) -> list[float]:
        """Per clearly coloured query, the share of its top `k` named its colour."""
        shares = []
        for outcome in run.outcomes:
            wanted = self.of_query.get(outcome.query.name)
            if wanted is None:
                continue
            hits = outcome.hits[:k]
            same = sum(self.of_product.get(h.product.product_id) == wanted for h in hits)
            shares.append(same / k)
        return shares


def _name_of_photo(photo: bytes) -> str | None:
    try:
        return clear_name(decode_image(photo, draft_size=64))
    except ImageError:
        return None


@dataclass(frozen=True)
class ColourCost:
    describe_ms: float  # the query photo's descriptor, from the decoded photo
    rescore_ms: float  # REORDER_POOL similarities and the boost
    catalog_ms_per_image: float  # at build time: a reduced-scale decode + the descriptor


def measure_cost(index: VectorIndex, queries: Sequence[EvalQuery], limits_draft: int) -> ColourCost:
    """Medians over the queries (decoding excluded, as the model needs it anyway), and the
    build's per-image cost over the first 300 catalog images."""
    describe_times, rescore_times = [], []
    keys = list(range(min(REORDER_POOL, index.size)))
    table = index.colours
    for query in queries:
        try:
            image = decode_image(query.photo, draft_size=limits_draft)
        except ImageError:
            continue
        started = time.perf_counter()
        descriptor = colour.describe(image)
        described = time.perf_counter()
        if table is not None:
            table.similarities(descriptor, keys)
        rescored = time.perf_counter()
        describe_times.append((described - started) * 1000)
        rescore_times.append((rescored - described) * 1000)
    records = sorted(index.catalog.iter_images(), key=lambda r: r.key)[:300]
    files = [Path(r.local_path).read_bytes() for r in records if r.local_path]
    started = time.perf_counter()
    for data in files:  # as the build's decode stage describes the bytes it holds
        colour.describe_bytes(data, ImageSettings())
    per_image = (time.perf_counter() - started) * 1000 / max(len(files), 1)
    return ColourCost(float(np.median(describe_times)), float(np.median(rescore_times)), per_image)
