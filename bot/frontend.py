"""What every chat front-end shares: the engine, the one search flow (with its rate limit
and counters), and in-flight tracking so that a shutdown can let running searches finish.

A platform subclasses `Frontend`: it turns its events into `SearchRequest`s for
`self.flow`, renders the `Results` or `Refusal` it gets back, and starts and stops its
connection (`start`/`stop` are what `python -m bot` calls).
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.alerts import AlertService, Delivery
from bot.analytics import Analytics
from bot.flow import Results, SearchCounter, SearchFlow
from bot.limits import RateLimiter
from bot.logs import new_request_id
from bot.metrics import Metrics
from bot.render import shop_link
from bot.saving import Saving
from bot.settings import BotSettings
from bot.stats import BotStats
from engine.catalog import ImageRecord
from engine.search import Engine
from engine.state.alerts import PendingAlert
from engine.types import Hit, Product


class Frontend(abc.ABC):
    platform = "chat"

    def __init__(
        self, engine: Engine, settings: BotSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.stats = BotStats()
        self.limiter = RateLimiter(settings.limits.searches_per_minute, clock)
        self.counter = SearchCounter(self.platform, self.stats)
        self.flow = SearchFlow(engine, settings, self.limiter, self.counter)
        self.analytics: Analytics | None = None
        self.saving: Saving | None = None  # "♡ Save", /saved, /forget: with a state store
        self.alerts: AlertService | None = None
        self._in_flight: set[asyncio.Future[Any]] = set()

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the platform and take updates; raise if that is impossible."""

    @abc.abstractmethod
    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking updates, let searches in flight finish (bounded), disconnect."""

    @property
    @abc.abstractmethod
    def healthy(self) -> bool:
        """Connected to the platform and taking updates."""

    @property
    def metrics(self) -> Metrics | None:
        return self.counter.metrics

    @metrics.setter
    def metrics(self, metrics: Metrics | None) -> None:
        self.counter.metrics = metrics

    def use_analytics(self, analytics: Analytics) -> None:
        """Record this front-end's searches and give its albums tracked links."""
        self.analytics = analytics
        self.flow.tracking = analytics.tracking(self.platform)

    def use_saving(self, saving: Saving | None, alerts: AlertService | None) -> None:
        """Offer "♡ Save" and the saved-products commands; send this platform's alerts."""
        self.saving = saving
        self.alerts = alerts
        if alerts is not None:
            alerts.register(self.platform, self.deliver_alert)

    @abc.abstractmethod
    async def deliver_alert(
        self, alert: PendingAlert, product: Product, image: ImageRecord | None
    ) -> Delivery:
        """Send one price-drop or back-in-stock alert to its shopper (never retried here:
        the outbox does)."""

    def link(self, results: Results, hit: Hit) -> str:
        """The shop link shown for `hit` of `results`: the flow's (a /go/ link when clicks
        are tracked), else the shop URL with UTM tags."""
        for shown, link in zip(results.page.hits, results.links, strict=False):
            if shown is hit:
                return link
        return shop_link(hit.product.url, self.platform, self.settings.links)

    def count_platform_rate_limit(self) -> None:
        """The platform itself told the bot to slow down (an HTTP 429)."""
        if self.metrics is not None:
            self.metrics.count_platform_rate_limit(self.platform)

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
