"""Every page of a Shopify shop's /products.json. Shopify serves at most 250 products per
request (`?limit=250&page=N`; 30 without `limit`), so a shop's products.json URL is read
page by page until a page comes back short, and the pages are joined into one
products.json file that the Shopify reader reads like any other."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.ingest.feed import FeedError

log = logging.getLogger(__name__)

SHOPIFY_PAGE_LIMIT = 250
# 100,000 products: a shop beyond that is better built from its Merchant Center feed.
MAX_PAGES = 400

FetchPage = Callable[[str, Path], Awaitable[None]]


def paginates(url: str) -> bool:
    """A shop's products.json URL that names no page of its own: read every page."""
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith("/products.json"):
        return False
    return all(key != "page" for key, _ in parse_qsl(parts.query))


def page_url(url: str, page: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "limit"]
    query += [("limit", str(SHOPIFY_PAGE_LIMIT)), ("page", str(page))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _products_of(path: Path) -> list[Any] | None:
    """The page's product list; None when the page is not a products.json."""
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return None
    products = document.get("products") if isinstance(document, dict) else None
    return products if isinstance(products, list) else None


async def join_pages(fetch: FetchPage, url: str, target: Path, cap: int) -> None:
    """Every page of the shop at `url` joined into `target`, each product once (a product
    moving between pages while they are read is kept where first seen). When the first
    page is not a products.json, it is kept as it came: reading it says what is wrong."""
    page_file = target.with_name(f".{target.name}.page")
    partial = target.with_name(f".{target.name}.part")
    try:
        await fetch(page_url(url, 1), page_file)
        first = _products_of(page_file)
        if first is None:
            os.replace(page_file, target)
            return
        with partial.open("w", encoding="utf-8") as out:
            out.write('{"products": [')
            pages = await _copy_pages(fetch, url, page_file, first, out, cap)
            out.write("]}")
        os.replace(partial, target)
        log.info("read %d pages of %s", pages, url)
    finally:
        page_file.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


async def _copy_pages(
    fetch: FetchPage, url: str, page_file: Path, first: list[Any], out: TextIO, cap: int
) -> int:
    """Pages from the first (`first`, read from `page_file`) until a short one; how many
    were read."""
    seen: set[str] = set()
    written = 0
    size = 0
    for page in range(1, MAX_PAGES + 1):
        if page > 1:
            try:
                await fetch(page_url(url, page), page_file)
            except FeedError as exc:
                raise FeedError(f"page {page}: {exc}") from None
        size += page_file.stat().st_size
        if size > cap:
            raise FeedError(f"its pages are over build.max_feed_bytes ({cap / 1e6:g} MB)")
        products = first if page == 1 else _products_of(page_file)
        if products is None:
            raise FeedError(f"page {page} is not a products.json")
        before = written
        for product in products:
            key = product.get("id") if isinstance(product, dict) else None
            if key is not None:
                if str(key) in seen:
                    continue
                seen.add(str(key))
            out.write(("," if written else "") + json.dumps(product))
            written += 1
        if len(products) < SHOPIFY_PAGE_LIMIT:
            return page
        if written == before:  # a full page of products already read: `page` is ignored
            log.warning("%s: page %d repeats earlier pages; stopped there", url, page)
            return page
    log.warning(
        "%s: stopped after %d pages (%d products); build a larger shop from its Merchant "
        "Center feed",
        url,
        MAX_PAGES,
        MAX_PAGES * SHOPIFY_PAGE_LIMIT,
    )
    return MAX_PAGES
