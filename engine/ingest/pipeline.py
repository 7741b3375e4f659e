"""Build an index from a feed: read -> fetch -> decode -> embed -> write -> publish.

Fetching and decoding run ahead of the model in bounded stages, so the model is the only
thing a build waits for. Images whose bytes are unchanged since the served build reuse
their stored vectors (incremental rebuilds). The result is published atomically.
"""

from __future__ import annotations

import asyncio
import csv
import fcntl
import hashlib
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.catalog import ImageRecord
from engine.config import Settings
from engine.embedder import Embedder, model_identity
from engine.images import ImageError
from engine.index import IndexLoadError, open_index
from engine.ingest.feed import FeedItem, Skipped, read_feed
from engine.ingest.fetch import FetchError, FetchSettings, ImageFetcher
from engine.ingest.ray_embed import (
    EMBED,
    REUSED,
    DecodeContext,
    RayOutcome,
    RayUnavailable,
    embed_on_ray,
)
from engine.store import (
    BUILDS_DIR,
    SKIPPED_FILE,
    Manifest,
    file_sha256,
    finish_build,
    new_build_id,
    publish,
    remove_stale_temp_builds,
    write_build_files,
)
from engine.types import Product

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The build cannot go on (another build running, nothing usable in the feed)."""


@dataclass(frozen=True)
class _ImageJob:
    ordinal: int
    item: FeedItem
    source: str


@dataclass
class BuildReport:
    build_id: str
    build_dir: Path
    products: int
    images: int
    embedded: int
    reused: int
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0
    embedded_on: str = "this machine"

    def summary(self) -> str:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        return (
            f"Index {self.build_id}: {self.products} products, {self.images} images "
            f"({self.embedded} embedded, {self.reused} reused), {len(self.skipped)} skipped, "
            f"in {self.seconds:.1f} s ({rate:.1f} images/s embedded on {self.embedded_on})."
        )


@contextmanager
def _build_lock(index_dir: Path) -> Iterator[None]:
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / ".build.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"another build is already running in {index_dir}") from None
        yield


@dataclass
class _PreviousBuild:
    """The served build's vectors by image content, for reuse: a memory map and a
    digest -> row map, so a rebuild of a million images does not load a million arrays."""

    rows_by_digest: dict[str, int] = field(default_factory=dict)
    vectors: np.ndarray | None = None

    def vector(self, digest: str) -> np.ndarray | None:
        row = self.rows_by_digest.get(digest)
        return None if row is None or self.vectors is None else self.vectors[row]


def _previous_build(index_dir: Path, embedder: Embedder) -> _PreviousBuild:
    """What the served build already embedded with the same model (nothing otherwise)."""
    try:
        previous = open_index(index_dir, model_identity(embedder), verify=True)
    except IndexLoadError as exc:
        if "No index found" not in str(exc):
            log.info("not reusing the previous build: %s", str(exc).splitlines()[0])
        return _PreviousBuild()
    try:
        rows = {record.sha256: record.key for record in previous.catalog.iter_images()}
        return _PreviousBuild(rows, previous.vectors)
    finally:
        previous.close()  # the catalog; the vectors stay memory-mapped


class _Embedding:
    """The decode and model stages, fed by `run` with prepared jobs."""

    def __init__(self, embedder: Embedder, settings: Settings, reuse: _PreviousBuild):
        self.embedder = embedder
        self.settings = settings
        self.reuse = reuse
        self.limits = settings.images
        self.vectors: dict[int, np.ndarray] = {}
        self.hashes: dict[int, str] = {}
        self.local_paths: dict[int, str] = {}
        self.skipped: list[Skipped] = []
        self.embedded = 0
        self.reused = 0
        self.embedded_on = "this machine"

    def _decode(self, data: bytes) -> torch.Tensor:
        return self.embedder.image_preprocessor.from_bytes(data, self.limits)

    def _skip(self, job: _ImageJob, reason: str) -> None:
        product_id = job.item.product.product_id
        self.skipped.append(Skipped(job.item.row, product_id, job.source, reason))

    async def run(self, jobs: list[_ImageJob], fetcher: ImageFetcher, progress: tqdm) -> None:
        loop = asyncio.get_running_loop()
        build = self.settings.build
        ready: asyncio.Queue[tuple[_ImageJob, torch.Tensor] | None] = asyncio.Queue(build.prefetch)
        in_flight = asyncio.Semaphore(build.prefetch)
        decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="build-decode")
        model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build-model")

        async def prepare(job: _ImageJob) -> None:
            try:
                fetched = await fetcher.fetch(job.source)
                digest = hashlib.sha256(fetched.data).hexdigest()
                self.hashes[job.ordinal] = digest
                self.local_paths[job.ordinal] = fetched.local_path
                reused = self.reuse.vector(digest)
                if reused is not None:
                    self.vectors[job.ordinal] = reused
                    self.reused += 1
                    progress.update()
                    return
                pixels = await loop.run_in_executor(decode_pool, self._decode, fetched.data)
                await ready.put((job, pixels))
            except (FetchError, ImageError) as exc:
                self._skip(job, str(exc))
                progress.update()
            except Exception as exc:  # one bad image never stops a build
                log.warning("unexpected error on %s: %r", job.source, exc)
                self._skip(job, f"unexpected error: {exc!r}")
                progress.update()
            finally:
                in_flight.release()

        async def produce() -> None:
            tasks = set()
            for job in jobs:
                await in_flight.acquire()
                task = asyncio.create_task(prepare(job))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            await ready.put(None)

        async def consume() -> None:
            finished = False
            while not finished:
                entry = await ready.get()
                if entry is None:
                    break
                batch = [entry]
                while len(batch) < build.batch_size:
                    try:
                        more = ready.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if more is None:
                        finished = True
                        break
                    batch.append(more)
                tensors = [pixels for _, pixels in batch]
                try:
                    vectors = await loop.run_in_executor(
                        model_pool, self.embedder.embed_image_tensors, tensors
                    )
                except Exception as exc:
                    for job, _ in batch:
                        self._skip(job, f"model failed on this batch: {exc!r}")
                    progress.update(len(batch))
                    continue
                for (job, _), vector in zip(batch, vectors, strict=True):
                    self.vectors[job.ordinal] = vector.astype(np.float16)
                self.embedded += len(batch)
                progress.update(len(batch))

        try:
            await asyncio.gather(produce(), consume())
        finally:
            decode_pool.shutdown(wait=True)
            model_pool.shutdown(wait=True)

    def run_on_ray(
        self,
        jobs: list[_ImageJob],
        base_dir: Path,
        cache_dir: Path,
        fetch: FetchSettings,
        address: str | None,
        progress: tqdm,
    ) -> None:
        """The same stages on a Ray cluster; only the results come back here."""
        build = self.settings.build
        context = DecodeContext(
            base_dir,
            cache_dir,
            fetch,
            self.limits,
            self.embedder.image_preprocessor,
            frozenset(self.reuse.rows_by_digest),
        )
        by_ordinal = {job.ordinal: job for job in jobs}
        outcomes = embed_on_ray(
            [(job.ordinal, job.source) for job in jobs],
            context,
            self.settings.model,
            self.settings.source.parent,
            address=address,
            batch_size=build.batch_size,
            cpus_per_actor=build.ray_cpus_per_actor,
            decode_workers=build.ray_decode_workers,
            on_plan=lambda plan: setattr(self, "embedded_on", plan.describe()),
        )
        try:
            self._record_ray_outcomes(outcomes, by_ordinal, progress)
        except RayUnavailable as exc:
            raise BuildError(str(exc)) from None

    def _record_ray_outcomes(
        self, outcomes: Iterable[RayOutcome], by_ordinal: dict[int, _ImageJob], progress: tqdm
    ) -> None:
        for outcome in outcomes:
            job = by_ordinal[outcome.ordinal]
            if outcome.digest:
                self.hashes[job.ordinal] = outcome.digest
                self.local_paths[job.ordinal] = outcome.local_path
            reused = self.reuse.vector(outcome.digest) if outcome.status == REUSED else None
            if outcome.status == EMBED and outcome.vector is not None:
                self.vectors[job.ordinal] = outcome.vector.astype(np.float16)
                self.embedded += 1
            elif reused is not None:
                self.vectors[job.ordinal] = reused
                self.reused += 1
            else:
                self._skip(job, outcome.reason or "not embedded")
            progress.update()


def _write_skipped(path: Path, skipped: list[Skipped]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "product_id", "image", "reason"])
        for s in sorted(skipped, key=lambda s: (s.row, s.image)):
            writer.writerow([s.row, s.product_id, s.image, s.reason])


async def build_index(
    settings: Settings,
    catalog_path: Path,
    index_dir: Path,
    embedder: Embedder,
    show_progress: bool = True,
    ray_address: str | None = None,
    use_ray: bool = False,
) -> BuildReport:
    """Build and publish an index of `catalog_path` into `index_dir`. With `use_ray`, the
    images are downloaded, decoded and embedded on a Ray cluster (`ray_address`, or a
    local Ray instance when None); everything else is the same as a local build."""
    started = time.perf_counter()
    with _build_lock(index_dir):
        remove_stale_temp_builds(index_dir)
        feed = read_feed(catalog_path, settings.catalog.columns)
        per_item: list[tuple[FeedItem, list[_ImageJob]]] = []
        jobs: list[_ImageJob] = []
        for item in feed.items:
            item_jobs = [_ImageJob(len(jobs) + i, item, src) for i, src in enumerate(item.images)]
            jobs.extend(item_jobs)
            per_item.append((item, item_jobs))
        if not jobs:
            raise BuildError(
                f"{catalog_path} has no usable product rows ({len(feed.skipped)} skipped)"
            )
        reuse = _previous_build(index_dir, embedder)
        stage = _Embedding(embedder, settings, reuse)
        build = settings.build
        cache_dir = (
            settings.resolve_path(build.cache_dir) if build.cache_dir else index_dir / "cache"
        )
        fetch_settings = FetchSettings.from_settings(build)
        with tqdm(total=len(jobs), unit="img", desc="Embedding", disable=not show_progress) as bar:
            if use_ray:
                await asyncio.to_thread(
                    stage.run_on_ray,
                    jobs,
                    catalog_path.parent,
                    cache_dir,
                    fetch_settings,
                    ray_address,
                    bar,
                )
            else:
                async with ImageFetcher(catalog_path.parent, cache_dir, fetch_settings) as f:
                    await stage.run(jobs, f, bar)

        products, records, rows = _assemble(per_item, stage, feed.skipped)
        if not rows:
            raise BuildError("no image in the catalog could be used; see skipped.csv reasons")

        build_id = new_build_id()
        tmp_dir = index_dir / BUILDS_DIR / f".tmp-{build_id}"
        tmp_dir.mkdir(parents=True)
        try:
            write_build_files(
                tmp_dir,
                np.stack(rows),
                products,
                records,
                settings.index,
                category_probe=build.category_probe,
            )
            skipped = feed.skipped + stage.skipped
            _write_skipped(tmp_dir / SKIPPED_FILE, skipped)
            seconds = time.perf_counter() - started
            manifest = Manifest(
                build_id=build_id,
                model=model_identity(embedder),
                dtype=settings.index.dtype,
                products=len(products),
                images=len(rows),
                skipped=len(skipped),
                built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                build_seconds=round(seconds, 3),
                catalog_sha256=file_sha256(catalog_path),
            )
            finish_build(tmp_dir, manifest)
            final_dir = publish(index_dir, tmp_dir, build_id, build.keep_builds)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    return BuildReport(
        build_id,
        final_dir,
        len(products),
        len(rows),
        stage.embedded,
        stage.reused,
        skipped,
        time.perf_counter() - started,
        stage.embedded_on,
    )


def _assemble(
    per_item: list[tuple[FeedItem, list[_ImageJob]]],
    stage: _Embedding,
    skipped: list[Skipped],
) -> tuple[list[Product], list[ImageRecord], list[np.ndarray]]:
    """Products with at least one embedded image, and their images as index rows.
    Keys follow feed order, so the same feed always yields the same index."""
    products: list[Product] = []
    records: list[ImageRecord] = []
    rows: list[np.ndarray] = []
    for item, item_jobs in per_item:
        pid = item.product.product_id
        digests_seen: set[str] = set()
        kept = []
        for job in item_jobs:
            digest = stage.hashes.get(job.ordinal)
            if job.ordinal not in stage.vectors or digest in digests_seen:
                continue  # failed (already reported), or the same picture twice
            digests_seen.add(digest or "")
            kept.append(job)
        if not kept:
            skipped.append(Skipped(item.row, pid, "", "no usable image; product left out"))
            continue
        products.append(replace(item.product, image=kept[0].source))
        for job in kept:
            records.append(
                ImageRecord(
                    len(rows),
                    pid,
                    job.source,
                    stage.local_paths.get(job.ordinal),
                    stage.hashes[job.ordinal],
                )
            )
            rows.append(stage.vectors[job.ordinal])
    return products, records, rows
