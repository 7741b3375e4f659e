"""Matching found garments to annotated ones (street photos with boxes).

One rule for the finder's training figures and for `index_builder.py eval ITEMS.csv`: a
row's garment is the found garment whose box overlaps the row's box most, when that
overlap (IoU) reaches MATCH_IOU; for a row without a box, the found garment of its
category. No match means the shopper sees the whole-photo results.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.types import Garment

MATCH_IOU = 0.3

Box = tuple[float, float, float, float]


def box_iou(a: Box, b: Box) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_garment(
    garments: Sequence[Garment], category: str, box: Box | None
) -> tuple[Garment | None, float | None]:
    """(the garment a shopper would pick for this row, its IoU with the row's box)."""
    found = [g for g in garments if not g.whole_photo]
    if box is None:
        same = [g for g in found if g.category == category]
        return (max(same, key=lambda g: g.confidence), None) if same else (None, None)
    scored = [(box_iou(g.box, box), g) for g in found]
    if not scored:
        return None, None
    iou, best = max(scored, key=lambda pair: pair[0])
    return (best, iou) if iou >= MATCH_IOU else (None, None)
