"""A generated corpus of broken, hostile and awkward image files, made in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

from engine import images as im

DEMO_PHOTO = Path(__file__).resolve().parents[2] / "data" / "demo" / "images" / "dress-1.jpg"


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **kwargs)
    return out.getvalue()


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", **kwargs)
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels that compresses to ~100 KB."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def jpeg_with_claimed_size(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims another size."""
    data = bytearray(_jpeg_bytes(Image.new("RGB", (64, 64), "red")))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_with_claimed_size(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("P", (32, 32)).save(out, format="GIF")
    data = bytearray(out.getvalue())
    struct.pack_into("<HH", data, 6, width, height)
    struct.pack_into("<HH", data, data.find(b"\x2c") + 5, width, height)
    return bytes(data)


def bmp_with_claimed_size(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32)).save(out, format="BMP")
    data = bytearray(out.getvalue())
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def ftyp(brand: bytes) -> bytes:
    return (
        struct.pack(">I", 24)
        + b"ftyp"
        + brand
        + b"\x00\x00\x00\x00"
        + brand
        + b"mif1"
        + b"\x00" * 64
    )


def corrupt_png_crc() -> bytes:
    data = bytearray(_png_bytes(Image.new("RGB", (64, 64), "blue")))
    idat = data.find(b"IDAT")
    data[idat + 10] ^= 0xFF
    return bytes(data)


def broken_files() -> dict[str, tuple[bytes, type[im.ImageError]]]:
    """name -> (bytes, the ImageError subclass decoding must raise)."""
    photo = DEMO_PHOTO.read_bytes()
    png = _png_bytes(Image.open(DEMO_PHOTO))
    gif = io.BytesIO()
    Image.open(DEMO_PHOTO).convert("P").save(gif, format="GIF")
    return {
        "empty": (b"", im.EmptyImage),
        "text_renamed_jpg": (b"hello, this is not a photo\n" * 20, im.NotAnImage),
        "random_bytes": (bytes(range(256)) * 40, im.NotAnImage),
        "truncated_jpeg": (photo[: len(photo) // 2], im.CorruptImage),
        "jpeg_header_only": (photo[:200], im.CorruptImage),
        "truncated_png": (png[: len(png) // 2], im.CorruptImage),
        "truncated_gif": (gif.getvalue()[: len(gif.getvalue()) // 2], im.CorruptImage),
        "png_bad_crc": (corrupt_png_crc(), im.CorruptImage),
        "png_bomb_30000": (png_bomb(), im.DecompressionBomb),
        "jpeg_claims_65000": (jpeg_with_claimed_size(65_000, 65_000), im.DecompressionBomb),
        "gif_claims_65535": (gif_with_claimed_size(65_535, 65_535), im.DecompressionBomb),
        "bmp_claims_huge": (bmp_with_claimed_size(40_000, 40_000), im.DecompressionBomb),
        "over_20mb": (photo + b"\x00" * 20_000_001, im.ImageTooLarge),
        "one_pixel": (_png_bytes(Image.new("RGB", (1, 1))), im.ImageTooSmall),
        "ten_pixels_jpeg": (_jpeg_bytes(Image.new("RGB", (10, 10))), im.ImageTooSmall),
        "strip_20000x20": (_png_bytes(Image.new("RGB", (20_000, 20))), im.ExtremeAspectRatio),
        "svg": (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
            im.UnsupportedImageFormat,
        ),
        "html_page": (b"<!DOCTYPE html><html><body>hi</body></html>", im.NotAnImage),
        "zip": (b"PK\x03\x04" + b"\x00" * 100, im.NotAnImage),
        "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", im.NotAnImage),
        "gzip": (zlib.compress(b"x") and b"\x1f\x8b\x08\x00" + b"\x00" * 50, im.NotAnImage),
        "rar": (b"Rar!\x1a\x07\x00" + b"\x00" * 50, im.NotAnImage),
        "heic_no_decoder": (ftyp(b"heic"), im.UnsupportedImageFormat),
        "avif": (ftyp(b"avif"), im.UnsupportedImageFormat),
        "mp4_video": (ftyp(b"isom"), im.NotAnImage),
        "webm_video": (b"\x1aE\xdf\xa3" + b"\x00" * 60, im.NotAnImage),
        "mp3_audio": (b"ID3\x04\x00" + b"\x00" * 60, im.NotAnImage),
        "psd": (b"8BPS\x00\x01" + b"\x00" * 60, im.NotAnImage),
        "ico": (_ico_bytes(), im.NotAnImage),
        "xml_document": (b'<?xml version="1.0"?><catalog><item/></catalog>', im.NotAnImage),
        "ogg_audio": (b"OggS\x00\x02" + b"\x00" * 60, im.NotAnImage),
        "truncated_webp": (_truncated("WEBP"), im.CorruptImage),
        "truncated_tiff": (_truncated("TIFF"), im.CorruptImage),
    }


def _truncated(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(DEMO_PHOTO).convert("RGB").save(out, format=fmt)
    return out.getvalue()[: len(out.getvalue()) // 2]


def _ico_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(out, format="ICO")
    return out.getvalue()


def awkward_but_valid() -> dict[str, bytes]:
    """Files a phone or a shop really produces, which must decode to RGB."""
    out: dict[str, bytes] = {}
    base = Image.open(DEMO_PHOTO).convert("RGB").resize((120, 160))
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    out["rgba_transparent"] = _png_bytes(rgba)
    out["la_greyscale_alpha"] = _png_bytes(base.convert("LA"))
    pal = base.convert("P")
    out["palette_transparency"] = _png_bytes(pal, transparency=0)
    out["cmyk_jpeg"] = _jpeg_bytes(base.convert("CMYK"))
    out["greyscale"] = _jpeg_bytes(base.convert("L"))
    sixteen = Image.new("I;16", (64, 64))
    sixteen.putdata([i * 16 for i in range(64 * 64)])
    out["sixteen_bit_png"] = _png_bytes(sixteen)
    frames = [Image.new("P", (48, 48), i % 256) for i in range(1000)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=10)
    out["gif_1000_frames"] = gif.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: width and height swap when upright
    out["exif_rotated"] = _jpeg_bytes(base, exif=exif.tobytes())
    photo = bytearray(_jpeg_bytes(base, exif=exif.tobytes()))
    app1 = photo.find(b"Exif")
    photo[app1 + 10 : app1 + 30] = b"\xff" * 20  # mangled EXIF directory
    out["corrupt_exif"] = bytes(photo)
    for fmt in ("WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        base.save(buf, format=fmt)
        out[fmt.lower()] = buf.getvalue()
    prog = io.BytesIO()
    base.save(prog, format="JPEG", progressive=True)
    out["progressive_jpeg"] = prog.getvalue()
    return out


def huge_transparent_png(side: int = 6300) -> bytes:
    """A small file (~170 KB) that decodes to side x side RGBA pixels, under the default
    pixel cap: 160 MB decoded, and each full-size copy the decoder makes another 120-160."""
    return _png_bytes(Image.new("RGBA", (side, side), (200, 30, 30, 128)))
