"""The feeds shops already publish (issue 17 §3), read into products: Google Merchant
Center XML (RSS and Atom) and TSV, Shopify's products.json; told apart by content; item
groups and variants as one product; sale prices; broken items skipped with reasons."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tracemalloc
import xml.etree.ElementTree as PlainTree
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.catalog import _SCHEMA, Catalog
from engine.ingest.feed import FeedError
from engine.ingest.feed_formats import FeedFormat, FeedOrigin, detect_format, read_catalog
from engine.ingest.merchant import MerchantRecord, merchant_feed
from engine.ingest.merchant_xml import merchant_xml_records
from engine.ingest.shopify import SHOPIFY_PAGE_LIMIT
from tests.fakes.demo import DEMO_DIR

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"
SHOP = FeedOrigin(shop_url="https://shop.example.com", currency="usd")


def products_of(name: str, origin: FeedOrigin = SHOP):
    feed = read_catalog(FIXTURES / name, None, origin)
    return {item.product.product_id: item for item in feed.items}, {
        skip.product_id: skip.reason for skip in feed.skipped
    }


def test_merchant_rss_groups_variants_and_strikes_the_regular_price() -> None:
    items, skipped = products_of("merchant-rss.xml")
    assert list(items) == ["COAT", "HAT-1", "DRESS-1"]
    coat = items["COAT"]
    # Three usable variants are one product, shown as an in-stock one at its lowest price.
    assert (coat.product.title, coat.product.price, coat.product.original_price) == (
        "Quilted coat",
        59.0,
        89.0,
    )
    assert coat.product.url == "https://shop.example.com/coat?variant=red-s"
    assert coat.images == tuple(
        f"../../../data/demo/images/{name}.jpg" for name in ("outwear-1", "outwear-2", "outwear-3")
    )
    assert (coat.product.category, coat.product.gender, coat.product.brand) == (
        "outwear",
        "women",
        "Northwind",
    )
    assert coat.product.extra["variant_ids"] == ["COAT-RED-S", "COAT-RED-M", "COAT-BLUE-S"]
    assert coat.product.extra["colours"] == ["red", "blue"]
    hat = items["HAT-1"].product
    assert (hat.price, hat.original_price, hat.currency, hat.gender) == (24.99, None, "EUR", "men")
    assert hat.category == "hat"  # the text Google category, as no product_type is given
    assert hat.extra["material"] == "wool" and "shipping" not in hat.extra
    dress = items["DRESS-1"].product
    assert (dress.price, dress.original_price) == (99.0, None)  # its sale ended in 2020
    assert dress.category == "dress"
    assert skipped == {
        "NO-CURRENCY": "price '19.99' has no currency (Merchant Center prices read '19.99 EUR')",
        "NO-LINK": "missing url (shop link)",
        "COAT-GREEN-S": "no g:image_link",
        "HAT-1": "duplicate g:id (first seen in item 4)",
    }


def test_a_sale_inside_its_period_is_a_sale() -> None:
    def item(period: str) -> MerchantRecord:
        return MerchantRecord(
            1,
            {
                "id": ["D"],
                "link": ["https://s.example/d"],
                "image_link": ["d.jpg"],
                "price": ["99.00 EUR"],
                "sale_price": ["EUR 79.00"],
                "sale_price_effective_date": [period],
            },
        )

    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    running = "2026-11-01T00:00:00+01:00/2026-12-24T00:00:00+01:00"
    ended = "2026-10-01T00:00:00+01:00/2026-11-01T00:00:00+01:00"
    on_sale = merchant_feed([item(running)], now=now).items[0].product
    assert (on_sale.price, on_sale.original_price) == (79.0, 99.0)
    after = merchant_feed([item(ended)], now=now).items[0].product
    assert (after.price, after.original_price) == (99.0, None)


def test_merchant_atom_entries() -> None:
    items, skipped = products_of("merchant-atom.xml")
    assert skipped == {}
    skirt, shoes = items["SKIRT-1"].product, items["SHOES-1"].product
    assert skirt.url == "https://shop.example.com/skirt-1"  # <link href>, not the feed's self link
    assert (skirt.price, skirt.original_price, skirt.gender) == (39.9, 59.9, "women")
    assert (shoes.url, shoes.currency, shoes.in_stock) == (
        "https://shop.example.com/shoes-1",
        "GBP",
        False,
    )


def test_merchant_tsv_with_spelled_out_and_prefixed_headers() -> None:
    items, skipped = products_of("merchant.tsv")
    assert list(items) == ["TEE", "SHIRT-2"]
    tee = items["TEE"]
    assert (tee.product.title, tee.product.price, tee.product.original_price) == (
        "Cotton tee",
        15.0,
        19.0,
    )
    assert tee.images[0].endswith("t-shirt-2.jpg")  # the variant on sale is the one shown
    assert skipped == {
        "SHIRT-1": "price '29.00' has no currency (Merchant Center prices read '19.99 EUR')",
        "PANTS-1": "url is not an http(s) shop link",
    }


def test_shopify_products_variants_and_compare_at_price() -> None:
    items, skipped = products_of("shopify-products.json")
    assert list(items) == ["7001", "7002"]
    shirt = items["7001"]
    # The white variant is on sale but sold out: the blue one (in stock) is shown.
    assert shirt.product.url == "https://shop.example.com/products/linen-shirt"
    assert (shirt.product.price, shirt.product.original_price, shirt.product.currency) == (
        34.0,
        None,
        "USD",
    )
    assert shirt.images[0].endswith("shirt-4.jpg") and shirt.images[1].endswith("shirt-3.jpg")
    assert (shirt.product.colour, shirt.product.gender, shirt.product.brand) == (
        "blue",
        "women",
        "Fieldhouse",
    )
    shorts = items["7002"].product
    assert (shorts.original_price, shorts.gender) == (None, "men")  # compare-at == price
    assert skipped == {
        "7001": "variant 93: price 'not a price' is not a number",
        "7003": "no image",
        "7004": "missing handle (the product's link is /products/<handle>)",
    }


def test_shopify_sale_is_the_compare_at_price(tmp_path: Path) -> None:
    document = json.loads((FIXTURES / "shopify-products.json").read_text())
    document["products"][0]["variants"][0]["available"] = True  # the white one, on sale
    copy = tmp_path / "products.json"
    copy.write_text(json.dumps(document))
    shirt = read_catalog(copy, None, SHOP).items[0].product
    assert (shirt.price, shirt.original_price, shirt.colour) == (24.0, 39.0, "white")


def test_a_full_shopify_page_warns_that_the_shop_may_hold_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    document = json.loads((FIXTURES / "shopify-products.json").read_text())
    product = document["products"][0]
    document["products"] = [
        {**product, "id": n, "handle": f"shirt-{n}"} for n in range(SHOPIFY_PAGE_LIMIT)
    ]
    page = tmp_path / "products.json"
    page.write_text(json.dumps(document))
    read_catalog(page, None, SHOP)
    assert "may be one page of a larger shop" in caplog.text
    caplog.clear()
    read_catalog(FIXTURES / "shopify-products.json", None, SHOP)  # a small shop: no warning
    assert "one page" not in caplog.text


def test_a_local_shopify_feed_needs_the_shop_address() -> None:
    with pytest.raises(FeedError, match=r"set catalog\.shop_url"):
        read_catalog(FIXTURES / "shopify-products.json", None, FeedOrigin())


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("merchant-rss.xml", FeedFormat.MERCHANT_XML),
        ("merchant-atom.xml", FeedFormat.MERCHANT_XML),
        ("merchant.tsv", FeedFormat.MERCHANT_TSV),
        ("shopify-products.json", FeedFormat.SHOPIFY_JSON),
    ],
)
def test_the_format_is_told_by_content_not_by_name(
    fixture: str, kind: FeedFormat, tmp_path: Path
) -> None:
    for name in ("feed", "feed.txt", "feed.csv"):
        copy = tmp_path / name
        shutil.copy(FIXTURES / fixture, copy)
        assert detect_format(copy) is kind
    assert detect_format(DEMO_DIR / "catalog.csv") is FeedFormat.ROWS


def test_a_mapped_tsv_is_read_with_the_mapping(tmp_path: Path) -> None:
    feed = tmp_path / "mapped.tsv"
    feed.write_text(
        "id\tname\tlink\timage_link\nM1\tMapped\thttps://s.example/m1\tm.jpg\n", encoding="utf-8"
    )
    mapping = {"product_id": "id", "title": "name", "url": "link", "image": "image_link"}
    assert detect_format(feed, mapping) is FeedFormat.ROWS
    assert read_catalog(feed, mapping).items[0].product.title == "Mapped"


@pytest.mark.parametrize(
    ("name", "origin"),
    [
        ("merchant-feed.xml", FeedOrigin()),
        ("merchant-feed.tsv", FeedOrigin()),
        ("shopify-products.json", FeedOrigin(shop_url="https://shop.example.com", currency="EUR")),
    ],
)
def test_the_demo_feeds_hold_the_demo_shop(name: str, origin: FeedOrigin) -> None:
    feed = read_catalog(DEMO_DIR / name, None, origin)
    assert len(feed.items) == 60 and feed.skipped == []
    assert all((DEMO_DIR / item.images[0]).is_file() for item in feed.items)
    assert all(item.product.url.startswith("https://shop.example.com/") for item in feed.items)
    assert 5 <= sum(item.product.original_price is not None for item in feed.items) < 60


def test_a_feed_from_a_url_resolves_relative_images_against_it() -> None:
    origin = FeedOrigin(feed_url="https://shop.example.com/feeds/google.xml")
    items, _ = products_of("merchant-atom.xml", origin)
    assert items["SKIRT-1"].images == ("https://shop.example.com/data/demo/images/skirt-1.jpg",)


def test_broken_xml_is_one_feed_error(tmp_path: Path) -> None:
    text = (FIXTURES / "merchant-rss.xml").read_text()
    broken = tmp_path / "broken.xml"
    broken.write_text(text[: len(text) // 2])  # a download cut off half-way
    with pytest.raises(FeedError, match=r"not well-formed XML \(line \d+, column \d+") as caught:
        read_catalog(broken)
    assert "\n" not in str(caught.value)


def test_entity_expansion_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "laughs.xml"
    bomb.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n <!ENTITY lol "lol">\n'
        + "".join(
            f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n'
            for n in range(1, 10)
        )
        + ']>\n<rss xmlns:g="http://base.google.com/ns/1.0"><channel><item>'
        "<g:id>&lol9;</g:id></item></channel></rss>\n"
    )
    with pytest.raises(FeedError, match="declares XML entities") as caught:
        read_catalog(bomb)
    assert "\n" not in str(caught.value)


def test_xml_that_is_not_a_feed_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.xml"
    other.write_text("<html><body>Not found</body></html>")
    with pytest.raises(FeedError, match=r"not a Merchant Center feed \(its root is <html>"):
        read_catalog(other)


def test_a_large_feed_is_streamed_not_held_whole(tmp_path: Path) -> None:
    """Peak memory while reading 20,000 items, next to parsing the same file whole."""
    item = (
        "<item><g:id>P{n}</g:id><title>Product {n}</title><link>https://s.example/{n}</link>"
        "<g:image_link>https://img.example/{n}.jpg</g:image_link><g:price>9.99 EUR</g:price>"
        "<description>{text}</description></item>\n"
    )
    path = tmp_path / "large.xml"
    with path.open("w") as handle:
        handle.write('<rss xmlns:g="http://base.google.com/ns/1.0"><channel>\n')
        for n in range(20_000):
            handle.write(item.format(n=n, text="A long description. " * 10))
        handle.write("</channel></rss>\n")

    def peak(work) -> int:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda: sum(1 for _ in merchant_xml_records(path)))
    whole = peak(lambda: PlainTree.parse(path))
    assert whole > 20 * streamed, (streamed, whole)


def test_an_index_built_before_original_price_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite"
    old_schema = _SCHEMA.replace(",\n    original_price REAL", "")
    assert old_schema != _SCHEMA
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute(
        "INSERT INTO products (product_id, title, url, image, price) "
        "VALUES ('OLD', 'Old', 'https://s.example/old', 'old.jpg', 5.0)"
    )
    db.commit()
    db.close()
    catalog = Catalog(path)
    try:
        old = catalog.products(["OLD"])["OLD"]
    finally:
        catalog.close()
    assert (old.price, old.original_price) == (5.0, None)
