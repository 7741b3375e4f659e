"""One page token for every chat: what a "More like this", "Surprise me" or filter button
asks for, small enough for Telegram's 64-byte callback data (Discord allows 100).

A token names the search by the engine's query key (the query vector kept in the engine's
query store), so a page never runs the model. Categories travel as a short digest of
their name rather than their position, so a new index build that adds or reorders
categories can never make an old button filter on the wrong one.

    fb1:<query key>:<offset>:<mode>:<category digest or ->:<garment or ->

A garment is its position in the garment finder's list for the shopper's photo, followed
by its kind ("2shoes"): the position finds it again when the engine has forgotten the
query, the kind names it in "Results for: Shoes" on every page, even after a restart.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from enum import StrEnum

from engine.query_store import KEY_CHARS

TOKEN_PREFIX = "fb1"
MAX_TOKEN_BYTES = 64  # Telegram's callback_data limit, the smaller of the two platforms
MAX_OFFSET = 999_999
MAX_GARMENT = 99
CATEGORY_DIGEST_CHARS = 8
MAX_GARMENT_KIND_CHARS = 12  # the finder's kinds: "bag", "shoes", "t-shirt", "longsleeve"
NO_VALUE = "-"

_KIND = rf"[a-z][a-z-]{{0,{MAX_GARMENT_KIND_CHARS - 1}}}"
_GARMENT_KIND = re.compile(_KIND, re.ASCII)
# re.ASCII: `\d` would also take other scripts' digits ("٣"), which no button of ours sends.
_TOKEN = re.compile(
    rf"{TOKEN_PREFIX}:(?P<key>[0-9a-f]{{{KEY_CHARS}}}):(?P<offset>\d{{1,6}}):(?P<mode>[ns]):"
    rf"(?P<category>[0-9a-f]{{{CATEGORY_DIGEST_CHARS}}}|-):"
    rf"(?:(?P<garment>\d{{1,2}})(?P<kind>{_KIND})?|-)",
    re.ASCII,
)
# Buttons already sent before this codec: Telegram's carried no query key, Discord's
# named the category by its position in the catalog's category list.
_LEGACY_TELEGRAM = re.compile(
    r"p:(?P<offset>\d{1,6}):(?P<surprise>[01]):(?P<position>-?\d{1,4})", re.ASCII
)
_LEGACY_DISCORD = re.compile(
    rf"fb:p:(?P<key>[0-9a-f]{{{KEY_CHARS}}}):(?P<offset>\d{{1,6}}):(?P<surprise>[01]):"
    r"(?P<position>-?\d{1,4})",
    re.ASCII,
)
# Telegram caps an inline query's offset at 64 bytes; ours are plain decimal numbers.
_INLINE_OFFSET = re.compile(r"[0-9]{1,64}")


class Mode(StrEnum):
    NORMAL = "n"
    SURPRISE = "s"


class BadToken(ValueError):
    """Callback data that no button of this bot could have sent (forged, garbled, or a
    filter on a category the served index no longer has)."""


@dataclass(frozen=True)
class PageToken:
    query_key: str = ""  # "" when unknown (a button from before query keys): re-read it
    offset: int = 0
    mode: Mode = Mode.NORMAL
    category: str | None = None
    garment: int | None = None  # which garment of the shopper's photo (the finder's order)
    garment_kind: str | None = None  # what that garment is ("shoes"), when known

    @property
    def surprise(self) -> bool:
        return self.mode is Mode.SURPRISE

    def with_key(self, query_key: str) -> PageToken:
        return replace(self, query_key=query_key)

    def page(self, query_key: str, offset: int, mode: Mode, category: str | None) -> PageToken:
        """Another page of the same garment (or of the whole search)."""
        return replace(self, query_key=query_key, offset=offset, mode=mode, category=category)


def category_digest(category: str) -> str:
    return hashlib.blake2b(category.encode(), digest_size=8).hexdigest()[:CATEGORY_DIGEST_CHARS]


def encode_token(token: PageToken) -> str:
    if not re.fullmatch(rf"[0-9a-f]{{{KEY_CHARS}}}", token.query_key):
        raise ValueError(f"not an engine query key: {token.query_key!r}")
    if not 0 <= token.offset <= MAX_OFFSET:
        raise ValueError(f"page offset out of range: {token.offset}")
    garment = NO_VALUE if token.garment is None else str(min(token.garment, MAX_GARMENT))
    if token.garment is not None and token.garment_kind is not None:
        if not _GARMENT_KIND.fullmatch(token.garment_kind):
            raise ValueError(f"not a garment kind: {token.garment_kind!r}")
        garment += token.garment_kind
    category = NO_VALUE if token.category is None else category_digest(token.category)
    return ":".join(
        (TOKEN_PREFIX, token.query_key, str(token.offset), token.mode.value, category, garment)
    )


def decode_token(data: str, categories: list[str]) -> PageToken:
    """The page a button asks for; raises BadToken for anything this bot did not send."""
    if match := _TOKEN.fullmatch(data):
        category = _category_by_digest(match["category"], categories)
        garment = None if match["garment"] is None else int(match["garment"])
        return PageToken(
            match["key"],
            int(match["offset"]),
            Mode(match["mode"]),
            category,
            garment,
            match["kind"],
        )
    if match := _LEGACY_DISCORD.fullmatch(data) or _LEGACY_TELEGRAM.fullmatch(data):
        fields = match.groupdict()
        mode = Mode.SURPRISE if fields["surprise"] == "1" else Mode.NORMAL
        category = _category_by_position(int(fields["position"]), categories)
        return PageToken(fields.get("key") or "", int(fields["offset"]), mode, category)
    raise BadToken(data[:80])


def _category_by_digest(digest: str, categories: list[str]) -> str | None:
    if digest == NO_VALUE:
        return None
    for category in categories:
        if category_digest(category) == digest:
            return category
    raise BadToken(f"no category with digest {digest}")


def _category_by_position(position: int, categories: list[str]) -> str | None:
    return categories[position] if 0 <= position < len(categories) else None


def inline_offset(text: str) -> int:
    """The result offset an inline query scrolls to: the first page for anything that is
    not a plain ASCII number (e.g. "²", which `str.isdigit` accepts and `int` refuses).
    Deep offsets are capped just past what any button could ask for."""
    if not _INLINE_OFFSET.fullmatch(text):
        return 0
    return min(int(text), MAX_OFFSET + 1)


def is_garment_kind(text: str) -> bool:
    """Whether a garment kind fits a token ("shoes", "t-shirt")."""
    return bool(_GARMENT_KIND.fullmatch(text))
