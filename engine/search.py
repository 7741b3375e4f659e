"""The `Engine`: the one object both bots share. Built once, then `await engine.search(...)`.

Per query: decode + preprocess (CPU pool) -> embed (micro-batched model thread) ->
rank (CPU pool) -> product rows. Nothing heavy ever runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch

from engine.category import combined_shares, neighbour_votes
from engine.config import SearchSettings, Settings
from engine.embedder import Embedder, load_embedder, model_identity
from engine.garment_search import GarmentSearch, garment_queries
from engine.index import VectorIndex
from engine.query_encoder import EncodedQuery, QueryEncoder
from engine.query_store import QueryStore
from engine.ranking import RankedImage, RankingParams, Reorder, rank
from engine.serving import ServedIndex, open_configured_index
from engine.types import Filters, Garment, Hit, Product, SearchPage
from engine.zero_shot import ZeroShotCategories

log = logging.getLogger(__name__)
T = TypeVar("T")


def _page_window(search: SearchSettings, k: int | None, offset: int) -> tuple[int, int, int]:
    """(results per page, first, end) of a page, clamped to what may be ranked."""
    k = max(1, min(k or search.default_k, search.max_k))
    offset = max(0, offset)
    return k, offset, min(offset + k, search.max_results)


@dataclass(frozen=True)
class _Query:
    vector: np.ndarray
    colour: np.ndarray | None  # the photos' colour descriptor (engine.colour), if any


class Engine:
    def __init__(self, settings: Settings, embedder: Embedder, index: VectorIndex) -> None:
        self.settings = settings
        self.embedder = embedder
        self.identity = model_identity(embedder)
        self.served = ServedIndex(settings, self.identity, index)
        self._cpu_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine-cpu")
        search = settings.search
        self.encoder = QueryEncoder(embedder, settings, self._cpu_pool)
        self.garments = GarmentSearch(settings.garments, settings.images, search.colour_weight > 0)
        self.batcher = self.encoder.batcher
        self._ranking = RankingParams.from_settings(search)
        self.warm = False
        # Zero-shot gating reads category names with the text tower: not without one.
        self._gating = search.category_gating and embedder.text_search
        self.zero_shot = ZeroShotCategories(self.encoder.embed_texts, search.gating_confidence)
        store_path = settings.resolve_path(search.query_store) if search.query_store else None
        self.queries = QueryStore(store_path)

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None) -> Engine:
        """Load the model (unless given), then the index it must match. Raises
        ModelLoadError/IndexLoadError."""
        embedder = embedder or load_embedder(settings.model, settings.source.parent)
        index = open_configured_index(settings, model_identity(embedder))
        log.info(
            "index %s: %d products, %d images",
            index.manifest.build_id,
            index.manifest.products,
            index.manifest.images,
        )
        return cls(settings, embedder, index)

    @property
    def index(self) -> VectorIndex:
        return self.served.current

    def categories(self) -> list[str]:
        return self.index.catalog.categories()

    async def run_cpu(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the engine's CPU pool (decoding, the garment finder)."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, function, *args)

    async def embed_pixels(self, pixels: Sequence[torch.Tensor]) -> np.ndarray:
        """Preprocessed images embedded in one forward pass (one row each)."""
        return await self.encoder.embed_pixels(pixels)

    async def find_garments(self, image: bytes) -> list[Garment]:
        """The garments in a photo, most confident first; one whole-photo garment when
        it shows no person wearing something. Raises ImageError for unusable photos."""
        decoded = await self.run_cpu(self.garments.decode, image)
        return await self.garments.find_async(decoded)

    async def search_garments(
        self, image: bytes, k: int | None = None, filters: Filters | None = None
    ) -> list[tuple[Garment, SearchPage]]:
        """Each garment of the photo with its first page of results (one finder pass,
        one forward pass for all garments). Page on with each page's `query_key`."""
        results = []
        for query in await garment_queries(self, image):
            key = await self.run_cpu(self.queries.put, query.vector, query.colour)
            self.garments.remember(key, query.category)
            results.append((query.garment, await self.search(query_key=key, k=k, filters=filters)))
        return results

    async def _garment_query_key(
        self, image: bytes, garment: Garment | int, text: str | None
    ) -> str:
        """The query key of one garment's search (its crop, refined by `text` when the
        model reads text)."""
        (query,) = await garment_queries(self, image, garment)
        vector = query.vector
        if text and self.embedder.text_search:
            (text_vector,) = await self.encoder.embed_texts([text])
            vector = vector + self.settings.search.text_weight * text_vector
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        rounded = vector.astype(np.float16).astype(np.float32)
        key = await self.run_cpu(self.queries.put, rounded, query.colour)
        self.garments.remember(key, query.category)
        return key

    async def _category_first(
        self, query_key: str, query: np.ndarray, filters: Filters
    ) -> str | None:
        """The category to put first, the same for every page of a query: a garment's
        (remembered with its key), else the zero-shot guess when gating is on."""
        garment_category = self.garments.category_of_key(query_key)
        if garment_category or not self._gating or filters.category:
            return garment_category
        return await self.guess_category(query)

    async def embed_query(self, images: Sequence[bytes], text: str | None) -> np.ndarray:
        """The query vector for photos (several are averaged: an album is one look), a
        text, or photos refined by a text."""
        return (await self.encode_query(images, text)).vector

    async def encode_query(self, images: Sequence[bytes], text: str | None) -> EncodedQuery:
        """`embed_query`'s vector, with the photos' colour descriptor (when the colour
        re-score is on)."""
        return await self.encoder.encode(images, text, self.settings.search.text_weight)

    async def warm_up(self) -> None:
        """One image and one text through the worker, and one photo through the garment
        finder, so the first shopper does not pay for lazy initialisation; sets `warm`."""
        await asyncio.gather(self.encoder.warm_up(), self.garments.warm_up())
        self.warm = True

    async def guess_category(self, query: np.ndarray) -> str | None:
        """The catalog category a photo most likely shows, when the text encoder is at
        least `search.gating_confidence` sure (softmax over "a photo of a <category>")."""
        return await self.zero_shot.guess(self.categories(), query)

    def _category_shares(self, index: VectorIndex, query: np.ndarray) -> dict[str, float]:
        """How likely the photo shows each category, by the catalog's own probe and/or the
        nearest products' votes (`search.category_probe`, `search.category_votes`)."""
        search = self.settings.search
        probe = index.category_probe if search.category_probe else None
        probe_shares = (
            dict(zip(probe.categories, probe.probabilities(query).tolist(), strict=True))
            if probe is not None
            else {}
        )
        vote_shares: dict[str, float] = {}
        if search.category_votes:
            nearest = rank(index, query, Filters(), search.category_votes, 0.0, self._ranking)
            products = index.catalog.products(r.record.product_id for r in nearest)
            known = [r for r in nearest if r.record.product_id in products]
            vote_shares = neighbour_votes(
                [products[r.record.product_id].category for r in known], [r.score for r in known]
            )
        return combined_shares(probe_shares, vote_shares, search.category_confidence)

    def _reorder(
        self, index: VectorIndex, query: _Query, known: dict[str, Product], by_category: bool
    ) -> tuple[Reorder | None, str | None]:
        """(how to reorder the top candidates, the likeliest category): the likely category
        (when `by_category`) and the photo's colour first; (None, None) when neither
        applies. The products it reads land in `known`, so the page's join need not read
        them again."""
        search = self.settings.search
        shares = self._category_shares(index, query.vector) if by_category else {}
        colours = index.colours if query.colour is not None and search.colour_weight else None
        if not shares and colours is None:
            return None, None

        def reorder(pool: list[RankedImage]) -> list[RankedImage]:
            boosts = np.zeros(len(pool))
            if colours is not None and query.colour is not None:
                similarity = colours.similarities(query.colour, [r.record.key for r in pool])
                boosts += search.colour_weight * similarity
            if shares:
                products = index.catalog.products(r.record.product_id for r in pool)
                known.update(products)
                boosts += [
                    search.category_weight * shares.get(products[pid].category, 0.0)
                    if (pid := r.record.product_id) in products
                    else 0.0
                    for r in pool
                ]
            boosted = [replace(r, boost=float(b)) for r, b in zip(pool, boosts, strict=True)]
            return sorted(boosted, key=lambda r: -r.relevance)

        return reorder, max(shares, key=lambda c: shares[c]) if shares else None

    def _ranked(
        self,
        index: VectorIndex,
        query: _Query,
        filters: Filters,
        wanted: int,
        diversity: float,
        zero_shot_category: str | None,
        known: dict[str, Product],
    ) -> tuple[list[RankedImage], str | None]:
        """One page's ranking: the likely category first (unless the shopper filtered or
        another category is preferred), then the photo's colour."""
        by_category = not filters.category and not zero_shot_category
        reorder, likeliest = self._reorder(index, query, known, by_category)
        vector, params = query.vector, self._ranking
        ranked = rank(index, vector, filters, wanted, diversity, params, reorder)
        if not zero_shot_category or filters.category:
            return ranked, likeliest
        preferred = replace(filters, category=zero_shot_category)
        first = rank(index, vector, preferred, wanted, diversity, params, reorder)
        seen = {r.record.product_id for r in first}
        rest = [r for r in ranked if r.record.product_id not in seen]
        return (first + rest)[:wanted], zero_shot_category

    def _rank_and_join(
        self,
        query: _Query,
        filters: Filters,
        wanted: int,
        diversity: float,
        zero_shot_category: str | None = None,
    ) -> tuple[list[Hit], str | None]:
        """The hits of one page (and the category favoured, if any)."""
        index = self.index  # one consistent index for the whole query, even across a reload
        products: dict[str, Product] = {}
        ranked, favoured = self._ranked(
            index, query, filters, wanted, diversity, zero_shot_category, products
        )
        missing = [r.record.product_id for r in ranked if r.record.product_id not in products]
        if missing:
            products.update(index.catalog.products(missing))
        hits = [
            Hit(
                products[r.record.product_id],
                r.score,
                r.record.source,
                r.record.local_path,
                r.record.key,
            )
            for r in ranked
            if r.record.product_id in products
        ]
        return hits, favoured

    async def search(
        self,
        image: bytes | None = None,
        text: str | None = None,
        filters: Filters | None = None,
        images: Sequence[bytes] = (),
        k: int | None = None,
        offset: int = 0,
        diversity: float | None = None,
        query_key: str | None = None,
        garment: Garment | int | None = None,
    ) -> SearchPage:
        """Products most similar to a photo (or several: `images`) and/or a text. Raises
        ImageError for unusable photos and EngineBusy when the model queue is full.
        `query_key` (from an earlier page) repeats that search without its inputs, or
        raises QueryExpired. `garment` (from `find_garments`, or its position) searches
        that garment of `image`, its category first."""
        search = self.settings.search
        k, offset, end = _page_window(search, k, offset)
        if offset >= end:  # past search.max_results: nothing to rank, however deep the ask
            return SearchPage([], offset, False, {"total_ms": 0.0}, query_key or "")
        started = time.perf_counter()
        if garment is not None and image is not None and not query_key:
            query_key = await self._garment_query_key(image, garment, text)
        photos = [image, *images] if image is not None else list(images)
        query, query_key, colour = await self._query(photos, text, query_key)
        embedded = time.perf_counter()
        wanted = min(end + 1, search.max_results)
        hits, favoured = await self._rank(
            query, colour, query_key, filters or Filters(), wanted, diversity
        )
        finished = time.perf_counter()
        timings = {
            "embed_ms": (embedded - started) * 1000,
            "rank_ms": (finished - embedded) * 1000,
            "total_ms": (finished - started) * 1000,
        }
        return SearchPage(
            hits[offset:end],
            offset,
            len(hits) > end,
            timings,
            query_key,
            favoured,
            text_ignored=bool(text) and not self.embedder.text_search,
        )

    async def _rank(
        self,
        query: np.ndarray,
        colour: np.ndarray | None,
        query_key: str,
        filters: Filters,
        wanted: int,
        diversity: float | None,
    ) -> tuple[list[Hit], str | None]:
        """The first `wanted` hits (off the event loop), and the category favoured."""
        search = self.settings.search
        diversity = search.diversity if diversity is None else min(max(diversity, 0.0), 1.0)
        zero_shot = await self._category_first(query_key, query, filters)
        return await asyncio.get_running_loop().run_in_executor(
            self._cpu_pool,
            self._rank_and_join,
            _Query(query, colour),
            filters,
            wanted,
            diversity,
            zero_shot,
        )

    async def _query(
        self, photos: Sequence[bytes], text: str | None, query_key: str | None
    ) -> tuple[np.ndarray, str, np.ndarray | None]:
        """The query vector, its key and its photos' colour descriptor: stored under
        `query_key`, or embedded and stored."""
        loop = asyncio.get_running_loop()
        if query_key:
            vector, colour = await loop.run_in_executor(
                self._cpu_pool, self.queries.get_with_colour, query_key
            )
            return vector, query_key, colour
        encoded = await self.encode_query(photos, text)
        # Rounded as the query store keeps it, so a later page ranks identically.
        query = encoded.vector.astype(np.float16).astype(np.float32)
        key = await loop.run_in_executor(self._cpu_pool, self.queries.put, query, encoded.colour)
        return query, key, encoded.colour

    def reload_if_changed(self) -> bool:
        """Switch to a newly published build (same model only). In-flight queries finish
        on the index they started with."""
        return self.served.reload_if_changed()

    async def watch_index(self, interval_s: float) -> None:
        """Switch to each newly published build, checking every `interval_s` seconds."""
        await self.served.watch(interval_s)

    def close(self) -> None:
        self.encoder.close()
        self.garments.close()
        self.queries.close()
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
