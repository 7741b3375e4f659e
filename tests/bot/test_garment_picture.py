"""The numbered garments drawn on the shopper's photo: each box in its own colour, its
number on a tag that no other tag covers, lines and numbers growing with the photo."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.garment_picture import MAX_SIDE, PALETTE, annotated_jpeg, colour_of
from tests.real_model import REPO_ROOT

STREET_PHOTO = REPO_ROOT / "tests" / "fixtures" / "street" / "0016.jpg"


def drawn(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(annotated_jpeg(image, boxes))).convert("RGB"))


def close_to(pixel: np.ndarray, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(colour)).max() <= tolerance)


def run_of(row: np.ndarray, colour: tuple[int, int, int], start: int) -> int:
    """How many pixels from `start` on are `colour` (an outline's width)."""
    width = 0
    while start + width < len(row) and close_to(row[start + width], colour):
        width += 1
    return width


def test_each_box_is_outlined_in_its_own_colour_on_the_real_photo() -> None:
    photo = Image.open(STREET_PHOTO)
    boxes = [(167, 0, 373, 134), (157, 144, 363, 474), (187, 680, 304, 793)]
    pixels = drawn(photo, boxes)
    assert pixels.shape[:2] == (photo.height, photo.width)
    for number, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        middle = (y0 + y1) // 2
        assert close_to(pixels[middle, x0 + 1], colour_of(number))  # the left edge
        assert close_to(pixels[middle, x1 - 2], colour_of(number))  # the right edge
    assert len(set(PALETTE)) == len(PALETTE)


@pytest.mark.parametrize("short_side", [300, 800])
def test_lines_grow_with_the_photo(short_side: int) -> None:
    grey = Image.new("RGB", (short_side, short_side * 3 // 2), (128, 128, 128))
    box = (short_side // 4, short_side // 4, short_side * 3 // 4, short_side)
    pixels = drawn(grey, [box])
    line = run_of(pixels[(box[1] + box[3]) // 2], colour_of(1), box[0])
    assert line >= max(3, round(short_side * 0.01))


def test_overlapping_boxes_get_tags_that_do_not_cover_each_other() -> None:
    grey = Image.new("RGB", (600, 900), (128, 128, 128))
    same_corner = [(100, 100, 500, 800), (100, 100, 300, 400), (100, 100, 200, 200)]
    pixels = drawn(grey, same_corner)
    column = pixels[:, 105]
    tags = [n for n in range(1, 4) if any(close_to(p, colour_of(n), 30) for p in column[100:])]
    assert tags == [1, 2, 3]  # every number's tag is visible down the shared corner


def test_a_huge_photo_is_sent_at_phone_size_and_the_callers_image_is_untouched() -> None:
    big = Image.new("RGB", (4000, 3000), (128, 128, 128))
    result = Image.open(io.BytesIO(annotated_jpeg(big, [(1000, 1000, 2000, 2000)])))
    assert max(result.size) == MAX_SIDE
    assert big.getpixel((1000, 1500)) == (128, 128, 128)
