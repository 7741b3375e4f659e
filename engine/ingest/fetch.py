"""Product image bytes from local paths or http(s) URLs, with a download cache.

Downloads: bounded concurrency, timeouts, retries with backoff on transient failures,
a size cap enforced while streaming, a content-type check, and an on-disk cache keyed by
URL so that a rebuild does not download again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from engine.config import BuildSettings

_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class FetchError(RuntimeError):
    """An image that cannot be had; the message is the reason for the skip report."""


class _Transient(FetchError):
    """Worth retrying: timeouts, dropped connections, 5xx and 429."""


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    local_path: str  # where the bytes live on disk (the source file or the cache entry)


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int
    timeout_s: float
    retries: int
    max_bytes: int
    backoff_s: float = 0.5  # not a setting: tests shorten it

    @classmethod
    def from_settings(cls, build: BuildSettings) -> FetchSettings:
        return cls(
            build.download_concurrency,
            build.download_timeout_s,
            build.download_retries,
            build.max_image_bytes,
        )


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


class ImageFetcher:
    def __init__(self, base_dir: Path, cache_dir: Path, settings: FetchSettings) -> None:
        self._base_dir = base_dir
        self._cache_dir = cache_dir
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def __aenter__(self) -> ImageFetcher:
        timeout = aiohttp.ClientTimeout(
            total=self._settings.timeout_s, sock_connect=min(10.0, self._settings.timeout_s)
        )
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": "fashionbot-index-builder/0.1"}
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, source: str) -> FetchedImage:
        if is_url(source):
            return await self._fetch_url(source)
        return await asyncio.to_thread(self._read_local, source)

    def _read_local(self, source: str) -> FetchedImage:
        path = Path(source).expanduser()
        path = path if path.is_absolute() else self._base_dir / path
        try:
            size = path.stat().st_size
            if size > self._settings.max_bytes:
                raise FetchError(f"file is {size / 1e6:.1f} MB, over the size cap")
            return FetchedImage(path.read_bytes(), str(path.resolve()))
        except FileNotFoundError:
            raise FetchError(f"file not found: {path}") from None
        except IsADirectoryError:
            raise FetchError(f"is a folder, not an image: {path}") from None
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None

    def cache_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self._cache_dir / "images" / digest[:2] / digest

    async def _fetch_url(self, url: str) -> FetchedImage:
        cached = self.cache_path(url)
        if cached.is_file():
            return FetchedImage(await asyncio.to_thread(cached.read_bytes), str(cached))
        async with self._slots:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self._settings.retries + 1),
                wait=wait_exponential(multiplier=self._settings.backoff_s, max=8.0),
                retry=retry_if_exception_type(_Transient),
                reraise=True,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        data = await self._download(url)
            except _Transient as exc:
                raise FetchError(f"{exc} (after {self._settings.retries + 1} attempts)") from None
        await asyncio.to_thread(self._store, cached, data)
        return FetchedImage(data, str(cached))

    async def _download(self, url: str) -> bytes:
        assert self._session is not None, "use ImageFetcher as an async context manager"
        cap = self._settings.max_bytes
        try:
            async with self._session.get(url, allow_redirects=True, max_redirects=5) as response:
                if response.status == 429 or response.status >= 500:
                    raise _Transient(f"HTTP {response.status}")
                if response.status != 200:
                    raise FetchError(f"HTTP {response.status}")
                kind = response.headers.get("Content-Type", "").lower()
                if kind and not kind.startswith(_ACCEPTED_TYPES):
                    raise FetchError(f"not an image (Content-Type {kind.split(';')[0]})")
                if response.content_length is not None and response.content_length > cap:
                    raise FetchError(
                        f"image is {response.content_length / 1e6:.1f} MB, over the cap"
                    )
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > cap:
                        raise FetchError(f"image is over the {cap / 1e6:.0f} MB cap")
                    chunks.append(chunk)
                return b"".join(chunks)
        except aiohttp.TooManyRedirects:
            raise FetchError("too many redirects") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise _Transient("timed out") from None
        except aiohttp.InvalidURL:
            raise FetchError("invalid URL") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise _Transient(f"connection failed ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise FetchError(f"download failed ({type(exc).__name__})") from None

    @staticmethod
    def _store(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
