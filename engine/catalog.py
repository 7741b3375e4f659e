"""SQLite product store: products, and the images (index keys) that belong to them."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.types import Filters, Product

SCHEMA_VERSION = 1

# one SQLite result row (or a statement's parameters): sqlite3 types its columns as Any
Row = tuple[Any, ...]

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    product_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    url TEXT NOT NULL,
    image TEXT NOT NULL,
    price REAL,
    currency TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    gender TEXT NOT NULL DEFAULT '',
    colour TEXT NOT NULL DEFAULT '',
    brand TEXT NOT NULL DEFAULT '',
    in_stock INTEGER NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}',
    original_price REAL
);
CREATE TABLE images (
    key INTEGER PRIMARY KEY CHECK (key >= 0),
    product_id TEXT NOT NULL REFERENCES products(product_id),
    source TEXT NOT NULL,
    local_path TEXT,
    sha256 TEXT NOT NULL
);
CREATE INDEX images_by_product ON images(product_id);
CREATE INDEX products_by_category ON products(category);
"""

_PRODUCT_COLUMNS = (
    "product_id, title, url, image, price, currency, category, gender, colour, brand, "
    "in_stock, extra, original_price"
)
# Columns added after schema 1 was first published, each with what an index built before
# it means: such an index stays readable, the missing column read as this value.
_LATER_COLUMNS = {"original_price": "NULL"}


@dataclass(frozen=True)
class ImageRecord:
    key: int
    product_id: str
    source: str
    local_path: str | None
    sha256: str


def _product_from_row(row: Row) -> Product:
    pid, title, url, image, price, currency, category, gender, colour, brand, stock, extra = row[
        :12
    ]
    return Product(
        product_id=pid,
        title=title,
        url=url,
        image=image,
        price=price,
        currency=currency,
        category=category,
        gender=gender,
        colour=colour,
        brand=brand,
        in_stock=bool(stock),
        extra=json.loads(extra),
        original_price=row[12],
    )


class CatalogWriter:
    """Writes a fresh catalog file; used only by the index builder, inside its temp dir."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path)
        self._db.executescript(_SCHEMA)
        self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def add_products(self, products: Iterable[Product]) -> None:
        self._db.executemany(
            f"INSERT INTO products ({_PRODUCT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                (
                    p.product_id,
                    p.title,
                    p.url,
                    p.image,
                    p.price,
                    p.currency,
                    p.category,
                    p.gender,
                    p.colour,
                    p.brand,
                    int(p.in_stock),
                    json.dumps(p.extra, ensure_ascii=False),
                    p.original_price,
                )
                for p in products
            ),
        )

    def add_images(self, images: Iterable[ImageRecord]) -> None:
        self._db.executemany(
            "INSERT INTO images (key, product_id, source, local_path, sha256) VALUES (?,?,?,?,?)",
            ((r.key, r.product_id, r.source, r.local_path, r.sha256) for r in images),
        )

    def close(self) -> None:
        self._db.commit()
        self._db.close()


class Catalog:
    """Read-only access, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        version = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise ValueError(f"{path}: catalog schema {version} is not {SCHEMA_VERSION}")
        self._product_columns = self._readable_product_columns()

    def _readable_product_columns(self) -> str:
        """The product columns to select: a column this catalog predates reads as its
        stand-in value, so an index built before it stays servable."""
        present = {row[1] for row in self._all("PRAGMA table_info(products)")}
        return ", ".join(
            name if name in present else f"{_LATER_COLUMNS[name]} AS {name}"
            for name in (c.strip() for c in _PRODUCT_COLUMNS.split(","))
        )

    def _one(self, sql: str, params: Row = ()) -> Row | None:
        with self._lock:
            row: Row | None = self._db.execute(sql, params).fetchone()
            return row

    def _all(self, sql: str, params: Iterable[object] = ()) -> list[Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def categories(self) -> list[str]:
        rows = self._all("SELECT DISTINCT category FROM products WHERE category != '' ORDER BY 1")
        return [r[0] for r in rows]

    def _rows_in(self, select: str, column: str, values: list[Any]) -> list[Row]:
        """`select ... WHERE column IN (values)`, in chunks under SQLite's variable limit."""
        rows: list[Row] = []
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows += self._all(f"{select} WHERE {column} IN ({marks})", chunk)
        return rows

    def images_by_key(self, keys: Iterable[int]) -> dict[int, ImageRecord]:
        rows = self._rows_in(
            "SELECT key, product_id, source, local_path, sha256 FROM images",
            "key",
            [int(k) for k in keys],
        )
        return {row[0]: ImageRecord(*row) for row in rows}

    def products(self, product_ids: Iterable[str]) -> dict[str, Product]:
        rows = self._rows_in(
            f"SELECT {self._product_columns} FROM products",
            "product_id",
            list(dict.fromkeys(product_ids)),
        )
        return {row[0]: _product_from_row(row) for row in rows}

    def prices(self, product_ids: Iterable[str]) -> dict[str, tuple[float | None, bool]]:
        """(price, in stock) of each of `product_ids` the catalog has: what alerts compare."""
        rows = self._rows_in(
            "SELECT product_id, price, in_stock FROM products",
            "product_id",
            list(dict.fromkeys(product_ids)),
        )
        return {pid: (price, bool(stock)) for pid, price, stock in rows}

    def first_images(self, product_ids: Iterable[str]) -> dict[str, ImageRecord]:
        """Each product's first image (the lowest key): the photo of a saved product."""
        rows = self._rows_in(
            "SELECT key, product_id, source, local_path, sha256 FROM images",
            "product_id",
            list(dict.fromkeys(product_ids)),
        )
        first: dict[str, ImageRecord] = {}
        for row in sorted(rows):
            first.setdefault(row[1], ImageRecord(*row))
        return first

    def product_ids(self) -> list[str]:
        return [row[0] for row in self._all("SELECT product_id FROM products")]

    def iter_images(self) -> Iterator[ImageRecord]:
        for row in self._all("SELECT key, product_id, source, local_path, sha256 FROM images"):
            yield ImageRecord(*row)

    def keys_matching(self, filters: Filters) -> np.ndarray:
        """Index keys of the images whose product passes `filters` (sorted)."""
        clauses: list[str] = []
        params: list[str | float] = []
        if filters.category:
            clauses.append("lower(p.category) = lower(?)")
            params.append(filters.category)
        if filters.gender:
            clauses.append("(lower(p.gender) = lower(?) OR lower(p.gender) = 'unisex')")
            params.append(filters.gender)
        if filters.min_price is not None:
            clauses.append("p.price >= ?")
            params.append(filters.min_price)
        if filters.max_price is not None:
            clauses.append("p.price <= ?")
            params.append(filters.max_price)
        if filters.in_stock_only:
            clauses.append("p.in_stock = 1")
        where = " AND ".join(clauses) or "1"
        rows = self._all(
            "SELECT i.key FROM images i JOIN products p USING (product_id) "
            f"WHERE {where} ORDER BY i.key",
            params,
        )
        return np.fromiter((r[0] for r in rows), dtype=np.uint64, count=len(rows))
