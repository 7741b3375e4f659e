"""What every chat front-end shares: the engine, limits, stats, and in-flight tracking so
that a shutdown can let running searches finish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.limits import RateLimiter
from bot.stats import BotStats
from engine.config import Settings
from engine.search import Engine


class Frontend:
    def __init__(
        self, engine: Engine, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.stats = BotStats()
        self.limiter = RateLimiter(settings.limits.searches_per_minute, clock)
        self._in_flight: set[asyncio.Future[Any]] = set()

    async def _tracked(self, work: Awaitable[None]) -> None:
        """Run one search so that `_drain` can wait for it."""
        task = asyncio.ensure_future(work)
        self._in_flight.add(task)
        try:
            await task
        finally:
            self._in_flight.discard(task)

    async def _drain(self, grace_s: float) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)
