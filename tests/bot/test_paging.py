"""The page token both front-ends put on their buttons: small enough for Telegram's
64-byte callback data at the worst case, and anything else is refused as BadToken."""

from __future__ import annotations

import contextlib
import random

import pytest

from bot.flow import Results
from bot.paging import (
    MAX_GARMENT,
    MAX_GARMENT_KIND_CHARS,
    MAX_OFFSET,
    MAX_TOKEN_BYTES,
    BadToken,
    Mode,
    PageToken,
    category_digest,
    decode_token,
    encode_token,
)
from engine.types import Hit, Product, SearchPage

KEY = "0123456789abcdef"
HITS = [
    Hit(Product(f"p{n}", "Dress", "https://shop.example.com", "x.jpg"), 0.5, "x.jpg")
    for n in range(6)
]
CATEGORIES = ["dress", "x" * 300, "ünïcødé-category-" * 10, "👗" * 50]


@pytest.mark.parametrize("category", [None, *CATEGORIES])
@pytest.mark.parametrize("kind", [None, "t-shirt", "x" * MAX_GARMENT_KIND_CHARS])
def test_the_worst_case_token_fits_telegram_and_round_trips(
    category: str | None, kind: str | None
) -> None:
    token = PageToken(KEY, MAX_OFFSET, Mode.SURPRISE, category, MAX_GARMENT, kind)
    data = encode_token(token)
    assert len(data.encode()) <= MAX_TOKEN_BYTES == 64
    assert decode_token(data, CATEGORIES) == token


def test_every_page_of_a_garment_stays_on_that_garment() -> None:
    shoes = PageToken(KEY, 0, Mode.NORMAL, None, 2, "shoes")
    results = Results(SearchPage(HITS, 0, True, query_key=KEY), shoes)
    assert results.garment_kind == "shoes"
    for token in (results.more(), results.surprise(), results.only("dress")):
        assert token is not None and (token.garment, token.garment_kind) == (2, "shoes")
        assert decode_token(encode_token(token), CATEGORIES) == token
    assert Results(SearchPage(HITS, 0, True, query_key=KEY), PageToken(KEY)).garment_kind is None


@pytest.mark.parametrize("kind", ["Shoes", "x" * (MAX_GARMENT_KIND_CHARS + 1), "sh oes", "-x"])
def test_garment_kinds_that_no_finder_names_are_not_encoded(kind: str) -> None:
    with pytest.raises(ValueError):
        encode_token(PageToken(KEY, 0, Mode.NORMAL, None, 2, kind))


def test_a_filter_follows_the_category_name_not_its_position() -> None:
    data = encode_token(PageToken(KEY, 6, Mode.NORMAL, "dress"))
    reordered = ["coat", "shoes", "dress"]  # a new index build with more categories
    assert decode_token(data, reordered).category == "dress"
    with pytest.raises(BadToken):  # a build without the category: never another filter
        decode_token(data, ["coat", "shoes"])


def test_buttons_sent_before_the_codec_still_decode() -> None:
    assert decode_token("p:6:1:0", CATEGORIES) == PageToken("", 6, Mode.SURPRISE, "dress")
    assert decode_token("p:0:0:-1", CATEGORIES) == PageToken("")
    assert decode_token(f"fb:p:{KEY}:12:0:0", CATEGORIES) == PageToken(KEY, 12, category="dress")


@pytest.mark.parametrize(
    "data",
    [
        "",
        "garbage",
        "fb1:",
        f"fb1:{KEY}:6:n:-",  # a field missing
        f"fb1:{KEY}:6:n:-:-:extra",
        f"fb1:{KEY.upper()}:6:n:-:-",
        f"fb1:{KEY}:-6:n:-:-",
        f"fb1:{KEY}:1234567:n:-:-",
        f"fb1:{KEY}:6:x:-:-",
        f"fb1:{KEY}:6:n:{category_digest('not in the catalog')}:-",
        f"fb1:{KEY}:6:n:-:100",
        f"fb1:{KEY}:6:n:-:2SHOES",
        f"fb1:{KEY}:6:n:-:shoes",
        f"fb1:{KEY}:6:n:-:2{'x' * (MAX_GARMENT_KIND_CHARS + 1)}",
        f"fb1:{KEY}:6:n:-:-shoes",
        f"fb1:{KEY}:6:n:-:-\n",
        "p:6:1",
        "fb:p:short:1:0:0",
        "fb1:" + "é" * 60,
    ],
)
def test_forged_or_garbled_data_is_refused(data: str) -> None:
    with pytest.raises(BadToken):
        decode_token(data, CATEGORIES)


def test_random_bytes_never_raise_anything_but_bad_token() -> None:
    rng = random.Random(14)
    valid = encode_token(PageToken(KEY, 42, Mode.SURPRISE, "dress", 3))
    for _ in range(2000):
        chars = list(valid)
        for _ in range(rng.randint(1, 4)):  # mutate a real token: the hard cases
            chars[rng.randrange(len(chars))] = chr(rng.randint(0, 0x2FF))
        for data in ("".join(chars), bytes(rng.randbytes(40)).decode("latin-1")):
            with contextlib.suppress(BadToken):
                decode_token(data, CATEGORIES)


@pytest.mark.parametrize(
    "token",
    [PageToken(""), PageToken("not-a-key"), PageToken(KEY, MAX_OFFSET + 1), PageToken(KEY, -1)],
)
def test_only_real_pages_are_encoded(token: PageToken) -> None:
    with pytest.raises(ValueError):
        encode_token(token)


def test_navigation_keeps_mode_and_filter_and_stops_at_the_last_offset() -> None:
    page = SearchPage(HITS, 12, True, query_key=KEY)
    results = Results(page, PageToken(KEY, 12, Mode.SURPRISE, "dress"))
    assert results.more() == PageToken(KEY, 18, Mode.SURPRISE, "dress")
    assert results.surprise() == PageToken(KEY, 0, Mode.SURPRISE, "dress")
    assert results.only(None) == PageToken(KEY)
    assert [key for key, _ in results.navigation()] == ["button.more", "button.surprise"]
    last = SearchPage(HITS, MAX_OFFSET - 3, True, query_key=KEY)
    assert Results(last, PageToken(KEY)).more() is None
