"""Build an index from a feed, top-down: read the feed -> one record per image ->
fetch, decode and embed them (here, or on a Ray cluster), reusing the vectors of images
unchanged since the served build -> assemble products and rows -> write -> publish.

The result is published atomically; a failed or killed build leaves the served one as it was.
"""

from __future__ import annotations

import asyncio
import csv
import fcntl
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from engine.catalog import ImageRecord
from engine.config import Settings
from engine.embedder import Embedder, model_identity
from engine.index import IndexLoadError, open_index
from engine.ingest.disk_space import (
    build_bytes,
    disk_full_message,
    is_disk_full,
    surely_too_little,
)
from engine.ingest.feed import Feed, Skipped
from engine.ingest.feed_download import download_feed
from engine.ingest.feed_formats import FeedOrigin, read_catalog
from engine.ingest.feed_image import FeedImage, ImageStatus, feed_images
from engine.ingest.fetch import FetchSettings, ImageFetcher, is_url
from engine.ingest.local_embed import LocalEmbedding
from engine.ingest.ray_embed import (
    ClusterPlan,
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
    write_colour_file,
)
from engine.types import Product

log = logging.getLogger(__name__)

FAILED_BUILD_SKIPPED_FILE = "skipped-failed-build.csv"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class BuildError(RuntimeError):
    """The build cannot go on (another build running, nothing usable in the feed)."""


async def build_index(
    settings: Settings,
    catalog: Path | str,
    index_dir: Path,
    embedder: Embedder,
    show_progress: bool = True,
    ray_address: str | None = None,
    use_ray: bool = False,
) -> BuildReport:
    """Build and publish an index of `catalog` (a feed file, or its http(s) URL) into
    `index_dir`. With `use_ray`, the images are downloaded, decoded and embedded on a Ray
    cluster (`ray_address`, or a local Ray instance when None); everything else is the
    same as a local build."""
    started = time.perf_counter()
    with _build_lock(index_dir):
        remove_stale_temp_builds(index_dir)
        catalog_path, origin = await _local_feed(settings, catalog, index_dir)
        feed = read_catalog(catalog_path, settings.catalog.columns, origin)
        images = feed_images(feed.items)
        if not images:
            report = _write_failed_skipped(index_dir, feed.skipped)
            raise BuildError(
                f"{catalog} has no usable product rows ({len(feed.skipped)} skipped; "
                f"each row's reason is in {report})"
            )
        reuse = _previous_build(index_dir, embedder)
        sources = _Sources.of(settings, catalog_path, index_dir)
        embedded_on = await _embed_all(
            images, embedder, settings, reuse, sources, show_progress, ray_address, use_ray
        )
        built = _assemble(feed, images)
        if not built.rows:
            report = _write_failed_skipped(index_dir, built.skipped)
            raise BuildError(f"no image in the catalog could be used; the reasons are in {report}")
        final_dir = _write_and_publish(index_dir, built, settings, embedder, catalog_path, started)
        (index_dir / FAILED_BUILD_SKIPPED_FILE).unlink(missing_ok=True)  # an earlier failure's
    return BuildReport(
        final_dir.name,
        final_dir,
        len(built.products),
        len(built.rows),
        sum(image.status is ImageStatus.EMBEDDED for image in images),
        sum(image.status is ImageStatus.REUSED for image in images),
        built.skipped,
        time.perf_counter() - started,
        embedded_on,
    )


async def _embed_all(
    images: list[FeedImage],
    embedder: Embedder,
    settings: Settings,
    reuse: _PreviousBuild,
    sources: _Sources,
    show_progress: bool,
    ray_address: str | None,
    use_ray: bool,
) -> str:
    """Every image embedded (or reused) here or on Ray, under one progress bar: where."""
    progress = tqdm(total=len(images), unit="img", desc="Embedding", disable=not show_progress)
    with progress:
        if use_ray:
            return await asyncio.to_thread(
                _embed_on_ray, images, embedder, settings, reuse, sources, ray_address, progress
            )
        return await _embed_here(images, embedder, settings, reuse, sources, progress)


async def _local_feed(
    settings: Settings, catalog: Path | str, index_dir: Path
) -> tuple[Path, FeedOrigin]:
    """The feed as a file (a URL's download goes under the cache's feeds/), and where it
    came from."""
    shop = settings.catalog
    if isinstance(catalog, str) and is_url(catalog):
        folder = _cache_dir(settings, index_dir) / "feeds"
        path = await download_feed(catalog, folder, settings.build)
        return path, FeedOrigin(catalog, shop.shop_url, shop.currency)
    return Path(catalog), FeedOrigin("", shop.shop_url, shop.currency)


def _cache_dir(settings: Settings, index_dir: Path) -> Path:
    cache_dir = settings.build.cache_dir
    return settings.resolve_path(cache_dir) if cache_dir else index_dir / "cache"


@dataclass(frozen=True)
class _Sources:
    """Where a build's images come from: paths relative to the feed's folder, or URLs
    (downloads cached under `build.cache_dir`, by default the index's cache/)."""

    base_dir: Path
    cache_dir: Path
    fetch: FetchSettings

    @classmethod
    def of(cls, settings: Settings, catalog_path: Path, index_dir: Path) -> _Sources:
        build = settings.build
        roots = tuple(settings.resolve_path(root) for root in build.image_roots)
        return cls(
            catalog_path.parent,
            _cache_dir(settings, index_dir),
            FetchSettings.from_settings(build, roots),
        )


async def _embed_here(
    images: list[FeedImage],
    embedder: Embedder,
    settings: Settings,
    reuse: _PreviousBuild,
    sources: _Sources,
    progress: tqdm[Any],
) -> str:
    async with ImageFetcher(sources.base_dir, sources.cache_dir, sources.fetch) as fetcher:
        stages = LocalEmbedding(embedder, settings, reuse.vector, fetcher, progress)
        await stages.run(images)
    if stages.cropper is not None:
        log.info(
            "build.crop_to_category: %d photos embedded as their garment", stages.cropper.cropped
        )
    return "this machine"


def _embed_on_ray(
    images: list[FeedImage],
    embedder: Embedder,
    settings: Settings,
    reuse: _PreviousBuild,
    sources: _Sources,
    address: str | None,
    progress: tqdm[Any],
) -> str:
    """The same stages on a Ray cluster; only the results come back here."""
    build = settings.build
    if build.crop_to_category:
        log.warning("build.crop_to_category applies to builds on this machine only: ignored")
    context = DecodeContext(
        sources.base_dir,
        sources.cache_dir,
        sources.fetch,
        settings.images,
        embedder.image_preprocessor,
        frozenset(reuse.rows_by_digest),
    )
    plans: list[ClusterPlan] = []
    outcomes = embed_on_ray(
        [(ordinal, image.source) for ordinal, image in enumerate(images)],
        context,
        settings.model,
        settings.source.parent,
        address=address,
        batch_size=build.batch_size,
        cpus_per_actor=build.ray_cpus_per_actor,
        decode_workers=build.ray_decode_workers,
        on_plan=plans.append,
    )
    try:
        for outcome in outcomes:
            _take_outcome(images[outcome.ordinal], outcome, reuse)
            progress.update()
    except RayUnavailable as exc:
        raise BuildError(str(exc)) from None
    return plans[0].describe() if plans else "Ray"


def _take_outcome(image: FeedImage, outcome: RayOutcome, reuse: _PreviousBuild) -> None:
    if outcome.digest:
        image.fetched(outcome.digest, outcome.local_path)
    stored = reuse.vector(outcome.digest) if outcome.status is ImageStatus.REUSED else None
    if outcome.status is ImageStatus.EMBEDDED and outcome.vector is not None:
        image.embedded(outcome.vector)
    elif stored is not None:
        image.reused(stored)
    else:
        image.skip(outcome.reason or "not embedded")


@dataclass
class _Built:
    """What the index will hold: products, their images as rows, and what was skipped."""

    products: list[Product] = field(default_factory=list)
    records: list[ImageRecord] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    colours: dict[str, np.ndarray] = field(default_factory=dict)  # by content digest

    def add(self, product: Product, images: list[FeedImage]) -> None:
        self.products.append(replace(product, image=images[0].source))
        for image in images:
            if image.colour is not None:
                self.colours[image.digest] = image.colour
            self.records.append(
                ImageRecord(
                    len(self.rows), product.product_id, image.source, image.local_path, image.digest
                )
            )
            self.rows.append(cast(np.ndarray, image.vector))  # usable: it has a vector


def _assemble(feed: Feed, images: list[FeedImage]) -> _Built:
    """Products with at least one usable image, and those images as index rows. Keys
    follow feed order, so the same feed always yields the same index."""
    built = _Built(skipped=list(feed.skipped))
    for _, group in groupby(images, key=lambda image: image.item.row):
        product_images = list(group)
        item = product_images[0].item
        built.skipped += [i.skipped() for i in product_images if i.status is ImageStatus.SKIPPED]
        kept = _distinct_usable(product_images)
        if kept:
            built.add(item.product, kept)
        else:
            pid = item.product.product_id
            built.skipped.append(Skipped(item.row, pid, "", "no usable image; product left out"))
    return built


def _distinct_usable(images: list[FeedImage]) -> list[FeedImage]:
    """The usable images, each picture once (a product may list the same one twice)."""
    seen: set[str] = set()
    kept = []
    for image in images:
        if image.usable and image.digest not in seen:
            seen.add(image.digest)
            kept.append(image)
    return kept


def _write_and_publish(
    index_dir: Path,
    built: _Built,
    settings: Settings,
    embedder: Embedder,
    catalog_path: Path,
    started: float,
) -> Path:
    """Write the build under builds/.tmp-<id>/, then publish it; removed if anything fails."""
    build_id = new_build_id()
    tmp_dir = index_dir / BUILDS_DIR / f".tmp-{build_id}"
    tmp_dir.mkdir(parents=True)
    dim = int(built.rows[0].shape[0])
    needed = build_bytes(len(built.rows), dim, len(built.products))
    if surely_too_little(tmp_dir, len(built.rows), dim):
        tmp_dir.rmdir()
        raise BuildError(disk_full_message(index_dir, needed))
    try:
        write_build_files(
            tmp_dir,
            np.stack(built.rows),
            built.products,
            built.records,
            settings.index,
            category_probe=settings.build.category_probe,
        )
        write_colour_file(tmp_dir, built.records, settings, index_dir, built.colours)
        _write_skipped(tmp_dir / SKIPPED_FILE, built.skipped)
        manifest = Manifest(
            build_id=build_id,
            model=model_identity(embedder),
            dtype=settings.index.dtype,
            products=len(built.products),
            images=len(built.rows),
            skipped=len(built.skipped),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            build_seconds=round(time.perf_counter() - started, 3),
            catalog_sha256=file_sha256(catalog_path),
        )
        finish_build(tmp_dir, manifest)
        return publish(index_dir, tmp_dir, build_id, settings.build.keep_builds)
    except BaseException as exc:
        disk_full = is_disk_full(exc, index_dir)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if disk_full:
            raise BuildError(disk_full_message(index_dir, needed)) from None
        raise


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


def _write_failed_skipped(index_dir: Path, skipped: list[Skipped]) -> Path:
    """The skip report of a build that published nothing: beside builds/, replaced by the
    next failed build (a published build keeps its own in its folder)."""
    path = index_dir / FAILED_BUILD_SKIPPED_FILE
    _write_skipped(path, skipped)
    return path


def _write_skipped(path: Path, skipped: list[Skipped]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "product_id", "image", "reason"])
        for s in sorted(skipped, key=lambda s: (s.row, s.image)):
            writer.writerow(
                [s.row, *(spreadsheet_safe(c) for c in (s.product_id, s.image, s.reason))]
            )


def spreadsheet_safe(cell: str) -> str:
    """A cell a spreadsheet shows as text: one that would start a formula (=, +, -, @, or
    a tab or carriage return before one) gets a leading apostrophe."""
    return f"'{cell}" if cell.startswith(_FORMULA_STARTS) else cell
