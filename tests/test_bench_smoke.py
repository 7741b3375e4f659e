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
