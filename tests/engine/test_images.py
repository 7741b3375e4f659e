from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from engine import images as im
from engine.config import ImageSettings
from tests.fakes.hostile_images import awkward_but_valid, broken_files

BROKEN = broken_files()
VALID = awkward_but_valid()


def test_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_file_gets_its_typed_error(name: str) -> None:
    data, expected = BROKEN[name]
    with pytest.raises(im.ImageError) as caught:
        im.decode_image(data)
    assert type(caught.value) is expected, f"{name}: {caught.value!r}"
    assert str(caught.value) and "Traceback" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(VALID))
def test_awkward_files_decode_to_rgb(name: str) -> None:
    image = im.decode_image(VALID[name])
    assert image.mode == "RGB"
    assert min(image.size) >= 16


def test_transparency_is_composited_on_white() -> None:
    image = im.decode_image(VALID["rgba_transparent"])
    assert image.getpixel((10, 10)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    assert im.decode_image(VALID["exif_rotated"]).size == (160, 120)


def test_sixteen_bit_keeps_its_range() -> None:
    low, high = im.decode_image(VALID["sixteen_bit_png"]).convert("L").getextrema()
    assert low == 0 and high == 255


def test_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(im.DecompressionBomb):
        im.decode_image(BROKEN["png_bomb_30000"][0])


def test_limits_are_configurable() -> None:
    data = VALID["webp"]
    with pytest.raises(im.ImageTooLarge):
        im.decode_image(data, ImageSettings(max_bytes=len(data) - 1))
    with pytest.raises(im.DecompressionBomb):
        im.decode_image(data, ImageSettings(max_pixels=100 * 100))


def test_draft_decodes_big_jpeg_smaller() -> None:
    big = Image.new("RGB", (2000, 1600), "navy")
    buf = io.BytesIO()
    big.save(buf, format="JPEG")
    assert max(im.decode_image(buf.getvalue(), draft_size=224).size) < 1000
    assert im.decode_image(buf.getvalue()).size == (2000, 1600)
