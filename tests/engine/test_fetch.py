"""Image downloads against a real aiohttp server on loopback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from engine.ingest.fetch import FetchError, FetchSettings, ImageFetcher, keep_in_cache
from tests.conftest import DEMO_IMAGES
from tests.fakes.loopback import LoopbackServer

PHOTO = (DEMO_IMAGES / "shorts-2.jpg").read_bytes()


@pytest.fixture
async def shop_server():
    hits: Counter[str] = Counter()
    flaky_failures = {"left": 2}

    async def photo(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(body=PHOTO, content_type="image/jpeg")

    async def dead(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(status=404)

    async def slow(request: web.Request) -> web.Response:
        hits[request.path] += 1
        await server.stopping.wait()  # answers only once the test is over
        return web.Response(body=PHOTO, content_type="image/jpeg")

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.content_length = 5 * 1024**3  # "5 GB": refused from the header
        await response.prepare(request)
        await response.write(b"\xff" * 1024)
        return response

    async def huge_streamed(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        response.enable_chunked_encoding()  # no length: the cap applies while reading
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\x00" * 65536)
        return response

    async def html(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(text="<html>sold out</html>", content_type="text/html")

    async def redirect_to_photo(request: web.Request) -> web.Response:
        hits[request.path] += 1
        raise web.HTTPFound("/photo.jpg")

    async def redirect_to_html(request: web.Request) -> web.Response:
        hits[request.path] += 1
        raise web.HTTPFound("/page.html")

    async def loop_redirect(request: web.Request) -> web.Response:
        hits[request.path] += 1
        raise web.HTTPFound("/loop")

    async def flaky(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if flaky_failures["left"]:
            flaky_failures["left"] -= 1
            return web.Response(status=503)
        return web.Response(body=PHOTO, content_type="image/jpeg")

    async def drop(request: web.Request) -> web.Response:
        hits[request.path] += 1
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    routes = {
        "/photo.jpg": photo,
        "/dead.jpg": dead,
        "/slow.jpg": slow,
        "/huge-declared.jpg": huge_declared,
        "/huge-streamed.jpg": huge_streamed,
        "/page.html": html,
        "/moved.jpg": redirect_to_photo,
        "/moved-to-page.jpg": redirect_to_html,
        "/loop": loop_redirect,
        "/flaky.jpg": flaky,
        "/drop.jpg": drop,
    }
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    server = LoopbackServer(app)
    await server.start()
    yield f"http://127.0.0.1:{server.port}", hits
    await server.stop()


def fetcher(tmp_path: Path, **overrides) -> ImageFetcher:
    settings = FetchSettings(
        **{
            "concurrency": 4,
            "timeout_s": 1.0,
            "retries": 2,
            "max_bytes": 1_000_000,
            "backoff_s": 0.01,
            "allow_private_hosts": ("127.0.0.1",),  # the shop server is on loopback
        }
        | overrides
    )
    return ImageFetcher(tmp_path, tmp_path / "cache", settings)


async def test_download_is_cached_by_url(shop_server, tmp_path: Path) -> None:
    base, hits = shop_server
    async with fetcher(tmp_path) as fetch:
        first = await fetch.fetch(f"{base}/photo.jpg")
        keep_in_cache(first)  # what the build does once the image decoded
        second = await fetch.fetch(f"{base}/photo.jpg")
    assert first.data == second.data == PHOTO
    assert hits["/photo.jpg"] == 1 and Path(second.local_path).is_file()
    async with fetcher(tmp_path) as fetch:  # a later build reuses the cache too
        await fetch.fetch(f"{base}/photo.jpg")
    assert hits["/photo.jpg"] == 1


async def test_redirect_to_an_image_is_followed(shop_server, tmp_path: Path) -> None:
    base, _ = shop_server
    async with fetcher(tmp_path) as fetch:
        assert (await fetch.fetch(f"{base}/moved.jpg")).data == PHOTO


async def test_transient_errors_are_retried(shop_server, tmp_path: Path) -> None:
    base, hits = shop_server
    async with fetcher(tmp_path) as fetch:
        assert (await fetch.fetch(f"{base}/flaky.jpg")).data == PHOTO
    assert hits["/flaky.jpg"] == 3


@pytest.mark.parametrize(
    ("path", "reason", "attempts"),
    [
        ("/dead.jpg", "HTTP 404", 1),
        ("/huge-declared.jpg", "over the cap", 1),
        ("/huge-streamed.jpg", "over the 1 MB cap", 1),
        ("/page.html", "not an image", 1),
        ("/moved-to-page.jpg", "not an image", 1),
        ("/loop", "too many redirects", 5),  # aiohttp stops at its 5th redirect
        ("/drop.jpg", "connection failed", 3),
    ],
)
async def test_bad_urls_fail_with_a_reason(shop_server, tmp_path, path, reason, attempts) -> None:
    base, hits = shop_server
    async with fetcher(tmp_path) as fetch:
        with pytest.raises(FetchError, match=reason):
            await fetch.fetch(f"{base}{path}")
    if path == "/drop.jpg":  # aiohttp itself re-sends once on a dropped keep-alive socket
        assert attempts <= hits[path] <= 2 * attempts
    else:
        assert hits[path] == attempts
    assert not list((tmp_path / "cache").rglob("*"))


async def test_a_slow_server_times_out_on_every_attempt(shop_server, tmp_path) -> None:
    base, hits = shop_server
    async with fetcher(tmp_path, timeout_s=0.2) as fetch:
        with pytest.raises(FetchError, match="timed out"):
            await fetch.fetch(f"{base}/slow.jpg")
    assert hits["/slow.jpg"] == 3
    assert not list((tmp_path / "cache").rglob("*"))


async def test_local_paths_resolve_against_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(PHOTO)
    async with fetcher(tmp_path) as fetch:
        assert (await fetch.fetch("img/a.jpg")).data == PHOTO
        with pytest.raises(FetchError, match="not found"):
            await fetch.fetch("img/missing.jpg")
        with pytest.raises(FetchError, match="folder"):
            await fetch.fetch("img")
    async with fetcher(tmp_path, max_bytes=100) as fetch:
        with pytest.raises(FetchError, match="size cap"):
            await fetch.fetch("img/a.jpg")
