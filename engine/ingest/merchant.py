"""Google Merchant Center product data (the feed a shop already sends to Google
Shopping), from its XML (engine/ingest/merchant_xml.py) or its tab-separated form, into
products: the items of one `item_group_id` become one product, a `sale_price` shows the
regular price struck through, and an item that is broken is skipped with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.ingest.csv_records import CsvHeaderError, CsvRecords
from engine.ingest.feed import Feed, FeedError, FeedItem, Skipped, parse_price, resolve_image
from engine.ingest.shop_url import shop_url_problem
from engine.ingest.variants import (
    Variant,
    all_images,
    on_sale,
    representative,
    shared_title,
    variant_summary,
)
from engine.types import Product

# Attributes read into the product's own fields; every other one is kept as an extra.
_READ = {
    "id",
    "title",
    "link",
    "image_link",
    "additional_image_link",
    "price",
    "sale_price",
    "sale_price_effective_date",
    "availability",
    "product_type",
    "google_product_category",
    "gender",
    "color",
    "brand",
    "item_group_id",
    "size",
}
_AVAILABLE = {"in_stock", "in stock", "preorder", "backorder", "limited_availability"}
_GENDERS = {"male": "men", "female": "women", "unisex": "unisex"}
_CURRENCY = re.compile(r"(?<![A-Za-z])[A-Za-z]{3}(?![A-Za-z])")


@dataclass(frozen=True)
class MerchantRecord:
    """One item: attribute name (without `g:`) -> its values in feed order."""

    number: int  # 1-based item (XML) or data row (TSV)
    attributes: Mapping[str, list[str]]
    error: str = ""  # an unreadable TSV row: why

    def value(self, name: str) -> str:
        return next((v.strip() for v in self.attributes.get(name, ()) if v.strip()), "")

    def values(self, name: str) -> list[str]:
        return [v.strip() for v in self.attributes.get(name, ()) if v.strip()]


class _Broken(ValueError):
    """Why an item is skipped."""


def parse_money(text: str, attribute: str = "price") -> tuple[float, str]:
    """'19.99 EUR' -> (19.99, 'EUR'); _Broken when the number or the currency is missing."""
    amount = parse_price(text)
    if amount is None:
        raise _Broken(f"{attribute} {text!r} is not a number")
    currency = _CURRENCY.search(text)
    if currency is None:
        raise _Broken(
            f"{attribute} {text!r} has no currency (Merchant Center prices read '19.99 EUR')"
        )
    return amount, currency.group().upper()


def merchant_feed(
    records: Iterable[MerchantRecord], feed_url: str = "", now: datetime | None = None
) -> Feed:
    """Products from Merchant items: one per `item_group_id` (or per item without one),
    in the order of each product's first item."""
    moment = now or datetime.now(UTC)
    feed = Feed()
    first_item_of: dict[str, int] = {}
    groups: dict[str, list[tuple[Variant, MerchantRecord]]] = {}
    for record in records:
        try:
            variant = _variant(record, first_item_of, feed_url, moment)
        except _Broken as exc:
            feed.skipped.append(
                Skipped(record.number, record.value("id"), record.value("image_link"), str(exc))
            )
            continue
        first_item_of[variant.variant_id] = record.number
        group = record.value("item_group_id") or variant.variant_id
        groups.setdefault(group, []).append((variant, record))
    taken: dict[str, int] = {}
    for product_id, members in groups.items():
        row = members[0][1].number
        if product_id in taken:  # an item_group_id equal to a lone item's id
            reason = f"item_group_id {product_id!r} is also the id of item {taken[product_id]}"
            feed.skipped += [Skipped(r.number, v.variant_id, "", reason) for v, r in members]
            continue
        taken[product_id] = row
        feed.items.append(_item(product_id, row, members))
    return feed


def _variant(
    record: MerchantRecord, first_item_of: dict[str, int], feed_url: str, now: datetime
) -> Variant:
    if record.error:
        raise _Broken(record.error)
    item_id = record.value("id")
    if not item_id:
        raise _Broken("missing g:id")
    if item_id in first_item_of:
        raise _Broken(f"duplicate g:id (first seen in item {first_item_of[item_id]})")
    url = record.value("link")
    problem = shop_url_problem(url)
    if problem:
        raise _Broken(problem)
    image = record.value("image_link")
    if not image:
        raise _Broken("no g:image_link")
    extra_images = [
        part.strip()
        for value in record.values("additional_image_link")
        for part in value.split(",")
        if part.strip()
    ]
    price, regular, currency = _prices(record, now)
    return Variant(
        variant_id=item_id,
        title=record.value("title") or item_id,
        url=url,
        images=tuple(resolve_image(ref, feed_url) for ref in (image, *extra_images)),
        price=price,
        original_price=regular,
        currency=currency,
        in_stock=record.value("availability").lower() in _AVAILABLE
        or not record.value("availability"),
        colour=record.value("color").lower(),
        size=record.value("size"),
    )


def _prices(record: MerchantRecord, now: datetime) -> tuple[float | None, float | None, str]:
    """(price to pay, regular price when on sale, currency)."""
    text = record.value("price")
    if not text:
        return None, None, ""
    price, currency = parse_money(text)
    sale_text = record.value("sale_price")
    if not sale_text:
        return price, None, currency
    sale, sale_currency = parse_money(sale_text, "sale_price")
    if sale_currency != currency:
        raise _Broken(f"sale_price is in {sale_currency} but price in {currency}")
    if not _sale_running(record.value("sale_price_effective_date"), now):
        return price, None, currency
    return sale, on_sale(sale, price), currency


def _sale_running(period: str, now: datetime) -> bool:
    """Whether `now` is inside 'START/END' (ISO 8601); no period or an unreadable one:
    the sale price holds, as Merchant Center applies it."""
    start_text, _, end_text = period.partition("/")
    try:
        start = datetime.fromisoformat(start_text) if start_text else None
        end = datetime.fromisoformat(end_text) if end_text else None
    except ValueError:
        return True
    aware = [moment for moment in (start, end) if moment is not None and moment.tzinfo]
    if len(aware) != len([m for m in (start, end) if m is not None]):
        return True  # a period without a time zone cannot be compared with now
    return (start is None or start <= now) and (end is None or now < end)


def _item(product_id: str, row: int, members: list[tuple[Variant, MerchantRecord]]) -> FeedItem:
    variants = [variant for variant, _ in members]
    chosen = representative(variants)
    # Product-wide attributes: the shown variant's, else the first variant's that has one.
    records = sorted((r for _, r in members), key=lambda r: r.number != _number(members, chosen))
    gender = _first(records, "gender").lower()
    product = Product(
        product_id=product_id,
        title=shared_title(variants, chosen.title),
        url=chosen.url,
        image=chosen.images[0],
        price=chosen.price,
        currency=chosen.currency,
        original_price=chosen.original_price,
        category=_category(records),
        gender=_GENDERS.get(gender, gender),
        colour=chosen.colour,
        brand=_first(records, "brand"),
        in_stock=any(variant.in_stock for variant in variants),
        extra={**_extra(records[0]), **variant_summary(variants)},
    )
    return FeedItem(row, product, all_images(variants, chosen))


def _number(members: list[tuple[Variant, MerchantRecord]], chosen: Variant) -> int:
    return next(record.number for variant, record in members if variant is chosen)


def _first(records: list[MerchantRecord], name: str) -> str:
    return next((r.value(name) for r in records if r.value(name)), "")


def _category(records: list[MerchantRecord]) -> str:
    """The most specific part of `product_type` ("Apparel > Dresses" -> "dresses"), or of
    a Google category given as text (a numeric category id names nothing a shopper reads)."""
    for name in ("product_type", "google_product_category"):
        path = _first(records, name)
        if path and not path.isdigit():
            return path.split(">")[-1].strip().lower()
    return ""


def _extra(record: MerchantRecord) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name in ("product_type", "google_product_category"):
        if record.value(name):
            kept[name] = record.value(name)
    for name, values in record.attributes.items():
        present = [v for v in values if v.strip()]
        if name not in _READ and present:
            kept[name] = present[0] if len(present) == 1 else present
    return kept


def merchant_header_name(column: str) -> str:
    """A tab-separated feed's header as an attribute name: 'g:image_link', 'Image Link'
    and 'image_link' are the same attribute."""
    name = column.strip().lower()
    name = name.removeprefix("g:")
    return name.replace(" ", "_")


def is_merchant_header(columns: Iterable[str]) -> bool:
    names = {merchant_header_name(column) for column in columns}
    return {"id", "link", "image_link"} <= names


def merchant_tsv_records(feed_name: str, text: str) -> Iterator[MerchantRecord]:
    """The tab-separated form (Merchant Center's file upload): a header of attribute
    names, one item a row. A broken row costs only itself."""
    try:
        records = CsvRecords(text)
    except CsvHeaderError as exc:
        raise FeedError(f"catalog {feed_name}: {exc}") from None
    header = [merchant_header_name(column) for column in records.header]
    for record in records:
        if record.cells is None:
            yield MerchantRecord(record.number, {}, record.error)
            continue
        attributes: dict[str, list[str]] = {}
        for name, cell in zip(header, record.cells, strict=False):
            if name:
                attributes.setdefault(name, []).append(cell)
        yield MerchantRecord(record.number, attributes)
