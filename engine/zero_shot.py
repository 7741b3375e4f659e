"""Zero-shot category gating: which catalog category a photo shows, read off the text
tower's vectors for "a photo of a <category>" (`search.category_gating`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import numpy as np


class ZeroShotCategories:
    """Guesses a query's category; the prompts are embedded once per set of categories."""

    def __init__(
        self, embed_texts: Callable[[Sequence[str]], Awaitable[np.ndarray]], confidence: float
    ) -> None:
        self._embed_texts = embed_texts
        self._confidence = confidence
        self._vectors: dict[tuple[str, ...], np.ndarray] = {}

    async def guess(self, categories: Sequence[str], query: np.ndarray) -> str | None:
        """The category of `categories` the query most likely shows, when the text encoder
        is at least `confidence` sure (softmax over the prompts); None otherwise."""
        if len(categories) < 2:
            return None
        key = tuple(categories)
        if key not in self._vectors:
            vectors = await self._embed_texts([f"a photo of a {c}" for c in categories])
            self._vectors = {key: vectors}
        logits = 100.0 * (self._vectors[key] @ query)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = int(np.argmax(probabilities))
        return categories[best] if probabilities[best] >= self._confidence else None
