"""Read a shop's product feed (CSV or JSON Lines) into products, skipping bad rows with reasons."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.types import CANONICAL_COLUMNS, Product

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("product_id", "url", "image")
IMAGE_SEPARATOR = "|"
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


def _records(path: Path, text: str) -> Iterator[tuple[int, Mapping[str, Any] | None, str]]:
    """(row number, record or None, error) for each data row."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON ({exc.msg})"
                continue
            if not isinstance(record, dict):
                yield number, None, "not a JSON object"
                continue
            yield number, record, ""
        return
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        if dialect.delimiter == "|":  # '|' separates images inside a cell, never columns
            dialect = csv.excel
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    for number, record in enumerate(reader, start=1):
        if None in record:  # more cells than header columns
            yield number, None, "more cells than the header has columns"
            continue
        yield number, record, ""


def read_feed(path: Path, column_map: Mapping[str, str] | None = None) -> Feed:
    """Parse the feed. `column_map` maps canonical names to the feed's own column names."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeedError(f"cannot read catalog {path}: {exc.strerror or exc}") from None
    text, encoding = _decode(data)
    if encoding != "utf-8":
        log.warning("%s is not UTF-8; read it as %s", path, encoding)
    feed = Feed(encoding=encoding)
    mapping = {
        canonical: (column_map or {}).get(canonical, canonical) for canonical in CANONICAL_COLUMNS
    }
    feed_names = set(mapping.values())
    seen_rows: dict[str, int] = {}
    checked_header = False

    for number, record, error in _records(path, text):
        if record is None:
            feed.skipped.append(Skipped(number, "", "", error))
            continue
        if not checked_header and path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
            missing = [c for c in REQUIRED_COLUMNS if mapping[c] not in record]
            if missing:
                raise FeedError(
                    f"catalog {path.name} has no {', '.join(repr(mapping[c]) for c in missing)} "
                    f"column (found: {', '.join(k for k in record if k)}). Map your feed's "
                    "columns in config.toml under [catalog.columns]."
                )
            checked_header = True

        def cell(canonical: str, rec: Mapping[str, Any] = record) -> str:
            value = rec.get(mapping[canonical])
            return "" if value is None else str(value).strip()

        product_id = cell("product_id")
        images = tuple(s.strip() for s in cell("image").split(IMAGE_SEPARATOR) if s.strip())
        url = cell("url")
        reason = ""
        if not product_id:
            reason = "missing product_id"
        elif product_id in seen_rows:
            reason = f"duplicate product_id (first seen in row {seen_rows[product_id]})"
        elif not images:
            reason = "no image"
        elif not url.lower().startswith(("http://", "https://")):
            reason = "url is not an http(s) shop link" if url else "missing url (shop link)"
        if reason:
            feed.skipped.append(Skipped(number, product_id, cell("image"), reason))
            continue
        seen_rows[product_id] = number
        in_stock = parse_in_stock(cell("in_stock"))
        extra = {
            str(k): v
            for k, v in record.items()
            if k and k not in feed_names and v not in ("", None)
        }
        product = Product(
            product_id=product_id,
            title=cell("title") or product_id,
            url=url,
            image=images[0],
            price=parse_price(cell("price")),
            currency=cell("currency").upper(),
            category=cell("category").lower(),
            gender=cell("gender").lower(),
            colour=cell("colour").lower(),
            brand=cell("brand"),
            in_stock=True if in_stock is None else in_stock,
            extra=extra,
        )
        feed.items.append(FeedItem(number, product, images))
    return feed
