"""Signed click links: `<redirect_base_url>/go/<token>`, where the token carries the
product, the search, the rank, the platform and the time, and an HMAC over them. The bot's
HTTP server verifies it (bot/redirect.py) and redirects to the product's own shop URL from
the catalog, never to an address the token names: a forged token leads nowhere.

The token is a compact binary payload, base64url without padding:
  version (1) | search id (8) | rank (2) | platform (1) | issued, epoch seconds (4) |
  product id (UTF-8, the rest) | HMAC-SHA256 truncated to 12 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass

LINK_SECRET = "FASHIONBOT_LINK_SECRET"
MIN_SECRET_CHARS = 16
PLATFORMS = ("telegram", "discord", "terminal")
_VERSION = 1
_HEADER = struct.Struct(">BQHBI")
_MAC_BYTES = 12  # 96 bits: forging one link takes ~2^96 tries
_MAX_PRODUCT_BYTES = 200


class LinkSecretError(ValueError):
    """The link secret is missing or too short for signing links."""


@dataclass(frozen=True)
class ClickToken:
    product_id: str
    search_id: int
    rank: int
    platform: str
    issued_at: int  # seconds since the epoch


class LinkSigner:
    """Signs and checks click tokens; also hashes user ids for analytics, with a key
    derived from the same secret (so one secret is all an operator sets)."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise LinkSecretError(
                f"{LINK_SECRET} must be at least {MIN_SECRET_CHARS} characters "
                "(e.g. the output of `openssl rand -hex 32`)"
            )
        master = secret.encode()
        self._link_key = hmac.digest(master, b"fashionbot click links", hashlib.sha256)
        self._user_key = hmac.digest(master, b"fashionbot user hashes", hashlib.sha256)

    def __repr__(self) -> str:  # never the keys, not even in a traceback's locals
        return "LinkSigner(<secret>)"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._link_key, payload, hashlib.sha256)[:_MAC_BYTES]

    def sign(self, click: ClickToken) -> str:
        product = click.product_id.encode()
        if len(product) > _MAX_PRODUCT_BYTES:
            raise ValueError(f"product id longer than {_MAX_PRODUCT_BYTES} bytes")
        platform = PLATFORMS.index(click.platform)
        header = _HEADER.pack(
            _VERSION, click.search_id, click.rank, platform, click.issued_at & 0xFFFFFFFF
        )
        payload = header + product
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, token: str, now: float, max_age_s: float) -> ClickToken | None:
        """The click a token stands for; None when it is malformed, forged, altered,
        issued in the future or older than `max_age_s`."""
        if len(token) > 400:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(payload) <= _HEADER.size or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        version, search_id, rank, platform, issued = _HEADER.unpack_from(payload)
        if version != _VERSION or platform >= len(PLATFORMS):
            return None
        if not 0 <= now - issued <= max_age_s:
            return None
        try:
            product = payload[_HEADER.size :].decode()
        except UnicodeDecodeError:
            return None
        return ClickToken(product, search_id, rank, PLATFORMS[platform], issued)

    def user_hash(self, platform: str, user_id: int) -> str:
        """A keyed hash of a user id: the same shopper hashes alike (to count shoppers),
        and without the secret nobody can tell which shopper it was."""
        message = f"{platform}:{user_id}".encode()
        return hmac.digest(self._user_key, message, hashlib.sha256)[:16].hex()
