"""`build --ray` on a local Ray instance (2 CPUs) against the local build of the same feed:
the same products, images and skips, and the same vectors (cosine >= 0.999)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.ingest.ray_embed import ClusterPlan, plan_cluster
from engine.store import SKIPPED_FILE
from tests.conftest import make_settings
from tests.fakes.demo import demo_rows, unreadable_image_rows, write_catalog

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def index_contents(index_dir: Path) -> tuple[dict[int, tuple[str, str]], np.ndarray, list]:
    index = open_index(index_dir, verify=True)
    try:
        images = {r.key: (r.product_id, r.sha256) for r in index.catalog.iter_images()}
        vectors = np.asarray(index.vectors, dtype=np.float32).copy()
        with (index.build_dir / SKIPPED_FILE).open() as handle:
            skipped = sorted((row["product_id"], row["reason"]) for row in csv.DictReader(handle))
    finally:
        index.close()
    return images, vectors, skipped


async def test_ray_build_matches_the_local_build(local_ray, tiny_model_files, embedder, tmp_path):
    """One Ray build (each costs its actors' start-up) checks both paths: over an earlier
    local build of the feed's first rows, it re-embeds none of their photos and embeds the
    rest on Ray like the local build does."""
    rows = demo_rows(24)
    rows += [
        *unreadable_image_rows(rows[0], tmp_path),
        {**rows[0], "product_id": "TWO", "image": f"{rows[1]['image']}|{rows[2]['image']}"},
    ]
    catalog = write_catalog(tmp_path / "feed.csv", rows)
    earlier = write_catalog(tmp_path / "earlier.csv", rows[:6])
    settings = make_settings(tiny_model_files, tmp_path, build={"batch_size": 8})

    local = await build_index(settings, catalog, tmp_path / "local", embedder, False)
    await build_index(settings, earlier, tmp_path / "ray", embedder, False)
    earlier_images, earlier_vectors, _ = index_contents(tmp_path / "ray")
    on_ray = await build_index(settings, catalog, tmp_path / "ray", embedder, False, use_ray=True)

    assert (on_ray.products, on_ray.images) == (25, 26)
    # the first six rows' photos, and TWO's (rows 1 and 2's), are not embedded again
    assert (on_ray.embedded, on_ray.reused) == (18, 8)
    assert on_ray.embedded_on.startswith("Ray: 1 model actor(s) with 1 CPUs each")
    assert local.embedded_on == "this machine"
    assert (local.products, local.images) == (on_ray.products, on_ray.images)
    local_images, local_vectors, local_skipped = index_contents(tmp_path / "local")
    ray_images, ray_vectors, ray_skipped = index_contents(tmp_path / "ray")
    assert ray_images == local_images
    assert ray_skipped == local_skipped
    assert {pid for pid, _ in ray_skipped} == {"MISSING", "TEXT"}
    cosine = (local_vectors * ray_vectors).sum(axis=1) / (
        np.linalg.norm(local_vectors, axis=1) * np.linalg.norm(ray_vectors, axis=1)
    )
    assert cosine.min() >= 0.999
    ray_key_of = {digest: key for key, (_, digest) in ray_images.items()}
    for key, (_, digest) in earlier_images.items():  # the reused vectors, bit for bit
        assert np.array_equal(ray_vectors[ray_key_of[digest]], earlier_vectors[key])


def test_cluster_plan_gives_each_gpu_a_model_actor() -> None:
    assert plan_cluster({"CPU": 32, "GPU": 4}, 4, 0) == ClusterPlan(28, 4, 1, 1)
    assert plan_cluster({"CPU": 2}, 4, 0) == ClusterPlan(1, 1, 1, 0)
    assert plan_cluster({"CPU": 64}, 4, 0) == ClusterPlan(8, 14, 4, 0)
    assert plan_cluster({"CPU": 16}, 8, 2) == ClusterPlan(2, 1, 8, 0)


def test_the_ray_flag_takes_an_optional_address() -> None:
    from index_builder import build_parser

    parse = build_parser().parse_args
    assert parse(["build", "feed.csv"]).ray is None  # a local build
    assert parse(["build", "feed.csv", "--ray"]).ray == ""  # $RAY_ADDRESS or a local Ray
    assert parse(["build", "feed.csv", "--ray", "ray://head:10001"]).ray == "ray://head:10001"
