"""Bytes from a chat or a feed -> a safe RGB picture, or a typed error.

Everything happens in memory. Checks run cheapest first, and the pixel cap is enforced
from the header alone, before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import cast

from PIL import ExifTags, Image, UnidentifiedImageError

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


# Pillow keeps these modes in 1 or 2 bytes a pixel; every other mode takes 4 (RGB too).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# A photo is reduced to at least this many times the side the model resizes it to, as
# `Image.thumbnail`'s reducing_gap does: the final resampling still has pixels to average.
REDUCING_GAP = 2
STRIP_ROWS = 256  # rows converted at a time: the only full-width temporaries
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where the C library has one (not musl, not macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class DecodingMemory:
    """Bytes that photos being decoded hold at once, process-wide: a burst of huge photos
    takes turns instead of all allocating their pixels together. One photo alone always
    proceeds, whatever it needs."""

    # glibc keeps a thread's freed pixel blocks in that thread's heap, so every decoding
    # thread would go on holding its largest photo: memory this large is handed back.
    TRIM_FROM_BYTES = 64_000_000

    def __init__(self) -> None:
        self._in_use = 0
        self._changed = threading.Condition()
        self._trim = _malloc_trim()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextlib.contextmanager
    def reserve(self, needed: int, budget: int) -> Iterator[None]:
        needed = min(needed, budget)
        with self._changed:
            self._changed.wait_for(lambda: self._in_use + needed <= budget)
            self._in_use += needed
        try:
            yield
        finally:
            with self._changed:
                self._in_use -= needed
                self._changed.notify_all()
            if needed >= self.TRIM_FROM_BYTES and self._trim is not None:
                self._trim(0)


DECODING = DecodingMemory()


def _to_rgb(image: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """Any mode -> RGB; transparency is composited on white (product shots are on white).
    `value_range` is the whole picture's, when `image` is a strip of a high bit-depth one."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_DEPTH:
        # High bit-depth greyscale: scale to 8 bits by the actual range, not by clipping.
        image = image.convert("F") if image.mode != "F" else image
        low, high = value_range or cast(tuple[float, float], image.getextrema())  # one band
        span = (high - low) or 1.0
        image = image.point(lambda v: (v - low) * 255.0 / span).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _reduction(size: tuple[int, int], draft_size: int | None) -> int:
    """The whole-number factor a picture may shrink by and keep what the model needs."""
    return max(1, min(size) // (draft_size * REDUCING_GAP)) if draft_size else 1


def _value_range(image: Image.Image) -> tuple[float, float] | None:
    """(darkest, brightest) of a high bit-depth greyscale picture, else None."""
    if image.mode not in _HIGH_BIT_DEPTH:
        return None
    low, high = image.getextrema()
    return float(low), float(high)  # type: ignore[arg-type]  # one band: numbers


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`image` (loaded) in RGB, `factor` times smaller, without a full-size copy: strips of
    rows are converted and reduced one at a time into the (small) result."""
    width, height = image.size
    value_range = _value_range(image)
    rows = factor * max(1, STRIP_ROWS // factor)
    if height <= rows or (factor == 1 and image.mode == "RGB"):
        rgb = _to_rgb(image, value_range)
        return rgb.reduce(factor) if factor > 1 else rgb
    result = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        strip = _to_rgb(image.crop((0, top, width, min(top + rows, height))), value_range)
        result.paste(strip.reduce(factor) if factor > 1 else strip, (0, top // factor))
    return result


def _decoding_bytes(image: Image.Image, factor: int) -> int:
    """About what decoding `image` holds at its peak: its pixels, the result, the strips."""
    width, height = image.size
    pixels = width * height * _BYTES_PER_PIXEL.get(image.mode, 4)
    return pixels + 4 * (width * height // (factor * factor) + 4 * STRIP_ROWS * width)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # corrupt EXIF must not cost the shopper their search
        return 1


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image.transpose(method) if method is not None else image


def _check_bytes(data: bytes, limits: ImageSettings) -> None:
    if not data:
        raise EmptyImage("empty file")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"too large ({len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.0f} MB)"
        )
    refusal = _sniff_refusal(data)
    if refusal is not None:
        raise refusal


def _open(data: bytes) -> Image.Image:
    """The picture's header, read; no pixel is decoded yet."""
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


def _check_geometry(width: int, height: int, limits: ImageSettings) -> None:
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


def _decode(image: Image.Image, limits: ImageSettings, draft_size: int | None) -> Image.Image:
    """Pixels decoded once (a JPEG at its draft scale), then converted and reduced strip by
    strip, while the decoding memory is reserved."""
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)  # animations: the first frame represents the item
    if draft_size and image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
        image.draft(image.mode, (draft_size, draft_size))
    factor = _reduction(image.size, draft_size)
    budget = limits.max_decoding_mb * 1_000_000
    with DECODING.reserve(_decoding_bytes(image, factor), budget):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
        reduced = _reduced_rgb(image, factor)
        orientation = _orientation(image)
        if reduced is not image:
            image.close()  # the full-size pixels go now, not when the caller lets go
    return _upright(reduced, orientation)


def decode_image(
    data: bytes, limits: ImageSettings = _DEFAULT_LIMITS, draft_size: int | None = None
) -> Image.Image:
    """Decode `data` into an upright RGB image within `limits`, or raise an ImageError.

    `draft_size` is the side the caller will resize the picture to: then it decodes only
    as many pixels as that needs (a JPEG at a reduced DCT scale, anything else reduced in
    strips right after decoding), so a photo of any accepted size costs at most its
    decoded pixels once (under 200 MB at the default 40-megapixel cap), and concurrent
    decodes share `limits.max_decoding_mb`.
    """
    _check_bytes(data, limits)
    image = _open(data)
    _check_geometry(*image.size, limits)
    try:
        return _decode(image, limits, draft_size)
    except Image.DecompressionBombError:
        raise DecompressionBomb("far too many pixels to process") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError):
        raise CorruptImage("damaged or incomplete file") from None
