"""Fetch an image from a URL that came from a user, without letting the user point the
bot at its own network: private, loopback, link-local and other non-public addresses are
refused after DNS resolution and again after every redirect, and the connection goes to
the address that was checked (no DNS rebinding in between). The address rules are shared
with the index builder's downloads (engine/net_safety.py)."""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp

from engine.net_safety import REDIRECTS, AddressPolicy, UnsafeUrl, check_url, checked_connector

__all__ = ["UnsafeUrl", "fetch_user_image"]


async def fetch_user_image(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float = 10.0,
    max_redirects: int = 3,
    allow_loopback: bool = False,
) -> bytes:
    """The body at `url` (at most `max_bytes`), or UnsafeUrl / aiohttp errors."""
    policy = AddressPolicy(allow_loopback=allow_loopback)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(
        connector=checked_connector(policy), timeout=timeout
    ) as session:
        for _ in range(max_redirects + 1):
            check_url(url, policy)
            async with session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    continue
                response.raise_for_status()
                body = await response.content.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise UnsafeUrl("the image is larger than allowed")
                return body
    raise UnsafeUrl("too many redirects")
