"""Fetch an image from a URL that came from a user, without letting the user point the
bot at its own network: private, loopback, link-local and other non-public addresses are
refused after DNS resolution and again after every redirect, and the connection goes to
the address that was checked (no DNS rebinding in between)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

REDIRECTS = (301, 302, 303, 307, 308)


class UnsafeUrl(ValueError):
    """The URL is not an http(s) URL on a public address."""


class _CheckedResolver(AbstractResolver):
    """Resolves each host once, refusing non-public addresses; aiohttp then connects to
    exactly the addresses that passed."""

    def __init__(self, allow_loopback: bool) -> None:
        self._allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise UnsafeUrl(f"{host} does not resolve")
        resolved: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if not is_public(address, self._allow_loopback):
                raise UnsafeUrl(f"{host} resolves to a non-public address ({address})")
            resolved.append(
                {
                    "hostname": host,
                    "host": str(address),
                    "port": port,
                    "family": fam,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return resolved

    async def close(self) -> None:
        return None


def is_public(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool = False
) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not address.is_multicast


async def fetch_user_image(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float = 10.0,
    max_redirects: int = 3,
    allow_loopback: bool = False,
) -> bytes:
    """The body at `url` (at most `max_bytes`), or UnsafeUrl / aiohttp errors."""
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(allow_loopback), use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UnsafeUrl(f"not an http(s) URL: {url[:80]}")
            try:
                literal = ipaddress.ip_address(parts.hostname)
            except ValueError:
                literal = None
            if literal is not None and not is_public(literal, allow_loopback):
                raise UnsafeUrl(f"non-public address {literal}")
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
