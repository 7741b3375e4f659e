"""Signed click tokens: compact, bound to the secret, every byte covered by the MAC."""

from __future__ import annotations

import base64

import pytest

from bot.click_links import ClickToken, LinkSecretError, LinkSigner

NOW = 1_790_000_000
MONTH = 30 * 86_400


def test_a_token_round_trips_and_stays_short() -> None:
    signer = LinkSigner("s" * 32)
    click = ClickToken("DEMO-042", 2**62 + 7, 10, "discord", NOW)
    token = signer.sign(click)
    assert len(token) <= 48 and token.isascii() and "=" not in token
    assert signer.verify(token, NOW + 5, MONTH) == click


def test_every_altered_byte_and_any_other_secret_is_refused() -> None:
    signer = LinkSigner("s" * 32)
    raw = bytearray(
        base64.urlsafe_b64decode(signer.sign(ClickToken("DEMO-1", 9, 1, "telegram", NOW)) + "==")
    )
    for position in range(len(raw)):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
        assert signer.verify(token, NOW, MONTH) is None, position
    foreign = LinkSigner("t" * 32).sign(ClickToken("DEMO-1", 9, 1, "telegram", NOW))
    assert signer.verify(foreign, NOW, MONTH) is None


def test_old_and_future_tokens_are_refused() -> None:
    signer = LinkSigner("s" * 32)
    token = signer.sign(ClickToken("DEMO-1", 9, 1, "telegram", NOW))
    assert signer.verify(token, NOW + MONTH, MONTH) is not None
    assert signer.verify(token, NOW + MONTH + 1, MONTH) is None
    assert signer.verify(token, NOW - 60, MONTH) is None


def test_user_hashes_are_keyed_and_stable() -> None:
    one, other = LinkSigner("s" * 32), LinkSigner("t" * 32)
    assert one.user_hash("telegram", 1001) == one.user_hash("telegram", 1001)
    assert one.user_hash("telegram", 1001) != other.user_hash("telegram", 1001)
    assert one.user_hash("telegram", 1001) != one.user_hash("discord", 1001)
    assert "1001" not in one.user_hash("telegram", 1001) and "s" * 16 not in repr(one)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(LinkSecretError, match="at least 16"):
        LinkSigner("short")
