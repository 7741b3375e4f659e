"""The build's fetch, decode and model stages on this machine.

Fetching and decoding run ahead of the model in bounded stages (`build.prefetch` images
in flight), so the model is the only thing a build waits for.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engine.catalog_crop import CategoryCropper
from engine.colour import describe_bytes
from engine.config import Settings
from engine.embedder import Embedder
from engine.images import ImageError
from engine.ingest.feed_image import FeedImage, ImageStatus
from engine.ingest.fetch import FetchError, ImageFetcher, keep_in_cache

log = logging.getLogger(__name__)

_Decoded = tuple[FeedImage, torch.Tensor]


class LocalEmbedding:
    """One run of the stages over a build's images; each image's record is filled in."""

    def __init__(
        self,
        embedder: Embedder,
        settings: Settings,
        reuse: Callable[[str], np.ndarray | None],
        fetcher: ImageFetcher,
        progress: tqdm[Any],
    ) -> None:
        self._embedder = embedder
        self._limits = settings.images
        self._batch_size = settings.build.batch_size
        self._describe_colour = settings.build.colour_descriptors
        self._reuse = reuse
        self._fetcher = fetcher
        self._progress = progress
        self._ready: asyncio.Queue[_Decoded | None] = asyncio.Queue(settings.build.prefetch)
        self._in_flight = asyncio.Semaphore(settings.build.prefetch)
        self._no_more = False
        self._decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="build-decode")
        self._model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build-model")
        self.cropper = (
            CategoryCropper(settings.garments, settings.images, embedder.image_preprocessor)
            if settings.build.crop_to_category
            else None
        )

    async def run(self, images: list[FeedImage]) -> None:
        try:
            await asyncio.gather(self._fetch_and_decode(images), self._embed_batches())
        finally:
            self._decode_pool.shutdown(wait=True)
            self._model_pool.shutdown(wait=True)

    async def _fetch_and_decode(self, images: list[FeedImage]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        for image in images:
            await self._in_flight.acquire()
            task = asyncio.create_task(self._prepare(image))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
        await self._ready.put(None)

    async def _prepare(self, image: FeedImage) -> None:
        """Fetch; reuse the served build's vector for unchanged bytes, or decode for the model."""
        category = image.item.product.category
        try:
            fetched = await self._fetcher.fetch(image.source)
            image.fetched(hashlib.sha256(fetched.data).hexdigest(), fetched.local_path)
            # A cropped vector depends on the product's category, not only on the bytes.
            croppable = self.cropper is not None and self.cropper.wanted(category)
            stored = None if croppable else self._reuse(image.digest)
            if stored is not None:
                await asyncio.to_thread(keep_in_cache, fetched)
                image.reused(stored)
                self._progress.update()
                return
            loop = asyncio.get_running_loop()
            decode = partial(self._decode, fetched.data, category, image.digest)
            pixels, image.colour = await loop.run_in_executor(self._decode_pool, decode)
            await asyncio.to_thread(keep_in_cache, fetched)  # only what decodes is cached
            image.status = ImageStatus.EMBED
            await self._ready.put((image, pixels))
        except (FetchError, ImageError) as exc:
            self._skip(image, str(exc))
        except Exception as exc:  # one bad image never stops a build
            log.warning("unexpected error on %s: %r", image.source, exc)
            self._skip(image, f"unexpected error: {exc!r}")
        finally:
            self._in_flight.release()

    def _decode(
        self, data: bytes, category: str, digest: str
    ) -> tuple[torch.Tensor, np.ndarray | None]:
        """The model's input and, for `build.colour_descriptors`, the colour descriptor
        of the same bytes: described here, beside the model, rather than by reading every
        file again once the model is done (7% of a 3,409-photo build's time)."""
        if self.cropper is not None:  # build.crop_to_category
            pixels = self.cropper.pixels(data, category, digest)
        else:
            pixels = self._embedder.image_preprocessor.from_bytes(data, self._limits)
        return pixels, self._colour_of(data) if self._describe_colour else None

    def _colour_of(self, data: bytes) -> np.ndarray | None:
        """Kept in float16, as the colour file stores it (held for every image until the
        build is written)."""
        try:
            described = describe_bytes(data, self._limits)
            return None if described is None else described.astype(np.float16)
        except Exception:  # a descriptor never costs the image its place in the index
            log.warning("no colour descriptor for an image", exc_info=True)
            return None

    def _skip(self, image: FeedImage, reason: str) -> None:
        image.skip(reason)
        self._progress.update()

    async def _embed_batches(self) -> None:
        while batch := await self._next_batch():
            await self._embed(batch)

    async def _next_batch(self) -> list[_Decoded]:
        """What is decoded, up to `build.batch_size`, waiting only for the first; empty
        once every image has been through."""
        if self._no_more:
            return []
        batch: list[_Decoded] = []
        entry = await self._ready.get()
        while entry is not None:
            batch.append(entry)
            if len(batch) == self._batch_size:
                return batch
            try:
                entry = self._ready.get_nowait()
            except asyncio.QueueEmpty:
                return batch
        self._no_more = True
        return batch

    async def _embed(self, batch: list[_Decoded]) -> None:
        loop = asyncio.get_running_loop()
        pixels = [tensor for _, tensor in batch]
        try:
            vectors = await loop.run_in_executor(
                self._model_pool, self._embedder.embed_image_tensors, pixels
            )
        except Exception as exc:
            for image, _ in batch:
                image.skip(f"model failed on this batch: {exc!r}")
        else:
            for (image, _), vector in zip(batch, vectors, strict=True):
                image.embedded(vector)
        self._progress.update(len(batch))
