from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from usearch.index import Index

from engine.config import IndexSettings
from engine.graph import graph_query, graph_vectors
from engine.index import IndexLoadError, open_index
from engine.ranking import RankingParams, rank
from engine.store import ANN_FILE, CURRENT_FILE, ModelIdentity, current_build_dir
from engine.types import Filters
from tests.fakes.synthetic import clip_like_vectors, write_synthetic_index


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    index_dir = tmp_path_factory.mktemp("ann")
    vectors = clip_like_vectors(10_000, dim=128, clusters=100, seed=1)
    write_synthetic_index(index_dir, vectors, settings=IndexSettings(dtype="f16"))
    return index_dir, vectors


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    half = vectors.astype(np.float16).astype(np.float32)
    return np.argsort(-(half @ query), kind="stable")[:k]


def test_ann_matches_exact_brute_force(ten_thousand) -> None:
    index_dir, vectors = ten_thousand
    index = open_index(index_dir, expansion_search=64)
    queries = clip_like_vectors(200, dim=128, clusters=100, seed=2)
    overlaps = []
    for query in queries:
        keys, scores = index.ann_search(query, 10)
        assert np.all(np.diff(scores) <= 1e-6)
        overlaps.append(len(set(keys.tolist()) & set(exact_top(vectors, query, 10).tolist())) / 10)
    assert np.mean(overlaps) >= 0.99


def test_an_i8_graph_recalls_like_f16_through_the_rerank(tmp_path: Path) -> None:
    """i8 alone recalls poorly; the engine fetches `overfetch` x k candidates from the i8
    graph and re-scores them exactly on the stored f16 vectors."""
    vectors = clip_like_vectors(10_000, dim=128, clusters=100, seed=1)
    write_synthetic_index(tmp_path, vectors, settings=IndexSettings(dtype="i8"))
    index = open_index(tmp_path, expansion_search=64)
    assert (index.manifest.dtype, index.manifest.metric) == ("i8", "ip")
    half = vectors.astype(np.float16).astype(np.float32)
    overlaps = []
    for query in clip_like_vectors(200, dim=128, clusters=100, seed=2):
        keys, scores = index.ann_search(query, 40)
        # the f16 rows against the query in f16, as exact_search scores them
        query16 = query.astype(np.float16).astype(np.float32)
        assert np.allclose(scores, half[keys.astype(np.int64)] @ query16, atol=1e-5)
        assert np.all(np.diff(scores) <= 0)
        overlaps.append(len(set(keys[:10].tolist()) & set(exact_top(vectors, query, 10))) / 10)
    assert np.mean(overlaps) >= 0.99


def test_the_i8_graph_alone_ranks_like_the_floats() -> None:
    """Scaled to the catalog's largest component, int8 rows keep the ranking: recall@10
    of the graph alone, before any re-rank (USearch's own x127 cast: about 0.94 here)."""
    vectors = clip_like_vectors(5_000, dim=512, clusters=100, seed=1)
    ann = Index(ndim=512, metric="ip", dtype="i8", connectivity=18, expansion_add=128)
    ann.add(np.arange(len(vectors), dtype=np.uint64), graph_vectors(vectors, "i8"))
    ann.expansion_search = 64
    overlaps = []
    for query in clip_like_vectors(100, dim=512, clusters=100, seed=2):
        keys = ann.search(graph_query(query, "i8"), 10).keys
        overlaps.append(len(set(keys.tolist()) & set(exact_top(vectors, query, 10).tolist())) / 10)
    assert np.mean(overlaps) >= 0.97


def test_int8_scaling_uses_the_whole_range_and_never_clips() -> None:
    vectors = clip_like_vectors(1_000, dim=64, clusters=10, seed=1)
    rows = graph_vectors(vectors, "i8")
    assert rows.dtype == np.int8 and np.abs(rows).max() == 127
    one_scale = 127 / np.abs(vectors).max()
    assert np.abs(rows - vectors * one_scale).max() <= 0.5  # rounding only
    query = graph_query(-3.0 * vectors[0], "i8")
    assert np.abs(query).max() == 127 and query.dtype == np.int8
    assert not graph_query(np.zeros(64, np.float32), "i8").any()
    assert graph_query(vectors[0], "f16").dtype == np.float32


def test_an_i8_graph_built_with_cosine_is_still_served(tmp_path: Path) -> None:
    """Builds from before the scaling: USearch's own cast, cosine. Cosine ignores the
    query's scale, so the scaled query finds the same neighbours."""
    vectors = clip_like_vectors(2_000, dim=64, clusters=20, seed=1)
    legacy = Index(ndim=64, metric="cos", dtype="i8", connectivity=16, expansion_add=128)
    legacy.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    legacy.save(str(tmp_path / "legacy.usearch"))
    index_dir = tmp_path / "index"
    settings = IndexSettings(dtype="i8")
    write_synthetic_index(index_dir, vectors, settings=settings, graph=tmp_path / "legacy.usearch")
    index = open_index(index_dir, expansion_search=64)
    query = clip_like_vectors(1, dim=64, clusters=20, seed=5)[0]
    keys, _ = index.ann_search(query, 40)
    assert len(set(keys[:10].tolist()) & set(exact_top(vectors, query, 10).tolist())) >= 9


def test_exact_search_is_exact(ten_thousand) -> None:
    index_dir, vectors = ten_thousand
    index = open_index(index_dir)
    query = clip_like_vectors(1, dim=128, clusters=100, seed=3)[0]
    keys, _ = index.exact_search(query, 10)
    assert keys.tolist() == exact_top(vectors, query, 10).tolist()


@pytest.mark.parametrize("exact_limit", [0, 20_000])
def test_filtered_search_returns_k_from_a_small_subset(ten_thousand, exact_limit: int) -> None:
    index_dir, vectors = ten_thousand
    index = open_index(index_dir)
    query = clip_like_vectors(1, dim=128, clusters=100, seed=4)[0]
    # 1 in 8 products is a shoe, and of those only 1 in 3 out of stock, priced 10..20
    filters = Filters(category="shoes", max_price=20)
    ranked = rank(index, query, filters, 10, 0.0, RankingParams(4, exact_limit))
    allowed = [i for i in range(len(vectors)) if i % 8 == 4 and 10 + i % 90 <= 20]
    expected = [allowed[i] for i in exact_top(vectors[allowed], query, 10)]
    assert [r.record.key for r in ranked] == expected or exact_limit == 0
    got = {r.record.key for r in ranked}
    assert len(got) == 10 and got <= set(allowed)
    assert len(got & set(expected)) >= 9


def test_model_mismatch_is_refused(ten_thousand) -> None:
    index_dir, _ = ten_thousand
    other = ModelIdentity("vit-b-32", "laion2b_s34b_b79k", 128, "f" * 16)
    with pytest.raises(IndexLoadError, match="rebuild the index"):
        open_index(index_dir, expected_model=other)
    wrong_dim = ModelIdentity("synthetic", "", 512, "0" * 16)
    with pytest.raises(IndexLoadError, match="512-d"):
        open_index(index_dir, expected_model=wrong_dim)


def test_corrupted_file_is_detected_at_load(tmp_path: Path) -> None:
    write_synthetic_index(tmp_path, clip_like_vectors(500, dim=32, seed=5))
    ann = current_build_dir(tmp_path) / ANN_FILE
    data = bytearray(ann.read_bytes())
    data[len(data) // 2] ^= 0x55
    ann.chmod(0o644)  # published builds are read-only
    ann.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match="corrupted"):
        open_index(tmp_path)


def test_missing_index_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(IndexLoadError, match=r"index_builder\.py build"):
        open_index(tmp_path)
    (tmp_path / CURRENT_FILE).write_text("no-such-build\n")
    with pytest.raises(IndexLoadError, match="No index found"):
        open_index(tmp_path)


def test_keys_are_row_numbers_and_vectors_are_half_precision(ten_thousand) -> None:
    index_dir, vectors = ten_thousand
    index = open_index(index_dir)
    assert index.vectors.dtype == np.float16 and index.size == len(vectors)
    assert np.allclose(index.vectors_for(np.array([7, 9999])), vectors[[7, 9999]], atol=1e-3)
