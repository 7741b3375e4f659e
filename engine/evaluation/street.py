"""Street photos as queries: `index_builder.py eval ITEMS.csv` with `photo,category[,x0,y0,x1,y1]`.

Each row is one garment of a photo (a photo may have several rows). Its score is that of
the results a shopper would see for it: the found garment's (engine/evaluation/garments.py
says which one), else the whole photo's. `boxes="whole"` scores whole photos only and
`boxes="true"` searches the row's own box (both for comparison).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.evaluation.garments import Box, match_garment
from engine.evaluation.metrics import Ranked, category_precision, reciprocal_rank
from engine.evaluation.queries import QuerySetError
from engine.images import ImageError
from engine.search import Engine
from engine.types import Garment, Hit

BOX_COLUMNS = ("x0", "y0", "x1", "y1")
BoxSource = Literal["found", "whole", "true"]


@dataclass(frozen=True)
class StreetItem:
    category: str
    box: Box | None


@dataclass(frozen=True)
class StreetPhoto:
    name: str
    photo: bytes
    items: tuple[StreetItem, ...]


def is_street_csv(csv_path: Path) -> bool:
    """A CSV of garments (photo,category) rather than of products (photo,product_id)."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return "category" in header and "product_id" not in header


def _box(row: dict[str, str]) -> Box | None:
    values = [row.get(k, "").strip() for k in BOX_COLUMNS]
    if not all(values):
        return None
    x0, y0, x1, y1 = (float(v) for v in values)
    return (x0, y0, x1, y1)


def read_street_items(csv_path: Path) -> list[StreetPhoto]:
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"photo", "category"} <= set(rows[0]):
        raise QuerySetError(f"{csv_path} needs the columns photo,category[,x0,y0,x1,y1]")
    grouped: dict[str, list[StreetItem]] = defaultdict(list)
    try:
        for row in rows:
            grouped[row["photo"]].append(StreetItem(row["category"].strip().lower(), _box(row)))
    except ValueError as exc:
        raise QuerySetError(f"{csv_path}: a box value is not a number ({exc})") from None
    photos = []
    for name, items in grouped.items():
        path = Path(name) if Path(name).is_absolute() else csv_path.parent / name
        if not path.is_file():
            raise QuerySetError(f"{csv_path}: photo {name} not found")
        photos.append(StreetPhoto(name, path.read_bytes(), tuple(items)))
    return photos


@dataclass(frozen=True)
class StreetOutcome:
    photo: str
    item: StreetItem
    hits: list[Hit]
    found: bool  # a found garment was matched to this row
    iou: float | None  # that garment's IoU with the row's box

    @property
    def ranked(self) -> Ranked:
        return Ranked(
            [h.product.product_id for h in self.hits], [h.product.category for h in self.hits]
        )


async def _photo_outcomes(
    engine: Engine, photo: StreetPhoto, k: int, boxes: BoxSource
) -> list[StreetOutcome]:
    if boxes == "true":
        outcomes = []
        for item in photo.items:
            box = item.box
            garment = Garment(item.category, tuple(map(round, box)), 1.0) if box else None  # type: ignore[arg-type]
            page = await engine.search(image=photo.photo, k=k, garment=garment)
            outcomes.append(StreetOutcome(photo.name, item, page.hits, box is not None, 1.0))
        return outcomes
    found = [] if boxes == "whole" else await engine.search_garments(photo.photo, k=k)
    garments = [g for g, _ in found]
    whole: list[Hit] | None = None
    outcomes = []
    for item in photo.items:
        garment, iou = match_garment(garments, item.category, item.box)
        if garment is None:
            whole = whole if whole is not None else (await engine.search(photo.photo, k=k)).hits
            outcomes.append(StreetOutcome(photo.name, item, whole, False, None))
        else:
            hits = found[garments.index(garment)][1].hits
            outcomes.append(StreetOutcome(photo.name, item, hits, True, iou))
    return outcomes


async def run_street(
    engine: Engine, photos: Sequence[StreetPhoto], k: int, boxes: BoxSource = "found"
) -> tuple[list[StreetOutcome], list[str]]:
    """Every row's outcome, and the photos that could not be read."""
    outcomes, unusable = [], []
    for photo in photos:
        try:
            outcomes += await _photo_outcomes(engine, photo, k, boxes)
        except ImageError:
            unusable.append(photo.name)
    return outcomes, unusable


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def summarise_street_group(
    outcomes: Sequence[StreetOutcome], ks: Sequence[int]
) -> dict[str, float | int | None]:
    row: dict[str, float | int | None] = {"queries": len(outcomes)}
    for k in ks:
        row[f"precision@{k}"] = _mean(
            [category_precision(o.ranked, o.item.category, k) for o in outcomes]
        )
    row["mrr"] = _mean([reciprocal_rank(o.ranked, None, o.item.category) for o in outcomes])
    row["garment_found_rate"] = _mean([float(o.found) for o in outcomes])
    row["box_iou_mean"] = _mean([o.iou for o in outcomes if o.found and o.iou is not None])
    return row


def summarise_street(
    outcomes: Sequence[StreetOutcome], unusable: Sequence[str], ks: Sequence[int]
) -> dict[str, Any]:
    """`overall` and `by_category` (keys: precision@k, mrr, garment_found_rate,
    box_iou_mean over the found garments, queries)."""
    by_category: dict[str, list[StreetOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_category[outcome.item.category].append(outcome)
    return {
        "overall": summarise_street_group(outcomes, ks),
        "by_category": {c: summarise_street_group(o, ks) for c, o in sorted(by_category.items())},
        "unusable_queries": list(unusable),
    }


def street_table(summary: dict[str, Any], ks: Sequence[int]) -> str:
    columns = [f"precision@{k}" for k in ks] + ["mrr", "garment_found_rate", "box_iou_mean"]
    lines = ["| category | queries | " + " | ".join(columns) + " |"]
    lines.append("|---|---:|" + "---:|" * len(columns))
    groups = [("**all**", summary["overall"]), *summary["by_category"].items()]
    for name, row in groups:
        cells = ["-" if row[c] is None else f"{row[c]:.3f}" for c in columns]
        lines.append(f"| {name} | {row['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
