"""The index on disk: its layout, manifest and checksums, writing a build and publishing it
atomically. Serving it is `engine.index`; the graph inside it, `engine.graph`.

Layout of `index.dir`:

    CURRENT                  the id of the build being served (replaced atomically)
    builds/<id>/manifest.json
    builds/<id>/vectors.npy  float16 embeddings, row = key (kept so the graph can be
                             rebuilt with other settings, and results re-ranked exactly)
    builds/<id>/ann.usearch  HNSW graph over the same rows, served memory-mapped
    builds/<id>/catalog.sqlite
    builds/<id>/category_probe.npz  the catalog's category classifier (engine.category),
                             when its products have categories
    builds/<id>/colour.npz   each image's colour descriptor (engine.colour), when the
                             build could read the images
    builds/<id>/skipped.csv  rows and images the build skipped, with the reason
    cache/                   downloaded images, keyed by URL (survives rebuilds)

A build is written under builds/.tmp-<id>/ and renamed into place; CURRENT changes only
after everything is on disk, so a killed build never touches what is being served.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import usearch

from engine.catalog import Catalog, CatalogWriter, ImageRecord
from engine.category import PROBE_FILE, train_probe
from engine.colour import COLOUR_FILE, ColourTable, colour_table
from engine.config import IndexSettings, Settings
from engine.graph import GRAPH_METRIC, write_ann
from engine.types import Product

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
BUILDS_DIR = "builds"
MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.usearch"
CATALOG_FILE = "catalog.sqlite"
SKIPPED_FILE = "skipped.csv"
CHECKSUMMED_FILES = (VECTORS_FILE, ANN_FILE, CATALOG_FILE)
# Written only when the catalog allows (a probe needs categories, colour descriptors need
# the images' files); checksummed when there.
OPTIONAL_FILES = (PROBE_FILE, COLOUR_FILE)
READ_ONLY_MODE = 0o444
_BUILD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    pretrained: str
    dim: int
    fingerprint: str
    preprocess: str = "crop"
    # The arithmetic the vectors were computed in; informational: serving in another
    # precision is allowed (manifests from before it was recorded: fp32).
    precision: str = "fp32"


@dataclass
class Manifest:
    build_id: str
    model: ModelIdentity
    dtype: str
    metric: str = GRAPH_METRIC
    format_version: int = FORMAT_VERSION
    usearch_version: str = usearch.__version__
    products: int = 0
    images: int = 0
    skipped: int = 0
    built_at: str = ""
    build_seconds: float = 0.0
    catalog_sha256: str = ""
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["model"] = ModelIdentity(**raw["model"])
        return cls(**raw)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def new_build_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 100000:05d}"


class IndexLoadError(RuntimeError):
    """An index that must not be served: missing, corrupt, or built with another model."""


def current_build_dir(index_dir: Path) -> Path | None:
    """The folder CURRENT names under builds/; None when there is no CURRENT (or it is
    empty). IndexLoadError when it holds anything but a build id."""
    pointer = index_dir / CURRENT_FILE
    if not pointer.is_file():
        return None
    try:
        build_id = pointer.read_bytes().decode("ascii").strip()
    except UnicodeDecodeError:
        raise IndexLoadError(f"{pointer} holds binary bytes, not a build id") from None
    except OSError as exc:
        raise IndexLoadError(f"{pointer} cannot be read: {exc.strerror or exc}") from None
    if not build_id:
        return None
    # A plain folder name: no path (absolute, "..", "/") can point the server elsewhere.
    if not _BUILD_ID.fullmatch(build_id):
        raise IndexLoadError(
            f"{pointer} names {build_id[:80]!r}, which is not a build id (a folder name "
            f"under {index_dir / BUILDS_DIR})"
        )
    return index_dir / BUILDS_DIR / build_id


def check_build_files(build_dir: Path, manifest: Manifest) -> None:
    """Every file the format requires is listed in the manifest, nothing else is, and
    each listed file is there (a checksum check can only be as good as the list)."""
    listed = set(manifest.files) if isinstance(manifest.files, dict) else set()
    unlisted = [name for name in CHECKSUMMED_FILES if name not in listed]
    if unlisted:
        raise IndexLoadError(
            f"Index manifest in {build_dir} lists no checksum for {', '.join(unlisted)}; "
            "rebuild the index."
        )
    unknown = sorted(listed - set(CHECKSUMMED_FILES) - set(OPTIONAL_FILES))
    if unknown:
        raise IndexLoadError(
            f"Index manifest in {build_dir} lists unknown files ({', '.join(unknown[:3])})"
        )
    missing = [name for name in sorted(listed) if not (build_dir / name).is_file()]
    if missing:
        raise IndexLoadError(
            f"Index in {build_dir} is missing {', '.join(missing)}; rebuild the index."
        )


def write_build_files(
    build_dir: Path,
    vectors: np.ndarray,
    products: Iterable[Product],
    records: Iterable[ImageRecord],
    settings: IndexSettings,
    graph: Path | None = None,
    category_probe: bool = True,
) -> None:
    """Vectors (f16, row = key), the ANN graph over them, the catalog, and (when the
    catalog has categories and `category_probe`) the category probe. `graph`: one already
    built over exactly these vectors with `settings`, copied instead of rebuilt."""
    products, records = list(products), list(records)
    half = np.ascontiguousarray(vectors, dtype=np.float16)
    np.save(build_dir / VECTORS_FILE, half)
    if graph is not None:
        shutil.copyfile(graph, build_dir / ANN_FILE)
    else:
        write_ann(
            half,
            build_dir / ANN_FILE,
            settings.dtype,
            settings.connectivity,
            settings.expansion_add,
        )
    writer = CatalogWriter(build_dir / CATALOG_FILE)
    writer.add_products(products)
    writer.add_images(records)
    writer.close()
    if category_probe:
        _write_category_probe(build_dir, half, products, records)


def _write_category_probe(
    build_dir: Path, vectors: np.ndarray, products: list[Product], records: list[ImageRecord]
) -> None:
    category_of = {p.product_id: p.category.strip() for p in products}
    rows = sorted(records, key=lambda r: r.key)
    probe = train_probe(
        vectors[[r.key for r in rows]],
        [category_of.get(r.product_id, "") for r in rows],
        [r.product_id for r in rows],
    )
    if probe is not None:
        probe.save(build_dir / PROBE_FILE)


def _previous_descriptors(index_dir: Path) -> dict[str, np.ndarray]:
    """The served build's descriptors by image content digest (none when it has none,
    of another version, damaged or unreadable): a rebuild decodes only new images."""
    build_dir = current_build_dir(index_dir)
    if build_dir is None or not (build_dir / COLOUR_FILE).is_file():
        return {}
    try:
        manifest = Manifest.from_json((build_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        if manifest.files.get(COLOUR_FILE) != file_sha256(build_dir / COLOUR_FILE):
            raise ValueError(f"{COLOUR_FILE} does not match its checksum")
        table = ColourTable.load(build_dir / COLOUR_FILE)
        catalog = Catalog(build_dir / CATALOG_FILE)
        try:
            records = list(catalog.iter_images())
        finally:
            catalog.close()
    except Exception as exc:  # a damaged old build must not stop a new one
        log.info("not reusing the served build's colour descriptors: %s", exc)
        return {}
    if table is None:
        return {}
    return {
        r.sha256: table.descriptors[r.key]
        for r in records
        if r.key < len(table.known) and table.known[r.key]
    }


def write_colour_file(
    build_dir: Path,
    records: Sequence[ImageRecord],
    settings: Settings,
    index_dir: Path,
    described: Mapping[str, np.ndarray] | None = None,
) -> None:
    """The build's colour descriptors (`COLOUR_FILE`), when `build.colour_descriptors` and
    any image could be read here: `described` (by content digest: what the build's decode
    stage described), those of images unchanged since the build served from `index_dir`,
    and the rest read from their files."""
    if not settings.build.colour_descriptors:
        return
    known = {**_previous_descriptors(index_dir), **(described or {})}
    table = colour_table(records, settings.images, known)
    if table.known.any():
        table.save(build_dir / COLOUR_FILE)
    log.info("colour descriptors: %d of %d images", int(table.known.sum()), len(table.known))


def finish_build(build_dir: Path, manifest: Manifest) -> None:
    """Checksum the build's files and write its manifest (last, so its presence means done)."""
    present = [name for name in OPTIONAL_FILES if (build_dir / name).is_file()]
    manifest.files = {
        name: file_sha256(build_dir / name) for name in (*CHECKSUMMED_FILES, *present)
    }
    tmp = build_dir / (MANIFEST_FILE + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    _fsync(tmp)
    tmp.replace(build_dir / MANIFEST_FILE)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(index_dir: Path, tmp_build_dir: Path, build_id: str, keep_builds: int = 1) -> Path:
    """Move a finished build into place and switch CURRENT to it atomically."""
    builds = index_dir / BUILDS_DIR
    final = builds / build_id
    for name in (*CHECKSUMMED_FILES, *OPTIONAL_FILES, MANIFEST_FILE):
        with contextlib.suppress(FileNotFoundError):
            _fsync(tmp_build_dir / name)
    _make_read_only(tmp_build_dir)
    tmp_build_dir.rename(final)
    pointer_tmp = index_dir / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    pointer_tmp.write_text(build_id + "\n", encoding="utf-8")
    _fsync(pointer_tmp)
    pointer_tmp.replace(index_dir / CURRENT_FILE)
    _prune_builds(builds, keep=build_id, keep_count=keep_builds)
    return final


def _make_read_only(build_dir: Path) -> None:
    """A served build's graph and vectors are memory-mapped: a file edited or truncated in
    place would crash the server (SIGBUS). Read-only modes say so to people and tools; the
    folder stays writable so old builds can be pruned."""
    for path in build_dir.iterdir():
        if path.is_file():
            path.chmod(READ_ONLY_MODE)


def _prune_builds(builds: Path, keep: str, keep_count: int) -> None:
    finished = sorted(
        (
            p
            for p in builds.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != keep
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in finished[keep_count:]:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temp_builds(index_dir: Path) -> None:
    """Leftovers of builds that were killed; never the one being served."""
    builds = index_dir / BUILDS_DIR
    if builds.is_dir():
        for leftover in builds.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
