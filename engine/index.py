"""The on-disk index: vectors, USearch graph, catalog and manifest, published atomically.

Layout of `index.dir`:

    CURRENT                  the id of the build being served (replaced atomically)
    builds/<id>/manifest.json
    builds/<id>/vectors.npy  float16 embeddings, row = key (kept so the graph can be
                             rebuilt with other settings, and results re-ranked exactly)
    builds/<id>/ann.usearch  HNSW graph over the same rows, served memory-mapped
    builds/<id>/catalog.sqlite
    builds/<id>/category_probe.npz  the catalog's category classifier (engine.category),
                             when its products have categories
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
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import usearch
from usearch.compiled import exact_search
from usearch.index import Index, MetricKind
from usearch.index import search as brute_force_search

from engine.catalog import Catalog, CatalogWriter, ImageRecord
from engine.category import PROBE_FILE, CategoryProbe, train_probe
from engine.config import IndexSettings
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
# Written only when the catalog allows (a probe needs categories); checksummed when there.
OPTIONAL_FILES = (PROBE_FILE,)


class IndexLoadError(RuntimeError):
    """An index that must not be served: missing, corrupt, or built with another model."""


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    pretrained: str
    dim: int
    fingerprint: str
    preprocess: str = "crop"


@dataclass
class Manifest:
    build_id: str
    model: ModelIdentity
    dtype: str
    metric: str = "cos"  # the graph's; builds record graph_metric(dtype)
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


def current_build_dir(index_dir: Path) -> Path | None:
    pointer = index_dir / CURRENT_FILE
    if not pointer.is_file():
        return None
    build_id = pointer.read_text(encoding="utf-8").strip()
    return index_dir / BUILDS_DIR / build_id if build_id else None


def graph_metric(dtype: str) -> str:
    """The graph's distance for our unit-length vectors: inner product, which equals cosine
    and needs one accumulator instead of three (1.2-1.9x the queries/s at the same recall,
    docs/benchmarks.md). Builds before i8 was scaled (see `graph_vectors`) used cosine
    for i8; `graph_query` serves those too."""
    return "ip"


I8_LEVELS = 127


def to_int8(vectors: np.ndarray, scale: float) -> np.ndarray:
    # the largest component lands on 127 exactly, so rounding never leaves int8's range
    return np.rint(np.asarray(vectors, dtype=np.float32) * scale).astype(np.int8)


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
        metric=graph_metric(dtype),
        dtype=dtype,
        connectivity=connectivity,
        expansion_add=expansion,
    )
    if len(vectors):
        ann.add(np.arange(len(vectors), dtype=np.uint64), graph_vectors(vectors, dtype))
    ann.save(str(path))


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
    tmp_build_dir.rename(final)
    pointer_tmp = index_dir / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    pointer_tmp.write_text(build_id + "\n", encoding="utf-8")
    _fsync(pointer_tmp)
    pointer_tmp.replace(index_dir / CURRENT_FILE)
    _prune_builds(builds, keep=build_id, keep_count=keep_builds)
    return final


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


class VectorIndex:
    """One published build, opened for serving: memory-mapped graph and vectors + catalog."""

    def __init__(
        self, build_dir: Path, manifest: Manifest, verify: bool, expansion_search: int = 64
    ) -> None:
        self.build_dir = build_dir
        self.manifest = manifest
        if verify:
            for name, expected in manifest.files.items():
                if file_sha256(build_dir / name) != expected:
                    raise IndexLoadError(
                        f"Index file {build_dir / name} is corrupted (checksum mismatch). "
                        "Rebuild the index with `python index_builder.py build CATALOG`."
                    )
        try:
            self.vectors: np.ndarray = np.load(build_dir / VECTORS_FILE, mmap_mode="r")
            self.ann = Index.restore(str(build_dir / ANN_FILE), view=True)
            if self.ann is not None:
                self.ann.expansion_search = expansion_search
            self.catalog = Catalog(build_dir / CATALOG_FILE)
            probe_path = build_dir / PROBE_FILE
            self.category_probe: CategoryProbe | None = (
                CategoryProbe.load(probe_path) if PROBE_FILE in manifest.files else None
            )
        except Exception as exc:
            raise IndexLoadError(f"Index in {build_dir} cannot be opened: {exc}") from None
        if self.ann is None or len(self.ann) != len(self.vectors):
            raise IndexLoadError(f"Index in {build_dir} is incomplete; rebuild it.")

    @property
    def size(self) -> int:
        return len(self.vectors)

    def ann_search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top `count`: (keys, cosine similarities), best first."""
        count = min(count, self.size)
        if count <= 0:
            return np.empty(0, np.uint64), np.empty(0, np.float32)
        return search_graph(self.ann, self.vectors, self.manifest.dtype, query, count)

    def exact_search(
        self, query: np.ndarray, count: int, keys: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top `count` among `keys` (all when None): brute force with USearch's SIMD
        kernels straight on the f16 vectors (no conversion of the matrix per query)."""
        if (keys is not None and len(keys) == 0) or count <= 0 or self.size == 0:
            return np.empty(0, np.uint64), np.empty(0, np.float32)
        rows = self.vectors if keys is None else self.vectors[keys.astype(np.int64)]
        count = min(count, len(rows))
        matches = brute_force_search(
            np.ascontiguousarray(rows), query.astype(np.float16), count, MetricKind.IP, exact=True
        )
        found = matches.keys.astype(np.int64)
        scores = 1.0 - matches.distances.astype(np.float32)
        return (found.astype(np.uint64) if keys is None else keys[found]), scores

    def vectors_for(self, keys: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[np.asarray(keys, dtype=np.int64)], dtype=np.float32)

    def close(self) -> None:
        self.catalog.close()


def open_index(
    index_dir: Path,
    expected_model: ModelIdentity | None = None,
    verify: bool = True,
    expansion_search: int = 64,
) -> VectorIndex:
    build_dir = current_build_dir(index_dir)
    if build_dir is None or not (build_dir / MANIFEST_FILE).is_file():
        raise IndexLoadError(
            f"No index found in {index_dir}. Build one with "
            "`python index_builder.py build CATALOG --out DIR` (or `make index`)."
        )
    try:
        manifest = Manifest.from_json((build_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError) as exc:
        raise IndexLoadError(f"Index manifest in {build_dir} is unreadable: {exc}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise IndexLoadError(
            f"Index in {build_dir} has format {manifest.format_version}; this version reads "
            f"format {FORMAT_VERSION}. Rebuild it with `python index_builder.py build`."
        )
    if expected_model is not None:
        check_model_matches(manifest.model, expected_model)
    return VectorIndex(build_dir, manifest, verify, expansion_search)


def check_model_matches(built: ModelIdentity, configured: ModelIdentity) -> None:
    same_model = built.dim == configured.dim and built.fingerprint == configured.fingerprint
    if same_model and built.preprocess != configured.preprocess:
        raise IndexLoadError(
            f"The index was built with model.preprocess = {built.preprocess!r}, but the "
            f"configuration says {configured.preprocess!r}: rebuild the index, or set it back."
        )
    if same_model:
        return
    raise IndexLoadError(
        f"The index was built with model {built.name!r} ({built.dim}-d, weights "
        f"{built.fingerprint}), but the configured model is {configured.name!r} "
        f"({configured.dim}-d, weights {configured.fingerprint}). Its results would be "
        "wrong: rebuild the index with the configured model, or set model.name / "
        "model.pretrained back to the model the index was built with."
    )
