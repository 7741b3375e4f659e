"""Fetch an image from a URL that came from a user, without letting the user point the
bot at its own network: private, loopback, link-local and other non-public addresses are
refused after DNS resolution and again after every redirect, and the connection goes to
the address that was checked (no DNS rebinding in between). The address rules are shared
with the index builder's downloads (engine/net_safety.py)."""

from __future__ import annotations

import aiohttp

from engine.net_safety import (
    AddressPolicy,
    TooManyRedirects,
    UnsafeUrl,
    checked_connector,
    checked_get,
)

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
        try:
            async with checked_get(
                session, url, policy, max_requests=max_redirects + 1
            ) as response:
                response.raise_for_status()
                body = await response.content.read(max_bytes + 1)
        except TooManyRedirects:
            raise UnsafeUrl("too many redirects") from None
    if len(body) > max_bytes:
        raise UnsafeUrl("the image is larger than allowed")
    return body
