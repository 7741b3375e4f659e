"""The one search flow every chat front-end runs: rate limit -> size check -> engine search
(a page by its query key, re-reading the original only when the engine has forgotten it)
-> a refusal for anything unusable -> counted -> "no results". A front-end turns its
platform's event into a `SearchRequest` and renders the `Results` or `Refusal` it gets.

Shop the look: a single photo first goes through the engine's garment finder. A street
photo's first album is for its largest garment (the page token names it, so every later
page stays on it); where the finder saw two or more, `Results.look` is set and
`garment_picker` gives the photo with numbered boxes and one choice per garment, plus the
whole photo. A product photo (the finder sees no look) is searched exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

from bot.analytics import ClickTracking
from bot.garment_picture import annotated_jpeg
from bot.i18n import t
from bot.limits import RateLimiter
from bot.metrics import Metrics
from bot.paging import MAX_OFFSET, Mode, PageToken, is_garment_kind
from bot.settings import BotSettings
from bot.stats import BotStats
from engine.batcher import EngineBusy
from engine.images import ImageError
from engine.query_store import QueryExpired
from engine.search import Engine
from engine.types import Filters, Garment, SearchPage, TextSearchUnavailable

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
class Look:
    """A street photo in which the finder saw two or more garments: what the garment
    picker needs once the first album is out."""

    photo: bytes
    text: str | None  # the caption, refining whichever garment is picked
    garments: tuple[Garment, ...]  # the finder's order: a token's garment position
    shown: PageToken  # the first album's garment, with its query key


@dataclass(frozen=True)
class GarmentChoice:
    number: int  # the number drawn on the photo; 0 for the whole photo
    kind: str | None  # the finder's kind ("shoes"); None for the whole photo
    token: PageToken  # the first page of its search


@dataclass(frozen=True)
class Picker:
    picture: bytes  # JPEG: the shopper's photo with each garment's numbered box
    choices: list[GarmentChoice]  # by number, the whole photo last


@dataclass(frozen=True)
class Results:
    page: SearchPage
    token: PageToken  # the page shown, keyed by the query to page on from
    look: Look | None = None  # a street photo with garments to pick from (first page only)
    links: tuple[str, ...] = ()  # each hit's shop link (a /go/ link when clicks are tracked)

    @property
    def garment_kind(self) -> str | None:
        """Which garment of the photo the album is for ("shoes"), if it is for one."""
        return self.token.garment_kind if self.token.garment is not None else None

    def more(self) -> PageToken | None:
        offset = self.page.offset + len(self.page.hits)
        if not self.page.has_more or offset > MAX_OFFSET:
            return None
        return self.token.page(self.page.query_key, offset, self.token.mode, self.token.category)

    def surprise(self) -> PageToken:
        return self.token.page(self.page.query_key, 0, Mode.SURPRISE, self.token.category)

    def only(self, category: str | None) -> PageToken:
        return self.token.page(self.page.query_key, 0, Mode.NORMAL, category)

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
            page, token, look, kind = await self._page(request)
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
        return Results(page, token.with_key(page.query_key), look, links)

    async def _page(self, request: SearchRequest) -> tuple[SearchPage, PageToken, Look | None, str]:
        """The page by the query's key (no model run); by re-reading the original only
        when there is no key or the engine's query store has forgotten it. A page of one
        garment re-reads the photo and finds that garment again. With the search's kind
        for analytics: page, photo, garment or text."""
        token = request.page
        if token.query_key:
            try:
                return await self._engine_search(request, Inputs()), token, None, "page"
            except QueryExpired:
                if request.read_inputs is None:
                    raise
                log.info("query %s was forgotten: re-reading the original", token.query_key)
        if request.read_inputs is None:
            raise QueryExpired(token.query_key)
        inputs = await request.read_inputs()
        if len(inputs.photos) == 1 and token.garment is not None:
            page = await self._engine_search(request, inputs, garment=token.garment)
            return page, token, None, "page" if token.query_key else "garment"
        if len(inputs.photos) == 1 and not token.query_key and not token.offset:
            return await self._look(request, inputs)
        kind = "page" if token.query_key else "photo" if inputs.photos else "text"
        return await self._engine_search(request, inputs), token, None, kind

    async def _look(
        self, request: SearchRequest, inputs: Inputs
    ) -> tuple[SearchPage, PageToken, Look | None, str]:
        """A new photo search: the album of the photo's largest garment (the largest of
        the asked category, when the search has one and the photo shows it), or of the
        whole photo where the finder sees no look (exactly the search before the finder).
        The finder runs first, alone: a whole-photo search beside it (to save its time on
        product photos) slowed street photos' first album by more than it saved, measured
        on two busy cores (bench/look_latency.py)."""
        garments = await self.engine.find_garments(inputs.photos[0])
        found = [i for i, g in enumerate(garments) if not g.whole_photo]
        if not found:
            return await self._engine_search(request, inputs), request.page, None, "photo"
        category = request.page.category
        asked = [i for i in found if category and self.engine.garments.shows(garments[i], category)]
        largest = max(asked or found, key=lambda i: garments[i].area)
        page = await self._engine_search(request, inputs, garment=garments[largest])
        token = _garment_token(request.page, largest, garments[largest])
        if len(found) < 2:
            return page, token, None, "garment"
        look = Look(inputs.photos[0], inputs.text, tuple(garments), token.with_key(page.query_key))
        return page, token, look, "garment"

    async def _engine_search(
        self, request: SearchRequest, inputs: Inputs, garment: Garment | int | None = None
    ) -> SearchPage:
        """The request's page: by its query key when `inputs` are empty, else searched
        anew from them (one garment of the photo, when given)."""
        page, search = request.page, self.settings.search
        photos = inputs.photos
        return await self.engine.search(
            image=photos[0] if garment is not None else None,
            images=photos if garment is None else (),
            text=inputs.text,
            filters=Filters(category=page.category),
            k=request.k,
            offset=page.offset,
            diversity=search.surprise_diversity if page.surprise else None,
            query_key=None if photos or inputs.text else page.query_key,
            garment=garment,
        )

    async def garment_picker(self, look: Look) -> Picker | None:
        """The photo with each garment's numbered box and a choice per garment plus the
        whole photo, each choice naming its own search (the engine stores the query, so a
        press, even after a restart, runs no model). Runs after the first album is out:
        one model pass over the other garments. None when the engine cannot now (busy):
        the album stands on its own."""
        engine, shown = self.engine, look.shown
        others = [
            i for i, g in enumerate(look.garments) if i != shown.garment and not g.whole_photo
        ]
        try:
            garment_pages = asyncio.gather(
                *(
                    engine.search(image=look.photo, garment=look.garments[i], text=look.text, k=1)
                    for i in others
                )
            )
            whole_photo = engine.search(images=[look.photo], text=look.text, k=1)
            pages, whole = await asyncio.gather(garment_pages, whole_photo)
            image = await engine.run_cpu(engine.garments.decode, look.photo)
        except (EngineBusy, ImageError, TextSearchUnavailable) as exc:
            log.info("no garment picker for this photo: %r", exc)
            return None
        keys = {i: page.query_key for i, page in zip(others, pages, strict=True)}
        if shown.garment is not None:
            keys[shown.garment] = shown.query_key
        order = sorted(keys, key=lambda i: _reading_order(look.garments[i]))
        choices = [
            GarmentChoice(
                number,
                look.garments[i].category,
                _garment_token(PageToken(keys[i]), i, look.garments[i]),
            )
            for number, i in enumerate(order, start=1)
        ]
        choices.append(GarmentChoice(0, None, PageToken(whole.query_key)))
        boxes = [look.garments[i].box for i in order]
        return Picker(await engine.run_cpu(annotated_jpeg, image, boxes), choices)


def _garment_token(token: PageToken, position: int, garment: Garment) -> PageToken:
    kind = garment.category if is_garment_kind(garment.category) else None
    return replace(token, garment=position, garment_kind=kind)


def _reading_order(garment: Garment) -> tuple[float, float]:
    """Top to bottom (by the box's middle), then left to right: hat 1, shoes last."""
    x0, y0, x1, y1 = garment.box
    return (y0 + y1) / 2, (x0 + x1) / 2
