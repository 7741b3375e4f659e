"""`build.crop_to_category`: a catalog photo of a product worn by someone, cropped to the
garment of the product's category before it is embedded.

A shop's "jeans" is often photographed on a model wearing a shirt and shoes too; embedded
whole, the product looks like the whole outfit. With this on, the build's decode threads
run the garment finder on each photo whose product category the finder knows (by name or
synonym, as the search maps them) and, when the photo is a look and that garment is found,
embed the garment's box (with the search's margin and square padding) instead. Product
photos (the finder's look gate says "not a look") and photos where the garment is not
found are embedded whole, exactly as without the setting.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace

import torch
from PIL import Image

from engine.config import GarmentSettings, ImageSettings
from engine.embedder import ImagePreprocessor
from engine.garment_search import DECODE_SIDE, configured_finder, same_category
from engine.garments import GARMENT_CLASSES, GarmentFinder
from engine.images import decode_image
from engine.types import Garment

# Garments found per photo, remembered by the photo's digest: a look listed as several
# products (its jacket, its jeans) runs the finder once. Feed order keeps them adjacent.
REMEMBERED_PHOTOS = 16


def finder_class(category: str, synonyms: dict[str, str]) -> str | None:
    """The finder's class for a catalog category name, or None when it has none."""
    if not category.strip():
        return None
    return next((c for c in GARMENT_CLASSES if same_category(category, c, synonyms)), None)


class CategoryCropper:
    """Model input for a catalog photo: its product's garment when found, else the photo.
    Thread-safe (the finder runs one pass at a time)."""

    def __init__(
        self,
        settings: GarmentSettings,
        limits: ImageSettings,
        preprocessor: ImagePreprocessor,
        finder: GarmentFinder | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._whole = preprocessor
        self._crop = (
            replace(preprocessor, pad_to_square=True)
            if settings.crop_preprocess == "pad"
            else preprocessor
        )
        self.finder = finder or configured_finder(settings)
        self._found: OrderedDict[str, list[Garment]] = OrderedDict()
        self._lock = threading.Lock()
        self.cropped = 0  # photos embedded as their garment (for the build's log)

    def wanted(self, category: str) -> bool:
        """Whether a product of this category may be cropped (the finder knows it)."""
        return finder_class(category, self._settings.synonyms) is not None

    def pixels(self, data: bytes, category: str, digest: str) -> torch.Tensor:
        """Decoded model input (raises ImageError like the plain decode)."""
        wanted = finder_class(category, self._settings.synonyms)
        if wanted is None:
            return self._whole.from_bytes(data, self._limits)
        image = decode_image(data, self._limits, draft_size=DECODE_SIDE)
        garment = self.garment(image, wanted, digest)
        if garment is None:  # decoded as a plain build decodes it: the very same vector
            return self._whole.from_bytes(data, self._limits)
        with self._lock:
            self.cropped += 1
        box = garment.crop_box(image.width, image.height, self._settings.margin)
        return self._crop(image.crop(box))

    def garment(self, image: Image.Image, wanted: str, digest: str) -> Garment | None:
        """The most confident found garment of class `wanted`; None for a product photo
        (the finder's whole-photo answer) or when that garment is not in the photo."""
        with self._lock:
            found = self._found.get(digest)
        if found is None:
            found = self.finder.find(image)
            with self._lock:
                self._found[digest] = found
                while len(self._found) > REMEMBERED_PHOTOS:
                    self._found.popitem(last=False)
        return next((g for g in found if not g.whole_photo and g.category == wanted), None)
