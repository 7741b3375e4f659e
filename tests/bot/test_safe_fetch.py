"""User-supplied URLs never reach private, loopback or link-local addresses. No traffic
is sent to those addresses: the refusals happen before any connection."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from bot.safe_fetch import UnsafeUrl, fetch_user_image
from tests.conftest import DEMO_IMAGES
from tests.fakes.loopback import LoopbackServer

PHOTO = (DEMO_IMAGES / "hat-1.jpg").read_bytes()


class RedirectingServer(LoopbackServer):
    def build_app(self) -> web.Application:
        async def photo(request: web.Request) -> web.Response:
            return web.Response(body=PHOTO, content_type="image/jpeg")

        async def to_private(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://10.0.0.7/admin.jpg")

        async def to_metadata(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

        async def to_localhost_name(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"http://localhost:{request.url.port}/photo.jpg")

        async def hops(request: web.Request) -> web.Response:
            left = int(request.match_info["left"])
            raise web.HTTPFound(f"/hops/{left - 1}" if left else "/photo.jpg")

        app = web.Application()
        app.router.add_get("/hops/{left}", hops)
        app.router.add_get("/photo.jpg", photo)
        app.router.add_get("/to-private", to_private)
        app.router.add_get("/to-metadata", to_metadata)
        app.router.add_get("/to-localhost", to_localhost_name)
        return app


def only_loopback_connections(monkeypatch, allow_loopback: bool) -> None:
    """Fail the test, without sending a packet, if anything connects elsewhere."""
    loop_type = type(asyncio.get_running_loop())
    real_sock_connect = loop_type.sock_connect

    async def guarded_sock_connect(self, sock, address):
        if not (allow_loopback and address[0] in ("127.0.0.1", "::1")):
            raise AssertionError(f"a connection to {address} was attempted")
        return await real_sock_connect(self, sock, address)

    monkeypatch.setattr(loop_type, "sock_connect", guarded_sock_connect)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.jpg",
        "http://10.1.2.3/x.jpg",
        "http://192.168.0.10/x.jpg",
        "http://172.16.5.4/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.jpg",
        "http://[fe80::1]/x.jpg",
        "http://[::ffff:127.0.0.1]/x.jpg",
        "http://0.0.0.0/x.jpg",
        "http://localhost/x.jpg",
        "file:///etc/passwd",
        "ftp://example.com/x.jpg",
    ],
)
async def test_non_public_targets_are_refused(url: str, monkeypatch) -> None:
    only_loopback_connections(monkeypatch, allow_loopback=False)
    with pytest.raises(UnsafeUrl):
        await fetch_user_image(url, max_bytes=1_000_000)


async def test_redirects_are_checked_at_every_hop(monkeypatch) -> None:
    only_loopback_connections(monkeypatch, allow_loopback=True)
    server = RedirectingServer()
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert (
            await fetch_user_image(f"{base}/photo.jpg", max_bytes=1_000_000, allow_loopback=True)
            == PHOTO
        )
        for path in ("/to-private", "/to-metadata"):
            with pytest.raises(UnsafeUrl, match="non-public"):
                await fetch_user_image(f"{base}{path}", max_bytes=1_000_000, allow_loopback=True)
        with pytest.raises(UnsafeUrl):  # loopback allowed only when asked for
            await fetch_user_image(f"{base}/photo.jpg", max_bytes=1_000_000)
        with pytest.raises(UnsafeUrl, match="larger"):
            await fetch_user_image(f"{base}/photo.jpg", max_bytes=100, allow_loopback=True)
        # /hops/2 -> /hops/1 -> /hops/0 -> /photo.jpg: three redirects, the most allowed
        chain = await fetch_user_image(f"{base}/hops/2", max_bytes=1_000_000, allow_loopback=True)
        assert chain == PHOTO
        with pytest.raises(UnsafeUrl, match="too many redirects"):
            await fetch_user_image(f"{base}/hops/3", max_bytes=1_000_000, allow_loopback=True)
    finally:
        await server.stop()
