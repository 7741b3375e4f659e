"""Query sets: a folder of photos by category, a CSV of (photo, product_id) pairs, or
catalog photos changed the way a chat app changes them (each must find its product)."""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from engine.catalog import Catalog

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class QuerySetError(ValueError):
    """The query set cannot be read; the message says why."""


@dataclass(frozen=True)
class EvalQuery:
    name: str
    photo: bytes
    category: str | None = None
    product_id: str | None = None


def from_folder(folder: Path) -> list[EvalQuery]:
    """FOLDER/<category>/<photo>: each photo should find products of its category."""
    queries = [
        EvalQuery(f"{sub.name}/{photo.name}", photo.read_bytes(), category=sub.name.lower())
        for sub in sorted(p for p in folder.iterdir() if p.is_dir())
        for photo in sorted(sub.iterdir())
        if photo.suffix.lower() in PHOTO_SUFFIXES
    ]
    if not queries:
        raise QuerySetError(f"{folder} has no category sub-folders with photos")
    return queries


def from_pairs(csv_path: Path, catalog: Catalog) -> list[EvalQuery]:
    """A CSV with `photo,product_id` columns: each photo should find that product."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"photo", "product_id"} <= set(rows[0]):
        raise QuerySetError(f"{csv_path} needs the columns photo,product_id")
    products = catalog.products(r["product_id"] for r in rows)
    queries = []
    for row in rows:
        path = Path(row["photo"])
        path = path if path.is_absolute() else csv_path.parent / path
        product = products.get(row["product_id"])
        queries.append(
            EvalQuery(
                row["photo"],
                path.read_bytes(),
                category=product.category if product else None,
                product_id=row["product_id"],
            )
        )
    return queries


def chat_app_copy(data: bytes, rng: random.Random) -> bytes:
    """Downscale, crop a little off the edges and re-encode as a lossy JPEG."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    scale = rng.uniform(0.5, 0.9)
    image = image.resize((max(16, int(image.width * scale)), max(16, int(image.height * scale))))
    keep = rng.uniform(0.94, 0.99)  # chat apps trim little, if anything
    width, height = int(image.width * keep), int(image.height * keep)
    left = rng.randint(0, image.width - width)
    top = rng.randint(0, image.height - height)
    image = image.crop((left, top, left + width, top + height))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=rng.randint(55, 80))
    return out.getvalue()


def from_catalog(catalog: Catalog, count: int, seed: int = 0) -> list[EvalQuery]:
    """`count` catalog photos, changed like a chat app would: each must find its product."""
    records = [r for r in catalog.iter_images() if r.local_path and Path(r.local_path).is_file()]
    if not records:
        raise QuerySetError("the index has no locally stored images to sample")
    rng = random.Random(seed)
    chosen = rng.sample(records, min(count, len(records)))
    products = catalog.products(r.product_id for r in chosen)
    return [
        EvalQuery(
            Path(r.source).name,
            chat_app_copy(Path(r.local_path or "").read_bytes(), rng),
            category=products[r.product_id].category or None,
            product_id=r.product_id,
        )
        for r in chosen
    ]
