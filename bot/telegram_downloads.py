"""python-telegram-bot's HTTP client, with a byte cap on file downloads.

python-telegram-bot reads a download whole before handing it over (`File.download_*` ->
`BaseRequest.retrieve` -> `do_request`), and the Bot API's getFile answer may leave out
`file_size`, so a check of the declared size alone lets a 150 MB file into memory before
it is refused. `do_request` is the library's documented extension point; file downloads are
the only GET requests it makes, so those are streamed here and abandoned at the cap. Every
other request (the Bot API methods, all POST) goes through the library unchanged.
"""

from __future__ import annotations

from typing import Any

import httpx
from telegram.error import NetworkError, TelegramError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

CHUNK_BYTES = 64 * 1024


class DownloadTooLarge(TelegramError):
    """A file download passed the cap; reading stopped there."""


class CappedDownloadRequest(HTTPXRequest):
    def __init__(self, max_download_bytes: int, timeout_s: float, **kwargs: Any) -> None:
        super().__init__(read_timeout=timeout_s, write_timeout=timeout_s, **kwargs)
        self.max_download_bytes = max_download_bytes
        self._download_timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._downloads: httpx.AsyncClient | None = None

    async def initialize(self) -> None:
        await super().initialize()
        if self._downloads is None or self._downloads.is_closed:
            self._downloads = httpx.AsyncClient(timeout=self._download_timeout)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self._downloads is not None:
            await self._downloads.aclose()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if method != "GET":
            timeouts = (read_timeout, write_timeout, connect_timeout, pool_timeout)
            return await super().do_request(url, method, request_data, *timeouts)
        if self._downloads is None or self._downloads.is_closed:
            raise RuntimeError("This CappedDownloadRequest is not initialized!")
        try:
            return await self._download(self._downloads, url)
        except httpx.TimeoutException as err:
            raise TimedOut from err
        except httpx.HTTPError as err:
            raise NetworkError(f"httpx.{type(err).__name__}: {err}") from err

    async def _download(self, client: httpx.AsyncClient, url: str) -> tuple[int, bytes]:
        limit = self.max_download_bytes
        headers = {"User-Agent": self.USER_AGENT}
        async with client.stream("GET", url, headers=headers) as response:
            declared = response.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise DownloadTooLarge(f"the file has {declared} bytes; the limit is {limit}")
            body = bytearray()
            # Decoded bytes are counted, so a compressed response cannot expand past the cap.
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise DownloadTooLarge(f"the file has more than {limit} bytes")
            return response.status_code, bytes(body)
