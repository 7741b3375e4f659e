"""The shopper's street photo with each garment's box and number drawn on it, so the
buttons "1 · Jacket", "2 · Jeans" point at something they can see on a phone screen:
thick outlines, big numbers on a filled tag, colours far apart from each other. Line
width and font grow with the photo, so they read the same at any resolution."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

# Distinct at a glance and on photos (Trubetskoy's list of 20 distinct colours, the
# first ones); numbers on them are white or black, whichever contrasts more.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (255, 225, 25),
    (70, 240, 240),
    (240, 50, 230),
)
MAX_SIDE = 1280  # Telegram shows photos at most this big; larger only costs upload time
LINE_SHARE = 0.012  # outline width as a share of the photo's short side
FONT_SHARE = 0.075  # number height as a share of the short side
MIN_LINE, MIN_FONT = 3, 18


def colour_of(number: int) -> tuple[int, int, int]:
    return PALETTE[(number - 1) % len(PALETTE)]


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    red, green, blue = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else (255, 255, 255)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _tag_place(box: Box, size: tuple[int, int], taken: list[Box], bounds: Box) -> Box:
    """Where a number's tag goes: the box's top-left corner, moved down (then right)
    past tags already placed, kept inside the photo."""
    width, height = size
    x0 = min(max(box[0], bounds[0]), bounds[2] - width)
    y0 = min(max(box[1], bounds[1]), bounds[3] - height)
    place = (x0, y0, x0 + width, y0 + height)
    for _ in range(len(taken) * 2):
        clash = next((t for t in taken if _overlaps(place, t)), None)
        if clash is None:
            break
        y = clash[3]
        if y + height > bounds[3]:  # no room below: beside the tag instead
            place = (clash[2], place[1], clash[2] + width, place[3])
        else:
            place = (place[0], y, place[2], y + height)
    return place


def annotated_jpeg(image: Image.Image, boxes: Sequence[Box], quality: int = 85) -> bytes:
    """`image` with box number n (1-based, in the order given) drawn, as JPEG bytes.
    Boxes are in `image`'s pixels."""
    picture = image.convert("RGB")
    scale = min(1.0, MAX_SIDE / max(picture.size))
    if scale < 1.0:
        picture = picture.resize(
            (round(picture.width * scale), round(picture.height * scale)), Image.Resampling.LANCZOS
        )
    elif picture is image:
        picture = picture.copy()  # never draw on the caller's image
    short = min(picture.size)
    line = max(MIN_LINE, round(short * LINE_SHARE))
    font = ImageFont.load_default(size=max(MIN_FONT, round(short * FONT_SHARE)))
    draw = ImageDraw.Draw(picture)
    bounds: Box = (0, 0, picture.width, picture.height)
    scaled: list[Box] = [
        (round(x0 * scale), round(y0 * scale), round(x1 * scale), round(y1 * scale))
        for x0, y0, x1, y1 in boxes
    ]
    for number, (x0, y0, x1, y1) in enumerate(scaled, start=1):
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour_of(number), width=line)
    taken: list[Box] = []
    for number, box in enumerate(scaled, start=1):
        label = str(number)
        left, top, right, bottom = (round(side) for side in draw.textbbox((0, 0), label, font=font))
        pad = line * 2
        size = (right - left + 2 * pad, bottom - top + 2 * pad)
        place = _tag_place(box, size, taken, bounds)
        taken.append(place)
        draw.rectangle(place, fill=colour_of(number))
        draw.text(
            (place[0] + pad - left, place[1] + pad - top),
            label,
            font=font,
            fill=_ink(colour_of(number)),
        )
    out = io.BytesIO()
    # 4:4:4: chroma subsampling would smear the thin coloured lines into the photo
    picture.save(out, format="JPEG", quality=quality, subsampling=0)
    return out.getvalue()
