"""Plain result and query types shared by the engine and the bots (no torch here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

CANONICAL_COLUMNS = (
    "product_id",
    "title",
    "url",
    "image",
    "price",
    "currency",
    "category",
    "gender",
    "colour",
    "brand",
    "in_stock",
)


class TextSearchUnavailable(ValueError):
    """A search by words with a model whose text tower means nothing (image-only presets
    such as imagenet-lite0)."""


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str
    url: str
    image: str  # the product's first image: a path relative to the index's catalog, or a URL
    price: float | None = None
    currency: str = ""
    # The price before a sale (a feed's regular price beside its sale price, Shopify's
    # compare-at price); None when the product is not on sale.
    original_price: float | None = None
    category: str = ""
    gender: str = ""
    colour: str = ""
    brand: str = ""
    in_stock: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    product: Product
    score: float  # cosine similarity of the product's best-matching image, -1..1
    image: str  # the image of this product that matched best
    image_path: str | None = None  # a local file holding that image, when there is one
    key: int = -1  # the index key (row) of that image


@dataclass(frozen=True)
class Filters:
    category: str | None = None
    gender: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False

    @property
    def active(self) -> bool:
        return any(
            (
                self.category,
                self.gender,
                self.min_price is not None,
                self.max_price is not None,
                self.in_stock_only,
            )
        )


@dataclass(frozen=True)
class SearchPage:
    hits: list[Hit]
    offset: int
    has_more: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    query_key: str = ""  # pass back as `query_key` to page this search later
    # The category the ranking favoured (predicted from the photo), if any.
    category_first: str | None = None
    # A caption that could not refine the search (the model reads no text).
    text_ignored: bool = False


WHOLE_PHOTO = "photo"  # the category of the whole-photo fallback: no garment in particular


@dataclass(frozen=True)
class Garment:
    """One garment in a photo. `box` is (x0, y0, x1, y1) in pixels of the upright photo
    (after EXIF rotation), x1/y1 exclusive. The whole-photo fallback has category "photo"."""

    category: str
    box: tuple[int, int, int, int]
    confidence: float
    whole_photo: bool = False

    @property
    def area(self) -> int:
        x0, y0, x1, y1 = self.box
        return max(0, x1 - x0) * max(0, y1 - y0)

    def crop_box(self, width: int, height: int, margin: float) -> tuple[int, int, int, int]:
        """The box grown by `margin` of its size on every side (context helps the
        embedder: a shoe's outline, a collar), clipped to the photo."""
        x0, y0, x1, y1 = self.box
        grow_x, grow_y = margin * (x1 - x0), margin * (y1 - y0)
        return (
            max(0, int(x0 - grow_x)),
            max(0, int(y0 - grow_y)),
            min(width, math.ceil(x1 + grow_x)),
            min(height, math.ceil(y1 + grow_y)),
        )


def whole_photo(width: int, height: int) -> Garment:
    return Garment(WHOLE_PHOTO, (0, 0, max(1, width), max(1, height)), 1.0, whole_photo=True)
