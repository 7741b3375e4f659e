"""Which kind of feed a catalog file is, told by its content (a shop's export is often
named .txt or has no suffix at all), and the reader for it:

- Google Merchant Center XML (RSS 2.0 or Atom with g: attributes): starts with `<`
- Shopify's products.json: a JSON object starting with "products"
- Merchant Center's tab-separated form: a tab-separated header naming id, link and
  image_link (unless `catalog.columns` maps the columns: then it is read as a CSV)
- otherwise the canonical CSV or JSON Lines feed (engine/ingest/feed.py), told apart by
  the file's suffix as before
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from engine.ingest.feed import Feed, FeedError, read_feed_text, read_rows_feed
from engine.ingest.merchant import is_merchant_header, merchant_feed, merchant_tsv_records
from engine.ingest.merchant_xml import merchant_xml_records
from engine.ingest.shopify import shopify_feed

_SNIFF_BYTES = 4096
_SHOPIFY_START = re.compile(rb'^\{\s*"products"\s*:')


class FeedFormat(Enum):
    MERCHANT_XML = "Google Merchant Center XML"
    MERCHANT_TSV = "Google Merchant Center TSV"
    SHOPIFY_JSON = "Shopify products.json"
    ROWS = "CSV / JSON Lines"


@dataclass(frozen=True)
class FeedOrigin:
    """Where a feed came from, for what its content leaves out: the URL it was fetched
    from ("" for a file; relative image links resolve against it), the shop's address
    (Shopify's links) and the currency of prices that carry none."""

    feed_url: str = ""
    shop_url: str = ""
    currency: str = ""


def detect_format(path: Path, column_map: Mapping[str, str] | None = None) -> FeedFormat:
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as exc:
        raise FeedError(f"cannot read catalog {path}: {exc.strerror or exc}") from None
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if start.startswith(b"<"):
        return FeedFormat.MERCHANT_XML
    if _SHOPIFY_START.match(start):
        return FeedFormat.SHOPIFY_JSON
    first_line = start.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not column_map and "\t" in first_line and is_merchant_header(first_line.split("\t")):
        return FeedFormat.MERCHANT_TSV
    return FeedFormat.ROWS


def read_catalog(
    path: Path, column_map: Mapping[str, str] | None = None, origin: FeedOrigin | None = None
) -> Feed:
    """Every product of the feed at `path`, whatever its format; broken rows skipped with
    their reasons, a feed that cannot be read at all one FeedError line."""
    origin = origin or FeedOrigin()
    kind = detect_format(path, column_map)
    if kind is FeedFormat.MERCHANT_XML:
        return merchant_feed(merchant_xml_records(path), origin.feed_url)
    text, encoding = read_feed_text(path)
    if kind is FeedFormat.MERCHANT_TSV:
        feed = merchant_feed(merchant_tsv_records(path.name, text), origin.feed_url)
    elif kind is FeedFormat.SHOPIFY_JSON:
        shop_url = origin.shop_url or origin.feed_url
        feed = shopify_feed(path.name, text, shop_url, origin.feed_url, origin.currency)
    else:
        return read_rows_feed(path, text, encoding, column_map)
    feed.encoding = encoding
    return feed
