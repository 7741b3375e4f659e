"""The `Engine`: the one object both bots share. Built once, then `await engine.search(...)`.

Per query: decode + preprocess (CPU pool) -> embed (micro-batched model thread) ->
rank (CPU pool) -> product rows. Nothing heavy ever runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from engine.batcher import MicroBatcher
from engine.category import neighbour_votes, predict_category
from engine.config import Settings
from engine.embedder import Embedder, load_embedder
from engine.garment_search import GarmentSearch, garment_queries
from engine.index import (
    IndexLoadError,
    ModelIdentity,
    VectorIndex,
    current_build_dir,
    open_index,
)
from engine.query_store import QueryStore
from engine.ranking import RankingParams, rank
from engine.types import Filters, Garment, Hit, SearchPage, TextSearchUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class _ModelJob:
    pixels: torch.Tensor | None = None
    text: str | None = None
    # Images that share one forward pass whatever else is queued (the garments of one
    # photo); their vectors come back as one matrix.
    together: tuple[torch.Tensor, ...] = ()


def model_identity(embedder: Embedder) -> ModelIdentity:
    return ModelIdentity(
        name=embedder.spec.configured_name,
        pretrained=embedder.spec.pretrained or "",
        dim=embedder.dim,
        fingerprint=embedder.fingerprint,
        preprocess=embedder.preprocessing,
    )


def open_configured_index(settings: Settings, identity: ModelIdentity) -> VectorIndex:
    """The published index of `index.dir`, opened with the configured checks and search
    settings; refused if it was built with another model."""
    index = settings.index
    return open_index(
        settings.resolve_path(index.dir), identity, index.verify_checksums, index.expansion_search
    )


def _run_model_jobs(embedder: Embedder, jobs: Sequence[_ModelJob]) -> list[np.ndarray]:
    """One forward pass for the images of a batch, one for its texts."""
    out: list[np.ndarray | None] = [None] * len(jobs)
    image_slots = [i for i, job in enumerate(jobs) if job.pixels is not None or job.together]
    text_slots = [i for i, job in enumerate(jobs) if job.text is not None]
    if image_slots:
        counts = [len(jobs[i].together) or 1 for i in image_slots]
        vectors = embedder.embed_image_tensors(
            [t for i in image_slots for t in (jobs[i].together or (jobs[i].pixels,))]
        )
        starts = np.cumsum([0, *counts])
        for slot, start, count in zip(image_slots, starts, counts, strict=False):
            block = vectors[start : start + count]
            out[slot] = block if jobs[slot].together else block[0]
    if text_slots:
        vectors = embedder.embed_texts([jobs[i].text or "" for i in text_slots])
        for slot, vector in zip(text_slots, vectors, strict=True):
            out[slot] = vector
    return [v for v in out if v is not None]


def _normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class Engine:
    def __init__(self, settings: Settings, embedder: Embedder, index: VectorIndex) -> None:
        self.settings = settings
        self.embedder = embedder
        self.identity = model_identity(embedder)
        self._index = index
        self._index_lock = threading.Lock()
        self._limits = settings.images
        self._cpu_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="engine-cpu")
        model = settings.model
        self._photos_being_decoded = 0
        self.batcher: MicroBatcher[_ModelJob, np.ndarray] = MicroBatcher(
            lambda jobs: _run_model_jobs(embedder, jobs),
            max_batch=model.max_batch,
            max_wait_ms=model.max_wait_ms,
            max_queue=model.max_queue,
            on_their_way=lambda: self._photos_being_decoded,
            companion_wait_ms=model.companion_wait_ms,
        )
        search = settings.search
        self._ranking = RankingParams.from_settings(search)
        self.warm = False
        self._flip = search.flip_augment
        # Zero-shot gating reads category names with the text tower: not without one.
        self._gating = search.category_gating and embedder.text_search
        self._gating_confidence = search.gating_confidence
        self._category_vectors: dict[tuple[str, ...], np.ndarray] = {}
        store_path = settings.resolve_path(search.query_store) if search.query_store else None
        self.queries = QueryStore(store_path)
        self.garments = GarmentSearch(settings.garments, settings.images)

    @classmethod
    def open(cls, settings: Settings) -> Engine:
        """Load the model, then the index it must match. Raises ModelLoadError/IndexLoadError."""
        embedder = load_embedder(settings.model, settings.source.parent)
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
        return self._index

    def categories(self) -> list[str]:
        return self._index.catalog.categories()

    async def run_cpu(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the engine's CPU pool (decoding, the garment finder)."""
        return await asyncio.get_running_loop().run_in_executor(self._cpu_pool, function, *args)

    async def embed_pixels(self, pixels: Sequence[torch.Tensor]) -> np.ndarray:
        """Preprocessed images embedded in one forward pass (one row each)."""
        return await self.batcher.submit_async(_ModelJob(together=tuple(pixels)))

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
            key = await self.run_cpu(self.queries.put, query.vector)
            self.garments.remember(key, query.category)
            results.append((query.garment, await self.search(query_key=key, k=k, filters=filters)))
        return results

    async def _garment_query_key(self, image: bytes, garment: Garment | int, text: str | None):
        """The query key of one garment's search (its crop, refined by `text` when the
        model reads text)."""
        (query,) = await garment_queries(self, image, garment)
        vector = query.vector
        if text and self.embedder.text_search:
            text_vector = await self.batcher.submit_async(_ModelJob(text=text))
            vector = _normalise(vector + self.settings.search.text_weight * text_vector)
        key = await self.run_cpu(self.queries.put, vector.astype(np.float16).astype(np.float32))
        self.garments.remember(key, query.category)
        return key

    async def _category_first(
        self, query_key: str, query: np.ndarray, filters: Filters | None
    ) -> str | None:
        """The category to put first, the same for every page of a query: a garment's
        (remembered with its key), else the zero-shot guess when gating is on."""
        garment_category = self.garments.category_of_key(query_key)
        if garment_category or not self._gating or (filters and filters.category):
            return garment_category
        return await self.guess_category(query)

    def _model_views(self, data: bytes) -> list[torch.Tensor]:
        """The photo's pixels for the model (and its mirror image with flip_augment)."""
        pixels = self.embedder.image_preprocessor.from_bytes(data, self._limits)
        return [pixels, torch.flip(pixels, dims=[2])] if self._flip else [pixels]

    async def embed_query(self, images: Sequence[bytes], text: str | None) -> np.ndarray:
        """The query vector for photos (several are averaged: an album is one look), a
        text, or photos refined by a text."""
        if not images and not (text and text.strip()):
            raise ValueError("a search needs a photo or some text")
        if text and not self.embedder.text_search:
            if not images:
                raise TextSearchUnavailable(
                    f"model {self.identity.name!r} has no text encoder: search by photo"
                )
            text = None  # a caption cannot refine; `SearchPage.text_ignored` says so
        loop = asyncio.get_running_loop()
        image_futures = []
        for data in images:
            self._photos_being_decoded += 1  # the batcher waits for these, not for strangers
            try:
                views = await loop.run_in_executor(self._cpu_pool, self._model_views, data)
                # queued now (not when awaited), before this photo stops counting as on its way
                image_futures += [
                    asyncio.wrap_future(self.batcher.submit(_ModelJob(pixels=v))) for v in views
                ]
            finally:
                self._photos_being_decoded -= 1
        text_future = self.batcher.submit_async(_ModelJob(text=text)) if text else None
        vector = np.zeros(self.identity.dim, dtype=np.float32)
        if image_futures:
            vector += _normalise(np.mean(await asyncio.gather(*image_futures), axis=0))
        if text_future is not None:
            weight = self.settings.search.text_weight if images else 1.0
            vector += weight * await text_future
        return _normalise(vector)

    async def warm_up(self) -> None:
        """One image and one text through the worker, so the first shopper does not pay
        for lazy initialisation; sets `warm`."""
        size = self.embedder.image_size
        blank = self.embedder.preprocess_image(Image.new("RGB", (size, size), "white"))
        await self.batcher.submit_async(_ModelJob(pixels=blank))
        if self.embedder.text_search:
            await self.batcher.submit_async(_ModelJob(text="a photo of a garment"))
        self.warm = True

    async def guess_category(self, query: np.ndarray) -> str | None:
        """The catalog category a photo most likely shows, when the text encoder is at
        least `search.gating_confidence` sure (softmax over "a photo of a <category>")."""
        categories = self.categories()
        if len(categories) < 2:
            return None
        key = tuple(categories)
        if key not in self._category_vectors:
            prompts = [f"a photo of a {c}" for c in categories]
            vectors = await asyncio.gather(
                *(self.batcher.submit_async(_ModelJob(text=p)) for p in prompts)
            )
            self._category_vectors = {key: np.stack(vectors)}
        logits = 100.0 * (self._category_vectors[key] @ query)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(np.argmax(probabilities))
        return categories[best] if probabilities[best] >= self._gating_confidence else None

    def _predicted_category(self, index: VectorIndex, query: np.ndarray) -> str | None:
        """The category the catalog's own probe and/or the nearest products' votes pick
        (`search.category_probe`, `search.category_votes`); None when neither is on."""
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
        return predict_category(probe_shares, vote_shares, search.category_confidence)

    def _rank_and_join(
        self,
        query: np.ndarray,
        filters: Filters,
        wanted: int,
        diversity: float,
        zero_shot_category: str | None = None,
    ) -> tuple[list[Hit], str | None]:
        """The hits of one page (and the category put first, if any)."""
        index = self._index  # one consistent index for the whole query, even across a reload
        ranked = rank(index, query, filters, wanted, diversity, self._ranking)
        prefer = None
        if not filters.category:  # the same for every page of a query
            prefer = zero_shot_category or self._predicted_category(index, query)
        if prefer:
            preferred = replace(filters, category=prefer)
            first = rank(index, query, preferred, wanted, diversity, self._ranking)
            seen = {r.record.product_id for r in first}
            ranked = (first + [r for r in ranked if r.record.product_id not in seen])[:wanted]
        products = index.catalog.products(r.record.product_id for r in ranked)
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
        return hits, prefer

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
        k = max(1, min(k or search.default_k, search.max_k))
        offset = max(0, offset)
        diversity = search.diversity if diversity is None else min(max(diversity, 0.0), 1.0)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if garment is not None and image is not None and not query_key:
            query_key = await self._garment_query_key(image, garment, text)
        if query_key:
            query = await loop.run_in_executor(self._cpu_pool, self.queries.get, query_key)
        else:
            photos = [image, *images] if image is not None else list(images)
            # Rounded as the query store keeps it, so a later page ranks identically.
            query = (await self.embed_query(photos, text)).astype(np.float16).astype(np.float32)
            query_key = await loop.run_in_executor(self._cpu_pool, self.queries.put, query)
        timings["embed_ms"] = (time.perf_counter() - started) * 1000
        zero_shot = await self._category_first(query_key, query, filters)
        ranked_at = time.perf_counter()
        hits, category_first = await loop.run_in_executor(
            self._cpu_pool,
            self._rank_and_join,
            query,
            filters or Filters(),
            offset + k + 1,
            diversity,
            zero_shot,
        )
        timings["rank_ms"] = (time.perf_counter() - ranked_at) * 1000
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        return SearchPage(
            hits[offset : offset + k],
            offset,
            len(hits) > offset + k,
            timings,
            query_key,
            category_first,
            text_ignored=bool(text) and not self.embedder.text_search,
        )

    def top_products(self, query: np.ndarray, k: int, exact: bool) -> list[str]:
        """Product ids of the top `k`, by the ANN graph or by exact brute force (for
        measuring what the approximation costs)."""
        limit = self._index.size if exact else 0
        params = RankingParams(self._ranking.overfetch, limit)
        return [r.record.product_id for r in rank(self._index, query, Filters(), k, 0.0, params)]

    def reload_if_changed(self) -> bool:
        """Switch to a newly published build (same model only). In-flight queries finish
        on the index they started with."""
        index_dir = self.settings.resolve_path(self.settings.index.dir)
        with self._index_lock:
            if current_build_dir(index_dir) == self._index.build_dir:
                return False
            fresh = open_configured_index(self.settings, self.identity)
            old, self._index = self._index, fresh
        log.info("switched to index %s (was %s)", fresh.manifest.build_id, old.manifest.build_id)
        return True

    async def watch_index(self, interval_s: float) -> None:
        """Switch to each newly published build, checking every `interval_s` seconds.
        A build that cannot be served is logged and the current one stays."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except IndexLoadError as exc:
                log.error("not switching to the new index: %s", exc)

    def close(self) -> None:
        self.batcher.close()
        self.queries.close()
        self.garments.close()
        self._cpu_pool.shutdown(wait=False, cancel_futures=True)
