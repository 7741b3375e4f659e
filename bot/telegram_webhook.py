"""The endpoint Telegram POSTs updates to in webhook mode, checked before anything is read.

python-telegram-bot's own webhook server reads a whole request body (up to 100 MB) before
it looks at the secret token header, so anyone who finds the URL can make the bot buffer
hundreds of MB. Here the secret is compared on the headers first, and a body declared or
found to be over `MAX_BODY_BYTES` is refused unread; Telegram's updates are a few KB.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
PATH = "/telegram"

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


def _refusal(status: int) -> web.Response:
    response = web.Response(status=status)
    response.force_close()  # the unread body is not waited for on this connection
    return response


class WebhookServer:
    def __init__(self, secret: str, deliver: Deliver, host: str, port: int) -> None:
        """`deliver` takes one update's JSON and raises ValueError if it is no update."""
        if not secret:
            raise ValueError("a webhook needs a secret token")
        self._secret = secret.encode()
        self._deliver = deliver
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(PATH, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        offered = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(offered, self._secret):
            log.info("refused a webhook request without the secret token")
            return _refusal(403)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _refusal(413)
        try:
            payload = json.loads(await request.read())  # chunked: capped by client_max_size
        except web.HTTPRequestEntityTooLarge:
            return _refusal(413)
        except ValueError:
            return _refusal(400)
        if not isinstance(payload, dict):
            return _refusal(400)
        try:
            await self._deliver(payload)
        except ValueError as exc:
            log.info("refused a webhook body that is no update: %s", exc)
            return _refusal(400)
        return web.Response(status=200)
