"""Benchmarks and report scripts run at tiny sizes, so they cannot rot. No timing checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest


@pytest.mark.slow
def test_reliability_report_is_produced(tmp_path: Path) -> None:
    from bench import reliability

    out = tmp_path / "reliability.md"
    asyncio.run(reliability.main(users=5, out=out))
    text = out.read_text()
    assert "every update answered exactly once | yes" in text
    assert "| ... answered with a clear message | 33 |" in text


@pytest.mark.slow
def test_quality_report_is_produced(tmp_path: Path) -> None:
    """The demo evaluation, on a miniature of clothing-small made from the demo photos."""
    import shutil

    from bench import quality
    from tests.conftest import DEMO_IMAGES

    for split, numbers in (("train", range(1, 5)), ("validation", (5, 6))):
        for category in ("dress", "shoes", "hat"):
            folder = tmp_path / "data" / split / category
            folder.mkdir(parents=True)
            for n in numbers:
                shutil.copy(DEMO_IMAGES / f"{category}-{n}.jpg", folder / f"{category}-{n}.jpg")
    out = tmp_path / "quality.md"
    quality.main(["--dataset", str(tmp_path / "data"), "--out", str(out), "--self-count", "6"])
    text = out.read_text()
    assert "Catalog: `train/` of clothing-small (12 photos" in text
    assert "a random ranking would score 0.333" in text
    assert "| Marqo-FashionCLIP | `marqo-fashionclip` (default) | 56.88 |" in text
