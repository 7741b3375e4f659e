"""Variants of one product (sizes, colours) as the one product a shopper sees: the
variant shown is one that can be bought, at its lowest price; the product's images are
all of its variants' pictures, and it is in stock while any variant is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TITLE_SEPARATORS = " ,;:-–—/|(["


@dataclass(frozen=True)
class Variant:
    variant_id: str
    title: str
    url: str
    images: tuple[str, ...]
    price: float | None
    original_price: float | None  # the price before a sale; None when not on sale
    in_stock: bool
    currency: str = ""
    colour: str = ""
    size: str = ""


def on_sale(price: float | None, regular: float | None) -> float | None:
    """The regular price to strike through, when `price` is a real reduction of it."""
    if price is None or regular is None or regular <= price:
        return None
    return regular


def representative(variants: Sequence[Variant]) -> Variant:
    """The variant that stands for the product: in stock first, then the lowest price
    (a variant without a price last), then feed order."""
    return min(
        variants,
        key=lambda v: (not v.in_stock, v.price is None, v.price or 0.0),
    )


def shared_title(variants: Sequence[Variant], fallback: str) -> str:
    """What the variants' titles share ("Wrap dress - S", "Wrap dress - M" -> "Wrap
    dress"), or `fallback` when they share too little to name the product."""
    titles = [v.title for v in variants]
    if len(set(titles)) < 2:
        return titles[0] if titles else fallback
    prefix = _common_prefix(titles)
    cut_mid_word = prefix[-1:].isalnum() and any(
        len(t) > len(prefix) and t[len(prefix)].isalnum() for t in titles
    )
    if cut_mid_word:
        prefix = prefix.rpartition(" ")[0]  # cut mid-word: back to the last whole word
    shared = prefix.rstrip(_TITLE_SEPARATORS)
    return shared if len(shared) >= 3 else fallback


def _common_prefix(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)  # the prefix of these two is everyone's
    length = next(
        (i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    return first[:length]


def all_images(variants: Sequence[Variant], first: Variant) -> tuple[str, ...]:
    """Every variant's pictures once each, the representative variant's first."""
    ordered = [*first.images, *(image for v in variants for image in v.images)]
    return tuple(dict.fromkeys(ordered))


def variant_summary(variants: Sequence[Variant]) -> dict[str, Any]:
    """What a product record keeps about its variants (nothing for a single one)."""
    if len(variants) < 2:
        return {}
    summary: dict[str, Any] = {"variant_ids": [v.variant_id for v in variants]}
    for name, values in (
        ("colours", [v.colour for v in variants]),
        ("sizes", [v.size for v in variants]),
    ):
        distinct = list(dict.fromkeys(value for value in values if value))
        if len(distinct) > 1:
            summary[name] = distinct
    return summary
