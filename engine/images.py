"""Bytes from a chat or a feed -> a safe RGB picture, or a typed error.

Everything happens in memory. Checks run cheapest first, and the pixel cap is enforced
from the header alone, before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings
from typing import cast

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.config import ImageSettings

# Formats a chat or a shop feed plausibly sends; anything else is refused before decoding.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


class ImageError(ValueError):
    """A picture we cannot use. `reason` is a stable code: what a shopper reads is worded
    once, under `error.<reason>` in bot/i18n (the bots and the CLI both read it). The
    message says what is wrong with this file, for logs and a build's skipped.csv."""

    reason = "unusable"


class EmptyImage(ImageError):
    reason = "empty"


class ImageTooLarge(ImageError):
    reason = "too_large"


class NotAnImage(ImageError):
    reason = "not_an_image"


class UnsupportedImageFormat(ImageError):
    reason = "unsupported_format"


class DecompressionBomb(ImageError):
    reason = "too_many_pixels"


class CorruptImage(ImageError):
    reason = "corrupt"


class ImageTooSmall(ImageError):
    reason = "too_small"


class ExtremeAspectRatio(ImageError):
    reason = "extreme_aspect"


# (magic bytes at offset, offset, a human name) for files people send that are not photos.
_KNOWN_NON_PHOTOS: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"\x1f\x8b", 0, "a compressed archive"),
    (b"Rar!", 0, "a RAR archive"),
    (b"\x1aE\xdf\xa3", 0, "a video"),  # Matroska / WebM
    (b"OggS", 0, "an audio or video file"),
    (b"ID3", 0, "an audio file"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_BRANDS = {b"isom", b"iso2", b"mp41", b"mp42", b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"dash"}

# The [images] defaults, for callers without settings (tests, benchmarks).
_DEFAULT_LIMITS = ImageSettings()


def _sniff_refusal(data: bytes) -> ImageError | None:
    """Recognise common non-photo files by their magic bytes, for a precise message."""
    head = data[:64]
    for magic, offset, name in _KNOWN_NON_PHOTOS:
        if head[offset : offset + len(magic)] == magic:
            return NotAnImage(f"not a photo: looks like {name}")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return UnsupportedImageFormat("unsupported format: HEIC")
        if brand in _AVIF_BRANDS:
            return UnsupportedImageFormat("unsupported format: AVIF")
        if brand in _VIDEO_BRANDS:
            return NotAnImage("not a photo: looks like a video")
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<?xml", b"<svg", b"<!doctype", b"<html")):
        if b"<svg" in data[:4096].lower():
            return UnsupportedImageFormat("unsupported format: SVG vector drawing")
        return NotAnImage("not a photo: a text document")
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> RGB; transparency is composited on white (product shots are on white)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit-depth greyscale: scale to 8 bits by the actual range, not by clipping.
        image = image.convert("F") if image.mode != "F" else image
        low, high = cast(tuple[float, float], image.getextrema())  # one band: (min, max)
        span = (high - low) or 1.0
        image = image.point(lambda v: (v - low) * 255.0 / span).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # corrupt EXIF must not cost the shopper their search
        return image


def decode_image(
    data: bytes, limits: ImageSettings = _DEFAULT_LIMITS, draft_size: int | None = None
) -> Image.Image:
    """Decode `data` into an upright RGB image within `limits`, or raise an ImageError.

    `draft_size` lets JPEGs decode at a reduced scale (DCT scaling) when the caller only
    needs about that many pixels on the short side: a large speed-up for big photos.
    """
    if not data:
        raise EmptyImage("empty file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"too large ({len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB)"
        )
    refusal = _sniff_refusal(data)
    if refusal is not None:
        raise refusal
    image = _open(data)
    _check_size(*image.size, limits)
    _load_pixels(image, draft_size)
    try:
        return _to_rgb(_apply_exif_orientation(image))
    except (OSError, ValueError) as exc:
        raise CorruptImage(f"cannot be converted to RGB ({exc})") from None


def _open(data: bytes) -> Image.Image:
    """The header only: format, mode and size, no pixels yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage("not a picture I can read") from None
    except Image.DecompressionBombError:
        raise DecompressionBomb("far too many pixels to process") from None
    except (OSError, SyntaxError, ValueError):
        raise CorruptImage("damaged file") from None


def _check_size(width: int, height: int, limits: ImageSettings) -> None:
    if width * height > limits.max_pixels:
        raise DecompressionBomb(
            f"too many pixels ({width}x{height}; the limit is {limits.max_pixels})"
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            f"too small ({width}x{height} pixels; the minimum side is {limits.min_side})"
        )
    if max(width, height) / min(width, height) > limits.max_aspect:
        raise ExtremeAspectRatio(f"a thin strip ({width}x{height} pixels), not a photo")


def _load_pixels(image: Image.Image, draft_size: int | None) -> None:
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # animations: the first frame represents the item
        if draft_size and image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
            image.draft(image.mode, (draft_size, draft_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except Image.DecompressionBombError:
        raise DecompressionBomb("far too many pixels to process") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError):
        raise CorruptImage("damaged or incomplete file") from None
