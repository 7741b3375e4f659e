"""One published build opened for serving: memory-mapped graph and vectors, the catalog,
the category probe, the colour descriptors; refused when missing, corrupt, or built with
another model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from usearch.compiled import MetricKind
from usearch.index import Index
from usearch.index import search as brute_force_search

from engine.catalog import Catalog
from engine.category import PROBE_FILE, CategoryProbe
from engine.colour import COLOUR_FILE, ColourTable
from engine.graph import search_graph
from engine.store import (
    ANN_FILE,
    CATALOG_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    VECTORS_FILE,
    IndexLoadError,
    Manifest,
    ModelIdentity,
    check_build_files,
    current_build_dir,
    file_sha256,
)

__all__ = ["IndexLoadError", "VectorIndex", "open_index"]


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
            ann = Index.restore(str(build_dir / ANN_FILE), view=True)
            if ann is not None:
                # usearch defines this setter away from its getter (after expansion_add's),
                # so mypy sees a read-only property; it is writable at runtime
                ann.expansion_search = expansion_search  # type: ignore[misc]  # usearch's setter
            self.catalog = Catalog(build_dir / CATALOG_FILE)
            probe_path = build_dir / PROBE_FILE
            self.category_probe: CategoryProbe | None = (
                CategoryProbe.load(probe_path) if PROBE_FILE in manifest.files else None
            )
            # A build from before colour descriptors has none: no colour re-score, no error.
            self.colours: ColourTable | None = (
                ColourTable.load(build_dir / COLOUR_FILE) if COLOUR_FILE in manifest.files else None
            )
        except Exception as exc:
            raise IndexLoadError(f"Index in {build_dir} cannot be opened: {exc}") from None
        if ann is None or len(ann) != len(self.vectors):
            raise IndexLoadError(f"Index in {build_dir} is incomplete; rebuild it.")
        self.ann: Index = ann

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
    check_build_files(build_dir, manifest)
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
