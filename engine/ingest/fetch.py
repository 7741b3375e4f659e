"""Product image bytes from local paths or http(s) URLs, with a download cache.

Local paths: only regular files under the catalog's folder or `build.image_roots`, read
up to the size cap (a device or a pipe never blocks the build nor fills its memory).

Downloads: public addresses only (plus `build.allow_private_hosts`), checked at every
redirect; bounded concurrency, timeouts, retries with backoff on transient failures, a
size cap enforced while streaming, a content-type check, and an on-disk cache keyed by
URL. A download enters the cache only once it decoded (`keep_in_cache`); an entry older
than `build.cache_max_age_s` is revalidated with the server (ETag / Last-Modified).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field
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
from engine.net_safety import (
    AddressPolicy,
    checked_connector,
    checked_get,
    download_errors,
)

log = logging.getLogger(__name__)

_ACCEPTED_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
_READ_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """An image that cannot be had; the message is the reason for the skip report."""


class _Transient(FetchError):
    """Worth retrying: timeouts, dropped connections, 5xx and 429."""


@dataclass(frozen=True)
class CacheEntry:
    """A download's place in the cache and what revalidates it."""

    path: Path
    url: str
    checked_at: float  # when the server last gave or confirmed these bytes
    etag: str = ""
    last_modified: str = ""

    @property
    def meta_path(self) -> Path:
        return self.path.with_name(f"{self.path.name}.json")

    def validators(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    def write_meta(self) -> None:
        meta = {
            "url": self.url,
            "checked_at": self.checked_at,
            "etag": self.etag,
            "last_modified": self.last_modified,
        }
        _write_atomically(self.meta_path, json.dumps(meta).encode("utf-8"))

    @classmethod
    def read(cls, path: Path, url: str) -> CacheEntry | None:
        """The entry at `path` when its bytes and its metadata are there."""
        try:
            meta = json.loads(path.with_name(f"{path.name}.json").read_text("utf-8"))
            if not path.is_file() or meta.get("url") != url:
                return None
            return cls(
                path,
                url,
                float(meta["checked_at"]),
                str(meta.get("etag") or ""),
                str(meta.get("last_modified") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # no entry, or one from an older version: downloaded again


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    local_path: str  # where the bytes live on disk (the source file or the cache entry)
    # A download not in the cache yet: `keep_in_cache` stores it once it decoded.
    unsaved: CacheEntry | None = field(default=None, compare=False)


def keep_in_cache(fetched: FetchedImage) -> None:
    """Stores a download that turned out to be a usable image (bytes, then metadata: an
    entry without metadata is never used)."""
    entry = fetched.unsaved
    if entry is None:
        return
    _write_atomically(entry.path, fetched.data)
    entry.write_meta()


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int
    timeout_s: float
    retries: int
    max_bytes: int
    backoff_s: float = 0.5  # not a setting: tests shorten it
    image_roots: tuple[Path, ...] = ()  # besides the catalog's folder
    allow_private_hosts: tuple[str, ...] = ()
    cache_max_age_s: float = 7 * 24 * 3600.0

    @classmethod
    def from_settings(cls, build: BuildSettings, image_roots: tuple[Path, ...]) -> FetchSettings:
        return cls(
            build.download_concurrency,
            build.download_timeout_s,
            build.download_retries,
            build.max_image_bytes,
            image_roots=image_roots,
            allow_private_hosts=tuple(build.allow_private_hosts),
            cache_max_age_s=build.cache_max_age_s,
        )


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class _Download:
    data: bytes = b""
    not_modified: bool = False  # 304: the cached bytes are still the image
    etag: str = ""
    last_modified: str = ""


class ImageFetcher:
    def __init__(self, base_dir: Path, cache_dir: Path, settings: FetchSettings) -> None:
        self._base_dir = base_dir
        self._cache_dir = cache_dir
        self._settings = settings
        self._roots = tuple(Path(os.path.realpath(r)) for r in (base_dir, *settings.image_roots))
        self._policy = AddressPolicy.allowing(settings.allow_private_hosts)
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def __aenter__(self) -> ImageFetcher:
        timeout = aiohttp.ClientTimeout(
            total=self._settings.timeout_s, sock_connect=min(10.0, self._settings.timeout_s)
        )
        self._session = aiohttp.ClientSession(
            connector=checked_connector(self._policy),
            timeout=timeout,
            headers={"User-Agent": "fashionbot-index-builder/0.1"},
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

    # Local files

    def _read_local(self, source: str) -> FetchedImage:
        path = Path(source).expanduser()
        path = path if path.is_absolute() else self._base_dir / path
        real = Path(os.path.realpath(path))
        if not self._confined(real):
            raise FetchError(f"outside the catalog's folder and build.image_roots: {source}")
        try:
            # O_NONBLOCK: opening a FIFO does not wait for a writer; O_NOFOLLOW: a link
            # swapped in after realpath() is refused rather than followed.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FetchError(f"file not found: {path}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise FetchError(f"is a link, not an image: {path}") from None
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return FetchedImage(self._read_regular(fd, path), str(real))
        finally:
            os.close(fd)

    def _confined(self, real: Path) -> bool:
        return any(real.is_relative_to(root) for root in self._roots)

    def _read_regular(self, fd: int, path: Path) -> bytes:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FetchError(f"is a folder, not an image: {path}")
        if not stat.S_ISREG(info.st_mode):
            raise FetchError(f"not a regular file (a device, pipe or socket): {path}")
        opened = _opened_path(fd)
        if opened is not None and not self._confined(opened):  # a folder swapped meanwhile
            raise FetchError(f"outside the catalog's folder and build.image_roots: {path}")
        cap = self._settings.max_bytes
        if info.st_size > cap:
            raise FetchError(f"file is {info.st_size / 1e6:.1f} MB, over the size cap")
        # The cap holds while reading too: a file may grow, and /proc or /sys files
        # report a size of 0 whatever they hold.
        chunks, size = [], 0
        while chunk := os.read(fd, min(_READ_CHUNK, cap + 1 - size)):
            size += len(chunk)
            if size > cap:
                raise FetchError(f"file is over the {cap / 1e6:g} MB size cap")
            chunks.append(chunk)
        return b"".join(chunks)

    # Downloads

    def cache_path(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self._cache_dir / "images" / digest[:2] / digest

    async def _fetch_url(self, url: str) -> FetchedImage:
        path = self.cache_path(url)
        cached = await asyncio.to_thread(CacheEntry.read, path, url)
        if cached is not None and time.time() - cached.checked_at < self._settings.cache_max_age_s:
            return FetchedImage(await asyncio.to_thread(path.read_bytes), str(path))
        validators = cached.validators() if cached is not None else {}
        try:
            download = await self._download_with_retries(url, validators)
        except _Transient as exc:
            if cached is None:
                raise
            log.info("%s: revalidation failed (%s); using the cached copy", url, exc)
            return FetchedImage(await asyncio.to_thread(path.read_bytes), str(path))
        if download.not_modified and cached is not None:
            confirmed = CacheEntry(
                path,
                url,
                time.time(),
                download.etag or cached.etag,
                download.last_modified or cached.last_modified,
            )
            await asyncio.to_thread(confirmed.write_meta)
            return FetchedImage(await asyncio.to_thread(path.read_bytes), str(path))
        entry = CacheEntry(path, url, time.time(), download.etag, download.last_modified)
        return FetchedImage(download.data, str(path), unsaved=entry)

    async def _download_with_retries(self, url: str, validators: dict[str, str]) -> _Download:
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
                        download = await self._download(url, validators)
            except _Transient as exc:
                raise _Transient(f"{exc} (after {self._settings.retries + 1} attempts)") from None
        return download

    async def _download(self, url: str, validators: dict[str, str]) -> _Download:
        assert self._session is not None, "use ImageFetcher as an async context manager"
        with download_errors(FetchError, _Transient):
            async with checked_get(self._session, url, self._policy, validators) as response:
                return await self._read_response(response, bool(validators))

    async def _read_response(
        self, response: aiohttp.ClientResponse, conditional: bool
    ) -> _Download:
        etag = response.headers.get("ETag", "")
        last_modified = response.headers.get("Last-Modified", "")
        if response.status == 304 and conditional:
            return _Download(not_modified=True, etag=etag, last_modified=last_modified)
        if response.status == 429 or response.status >= 500:
            raise _Transient(f"HTTP {response.status}")
        if response.status != 200:
            raise FetchError(f"HTTP {response.status}")
        kind = response.headers.get("Content-Type", "").lower()
        if kind and not kind.startswith(_ACCEPTED_TYPES):
            raise FetchError(f"not an image (Content-Type {kind.split(';')[0]})")
        cap = self._settings.max_bytes
        if response.content_length is not None and response.content_length > cap:
            raise FetchError(f"image is {response.content_length / 1e6:.1f} MB, over the cap")
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > cap:
                raise FetchError(f"image is over the {cap / 1e6:.0f} MB cap")
            chunks.append(chunk)
        return _Download(b"".join(chunks), etag=etag, last_modified=last_modified)


def _opened_path(fd: int) -> Path | None:
    """The path the kernel opened (Linux); None where /proc is not there."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None
