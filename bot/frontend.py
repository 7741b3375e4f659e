"""What every chat front-end shares: the engine, limits, stats, and in-flight tracking so
that a shutdown can let running searches finish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.limits import RateLimiter
from bot.logs import new_request_id
from bot.metrics import Metrics
from bot.settings import BotSettings
from bot.stats import BotStats
from engine.search import Engine
from engine.types import SearchPage


class Frontend:
    platform = "chat"

    def __init__(
        self, engine: Engine, settings: BotSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.stats = BotStats()
        self.limiter = RateLimiter(settings.limits.searches_per_minute, clock)
        self._in_flight: set[asyncio.Future[Any]] = set()
        self.metrics: Metrics | None = None

    @property
    def healthy(self) -> bool:
        """Connected to the platform and taking updates."""
        raise NotImplementedError

    def _refused(self, kind: str) -> None:
        """A search answered with a message instead of results: count it by kind
        (rate_limited, busy, image_<reason>, too_large, expired, unexpected, ...)."""
        if kind == "rate_limited":
            self.stats.rate_limited += 1
        elif kind == "busy":
            self.stats.busy += 1
        elif kind == "unexpected":
            self.stats.errors += 1
        if self.metrics is not None:
            self.metrics.count_error(self.platform, kind)

    def _served(self, page: SearchPage) -> None:
        self.stats.record_search(page.timings_ms.get("total_ms", 0.0))
        if self.metrics is not None:
            self.metrics.observe_search(self.platform, page.timings_ms, len(page.hits))

    async def _tracked(self, work: Awaitable[None]) -> None:
        """Run one search so that `_drain` can wait for it; its log lines carry a request id."""
        new_request_id()
        task = asyncio.ensure_future(work)
        self._in_flight.add(task)
        try:
            await task
        finally:
            self._in_flight.discard(task)

    async def _drain(self, grace_s: float) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace_s)
