"""The one search flow every chat front-end runs: rate limit -> size check -> engine search
(a page by its query key, re-reading the original only when the engine has forgotten it)
-> a refusal for anything unusable -> counted -> "no results". A front-end turns its
platform's event into a `SearchRequest` and renders the `Results` or `Refusal` it gets.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from bot.analytics import ClickTracking
from bot.i18n import t
from bot.limits import RateLimiter
from bot.metrics import Metrics
from bot.paging import MAX_OFFSET, Mode, PageToken
from bot.settings import BotSettings
from bot.stats import BotStats
from engine.batcher import EngineBusy
from engine.images import ImageError
from engine.query_store import QueryExpired
from engine.search import Engine
from engine.types import Filters, SearchPage, TextSearchUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inputs:
    """What the shopper sent: photos (several are one look) and/or words."""

    photos: list[bytes] = field(default_factory=list)
    text: str | None = None


class Unreadable(Exception):
    """A front-end could not fetch what the shopper sent; `kind` says why, as a refusal
    kind (too_large, unsafe_or_dead_url, expired, ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


ReadInputs = Callable[[], Awaitable[Inputs]]
Working = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class SearchRequest:
    user_id: int | None  # None (a channel post): not rate limited, as nobody can be asked to wait
    # How to (re-)read the shopper's photos and words; None where the platform cannot,
    # so a page whose query the engine forgot is refused as expired.
    read_inputs: ReadInputs | None
    page: PageToken = field(default_factory=PageToken)
    k: int | None = None
    declared_sizes: tuple[int, ...] = ()  # file sizes the platform reports before download
    size_limit: int | None = None


@dataclass(frozen=True)
class Results:
    page: SearchPage
    token: PageToken  # the page shown, keyed by the query to page on from
    links: tuple[str, ...] = ()  # each hit's shop link (a /go/ link when clicks are tracked)

    def more(self) -> PageToken | None:
        offset = self.page.offset + len(self.page.hits)
        if not self.page.has_more or offset > MAX_OFFSET:
            return None
        return PageToken(self.page.query_key, offset, self.token.mode, self.token.category)

    def surprise(self) -> PageToken:
        return PageToken(self.page.query_key, 0, Mode.SURPRISE, self.token.category)

    def only(self, category: str | None) -> PageToken:
        return PageToken(self.page.query_key, 0, Mode.NORMAL, category)

    def navigation(self) -> list[tuple[str, PageToken]]:
        """The paging buttons under every album: (i18n key of the label, its token)."""
        more = self.more()
        shown = [("button.more", more)] if more is not None else []
        return [*shown, ("button.surprise", self.surprise())]


@dataclass(frozen=True)
class Refusal:
    """A search answered with a message: `kind` is rate_limited, too_large, busy,
    image_<reason>, expired, no_results, no_more, no_text_search (the model reads no
    words), ... (also the metrics label)."""

    kind: str
    retry_after: float = 0.0


# The i18n key of each refusal kind, where it is not the kind itself.
REFUSAL_MESSAGES = {
    "too_large": "error.too_large",
    "not_an_image": "not_a_photo_file",
    "unsafe_or_dead_url": "discord.no_image",
}
_NOT_ERRORS = {"no_results", "no_more"}  # searches that ran: counted as served instead


def refusal_text(
    refusal: Refusal, language: str | None, wording: dict[str, str] | None = None
) -> str:
    """The shopper's message for a refusal; `wording` overrides keys per platform."""
    kind = refusal.kind
    key = (wording or {}).get(kind) or REFUSAL_MESSAGES.get(kind, kind)
    if kind.startswith("image_"):
        key = f"error.{kind.removeprefix('image_')}"
    if kind in ("rate_limited", "busy"):
        return t(language, key, seconds=round(refusal.retry_after))
    return t(language, key)


class SearchCounter:
    """Searches and refusals, for /stats and for Prometheus (once `metrics` is set)."""

    def __init__(self, platform: str, stats: BotStats) -> None:
        self.platform = platform
        self.stats = stats
        self.metrics: Metrics | None = None

    def refused(self, kind: str) -> None:
        if kind == "rate_limited":
            self.stats.rate_limited += 1
        elif kind == "busy":
            self.stats.busy += 1
        elif kind == "unexpected":
            self.stats.errors += 1
        if self.metrics is not None:
            self.metrics.count_error(self.platform, kind)

    def served(self, page: SearchPage) -> None:
        self.stats.record_search(page.timings_ms.get("total_ms", 0.0))
        if self.metrics is not None:
            self.metrics.observe_search(self.platform, page.timings_ms, len(page.hits))


class SearchFlow:
    def __init__(
        self, engine: Engine, settings: BotSettings, limiter: RateLimiter, counter: SearchCounter
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.limiter = limiter
        self.counter = counter
        # Records each served page and makes its links; direct links, nothing recorded
        # until `Frontend.use_analytics`.
        self.tracking = ClickTracking(counter.platform, settings.links)

    async def run(self, request: SearchRequest, working: Working) -> Results | Refusal:
        """`working` wraps the slow part (download, model): a chat action, a deferral."""
        refusal: Results | Refusal | None = self._admit(request)
        if refusal is None:
            async with working():
                refusal = await self._search(request)
        if isinstance(refusal, Refusal) and refusal.kind not in _NOT_ERRORS:
            self.counter.refused(refusal.kind)
        return refusal

    def _admit(self, request: SearchRequest) -> Refusal | None:
        wait = self.limiter.retry_after(request.user_id) if request.user_id is not None else 0.0
        if wait:
            return Refusal("rate_limited", wait)
        if request.page.offset >= self.settings.search.max_results:
            return Refusal("no_more")  # a forged or stale deep page: answered without a search
        limit = request.size_limit or self.settings.images.max_bytes
        if any(size > limit for size in request.declared_sizes):
            return Refusal("too_large")
        return None

    async def _search(self, request: SearchRequest) -> Results | Refusal:
        try:
            page, kind = await self._page(request)
        except ImageError as exc:
            return Refusal(f"image_{exc.reason}")
        except Unreadable as exc:
            return Refusal(exc.kind)
        except EngineBusy as exc:
            return Refusal("busy", exc.retry_after_s)
        except QueryExpired:
            return Refusal("expired")
        except TextSearchUnavailable:
            return Refusal("no_text_search")
        self.counter.served(page)
        search_id = self.tracking.record(kind, request.user_id, page)
        if not page.hits:
            return Refusal("no_more" if request.page.offset else "no_results")
        links = self.tracking.links(page, search_id)
        return Results(page, request.page.with_key(page.query_key), links)

    async def _page(self, request: SearchRequest) -> tuple[SearchPage, str]:
        """The page by the query's key (no model run); by re-reading the original only
        when there is no key or the engine's query store has forgotten it. With the
        search's kind for analytics: page, photo or text."""
        if request.page.query_key:
            try:
                return await self._engine_search(request, Inputs()), "page"
            except QueryExpired:
                if request.read_inputs is None:
                    raise
                log.info("query %s was forgotten: re-reading the original", request.page.query_key)
        if request.read_inputs is None:
            raise QueryExpired(request.page.query_key)
        inputs = await request.read_inputs()
        kind = "page" if request.page.query_key else "photo" if inputs.photos else "text"
        return await self._engine_search(request, inputs, forget_key=True), kind

    async def _engine_search(
        self, request: SearchRequest, inputs: Inputs, forget_key: bool = False
    ) -> SearchPage:
        page, search = request.page, self.settings.search
        return await self.engine.search(
            images=inputs.photos,
            text=inputs.text,
            filters=Filters(category=page.category),
            k=request.k,
            offset=page.offset,
            diversity=search.surprise_diversity if page.surprise else None,
            query_key=None if forget_key else page.query_key,
        )
