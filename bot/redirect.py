"""GET /go/<token> on the bot's HTTP server: a verified click is recorded (queued) and
answered with a 302 to the product's UTM-tagged shop URL from the served catalog. Anything
else (forged, altered, expired, a product no longer sold) is a plain 404: the address
redirected to never comes from the request, so this is no open redirect."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from bot.analytics import DAY_S, Analytics
from bot.metrics import Metrics
from bot.render import shop_link
from engine.search import Engine
from engine.state.analytics import ClickRecord
from engine.types import Product

ProductLookup = Callable[[str], Product | None]

_NOT_FOUND_HEADERS = {"Cache-Control": "no-store"}
# Browsers and proxies must ask again for every click (each one is counted); the shop
# learns where the shopper came from through the UTM tags, not from the referrer.
_REDIRECT_HEADERS = {"Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"}


class ClickRedirect:
    def __init__(
        self,
        products: ProductLookup,
        analytics: Analytics,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.products = products
        self.analytics = analytics
        self.metrics = metrics
        self.clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/go/{token}", self.follow)]

    async def follow(self, request: web.Request) -> web.Response:
        signer, settings = self.analytics.signer, self.analytics.settings
        if signer is None:
            return _not_found()
        now = self.clock()
        click = signer.verify(request.match_info["token"], now, settings.links.max_age_days * DAY_S)
        if click is None:
            return _not_found()
        product = self.products(click.product_id)
        if product is None or not product.url.startswith(("https://", "http://")):
            return _not_found()
        if self.analytics.writer is not None:
            self.analytics.writer.record_click(
                ClickRecord(int(now), click.search_id, click.rank, click.product_id, click.platform)
            )
        if self.metrics is not None:
            self.metrics.count_click(click.platform, click.rank)
        target = shop_link(product.url, click.platform, settings.links)
        return web.Response(status=302, headers={**_REDIRECT_HEADERS, "Location": target})


def _not_found() -> web.Response:
    return web.Response(status=404, text="not found", headers=_NOT_FOUND_HEADERS)


def served_products(engine: Engine, cached: int = 4096) -> ProductLookup:
    """Products by id from the index the engine serves now; the most clicked are kept in
    memory until the engine switches to another build."""
    memory: OrderedDict[str, Product | None] = OrderedDict()
    serving: list[object] = [None]

    def lookup(product_id: str) -> Product | None:
        index = engine.index
        if serving[0] is not index:
            memory.clear()
            serving[0] = index
        if product_id in memory:
            memory.move_to_end(product_id)
            return memory[product_id]
        product = index.catalog.products([product_id]).get(product_id)
        memory[product_id] = product
        if len(memory) > cached:
            memory.popitem(last=False)
        return product

    return lookup
