"""A query's vector: photos decoded and preprocessed on a CPU pool, then embedded with
other shoppers' photos and texts in one forward pass on the model thread (micro-batched).
The decoded photos also give the query's colour descriptor (engine.colour), when the
colour re-score is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from PIL import Image

from engine import colour
from engine.batcher import MicroBatcher
from engine.config import Settings
from engine.embedder import Embedder
from engine.images import decode_image
from engine.types import TextSearchUnavailable


@dataclass(frozen=True)
class _ModelJob:
    pixels: torch.Tensor | None = None
    text: str | None = None
    # A photo's garment crops: their vectors come back as one matrix, whatever else is
    # queued, and they go through the model a few at a time (`_embed_in_passes`).
    together: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class EncodedQuery:
    vector: np.ndarray  # unit length
    colour: np.ndarray | None = None  # the photos' colour descriptor, when asked for


def _embed_in_passes(
    embedder: Embedder, pixels: Sequence[torch.Tensor], images_per_pass: int
) -> np.ndarray:
    """The images' vectors, `images_per_pass` at a time: a pass's activations grow with its
    images (imagenet-lite0: ~18 MiB per image beyond the first, and glibc keeps much of
    it). In fp32 a row's vector does not depend on the other images of its pass; in int8
    it moves within rounding (engine/quantize.py)."""
    return np.concatenate(
        [
            embedder.embed_image_tensors(pixels[start : start + images_per_pass])
            for start in range(0, len(pixels), images_per_pass)
        ]
    )


def _run_model_jobs(
    embedder: Embedder, jobs: Sequence[_ModelJob], crops_per_pass: int
) -> list[np.ndarray]:
    """One forward pass for the shoppers' photos of a batch (batching is what makes a
    burst cheap), its garment crops in passes of at most `crops_per_pass`, one for its
    texts."""
    out: list[np.ndarray | None] = [None] * len(jobs)
    photo_slots = [i for i, job in enumerate(jobs) if job.pixels is not None]
    crop_slots = [i for i, job in enumerate(jobs) if job.together]
    text_slots = [i for i, job in enumerate(jobs) if job.text is not None]
    if photo_slots:
        photos = [cast(torch.Tensor, jobs[i].pixels) for i in photo_slots]  # not None
        for slot, vector in zip(photo_slots, embedder.embed_image_tensors(photos), strict=True):
            out[slot] = vector
    if crop_slots:
        crops = [crop for i in crop_slots for crop in jobs[i].together]
        vectors = _embed_in_passes(embedder, crops, crops_per_pass)
        ends = np.cumsum([len(jobs[i].together) for i in crop_slots])
        for slot, end in zip(crop_slots, ends, strict=True):
            out[slot] = vectors[end - len(jobs[slot].together) : end]
    if text_slots:
        vectors = embedder.embed_texts([jobs[i].text or "" for i in text_slots])
        for slot, vector in zip(text_slots, vectors, strict=True):
            out[slot] = vector
    return [v for v in out if v is not None]


def _normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class _PhotosOnTheirWay:
    """How many query photos are being decoded: the model batch waits for these (up to
    `model.companion_wait_ms`), never for strangers."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count

    @contextmanager
    def decoding(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


class QueryEncoder:
    def __init__(self, embedder: Embedder, settings: Settings, cpu_pool: Executor) -> None:
        """`cpu_pool` decodes; `model.*` sizes the batches, `garments.crops_per_pass` the
        passes of garment crops, `search.flip_augment` adds each photo's mirror image,
        `search.colour_weight` > 0 describes each photo's colour, `images.*` are the
        decoding limits."""
        self.embedder = embedder
        self._limits = settings.images
        self._cpu_pool = cpu_pool
        self._flip = settings.search.flip_augment
        self._describe_colour = settings.search.colour_weight > 0
        self._on_their_way = _PhotosOnTheirWay()
        model = settings.model
        self.batcher: MicroBatcher[_ModelJob, np.ndarray] = MicroBatcher(
            lambda jobs: _run_model_jobs(embedder, jobs, settings.garments.crops_per_pass),
            max_batch=model.max_batch,
            max_wait_ms=model.max_wait_ms,
            max_queue=model.max_queue,
            on_their_way=self._on_their_way,
            companion_wait_ms=model.companion_wait_ms,
        )

    def _model_views(self, data: bytes) -> tuple[list[torch.Tensor], np.ndarray | None]:
        """The photo's pixels for the model (and its mirror image with flip_augment), and
        its colour descriptor when the colour re-score wants one."""
        preprocessor = self.embedder.image_preprocessor
        image = decode_image(data, self._limits, draft_size=preprocessor.image_size)
        described = colour.describe(image) if self._describe_colour else None
        pixels = preprocessor(image)
        views = [pixels, torch.flip(pixels, dims=[2])] if self._flip else [pixels]
        return views, described

    async def embed(
        self, images: Sequence[bytes], text: str | None, text_weight: float
    ) -> np.ndarray:
        """The query vector for photos (several are averaged: an album is one look), a
        text, or photos refined by a text (weighted by `text_weight`)."""
        return (await self.encode(images, text, text_weight)).vector

    async def encode(
        self, images: Sequence[bytes], text: str | None, text_weight: float
    ) -> EncodedQuery:
        """`embed`'s vector, with the photos' colour descriptor (when the re-score is on)."""
        if not images and not (text and text.strip()):
            raise ValueError("a search needs a photo or some text")
        if text and not self.embedder.text_search:
            if not images:
                name = self.embedder.spec.configured_name
                raise TextSearchUnavailable(f"model {name!r} has no text encoder: search by photo")
            text = None  # a caption cannot refine; `SearchPage.text_ignored` says so
        submitted = [await self._submit_photo(data) for data in images]
        image_futures = [future for futures, _ in submitted for future in futures]
        text_future = self.batcher.submit_async(_ModelJob(text=text)) if text else None
        vector = np.zeros(self.embedder.dim, dtype=np.float32)
        if image_futures:
            vector += _normalise(np.mean(await asyncio.gather(*image_futures), axis=0))
        if text_future is not None:
            vector += (text_weight if images else 1.0) * await text_future
        described = [d for _, d in submitted if d is not None]
        return EncodedQuery(_normalise(vector), colour.combine(described))

    async def _submit_photo(
        self, data: bytes
    ) -> tuple[list[asyncio.Future[np.ndarray]], np.ndarray | None]:
        """Decode on the CPU pool, then queue each view for the model."""
        loop = asyncio.get_running_loop()
        with self._on_their_way.decoding():
            views, described = await loop.run_in_executor(self._cpu_pool, self._model_views, data)
            # queued now (not when awaited), before this photo stops counting as on its way
            futures = [asyncio.wrap_future(self.batcher.submit(_ModelJob(pixels=v))) for v in views]
            return futures, described

    async def embed_pixels(self, pixels: Sequence[torch.Tensor]) -> np.ndarray:
        """Preprocessed images embedded in one forward pass (one row each)."""
        return await self.batcher.submit_async(_ModelJob(together=tuple(pixels)))

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        vectors = await asyncio.gather(
            *(self.batcher.submit_async(_ModelJob(text=t)) for t in texts)
        )
        return np.stack(vectors)

    async def warm_up(self) -> None:
        """One image and one text through the worker, so the first shopper does not pay
        for lazy initialisation."""
        size = self.embedder.image_size
        blank = self.embedder.preprocess_image(Image.new("RGB", (size, size), "white"))
        await self.batcher.submit_async(_ModelJob(pixels=blank))
        if self.embedder.text_search:
            await self.batcher.submit_async(_ModelJob(text="a photo of a garment"))

    def close(self) -> None:
        self.batcher.close()
