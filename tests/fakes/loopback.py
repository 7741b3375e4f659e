"""Run an aiohttp application on a free loopback port for the length of a test."""

from __future__ import annotations

import asyncio

from aiohttp import web


class LoopbackServer:
    port: int = 0

    def __init__(self, app: web.Application | None = None) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        # Set when the test is done with the server: a handler that plays a server that
        # never answers waits on it, so that stopping (which waits for handlers) is quick.
        self.stopping = asyncio.Event()

    def build_app(self) -> web.Application:
        """Subclasses build their routes here, or pass a ready app to the constructor."""
        if self._app is None:
            raise NotImplementedError
        return self._app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
