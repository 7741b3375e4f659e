"""A Shopify shop's /products.json URL is read page by page (Shopify serves at most 250
products a request) from a real HTTP server on loopback, and the pages are built as one
catalog."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from engine.config import BuildSettings
from engine.ingest.feed import FeedError
from engine.ingest.feed_download import download_feed
from engine.ingest.feed_formats import FeedOrigin, read_catalog
from engine.ingest.shopify_pages import SHOPIFY_PAGE_LIMIT, page_url, paginates
from tests.fakes.loopback import LoopbackServer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "feeds" / "shopify-products.json"


def shop_products(count: int) -> list[dict[str, Any]]:
    """`count` sellable products made from the fixture's first one."""
    template = json.loads(FIXTURE.read_text())["products"][0]
    return [{**template, "id": n, "handle": f"shirt-{n}"} for n in range(1, count + 1)]


class ShopifyShop(LoopbackServer):
    """/products.json as Shopify serves it: `limit` (default 30, at most 250) and `page`."""

    def __init__(self, products: list[dict[str, Any]]) -> None:
        super().__init__()
        self.products = products
        self.requests: list[dict[str, str]] = []
        self.ignores_page = False
        self.failures: dict[int, list[int]] = {}  # page -> statuses of its next answers

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/products.json", self.serve)
        return app

    async def serve(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        self.requests.append(query)
        limit = min(int(query.get("limit", 30)), SHOPIFY_PAGE_LIMIT)
        page = 1 if self.ignores_page else int(query.get("page", 1))
        if self.failures.get(page):
            return web.Response(status=self.failures[page].pop(0))
        chosen = self.products[(page - 1) * limit : page * limit]
        return web.json_response({"products": chosen})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/products.json"


@pytest.fixture
async def shop() -> AsyncIterator[ShopifyShop]:
    server = ShopifyShop(shop_products(2 * SHOPIFY_PAGE_LIMIT + 17))
    await server.start()
    yield server
    await server.stop()


BUILD = BuildSettings(allow_private_hosts=("127.0.0.1",), download_retries=1)


async def read_shop(url: str, folder: Path) -> list[str]:
    path = await download_feed(url, folder, BUILD, backoff_s=0.01)
    feed = read_catalog(path, None, FeedOrigin(feed_url=url, currency="EUR"))
    return [item.product.product_id for item in feed.items]


def test_only_a_products_json_url_without_a_page_is_paginated() -> None:
    assert paginates("https://shop.example/products.json")
    assert paginates("https://shop.example/collections/sale/products.json?limit=50")
    assert not paginates("https://shop.example/products.json?page=3")
    assert not paginates("https://shop.example/feed.xml")
    assert page_url("https://shop.example/products.json?limit=5&x=1", 2) == (
        "https://shop.example/products.json?x=1&limit=250&page=2"
    )


async def test_every_page_of_the_shop_is_built(shop: ShopifyShop, tmp_path: Path) -> None:
    ids = await read_shop(shop.url, tmp_path)
    assert ids == [str(n) for n in range(1, 2 * SHOPIFY_PAGE_LIMIT + 18)]  # each once, in order
    assert [(r["limit"], r["page"]) for r in shop.requests] == [
        ("250", "1"),
        ("250", "2"),
        ("250", "3"),
    ]
    assert not list(tmp_path.glob(".*"))  # no page or partial file left behind


async def test_a_url_naming_its_page_gets_that_page_only(shop: ShopifyShop, tmp_path: Path) -> None:
    ids = await read_shop(shop.url + "?limit=250&page=2", tmp_path)
    assert ids == [str(n) for n in range(SHOPIFY_PAGE_LIMIT + 1, 2 * SHOPIFY_PAGE_LIMIT + 1)]
    assert len(shop.requests) == 1


async def test_a_shop_that_ignores_the_page_is_read_once(shop: ShopifyShop, tmp_path: Path) -> None:
    shop.ignores_page = True
    ids = await read_shop(shop.url, tmp_path)
    assert ids == [str(n) for n in range(1, SHOPIFY_PAGE_LIMIT + 1)]
    assert len(shop.requests) == 2  # the repeat of page 1 ends the reading


async def test_a_failing_later_page_is_one_line_naming_it(
    shop: ShopifyShop, tmp_path: Path
) -> None:
    shop.failures[2] = [404]
    with pytest.raises(FeedError) as error:
        await read_shop(shop.url, tmp_path)
    assert str(error.value) == f"cannot download the catalog {shop.url}: page 2: HTTP 404"
    assert not list(tmp_path.iterdir())  # nothing half-joined is kept as the feed


async def test_a_transient_failure_of_a_page_is_retried(shop: ShopifyShop, tmp_path: Path) -> None:
    shop.failures[3] = [503]
    ids = await read_shop(shop.url, tmp_path)
    assert len(ids) == 2 * SHOPIFY_PAGE_LIMIT + 17
    assert [r["page"] for r in shop.requests] == ["1", "2", "3", "3"]
