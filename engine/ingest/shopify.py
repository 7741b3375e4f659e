"""Shopify's `products.json` (every Shopify shop serves it at /products.json): products
with their variants and images, each product one product here. It names neither the
shop's address nor its currency: product links are the shop's address +
/products/<handle> (the address the feed came from, or `catalog.shop_url`), prices are in
`catalog.currency`. A variant's `compare_at_price` above its price is a sale.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urljoin

from engine.ingest.feed import Feed, FeedError, FeedItem, Skipped, parse_price, resolve_image
from engine.ingest.shop_url import shop_url_problem
from engine.ingest.shopify_pages import SHOPIFY_PAGE_LIMIT, paginates
from engine.ingest.variants import Variant, all_images, on_sale, representative, variant_summary
from engine.types import Product

log = logging.getLogger(__name__)

_COLOUR_OPTIONS = {"color", "colour", "farbe"}
_SIZE_OPTIONS = {"size", "größe", "groesse"}
# Shopify has no gender field; a shop's tag naming exactly one of these stands for it.
_GENDER_TAGS = {
    "women": "women",
    "female": "women",
    "men": "men",
    "male": "men",
    "unisex": "unisex",
}


class _Broken(ValueError):
    """Why a product or a variant is skipped."""


def shopify_feed(feed_name: str, text: str, shop_url: str, feed_url: str, currency: str) -> Feed:
    """Products of a products.json; `shop_url` is where /products/<handle> lives."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeedError(
            f"catalog {feed_name} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); nothing was built from it"
        ) from None
    products = document.get("products") if isinstance(document, dict) else None
    if not isinstance(products, list):
        raise FeedError(f'catalog {feed_name} has no "products" list (a Shopify products.json)')
    if not shop_url:
        raise FeedError(
            f"catalog {feed_name} is a Shopify products.json, which holds no product links: "
            'set catalog.shop_url to the shop\'s address (e.g. "https://shop.example.com"), '
            "or build from the shop's own /products.json URL"
        )
    if len(products) >= SHOPIFY_PAGE_LIMIT and not paginates(feed_url):
        log.warning(
            "catalog %s holds %d products, Shopify's most per page: it may be one page of a "
            "larger shop, and only these are built (README: 'Shopify products.json')",
            feed_name,
            len(products),
        )
    feed = Feed()
    first_row_of: dict[str, int] = {}
    for row, entry in enumerate(products, start=1):
        reader = _ProductReader(row, entry, shop_url, feed_url, currency.upper())
        try:
            item = reader.item(first_row_of)
        except _Broken as exc:
            feed.skipped += [*reader.skipped, Skipped(row, reader.product_id, "", str(exc))]
            continue
        feed.skipped += reader.skipped
        first_row_of[item.product.product_id] = row
        feed.items.append(item)
    return feed


class _ProductReader:
    def __init__(
        self, row: int, entry: object, shop_url: str, feed_url: str, currency: str
    ) -> None:
        self.row = row
        self.entry: Mapping[str, Any] = entry if isinstance(entry, dict) else {}
        self.product_id = _text(self.entry.get("id"))
        self.shop_url = shop_url
        self.feed_url = feed_url
        self.currency = currency
        self.skipped: list[Skipped] = []

    def item(self, first_row_of: Mapping[str, int]) -> FeedItem:
        if not self.entry:
            raise _Broken("not a JSON object")
        if not self.product_id:
            raise _Broken("missing id")
        if self.product_id in first_row_of:
            raise _Broken(f"duplicate id (first seen in product {first_row_of[self.product_id]})")
        handle = _text(self.entry.get("handle"))
        if not handle:
            raise _Broken("missing handle (the product's link is /products/<handle>)")
        url = urljoin(self.shop_url, f"/products/{quote(handle)}")
        problem = shop_url_problem(url)
        if problem:
            raise _Broken(problem)
        images = self._images()
        if not images:
            raise _Broken("no image")
        variants = self._variants(url, images)
        if not variants:
            raise _Broken("no usable variant")
        chosen = representative(variants)
        product = Product(
            product_id=self.product_id,
            title=_text(self.entry.get("title")) or self.product_id,
            url=url,
            image=chosen.images[0],
            price=chosen.price,
            currency=self.currency,
            original_price=chosen.original_price,
            category=_text(self.entry.get("product_type")).lower(),
            gender=_gender(self._tags()),
            colour=chosen.colour,
            brand=_text(self.entry.get("vendor")),
            in_stock=any(variant.in_stock for variant in variants),
            extra=self._extra(handle, variants),
        )
        return FeedItem(self.row, product, all_images(variants, chosen))

    def _images(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source for source, _ in self._pictures()))

    def _pictures(self) -> list[tuple[str, list[str]]]:
        """Each product image with the ids of the variants it shows."""
        pictures = []
        for image in _list(self.entry.get("images")):
            source = _text(image.get("src")) if isinstance(image, dict) else ""
            if source:
                shows = [_text(v) for v in _list(image.get("variant_ids"))]
                pictures.append((resolve_image(source, self.feed_url), shows))
        return pictures

    def _variant_images(
        self, variant: Mapping[str, Any], variant_id: str, images: tuple[str, ...]
    ) -> tuple[str, ...]:
        """The variant's own pictures (its featured image, the images naming it), else
        the product's."""
        own = variant.get("featured_image")
        featured = _text(own.get("src")) if isinstance(own, dict) else ""
        mine = [source for source, shows in self._pictures() if variant_id in shows]
        if featured:
            mine.insert(0, resolve_image(featured, self.feed_url))
        return tuple(dict.fromkeys(mine)) or images

    def _variants(self, url: str, images: tuple[str, ...]) -> list[Variant]:
        """The product's variants; a broken one is skipped with its reason, the rest stay.
        A variant without a picture of its own shows the product's pictures."""
        options = {
            f"option{option.get('position', number)}": _text(option.get("name")).lower()
            for number, option in enumerate(_list(self.entry.get("options")), start=1)
            if isinstance(option, dict)
        }
        variants = []
        for entry in _list(self.entry.get("variants")):
            variant = entry if isinstance(entry, dict) else {}
            variant_id = _text(variant.get("id"))
            try:
                price, regular = self._prices(variant)
            except _Broken as exc:
                self.skipped.append(
                    Skipped(self.row, self.product_id, "", f"variant {variant_id}: {exc}")
                )
                continue
            variants.append(
                Variant(
                    variant_id=variant_id,
                    title=_text(variant.get("title")),
                    url=url,
                    images=self._variant_images(variant, variant_id, images),
                    price=price,
                    original_price=regular,
                    in_stock=variant.get("available", True) is not False,
                    currency=self.currency,
                    colour=_option(variant, options, _COLOUR_OPTIONS).lower(),
                    size=_option(variant, options, _SIZE_OPTIONS),
                )
            )
        return variants

    @staticmethod
    def _prices(variant: Mapping[str, Any]) -> tuple[float | None, float | None]:
        if not variant:
            raise _Broken("not a JSON object")
        price_text = _text(variant.get("price"))
        price = parse_price(price_text)
        if price is None:
            raise _Broken(f"price {price_text!r} is not a number")
        compare_text = _text(variant.get("compare_at_price"))
        regular = parse_price(compare_text) if compare_text else None
        return price, on_sale(price, regular)

    def _tags(self) -> list[str]:
        """Tags as a list (products.json gives a list; the Admin API a comma string)."""
        tags = self.entry.get("tags")
        if isinstance(tags, str):
            tags = tags.split(",")
        return [_text(tag) for tag in _list(tags) if _text(tag)]

    def _extra(self, handle: str, variants: list[Variant]) -> dict[str, Any]:
        extra: dict[str, Any] = {"handle": handle}
        tags = self._tags()
        if tags:
            extra["tags"] = tags
        return {**extra, **variant_summary(variants)}


def _gender(tags: list[str]) -> str:
    genders = {_GENDER_TAGS[tag.lower()] for tag in tags if tag.lower() in _GENDER_TAGS}
    return genders.pop() if len(genders) == 1 else ""


def _option(variant: Mapping[str, Any], options: Mapping[str, str], names: set[str]) -> str:
    return next(
        (_text(variant.get(key)) for key, name in options.items() if name in names),
        "",
    )


def _text(value: object) -> str:
    if value is None or isinstance(value, (dict, list, bool)):
        return ""
    return str(value).strip()


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []
