"""A catalog given as a URL, downloaded with the same safety as product images: public
addresses only (plus `build.allow_private_hosts`), every redirect checked, a byte cap
enforced while streaming, timeouts, retries on transient failures. The feed is streamed
to a file, never held in memory whole (a Shopify shop's products.json page by page, each
page held while it is copied)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from engine.config import BuildSettings
from engine.ingest.feed import FeedError
from engine.ingest.shopify_pages import join_pages, paginates
from engine.net_safety import AddressPolicy, checked_connector, checked_get, download_errors

_CHUNK = 1 << 16
_SUFFIXES = {".xml", ".rss", ".atom", ".tsv", ".txt", ".csv", ".json", ".jsonl", ".ndjson"}


class _Transient(FeedError):
    """Worth another try: a timeout, a dropped connection, HTTP 5xx or 429."""


def feed_file_name(url: str) -> str:
    """Where the download of `url` is kept: one file per URL, with the URL's own suffix
    when it is a feed's (content decides the format; the suffix still tells CSV from
    JSON Lines)."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]
    return f"feed-{digest}{suffix if suffix in _SUFFIXES else ''}"


async def download_feed(
    url: str, folder: Path, build: BuildSettings, backoff_s: float = 0.5
) -> Path:
    """The feed at `url`, saved under `folder`; FeedError (one line) when it cannot be had."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / feed_file_name(url)
    policy = AddressPolicy.allowing(build.allow_private_hosts)
    timeout = aiohttp.ClientTimeout(
        total=build.feed_timeout_s,
        sock_connect=min(10.0, build.download_timeout_s),
        sock_read=build.download_timeout_s,
    )
    async with aiohttp.ClientSession(
        connector=checked_connector(policy),
        timeout=timeout,
        headers={"User-Agent": "fashionbot-index-builder/0.1"},
    ) as session:

        async def fetch(address: str, path: Path) -> None:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(build.download_retries + 1),
                wait=wait_exponential(multiplier=backoff_s, max=8.0),
                retry=retry_if_exception_type(_Transient),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await _download(session, address, policy, path, build.max_feed_bytes)

        try:
            if paginates(url):
                await join_pages(fetch, url, target, build.max_feed_bytes)
            else:
                await fetch(url, target)
        except FeedError as exc:
            raise FeedError(f"cannot download the catalog {url}: {exc}") from None
    return target


async def _download(
    session: aiohttp.ClientSession, url: str, policy: AddressPolicy, target: Path, cap: int
) -> None:
    partial = target.with_name(f".{target.name}.part")
    try:
        with download_errors(FeedError, _Transient):
            async with checked_get(session, url, policy) as response:
                _check_status(response, cap)
                await _stream_to(response, partial, cap)
            os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _check_status(response: aiohttp.ClientResponse, cap: int) -> None:
    if response.status == 429 or response.status >= 500:
        raise _Transient(f"HTTP {response.status}")
    if response.status != 200:
        raise FeedError(f"HTTP {response.status}")
    if response.content_length is not None and response.content_length > cap:
        raise FeedError(f"it is {response.content_length / 1e6:.1f} MB, over build.max_feed_bytes")


async def _stream_to(response: aiohttp.ClientResponse, path: Path, cap: int) -> None:
    size = 0
    with path.open("wb") as handle:
        async for chunk in response.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > cap:
                raise FeedError(f"it is over build.max_feed_bytes ({cap / 1e6:g} MB)")
            handle.write(chunk)
