"""Which addresses a fetch of an outside URL may connect to: public ones, plus the hosts
and networks the operator names. A URL from a shopper or a catalog must not point a fetch
at the machine's own network (loopback, private, link-local, cloud metadata addresses).

Host names are checked after DNS resolution, and the connection goes to exactly the
addresses that passed (no DNS rebinding in between); address literals are checked before
the request, redirects hop by hop by the caller (see `check_url`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


class TooManyRedirects(aiohttp.ClientError):
    """More than MAX_REDIRECTS hops."""


class UnsafeUrl(ValueError):
    """The URL is not an http(s) URL on an address the policy allows."""


def is_public(address: IPAddress, allow_loopback: bool = False) -> bool:
    address = _unmapped(address)
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not address.is_multicast


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_allowed_host(entry: str) -> str | IPNetwork:
    """A host name (lower case) or a network ("10.0.0.0/8", "192.168.1.20", "fd00::/8");
    ValueError when it is neither."""
    text = entry.strip().lower().rstrip(".")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    labels = text.split(".")
    if not text or not all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in labels
    ):
        raise ValueError(f"{entry!r} is neither a host name nor an IP network")
    return text


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses always; loopback when asked; beyond that the named hosts (whatever
    they resolve to) and networks."""

    allow_loopback: bool = False
    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> AddressPolicy:
        parsed = [parse_allowed_host(entry) for entry in entries]
        return cls(
            hosts=frozenset(p for p in parsed if isinstance(p, str)),
            networks=tuple(p for p in parsed if not isinstance(p, str)),
        )

    def permits_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def permits(self, address: IPAddress) -> bool:
        if is_public(address, self.allow_loopback):
            return True
        plain = _unmapped(address)
        return any(plain in network for network in self.networks)


def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuses a URL that is not http(s) with a host, or names a refused address literal
    (aiohttp connects to literals without asking the resolver)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl(f"not an http(s) URL: {url[:80]}")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not policy.permits(literal):
        raise UnsafeUrl(f"non-public address {literal}")


class CheckedResolver(AbstractResolver):
    """Resolves each host once, refusing addresses the policy does not permit; aiohttp
    then connects to exactly the addresses that passed."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise UnsafeUrl(f"{host} does not resolve")
        named = self._policy.permits_host(host)
        resolved: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if not named and not self._policy.permits(address):
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


def checked_connector(policy: AddressPolicy, limit: int = 100) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(resolver=CheckedResolver(policy), use_dns_cache=False, limit=limit)


@asynccontextmanager
async def checked_get(
    session: aiohttp.ClientSession,
    url: str,
    policy: AddressPolicy,
    headers: Mapping[str, str] | None = None,
    max_requests: int = MAX_REDIRECTS,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """GET `url`, following redirects here so that every hop's address is checked (the
    session's connector should be `checked_connector(policy)` for host names). Raises
    UnsafeUrl for a refused hop and TooManyRedirects when the `max_requests`-th request
    still redirects."""
    for _ in range(max_requests):
        check_url(url, policy)
        async with session.get(url, allow_redirects=False, headers=headers) as response:
            location = response.headers.get("Location")
            if response.status in REDIRECTS and location:
                url = urljoin(url, location)
                continue
            yield response
            return
    raise TooManyRedirects("too many redirects")


@contextmanager
def download_errors(permanent: type[Exception], transient: type[Exception]) -> Iterator[None]:
    """A download's failures as one line each, raised as `transient` where a retry may cure
    them (timeouts, dropped connections) and as `permanent` otherwise. The build's
    fetchers (catalog images, feeds) share it, so both explain a failure alike."""
    try:
        yield
    except UnsafeUrl as exc:
        raise permanent(f"refused: {exc} (allow it with build.allow_private_hosts)") from None
    except TooManyRedirects:
        raise permanent("too many redirects") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise transient("timed out") from None
    except aiohttp.InvalidURL:
        raise permanent("invalid URL") from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise transient(f"connection failed ({type(exc).__name__})") from None
    except aiohttp.ClientError as exc:
        raise permanent(f"download failed ({type(exc).__name__})") from None
