"""Embed a catalog's images on a Ray cluster (`index_builder.py build --ray [ADDRESS]`).

Two Ray Data stages: download/decode workers (an actor pool on CPUs: the same fetcher,
cache and decoding as a local build) and model actors (one per GPU, or a few CPUs each),
fed by `map_batches`. Only the embeddings come back to the driver, which assembles and
publishes the index exactly as a local build does. Every node needs fashionbot installed
(the same Docker image) and must see the same image files or URLs and model weights.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import ImageSettings, ModelSettings
from engine.embedder import ImagePreprocessor, load_embedder
from engine.images import ImageError
from engine.ingest.feed_image import ImageStatus
from engine.ingest.fetch import FetchError, FetchSettings, ImageFetcher, keep_in_cache

log = logging.getLogger(__name__)


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


@dataclass(frozen=True)
class RayOutcome:
    """What happened to one image: embedded (vector), unchanged (reuse), or skipped."""

    ordinal: int
    status: ImageStatus
    digest: str = ""
    local_path: str = ""
    reason: str = ""
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class DecodeContext:
    """Everything a download/decode worker needs; no model."""

    base_dir: Path
    cache_dir: Path
    fetch: FetchSettings
    limits: ImageSettings
    preprocessor: ImagePreprocessor
    known_digests: frozenset[str]


class FetchAndDecode:
    """Ray Data callable class: a batch of (ordinal, source) -> pixels or a reason."""

    def __init__(self, context: DecodeContext) -> None:
        self.context = context

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = [str(s) for s in batch["source"]]
        fetched = asyncio.run(self._fetch_all(sources))
        rows = [self._prepare(result) for result in fetched]
        return {
            "ordinal": np.asarray(batch["ordinal"], dtype=np.int64),
            "status": np.array([r[0] for r in rows], dtype=object),
            "digest": np.array([r[1] for r in rows], dtype=object),
            "local_path": np.array([r[2] for r in rows], dtype=object),
            "reason": np.array([r[3] for r in rows], dtype=object),
            "pixels": np.array([r[4] for r in rows], dtype=object),
        }

    async def _fetch_all(self, sources: list[str]) -> list[Any]:
        context = self.context
        async with ImageFetcher(context.base_dir, context.cache_dir, context.fetch) as fetcher:
            return await asyncio.gather(
                *(fetcher.fetch(source) for source in sources), return_exceptions=True
            )

    def _prepare(self, fetched: Any) -> tuple[str, str, str, str, bytes]:
        """(status, digest, local path, reason, pixels); plain values, for the wire."""
        skipped = ImageStatus.SKIPPED.value
        if isinstance(fetched, FetchError):
            return skipped, "", "", str(fetched), b""
        if isinstance(fetched, BaseException):
            return skipped, "", "", f"unexpected error: {fetched!r}", b""
        digest = hashlib.sha256(fetched.data).hexdigest()
        if digest in self.context.known_digests:
            keep_in_cache(fetched)
            return ImageStatus.REUSED.value, digest, fetched.local_path, "", b""
        try:
            pixels = self.context.preprocessor.from_bytes(fetched.data, self.context.limits).numpy()
        except ImageError as exc:
            return skipped, digest, fetched.local_path, str(exc), b""
        except Exception as exc:  # one bad image never stops a build
            return skipped, digest, fetched.local_path, f"unexpected error: {exc!r}", b""
        keep_in_cache(fetched)  # only what decodes is cached
        return ImageStatus.EMBED.value, digest, fetched.local_path, "", pixels.tobytes()


class EmbedOnActor:
    """Ray Data callable class holding the model: embeds the rows marked EMBED (and marks
    them EMBEDDED)."""

    def __init__(
        self, model: ModelSettings, base_dir: Path | None, image_size: int, uint8_pixels: bool
    ) -> None:
        self.embedder = load_embedder(model, base_dir)
        self.shape = (3, image_size, image_size)
        self.pixel_dtype = np.uint8 if uint8_pixels else np.float32

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        vectors = np.zeros((len(batch["ordinal"]), self.embedder.dim), dtype=np.float16)
        statuses = np.array(batch["status"], dtype=object)
        todo = [i for i, status in enumerate(statuses) if status == ImageStatus.EMBED.value]
        if todo:
            pixels = torch.stack(
                [
                    torch.from_numpy(
                        np.frombuffer(batch["pixels"][i], dtype=self.pixel_dtype).reshape(
                            self.shape
                        )
                    )
                    for i in todo
                ]
            )
            vectors[todo] = self.embedder.embed_image_tensors(pixels).astype(np.float16)
        statuses[todo] = ImageStatus.EMBEDDED.value
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["status"], out["vector"] = statuses, vectors
        return out


@dataclass(frozen=True)
class ClusterPlan:
    decode_workers: int
    model_actors: int
    cpus_per_actor: float
    gpus_per_actor: float

    def describe(self) -> str:
        each = (
            f"{self.gpus_per_actor:g} GPU"
            if self.gpus_per_actor
            else f"{self.cpus_per_actor:g} CPUs"
        )
        return (
            f"Ray: {self.model_actors} model actor(s) with {each} each, "
            f"{self.decode_workers} download/decode worker(s)"
        )


def plan_cluster(
    resources: dict[str, float], cpus_per_actor: int, decode_workers: int
) -> ClusterPlan:
    """How many workers of each kind the cluster's resources allow."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = int(resources.get("GPU", 0))
    if gpus:
        # A GPU embeds faster than dozens of cores decode (docs/scaling.md): every CPU not
        # driving a GPU decodes.
        return ClusterPlan(decode_workers or max(1, cpus - gpus), gpus, 1, 1)
    # On CPUs the model is the cost (decoding is a few % of it): most cores go to the model.
    decoders = decode_workers or max(1, cpus // 8)
    left = max(1, cpus - decoders)
    per_actor = min(cpus_per_actor, left)
    return ClusterPlan(decoders, max(1, left // per_actor), per_actor, 0)


def _connect(address: str | None) -> tuple[Any, bool]:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "Ray is not installed: pip install 'fashionbot[ray]' (or pip install 'ray[data]')"
        ) from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as exc:
        raise RayUnavailable(f"Cannot start or reach Ray at {address or 'local'}: {exc}") from exc
    return ray, True


def embed_on_ray(
    sources: list[tuple[int, str]],
    context: DecodeContext,
    model: ModelSettings,
    model_base_dir: Path | None,
    *,
    address: str | None,
    batch_size: int,
    cpus_per_actor: int,
    decode_workers: int,
    on_plan: Callable[[ClusterPlan], None] = lambda plan: None,
) -> Iterator[RayOutcome]:
    """Yield one RayOutcome per (ordinal, source), in no particular order."""
    ray, started_here = _connect(address)
    try:
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False  # the builder shows its own
        plan = plan_cluster(ray.cluster_resources(), cpus_per_actor, decode_workers)
        on_plan(plan)
        dataset = ray.data.from_items(
            [{"ordinal": ordinal, "source": source} for ordinal, source in sources]
        )
        embedded = dataset.map_batches(
            FetchAndDecode,
            fn_constructor_kwargs={"context": context},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.decode_workers),
            num_cpus=1,
            batch_format="numpy",
        ).map_batches(
            EmbedOnActor,
            fn_constructor_kwargs={
                "model": model,
                "base_dir": model_base_dir,
                "image_size": context.preprocessor.image_size,
                "uint8_pixels": context.preprocessor.yields_uint8,
            },
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=plan.model_actors),
            num_cpus=plan.cpus_per_actor,
            num_gpus=plan.gpus_per_actor,
            batch_format="numpy",
        )
        for batch in embedded.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield from _outcomes(batch)
    finally:
        if started_here:
            ray.shutdown()


def _outcomes(batch: dict[str, np.ndarray]) -> Iterator[RayOutcome]:
    for i, ordinal in enumerate(batch["ordinal"]):
        status = ImageStatus(str(batch["status"][i]))
        yield RayOutcome(
            int(ordinal),
            status,
            str(batch["digest"][i]),
            str(batch["local_path"][i]),
            str(batch["reason"][i]),
            np.asarray(batch["vector"][i]) if status is ImageStatus.EMBEDDED else None,
        )
