"""Waiting for state that no event announces (an engine's served index, a file a child
process writes): poll until it holds or a deadline passes, instead of sleeping a guess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    condition: Callable[[], bool], timeout_s: float = 10.0, every_s: float = 0.01
) -> None:
    """Return as soon as `condition()` holds; TimeoutError once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still not true after {timeout_s} s: {condition}")
        await asyncio.sleep(every_s)
