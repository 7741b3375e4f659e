"""The bot's HTTP endpoint: /healthz (index loaded, model warm, bots connected), /metrics
(Prometheus) and, when click links are on, /go/<token> (bot/redirect.py)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.frontend import Frontend
from bot.metrics import Metrics
from bot.settings import HttpSettings
from engine.search import Engine


class HealthServer:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        bots: Sequence[Frontend],
        port: int,
        host: str = "127.0.0.1",
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self._engine, self._metrics, self._bots = engine, metrics, bots
        self._routes = list(routes)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    @classmethod
    def configured(
        cls,
        engine: Engine,
        metrics: Metrics,
        bots: Sequence[Frontend],
        http: HttpSettings,
        routes: Sequence[web.RouteDef] = (),
    ) -> HealthServer | None:
        """The server `[http]` asks for, or None where its port is 0."""
        return cls(engine, metrics, bots, http.port, http.host, routes) if http.port else None

    def health(self) -> tuple[bool, dict[str, object]]:
        manifest = self._engine.index.manifest
        bots = {bot.platform: bot.healthy for bot in self._bots}
        report = {
            "index_loaded": True,
            "index_build": manifest.build_id,
            "products": manifest.products,
            "model_warm": self._engine.warm,
            "bots": bots,
        }
        return self._engine.warm and all(bots.values()), report

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, report = self.health()
        return web.json_response(report, status=200 if ok else 503)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_routes(self._routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]  # set by start()
        self.host, self.port = sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
