"""`index_builder.py build FEED` with the feeds shops already publish (issue 17 §3): each
format builds an index, a feed URL is fetched from a loopback server, a broken or hostile
feed is one line and publishes nothing, and `--every` keeps rebuilding."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

import index_builder
from engine.index import open_index
from engine.ingest import schedule
from engine.store import SKIPPED_FILE
from engine.types import Product
from tests.fakes.cli_env import use_tiny_model
from tests.fakes.demo import DEMO_DIR, DEMO_IMAGES
from tests.fakes.loopback import LoopbackServer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "feeds"


@pytest.fixture
def tiny_env(tiny_model_files, monkeypatch) -> dict[str, str]:
    return use_tiny_model(
        monkeypatch,
        tiny_model_files,
        BUILD__CATEGORY_PROBE="false",
        # the fixtures name the demo photos relative to their own folder
        BUILD__IMAGE_ROOTS=json.dumps([str(DEMO_IMAGES)]),
        CATALOG__SHOP_URL="https://shop.example.com",
        CATALOG__CURRENCY="EUR",
    )


def build(feed: str | Path, index_dir: Path, *extra: str) -> int:
    return index_builder.main(["build", str(feed), "--out", str(index_dir), "--quiet", *extra])


def served(index_dir: Path) -> tuple[dict[str, Product], dict[str, list[str]]]:
    """The served build's products and each product's image sources."""
    index = open_index(index_dir)
    try:
        images: dict[str, list[str]] = {}
        for record in index.catalog.iter_images():
            images.setdefault(record.product_id, []).append(record.source)
        return index.catalog.products(images), images
    finally:
        index.close()


def current(index_dir: Path) -> str:
    return (index_dir / "CURRENT").read_text().strip()


def skip_reasons(index_dir: Path) -> dict[str, str]:
    path = index_dir / "builds" / current(index_dir) / SKIPPED_FILE
    with path.open(newline="") as handle:
        return {row["product_id"]: row["reason"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "merchant-rss.xml",
            {"COAT": (59.0, 89.0, 3), "HAT-1": (24.99, None, 1), "DRESS-1": (99.0, None, 1)},
        ),
        ("merchant-atom.xml", {"SKIRT-1": (39.9, 59.9, 1), "SHOES-1": (99.0, None, 1)}),
        ("merchant.tsv", {"TEE": (15.0, 19.0, 2), "SHIRT-2": (39.0, None, 1)}),
        ("shopify-products.json", {"7001": (34.0, None, 2), "7002": (39.0, None, 1)}),
    ],
)
def test_each_feed_format_builds_an_index(
    tiny_env, tmp_path: Path, capsys, fixture: str, expected: dict
) -> None:
    index_dir = tmp_path / "index"
    assert build(FIXTURES / fixture, index_dir) == 0
    assert f"{len(expected)} products" in capsys.readouterr().out
    products, images = served(index_dir)
    assert {
        pid: (p.price, p.original_price, len(images[pid])) for pid, p in products.items()
    } == expected


def test_a_feed_with_broken_items_names_each_in_skipped_csv(tiny_env, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    assert build(FIXTURES / "merchant-rss.xml", index_dir) == 0
    assert skip_reasons(index_dir) == {
        "NO-CURRENCY": "price '19.99' has no currency (Merchant Center prices read '19.99 EUR')",
        "NO-LINK": "missing url (shop link)",
        "COAT-GREEN-S": "no g:image_link",
        "HAT-1": "duplicate g:id (first seen in item 4)",
    }


@pytest.mark.parametrize("kind", ["broken", "laughs"])
def test_a_broken_or_hostile_feed_is_one_line_and_publishes_nothing(
    tiny_env, tmp_path: Path, capsys, kind: str
) -> None:
    index_dir = tmp_path / "index"
    assert build(FIXTURES / "merchant-atom.xml", index_dir) == 0
    served_before = current(index_dir)
    capsys.readouterr()
    feed = tmp_path / "feed.xml"
    if kind == "broken":
        text = (FIXTURES / "merchant-rss.xml").read_text()
        feed.write_text(text[: len(text) // 2])
        expected = "is not well-formed XML (line "
    else:
        laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
        feed.write_text(
            f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{laughs}]>'
            '<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><title>&l9;</title>'
            "</item></channel></rss>"
        )
        expected = "declares XML entities or external references (EntitiesForbidden)"
    assert build(feed, index_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err
    assert current(index_dir) == served_before


class FeedServer(LoopbackServer):
    """The demo shop's folder over HTTP: its feeds and images/."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name:.+}", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        path = DEMO_DIR / name
        if not path.resolve().is_relative_to(DEMO_DIR) or not path.is_file():
            raise web.HTTPNotFound()
        kind = "image/jpeg" if path.suffix == ".jpg" else "application/xml"
        return web.Response(body=path.read_bytes(), content_type=kind)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """The server on its own event loop thread (index_builder.main runs its own loop)."""
    server = FeedServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_feed_url_builds_with_its_images_fetched_alongside(
    tiny_env, tmp_path: Path, monkeypatch, capsys, feed_server: FeedServer
) -> None:
    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["127.0.0.1"]')
    url = f"http://127.0.0.1:{feed_server.port}/merchant-feed.xml"
    index_dir = tmp_path / "index"
    assert build(url, index_dir) == 0
    assert "60 products, 60 images (60 embedded, 0 reused)" in capsys.readouterr().out
    products, images = served(index_dir)
    # 156 items in size variants: one product per item group, images fetched by URL
    assert len(products) == 60
    assert images["DEMO-001"] == [f"http://127.0.0.1:{feed_server.port}/images/dress-1.jpg"]
    assert (products["DEMO-002"].price, products["DEMO-002"].original_price) == (13.99, 19.99)
    assert feed_server.requests.count("merchant-feed.xml") == 1


def test_a_feed_url_on_a_private_address_is_refused(
    tiny_env, tmp_path: Path, capsys, feed_server: FeedServer
) -> None:
    url = f"http://127.0.0.1:{feed_server.port}/merchant-feed.xml"
    assert build(url, tmp_path / "index") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot download the catalog {url}: refused: non-public address")
    assert err.count("\n") == 1 and feed_server.requests == []


def test_every_rebuilds_on_schedule_and_outlives_a_failed_run(
    tiny_env, tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    """The real loop and real builds; only the waiting is injected. Between runs the
    shop's feed breaks, then comes back with one more product."""
    shop = tmp_path / "shop"
    shop.mkdir()
    feed = shop / "feed.xml"
    good = (FIXTURES / "merchant-atom.xml").read_text()
    feed.write_text(good.replace("../../../data/demo/images", str(DEMO_IMAGES)))
    index_dir = tmp_path / "index"
    waits: list[float] = []
    published: list[str] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        published.append(current(index_dir))
        if len(waits) == 1:
            feed.write_text(good[: len(good) // 2])  # the shop's export breaks
        elif len(waits) == 2:
            extra = good.replace("SKIRT-1", "SKIRT-2").replace("skirt-1", "skirt-2")
            start = extra.index("  <entry>")  # the first entry (the comment names one too)
            entries = extra[start : extra.index("</entry>") + len("</entry>")]
            fixed = good.replace("</feed>", entries + "\n</feed>")
            feed.write_text(fixed.replace("../../../data/demo/images", str(DEMO_IMAGES)))
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(
        schedule, "run_every", functools.partial(schedule.run_every, sleep=fake_sleep)
    )
    assert build(feed, index_dir, "--every", "6h") == 130
    out = capsys.readouterr().out
    failures = [r.getMessage() for r in caplog.records if r.name == "engine.ingest.schedule"]
    assert len(waits) == 3 and all(0 <= wait <= 6 * 3600 for wait in waits)
    first, after_failure, last = published
    assert after_failure == first  # the failed run published nothing
    assert last != first
    assert len(failures) == 1 and failures[0].startswith(
        "scheduled build failed: catalog feed.xml is not well-formed XML (line "
    )
    assert failures[0].endswith("trying again in 6h")
    assert "3 products, 3 images (1 embedded, 2 reused)" in out  # incremental
    assert sorted(served(index_dir)[0]) == ["SHOES-1", "SKIRT-1", "SKIRT-2"]


def test_every_needs_an_interval(tiny_env, tmp_path: Path, capsys) -> None:
    assert build(FIXTURES / "merchant-atom.xml", tmp_path / "index", "--every", "soon") == 2
    assert "--every: 'soon' is not an interval" in capsys.readouterr().err


def test_a_feed_over_the_byte_cap_is_refused(
    tiny_env, tmp_path: Path, monkeypatch, capsys, feed_server: FeedServer
) -> None:
    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["127.0.0.1"]')
    monkeypatch.setenv("FASHIONBOT_BUILD__MAX_FEED_BYTES", "100000")  # the feed is ~140 kB
    index_dir = tmp_path / "index"
    assert build(f"http://127.0.0.1:{feed_server.port}/merchant-feed.xml", index_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "MB, over build.max_feed_bytes" in err
    assert list((index_dir / "cache" / "feeds").iterdir()) == []  # no partial download kept


def test_query_shows_the_price_before_the_sale(tiny_env, tmp_path: Path, capsys) -> None:
    index_dir = tmp_path / "index"
    assert build(FIXTURES / "merchant-rss.xml", index_dir) == 0
    capsys.readouterr()
    coat = str(DEMO_IMAGES / "outwear-1.jpg")
    assert index_builder.main(["query", coat, "--index", str(index_dir), "--json"]) == 0
    results = {r["product_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert (results["COAT"]["price"], results["COAT"]["original_price"]) == (59.0, 89.0)
    assert results["HAT-1"]["original_price"] is None
    assert index_builder.main(["query", coat, "--index", str(index_dir)]) == 0
    assert "59.00 EUR (was 89.00)" in capsys.readouterr().out
