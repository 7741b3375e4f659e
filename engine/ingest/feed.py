"""Read a shop's product feed (CSV or JSON Lines) into products, skipping bad rows with reasons."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from engine.ingest.csv_records import CsvHeaderError, CsvRecords
from engine.ingest.shop_url import shop_url_problem
from engine.types import CANONICAL_COLUMNS, Product

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("product_id", "url", "image")
IMAGE_SEPARATOR = "|"
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")  # any other suffix is read as CSV
_TRUE = {"1", "true", "yes", "y", "in stock", "in_stock", "instock", "available"}
_FALSE = {"0", "false", "no", "n", "out of stock", "out_of_stock", "outofstock", "sold out"}
_PRICE = re.compile(r"-?\d[\d\s.,']*")


class FeedError(ValueError):
    """The feed as a whole cannot be read (no such file, no required column, bad format)."""


@dataclass(frozen=True)
class Skipped:
    row: int  # 1-based data row (the header is row 0); 0 = not tied to a row
    product_id: str
    image: str
    reason: str


@dataclass(frozen=True)
class FeedItem:
    row: int
    product: Product
    images: tuple[str, ...]


@dataclass
class Feed:
    items: list[FeedItem] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    encoding: str = "utf-8"


def parse_price(text: str) -> float | None:
    """'19.99', '19,99 €', '1.299,00', 'EUR 1,299.00' -> a float; None when no number."""
    match = _PRICE.search(text or "")
    if not match:
        return None
    number = re.sub(r"[\s']", "", match.group()).rstrip(".,")
    if "," in number and "." in number:
        decimal = "," if number.rfind(",") > number.rfind(".") else "."
        number = number.replace("." if decimal == "," else ",", "").replace(",", ".")
    elif "," in number:
        head, _, tail = number.rpartition(",")
        number = f"{head.replace(',', '')}.{tail}" if len(tail) != 3 else number.replace(",", "")
    try:
        return float(number)
    except ValueError:
        return None


def parse_in_stock(text: str) -> bool | None:
    value = (text or "").strip().lower()
    if not value:
        return True
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def resolve_image(reference: str, feed_url: str) -> str:
    """An image reference of a feed fetched from `feed_url`, as the browser would read it
    (relative to the feed's address); a local feed's references stay as they are (the
    fetcher reads relative paths against the feed's folder)."""
    return urljoin(feed_url, reference) if feed_url else reference


def _decode(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Spreadsheet exports are often Windows-1252; cp1252 leaves 5 bytes undefined,
        # latin-1 maps everything, so together they never lose a row.
        try:
            return data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            return data.decode("latin-1"), "latin-1"


@dataclass(frozen=True)
class _Row:
    """One data row of a feed: its record, or why it cannot be read."""

    number: int  # 1-based, as in Skipped.row
    record: Mapping[str, Any] | None
    error: str = ""


def _json_lines_rows(text: str) -> Iterator[_Row]:
    """JSON Lines: one object per line; blank lines are not rows."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield _Row(number, None, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield _Row(number, None, "not a JSON object")
            continue
        yield _Row(number, record)


def _csv_rows(feed_name: str, text: str, require: Callable[[list[str]], None]) -> Iterator[_Row]:
    """CSV with a header row, in whichever delimiter the file uses; `require` checks the
    header before any row is read. A broken record costs only its own row."""
    try:
        records = CsvRecords(text)
    except CsvHeaderError as exc:
        raise FeedError(f"catalog {feed_name}: {exc}") from None
    header = records.header
    require([name for name in header if name])
    for record in records:
        if record.cells is None:
            yield _Row(record.number, None, record.error)
        else:
            yield _Row(record.number, dict(zip(header, record.cells, strict=False)))


class _Columns:
    """The feed's own column names for the canonical ones (`catalog.columns`)."""

    def __init__(self, feed_name: str, column_map: Mapping[str, str] | None) -> None:
        self._feed_name = feed_name
        self.names = {c: (column_map or {}).get(c, c) for c in CANONICAL_COLUMNS}
        self._own = set(self.names.values())

    def require(self, header: list[str]) -> None:
        missing = [self.names[c] for c in REQUIRED_COLUMNS if self.names[c] not in header]
        if missing:
            raise FeedError(
                f"catalog {self._feed_name} has no {', '.join(repr(c) for c in missing)} "
                f"column (found: {', '.join(header)}). Map your feed's "
                "columns in config.toml under [catalog.columns]."
            )

    def cell(self, record: Mapping[str, Any], canonical: str) -> str:
        value = record.get(self.names[canonical])
        return "" if value is None else str(value).strip()

    def extra(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The columns that are not canonical, kept with the product."""
        return {
            str(k): v for k, v in record.items() if k and k not in self._own and v not in ("", None)
        }


def _rows(path: Path, text: str, columns: _Columns) -> Iterator[_Row]:
    """The feed's rows, read by the reader for its format (by file suffix)."""
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return _json_lines_rows(text)
    return _csv_rows(path.name, text, columns.require)


def read_feed_text(path: Path) -> tuple[str, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeedError(f"cannot read catalog {path}: {exc.strerror or exc}") from None
    text, encoding = _decode(data)
    if encoding != "utf-8":
        log.warning("%s is not UTF-8; read it as %s", path, encoding)
    return text, encoding


def read_feed(path: Path, column_map: Mapping[str, str] | None = None) -> Feed:
    """Parse a CSV or JSON Lines feed. `column_map` maps canonical names to the feed's own
    column names. (engine/ingest/feed_formats.py reads every format.)"""
    text, encoding = read_feed_text(path)
    return read_rows_feed(path, text, encoding, column_map)


def read_rows_feed(
    path: Path, text: str, encoding: str, column_map: Mapping[str, str] | None = None
) -> Feed:
    """A CSV or JSON Lines feed already read as `text`."""
    columns = _Columns(path.name, column_map)
    feed = Feed(encoding=encoding)
    first_row_of: dict[str, int] = {}
    for row in _rows(path, text, columns):
        entry = _item(row, columns, first_row_of)
        if isinstance(entry, Skipped):
            feed.skipped.append(entry)
        else:
            first_row_of[entry.product.product_id] = row.number
            feed.items.append(entry)
    return feed


def _item(row: _Row, columns: _Columns, first_row_of: dict[str, int]) -> FeedItem | Skipped:
    """The row's product and images, or why it is skipped."""
    if row.record is None:
        return Skipped(row.number, "", "", row.error)
    record = row.record
    product_id = columns.cell(record, "product_id")
    image_cell = columns.cell(record, "image")
    images = tuple(s.strip() for s in image_cell.split(IMAGE_SEPARATOR) if s.strip())
    url = columns.cell(record, "url")
    reason = _unusable(product_id, images, url, first_row_of)
    if reason:
        return Skipped(row.number, product_id, image_cell, reason)
    return FeedItem(row.number, _product(record, columns, product_id, url, images[0]), images)


def _unusable(
    product_id: str, images: tuple[str, ...], url: str, first_row_of: dict[str, int]
) -> str:
    if not product_id:
        return "missing product_id"
    if product_id in first_row_of:
        return f"duplicate product_id (first seen in row {first_row_of[product_id]})"
    if not images:
        return "no image"
    return shop_url_problem(url)


def _product(
    record: Mapping[str, Any], columns: _Columns, product_id: str, url: str, image: str
) -> Product:
    def cell(canonical: str) -> str:
        return columns.cell(record, canonical)

    in_stock = parse_in_stock(cell("in_stock"))
    return Product(
        product_id=product_id,
        title=cell("title") or product_id,
        url=url,
        image=image,
        price=parse_price(cell("price")),
        currency=cell("currency").upper(),
        category=cell("category").lower(),
        gender=cell("gender").lower(),
        colour=cell("colour").lower(),
        brand=cell("brand"),
        in_stock=True if in_stock is None else in_stock,
        extra=columns.extra(record),
    )
