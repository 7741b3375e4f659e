from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.batcher import EngineBusy
from engine.embedder import model_identity
from engine.images import NotAnImage
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from engine.types import Filters
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES, make_settings


def demo_rows() -> list[dict[str, str]]:
    with DEMO_CATALOG.open(newline="") as handle:
        return list(csv.DictReader(handle))


def chat_copy(path: Path, scale: float = 0.7, quality: int = 60) -> bytes:
    """What a chat app does to a photo: downscale and re-encode."""
    image = Image.open(path).convert("RGB")
    image = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


async def test_catalog_photo_and_its_chat_copy_find_their_product_first(engine: Engine) -> None:
    rows = demo_rows()[::6]  # one product of each class
    for row in rows:
        photo = DEMO_CATALOG.parent / row["image"]
        exact = await engine.search(image=photo.read_bytes(), k=3)
        assert exact.hits[0].product.product_id == row["product_id"]
        assert exact.hits[0].score > 0.999
        copy = await engine.search(image=chat_copy(photo), k=3)
        assert copy.hits[0].product.product_id == row["product_id"], row["image"]


async def test_results_carry_product_metadata(engine: Engine) -> None:
    row = demo_rows()[0]
    page = await engine.search(image=(DEMO_CATALOG.parent / row["image"]).read_bytes(), k=1)
    product = page.hits[0].product
    assert (product.title, product.url, product.currency) == (row["title"], row["url"], "EUR")
    assert product.price == pytest.approx(float(row["price"]))
    assert product.extra["source_file"] == row["source_file"]  # extra columns survive
    assert Path(page.hits[0].image_path or "").is_file()


async def test_scores_are_sorted_and_k_is_respected(engine: Engine) -> None:
    page = await engine.search(image=(DEMO_IMAGES / "hat-2.jpg").read_bytes(), k=5)
    scores = [hit.score for hit in page.hits]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    capped = await engine.search(image=(DEMO_IMAGES / "hat-2.jpg").read_bytes(), k=500)
    assert len(capped.hits) == engine.settings.search.max_k


async def test_filters_return_k_results_even_when_most_are_filtered_out(engine: Engine) -> None:
    photo = (DEMO_IMAGES / "dress-1.jpg").read_bytes()
    page = await engine.search(image=photo, filters=Filters(category="shoes"), k=6)
    assert len(page.hits) == 6
    assert {h.product.category for h in page.hits} == {"shoes"}
    cheap = await engine.search(
        image=photo, filters=Filters(max_price=30, in_stock_only=True), k=10
    )
    assert cheap.hits and all(h.product.price <= 30 and h.product.in_stock for h in cheap.hits)
    rows = [r for r in demo_rows() if float(r["price"]) <= 30 and r["in_stock"] == "true"]
    assert len(cheap.hits) == min(10, len(rows))
    men = await engine.search(image=photo, filters=Filters(gender="men"), k=10)
    assert men.hits and {h.product.gender for h in men.hits} <= {"men", "unisex"}
    priced = await engine.search(image=photo, filters=Filters(min_price=40, max_price=80), k=10)
    assert priced.hits and all(40 <= h.product.price <= 80 for h in priced.hits)
    none = await engine.search(image=photo, filters=Filters(category="no-such-category"))
    assert none.hits == [] and not none.has_more


async def test_paging_never_repeats_and_reaches_the_end(engine: Engine) -> None:
    photo = (DEMO_IMAGES / "skirt-4.jpg").read_bytes()
    for diversity in (0.0, 0.7):
        seen: list[str] = []
        offset = 0
        while True:
            page = await engine.search(image=photo, k=7, offset=offset, diversity=diversity)
            seen += [hit.product.product_id for hit in page.hits]
            if not page.has_more:
                break
            offset += 7
        assert len(seen) == len(set(seen)) == 60


async def test_diversity_trades_similarity_for_variety(engine: Engine) -> None:
    photo = (DEMO_IMAGES / "t-shirt-1.jpg").read_bytes()
    similar = await engine.search(image=photo, k=8, diversity=0.0)
    varied = await engine.search(image=photo, k=8, diversity=1.0)
    assert similar.hits[0].product.product_id == varied.hits[0].product.product_id

    key_of = {r.product_id: r.key for r in engine.index.catalog.iter_images()}

    def mean_pairwise(page) -> float:
        keys = np.array([key_of[h.product.product_id] for h in page.hits], dtype=np.uint64)
        vectors = engine.index.vectors_for(keys)
        matrix = vectors @ vectors.T
        return float(matrix[np.triu_indices(len(keys), 1)].mean())

    assert mean_pairwise(varied) < mean_pairwise(similar)
    assert [h.score for h in varied.hits] != sorted(h.score for h in varied.hits)[::-1]


async def test_text_and_refined_queries(engine: Engine) -> None:
    text_page = await engine.search(text="red summer dress", k=4)
    assert len(text_page.hits) == 4
    photo = (DEMO_IMAGES / "pants-1.jpg").read_bytes()
    plain = await engine.search(image=photo, k=10)
    refined = await engine.search(image=photo, text="in blue", k=10)
    assert [h.product.product_id for h in plain.hits] != [
        h.product.product_id for h in refined.hits
    ]
    with pytest.raises(ValueError):
        await engine.search()


async def test_unusable_photo_raises_a_typed_error(engine: Engine) -> None:
    with pytest.raises(NotAnImage):
        await engine.search(image=b"definitely not a photo" * 10)


async def test_concurrent_queries_share_batches(engine: Engine) -> None:
    photos = [(DEMO_IMAGES / f"shoes-{i}.jpg").read_bytes() for i in range(1, 7)] * 3
    before = engine.batcher.stats.batches
    pages = await asyncio.gather(*(engine.search(image=p, k=1) for p in photos))
    assert all(page.hits for page in pages)
    assert engine.batcher.stats.batches - before < len(photos)


async def test_saturated_engine_answers_busy(settings, embedder, demo_index_dir) -> None:
    busy_settings = settings.with_overrides(model={"max_queue": 1, "max_batch": 1})
    engine = Engine(busy_settings, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        photo = (DEMO_IMAGES / "shoes-1.jpg").read_bytes()
        results = await asyncio.gather(
            *(engine.search(image=photo) for _ in range(12)), return_exceptions=True
        )
        assert any(isinstance(r, EngineBusy) for r in results)
        assert any(not isinstance(r, Exception) for r in results)
    finally:
        engine.close()


async def test_one_result_per_product_with_its_best_image(
    tiny_model_files, embedder, tmp_path: Path
) -> None:
    # Each product has two photos: its own and a chat copy of it; one must not crowd out others.
    catalog = tmp_path / "multi.csv"
    rows = demo_rows()[:12]
    with catalog.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            source = DEMO_CATALOG.parent / row["image"]
            copy = tmp_path / f"copy-{source.name}"
            copy.write_bytes(chat_copy(source, scale=0.9, quality=80))
            writer.writerow({**row, "image": f"{source}|{copy}"})
    settings = make_settings(tiny_model_files, tmp_path / "index")
    report = await build_index(settings, catalog, tmp_path / "index", embedder, show_progress=False)
    assert (report.products, report.images) == (12, 24)
    engine = Engine(settings, embedder, open_index(tmp_path / "index", model_identity(embedder)))
    try:
        page = await engine.search(
            image=(DEMO_CATALOG.parent / rows[3]["image"]).read_bytes(), k=10
        )
        ids = [hit.product.product_id for hit in page.hits]
        assert len(ids) == len(set(ids)) == 10
        assert ids[0] == rows[3]["product_id"]
        assert page.hits[0].image.endswith(rows[3]["image"].split("/")[-1])
        assert not page.hits[0].image.split("/")[-1].startswith("copy-")
    finally:
        engine.close()


async def test_a_query_key_pages_the_same_search_later(
    settings, embedder, demo_index_dir, tmp_path
) -> None:
    from engine.query_store import QueryExpired

    stored = settings.with_overrides(search={"query_store": str(tmp_path / "queries.sqlite")})
    first_engine = Engine(stored, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        first = await first_engine.search(image=(DEMO_IMAGES / "outwear-3.jpg").read_bytes(), k=5)
        assert len(first.query_key) == 16
    finally:
        first_engine.close()
    # a new process (a restart) with the same store pages on without the photo
    second_engine = Engine(stored, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        second = await second_engine.search(query_key=first.query_key, k=5, offset=5)
        ids = [h.product.product_id for h in first.hits + second.hits]
        assert len(ids) == len(set(ids)) == 10
        whole = await second_engine.search(query_key=first.query_key, k=10)
        assert [h.product.product_id for h in whole.hits] == ids
        with pytest.raises(QueryExpired):
            await second_engine.search(query_key="0" * 16)
    finally:
        second_engine.close()


async def test_pad_preprocessing_keeps_the_whole_garment_and_needs_its_own_index(
    tiny_model_files, demo_index_dir
) -> None:
    from engine.embedder import load_embedder
    from engine.index import IndexLoadError

    padded = make_settings(tiny_model_files, demo_index_dir, model={"preprocess": "pad"})
    embedder = load_embedder(padded.model)
    tall = Image.new("RGB", (100, 300), "white")
    tall.paste(Image.new("RGB", (100, 40), "red"), (0, 260))  # a red hem at the bottom

    def shows_red(pixels) -> bool:
        return bool(((pixels[0] > 200) & (pixels[1] < 50)).any())

    # the hem survives padding; the model's centre crop of a tall photo cuts it off
    assert shows_red(embedder.preprocess_image(tall))
    assert not shows_red(
        load_embedder(make_settings(tiny_model_files, demo_index_dir).model).preprocess_image(tall)
    )
    with pytest.raises(IndexLoadError, match=r"model\.preprocess"):
        open_index(demo_index_dir, model_identity(embedder))


async def test_flip_augmentation_averages_the_mirror_image(
    settings, embedder, demo_index_dir
) -> None:
    flipped = settings.with_overrides(search={"flip_augment": True})
    engine = Engine(flipped, embedder, open_index(demo_index_dir, model_identity(embedder)))
    plain = Engine(settings, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        photo = (DEMO_IMAGES / "shirt-4.jpg").read_bytes()
        with_flip = await engine.embed_query([photo], None)
        without = await plain.embed_query([photo], None)
        mirror = Image.open(io.BytesIO(photo)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = io.BytesIO()
        mirror.save(out, format="PNG")
        mirrored = await plain.embed_query([out.getvalue()], None)
        expected = (without + mirrored) / np.linalg.norm(without + mirrored)
        assert float(with_flip @ expected) > 0.999
        assert float(with_flip @ without) < 0.99999
    finally:
        engine.close()
        plain.close()


async def test_category_gating_puts_the_guessed_category_first(
    settings, embedder, demo_index_dir
) -> None:
    gated = settings.with_overrides(search={"category_gating": True, "gating_confidence": 0.0})
    engine = Engine(gated, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        photo = (DEMO_IMAGES / "pants-4.jpg").read_bytes()
        guess = await engine.guess_category(await engine.embed_query([photo], None))
        assert guess in engine.categories()
        page = await engine.search(image=photo, k=10)
        categories = [h.product.category for h in page.hits]
        assert categories[:6] == [guess] * 6  # each category has 6 products
        assert len({h.product.product_id for h in page.hits}) == 10
        strict = settings.with_overrides(search={"category_gating": True, "gating_confidence": 1.0})
        unsure = Engine(strict, embedder, open_index(demo_index_dir, model_identity(embedder)))
        try:
            assert await unsure.guess_category(await unsure.embed_query([photo], None)) is None
        finally:
            unsure.close()
    finally:
        engine.close()


async def test_warming_up_loads_the_garment_finder_before_the_first_photo(engine) -> None:
    """Its network is exported on load (about a second): not in a shopper's search."""
    assert not engine.garments.finder.loaded
    await engine.warm_up()
    assert engine.garments.finder.loaded and engine.warm
