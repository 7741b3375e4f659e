"""One record per image of the feed, carried through the build's stages (fetch, decode,
embed or reuse) until it becomes an index row or a line of skipped.csv."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from engine.ingest.feed import FeedItem, Skipped


class ImageStatus(StrEnum):
    PENDING = "pending"  # not through the stages yet
    EMBED = "embed"  # fetched and decoded: the model's next
    EMBEDDED = "embedded"
    REUSED = "reused"  # the same bytes as in the served build: its stored vector
    SKIPPED = "skipped"  # `reason` says why


@dataclass(eq=False)
class FeedImage:
    item: FeedItem  # the product row it belongs to
    source: str  # a path relative to the feed, or a URL
    status: ImageStatus = ImageStatus.PENDING
    digest: str = ""  # sha256 of the image's bytes, once fetched
    local_path: str = ""
    vector: np.ndarray | None = None
    # Its colour descriptor (engine/colour.py), where the decode stage described it.
    colour: np.ndarray | None = None
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.status in (ImageStatus.EMBEDDED, ImageStatus.REUSED)

    def fetched(self, digest: str, local_path: str) -> None:
        self.digest, self.local_path = digest, local_path

    def embedded(self, vector: np.ndarray) -> None:
        self.status, self.vector = ImageStatus.EMBEDDED, vector.astype(np.float16)

    def reused(self, vector: np.ndarray) -> None:
        self.status, self.vector = ImageStatus.REUSED, vector

    def skip(self, reason: str) -> None:
        self.status, self.reason = ImageStatus.SKIPPED, reason

    def skipped(self) -> Skipped:
        return Skipped(self.item.row, self.item.product.product_id, self.source, self.reason)


def feed_images(items: list[FeedItem]) -> list[FeedImage]:
    """Every image of every product, in feed order (so the same feed yields the same index)."""
    return [FeedImage(item, source) for item in items for source in item.images]
