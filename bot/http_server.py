"""The operator's HTTP endpoint: /healthz (index loaded, model warm, bots connected) and
/metrics (Prometheus)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.frontend import Frontend
from bot.metrics import Metrics
from engine.search import Engine


class HealthServer:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        bots: Sequence[Frontend],
        port: int,
        host: str = "0.0.0.0",
    ) -> None:
        self._engine, self._metrics, self._bots = engine, metrics, bots
        self._host, self.port = host, port
        self._runner: web.AppRunner | None = None

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
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # set by start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
