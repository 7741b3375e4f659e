"""The demo shop in data/demo as tests and the bench read it: its photos, its catalog rows,
and feeds written from them (with unreadable rows mixed in where a test needs skips)."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

from engine.config import Settings
from engine.embedder import Embedder

DEMO_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
DEMO_CATALOG = DEMO_DIR / "catalog.csv"
DEMO_IMAGES = DEMO_DIR / "images"

FEED_FIELDS = ["product_id", "title", "url", "image", "price", "currency", "category", "in_stock"]


def category_of_title() -> dict[str, str]:
    """Each demo product's category by its title (what an album caption shows)."""
    with DEMO_CATALOG.open(newline="") as handle:
        return {row["title"]: row["category"] for row in csv.DictReader(handle)}


def index_demo_catalog(settings: Settings, index_dir: Path, embedder: Embedder) -> Path:
    """The demo catalog built and published into `index_dir` with `embedder`."""
    from engine.ingest.pipeline import build_index

    asyncio.run(build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False))
    return index_dir


def photo(name: str = "dress-1.jpg") -> bytes:
    return (DEMO_IMAGES / name).read_bytes()


def write_catalog(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FEED_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def demo_rows(count: int = 20) -> list[dict[str, str]]:
    """The first `count` catalog rows, image paths absolute so a feed can live anywhere."""
    with DEMO_CATALOG.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    for row in rows:
        row["image"] = str(DEMO_CATALOG.parent / row["image"])
    return rows


def unreadable_image_rows(template: dict[str, str], folder: Path) -> list[dict[str, str]]:
    """Rows whose only image is missing (MISSING) or not an image (TEXT)."""
    (folder / "text.jpg").write_text("not a photo")
    return [
        {**template, "product_id": "MISSING", "image": str(folder / "nope.jpg")},
        {**template, "product_id": "TEXT", "image": str(folder / "text.jpg")},
    ]
