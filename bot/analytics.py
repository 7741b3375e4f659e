"""Click analytics for the bots: what the search flow records for each served page and
the shop links it shows (signed /go/ links when `links.redirect_base_url` is set), the
state store's lifetime, and the last day's figures for /stats."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bot.click_links import LINK_SECRET, ClickToken, LinkSigner
from bot.i18n import t
from bot.render import shop_link
from bot.settings import BotSettings, LinkSettings
from engine.state.analytics import AnalyticsWriter, SearchRecord, ShownResult, new_search_id
from engine.state.report import AnalyticsReport, build_report
from engine.state.store import StateStore, StateStoreError
from engine.types import SearchPage

log = logging.getLogger(__name__)

DAY_S = 86_400


class AnalyticsConfigError(ValueError):
    """The settings ask for click links that cannot work; the message says what to set."""


class ClickTracking:
    """The flow's side: record a served page (queued, off the reply path) and make its
    links. Without a writer nothing is recorded; without redirect_base_url and a signer,
    links go straight to the shop. User ids are kept only as the signer's keyed hash."""

    def __init__(
        self,
        platform: str,
        links: LinkSettings,
        signer: LinkSigner | None = None,
        writer: AnalyticsWriter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.platform = platform
        self.link_settings = links
        self.signer = signer
        self.writer = writer
        self.clock = clock

    def record(self, kind: str, user_id: int | None, page: SearchPage) -> int:
        """Queue the search and its results; returns the id its links carry."""
        search_id = new_search_id()
        if self.writer is None:
            return search_id
        hashed = None
        if user_id is not None and self.signer is not None:
            hashed = self.signer.user_hash(self.platform, user_id)
        shown = tuple(
            ShownResult(rank, hit.product.product_id, hit.product.category, hit.score)
            for rank, hit in enumerate(page.hits, start=page.offset + 1)
        )
        record = SearchRecord(search_id, int(self.clock()), self.platform, kind, hashed, shown)
        self.writer.record_search(record)
        return search_id

    def links(self, page: SearchPage, search_id: int) -> tuple[str, ...]:
        """Each hit's shop link, in order: /go/<token> when clicks are tracked."""
        base = self.link_settings.redirect_base_url
        if not base or self.signer is None:
            return tuple(
                shop_link(hit.product.url, self.platform, self.link_settings) for hit in page.hits
            )
        now = int(self.clock())
        return tuple(
            f"{base}/go/"
            + self.signer.sign(
                ClickToken(hit.product.product_id, search_id, rank, self.platform, now)
            )
            for rank, hit in enumerate(page.hits, start=page.offset + 1)
        )


class Analytics:
    """The state store, its writer and the link signer, for one bot process."""

    def __init__(
        self,
        settings: BotSettings,
        store: StateStore | None,
        writer: AnalyticsWriter | None,
        signer: LinkSigner | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.signer = signer

    @classmethod
    async def open(cls, settings: BotSettings, secret: str) -> Analytics:
        """Open (and migrate) the state store when analytics, click links or saved
        products are on, and
        start the writer; raises AnalyticsConfigError for click links without a secret.
        A store that cannot be opened is logged, and the bots run without recording."""
        links = settings.links
        signer = LinkSigner(secret) if secret else None
        if links.redirect_base_url:
            if signer is None:
                raise AnalyticsConfigError(
                    f"links.redirect_base_url is set but {LINK_SECRET} (or {LINK_SECRET}_FILE) "
                    "is not: the click links cannot be signed"
                )
            if not settings.http.port:
                raise AnalyticsConfigError(
                    "links.redirect_base_url needs the HTTP server ([http] port is 0)"
                )
        if not (settings.analytics.enabled or links.redirect_base_url or settings.saved.enabled):
            return cls(settings, None, None, signer)
        try:
            store = await StateStore.open(settings.state.url, settings.source.parent)
        except StateStoreError as exc:  # the shoppers are served all the same
            log.error("analytics off: %s", exc)
            return cls(settings, None, None, signer)
        writer = None
        if settings.analytics.enabled:
            writer = AnalyticsWriter(store, settings.analytics.retention_days)
            await writer.start()
        return cls(settings, store, writer, signer)

    def tracking(self, platform: str) -> ClickTracking:
        return ClickTracking(platform, self.settings.links, self.signer, self.writer)

    async def last_day(self) -> AnalyticsReport | None:
        """The last 24 hours' figures (None without a store, or when it cannot be read)."""
        if self.store is None or self.writer is None:
            return None
        await self.writer.flush()
        now = int(time.time())
        try:
            return await build_report(self.store, now - DAY_S, now + 1)
        except Exception as exc:
            log.warning("analytics: cannot read the last day's figures: %s", exc)
            return None

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
        if self.store is not None:
            await self.store.close()


async def last_day_text(analytics: Analytics | None, language: str | None) -> str:
    """The /stats lines about the last 24 hours' searches and clicks ("" when off)."""
    report = await analytics.last_day() if analytics is not None else None
    if report is None:
        return ""
    return t(
        language,
        "stats.last_day",
        searches=report.searches,
        clicks=report.clicks,
        ctr=f"{report.ctr:.0%}",
        ctr_first=f"{report.ctr_at(1):.0%}",
    )
