"""Searching one garment of a photo: the pieces the Engine composes.

The photo is decoded once, the finder runs once, and every garment's crop goes to the
model in one job (one forward pass). Each garment then ranks like any query, with its
category first when the catalog has it. A whole-photo garment (nothing found) is searched
exactly as a plain photo search is, so single-product photos see no change.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from engine import colour
from engine.config import GarmentSettings, ImageSettings
from engine.embedder import Embedder, ImagePreprocessor
from engine.garments import FinderParams, GarmentFinder
from engine.images import decode_image
from engine.query_encoder import EncodedQuery
from engine.types import Garment, whole_photo

# Garment crops need more pixels than one whole-photo view: a shoe is a tenth of the
# photo. JPEGs still decode at reduced scale down to this short side (cheap for 40 MP).
DECODE_SIDE = 768
# Query keys remembered with their garment's category, so later pages put the same
# category first; older keys fall back to the catalog's own category prediction.
REMEMBERED_KEYS = 10_000
# Decoded photos kept for the next call about the same photo (a few MB each).
REMEMBERED_PHOTOS = 2
T = TypeVar("T")


def configured_finder(settings: GarmentSettings) -> GarmentFinder:
    params = FinderParams(min_area=settings.min_area, min_confidence=settings.min_confidence)
    return GarmentFinder(params=params, long_side=settings.input_long_side)


def same_category(first: str, second: str, synonyms: dict[str, str]) -> bool:
    def canonical(name: str) -> str:
        lowered = name.strip().lower()
        return synonyms.get(lowered, lowered).lower()

    return canonical(first) == canonical(second)


def catalog_category(
    garment: Garment, categories: Sequence[str], synonyms: dict[str, str]
) -> str | None:
    """The catalog's name for the garment's category, or None (whole photo, or a
    category the catalog does not have). With several candidates (jeans and trousers
    both mean pants) the first by name."""
    if garment.whole_photo:
        return None
    matches = [c for c in categories if same_category(c, garment.category, synonyms)]
    return min(matches) if matches else None


WARM_UP_SIZE = (256, 384)  # a portrait photo's shape, as street photos mostly are


class GarmentSearch:
    """The finder plus what the engine needs around it; loads the finder lazily."""

    def __init__(
        self, settings: GarmentSettings, limits: ImageSettings, describe_colour: bool = False
    ) -> None:
        """`describe_colour`: each garment query carries its crop's colour descriptor
        (for `search.colour_weight`)."""
        self.settings = settings
        self._limits = limits
        self.describe_colour = describe_colour
        self.finder = configured_finder(settings)
        self._key_categories: OrderedDict[str, str] = OrderedDict()
        self._decoded: OrderedDict[int, tuple[bytes, Image.Image]] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self._keys_lock = threading.Lock()
        # The finder's passes on one thread of their own: it holds a lock anyway, and the
        # engine's CPU pool stays free for decoding the next shoppers' photos.
        self._finder_thread = ThreadPoolExecutor(1, thread_name_prefix="garment-finder")

    async def warm_up(self) -> None:
        """Load the finder and run one pass now rather than in the first shopper's search
        (loading exports its network to ONNX Runtime: about a second)."""
        if self.settings.enabled:
            await self.find_async(Image.new("RGB", WARM_UP_SIZE, "white"))

    async def find_async(self, image: Image.Image) -> list[Garment]:
        return await asyncio.get_running_loop().run_in_executor(
            self._finder_thread, self.find, image
        )

    def close(self) -> None:
        self._finder_thread.shutdown(wait=False, cancel_futures=True)

    def decode(self, data: bytes) -> Image.Image:
        """Raises ImageError like a plain search would. The shop-the-look flow sends the
        same photo to `find_garments` and then to `search(garment=...)`: the last few
        decoded photos are kept (compared byte for byte), so it is decoded once."""
        key = hash(data)  # cached by the bytes object itself; equality settles collisions
        with self._decoded_lock:
            kept = self._decoded.get(key)
            if kept is not None and kept[0] == data:
                self._decoded.move_to_end(key)
                return kept[1]
        image = decode_image(data, self._limits, draft_size=DECODE_SIDE)
        with self._decoded_lock:
            self._decoded[key] = (data, image)
            while len(self._decoded) > REMEMBERED_PHOTOS:
                self._decoded.popitem(last=False)
        return image

    def find(self, image: Image.Image) -> list[Garment]:
        if not self.settings.enabled:
            return [whole_photo(*image.size)]
        return self.finder.find(image)[: self.settings.max_garments]

    def crop_pixels(
        self, image: Image.Image, garments: Sequence[Garment], preprocessor: ImagePreprocessor
    ) -> list[torch.Tensor]:
        """Model input for each garment's box (with margin)."""
        if self.settings.crop_preprocess == "pad":
            preprocessor = replace(preprocessor, pad_to_square=True)
        return [
            preprocessor(image.crop(g.crop_box(image.width, image.height, self.settings.margin)))
            for g in garments
        ]

    def colours(self, image: Image.Image, garments: Sequence[Garment]) -> list[np.ndarray | None]:
        """Each garment's colour descriptor (of its box, with margin), when asked for."""
        if not self.describe_colour:
            return [None] * len(garments)
        margin = self.settings.margin
        return [
            colour.describe(image.crop(g.crop_box(image.width, image.height, margin)))
            for g in garments
        ]

    def shows(self, garment: Garment, category: str) -> bool:
        """Whether the found garment is of the catalog's `category` (by name or synonym)."""
        return not garment.whole_photo and same_category(
            garment.category, category, self.settings.synonyms
        )

    def preferred_category(self, garment: Garment, categories: Sequence[str]) -> str | None:
        if not self.settings.prefer_category:
            return None
        return catalog_category(garment, categories, self.settings.synonyms)

    def remember(self, query_key: str, category: str | None) -> None:
        if category is None:
            return
        with self._keys_lock:
            self._key_categories[query_key] = category
            self._key_categories.move_to_end(query_key)
            while len(self._key_categories) > REMEMBERED_KEYS:
                self._key_categories.popitem(last=False)

    def category_of_key(self, query_key: str) -> str | None:
        with self._keys_lock:
            return self._key_categories.get(query_key)


def pick_garment(
    garments: Sequence[Garment], wanted: Garment | int, size: tuple[int, int]
) -> Garment:
    """`wanted` as given, or the garment at that position (the whole photo when the
    position is out of range: a bot may ask for a garment of an earlier finder version)."""
    if isinstance(wanted, Garment):
        return wanted
    return garments[wanted] if 0 <= wanted < len(garments) else whole_photo(*size)


@dataclass(frozen=True)
class GarmentQuery:
    garment: Garment
    vector: np.ndarray  # unit length, rounded as the query store keeps it
    category: str | None  # the catalog category to put first
    colour: np.ndarray | None = None  # the garment's colour descriptor (engine.colour)


class GarmentEngine(Protocol):
    """What the garment search needs of the Engine."""

    garments: GarmentSearch
    embedder: Embedder

    async def run_cpu(self, function: Callable[..., T], *args: Any) -> T: ...

    async def embed_pixels(self, pixels: Sequence[torch.Tensor]) -> np.ndarray: ...

    async def encode_query(self, images: Sequence[bytes], text: str | None) -> EncodedQuery: ...

    def categories(self) -> list[str]: ...


def _rounded(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    vector = vector / norm if norm > 0 else vector
    return vector.astype(np.float16).astype(np.float32)


async def garment_queries(
    engine: GarmentEngine, data: bytes, wanted: Garment | int | None = None
) -> list[GarmentQuery]:
    """One query per garment of the photo (only `wanted`'s, when given): one decode, one
    finder pass (none when `wanted` is a Garment), all crops in one model job. A
    whole-photo garment is embedded exactly as a plain photo search embeds it."""
    search = engine.garments
    image = await engine.run_cpu(search.decode, data)
    if isinstance(wanted, Garment):
        garments = [wanted]
    else:
        garments = await search.find_async(image)
        if wanted is not None:
            garments = [pick_garment(garments, wanted, image.size)]
    if all(g.whole_photo for g in garments):  # exactly a plain search's query
        encoded = await engine.encode_query([data], None)
        vector = _rounded(encoded.vector)
        return [GarmentQuery(g, vector, None, encoded.colour) for g in garments]
    colours = await engine.run_cpu(search.colours, image, garments)
    preprocessor = engine.embedder.image_preprocessor
    pixels = await engine.run_cpu(search.crop_pixels, image, garments, preprocessor)
    vectors = await engine.embed_pixels(pixels)
    categories = engine.categories()
    return [
        GarmentQuery(g, _rounded(v), search.preferred_category(g, categories), c)
        for g, v, c in zip(garments, vectors, colours, strict=True)
    ]
