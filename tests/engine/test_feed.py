from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.ingest.feed import FeedError, parse_in_stock, parse_price, read_feed

HEADER = "product_id,title,url,image,price,currency,category,gender,colour,brand,in_stock\n"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("19.99", 19.99),
        ("19,99 €", 19.99),
        ("EUR 1,299.00", 1299.0),
        ("1.299,00", 1299.0),
        ("1,299", 1299.0),
        ("£5", 5.0),
        ("", None),
        ("call us", None),
    ],
)
def test_prices_in_shop_formats(text: str, value: float | None) -> None:
    assert parse_price(text) == value


def test_stock_flags() -> None:
    assert parse_in_stock("out of stock") is False
    assert parse_in_stock("Yes") is True and parse_in_stock("") is True
    assert parse_in_stock("perhaps") is None


def test_broken_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    feed = tmp_path / "feed.csv"
    feed.write_text(
        HEADER
        + "A1,Good,https://s.example/a1,a.jpg|b.jpg,12.50,eur,Dress,women,red,Brand,yes\n"
        + ",No id,https://s.example/x,x.jpg,1,EUR,dress,,,,\n"
        + "A1,Duplicate,https://s.example/a1,a.jpg,1,EUR,dress,,,,\n"
        + "A3,No image,https://s.example/a3,,1,EUR,dress,,,,\n"
        + "A4,Bad link,javascript:alert(1),a.jpg,1,EUR,dress,,,,\n"
        + "A5,Too many,https://s.example/a5,a.jpg,1,EUR,dress,,,,,extra,cells\n"
        + "A6,,https://s.example/a6,a.jpg,,,,,,,out of stock\n",
        encoding="utf-8",
    )
    result = read_feed(feed)
    assert [item.product.product_id for item in result.items] == ["A1", "A6"]
    first = result.items[0]
    assert first.images == ("a.jpg", "b.jpg")
    assert (first.product.price, first.product.currency, first.product.category) == (
        12.5,
        "EUR",
        "dress",
    )
    assert result.items[1].product.title == "A6" and not result.items[1].product.in_stock
    reasons = {skip.row: skip.reason for skip in result.skipped}
    assert reasons == {
        2: "missing product_id",
        3: "duplicate product_id (first seen in row 1)",
        4: "no image",
        5: "url is not an http(s) shop link",
        6: "more cells than the header has columns",
    }


def test_column_mapping_and_extra_columns(tmp_path: Path) -> None:
    feed = tmp_path / "google.csv"
    feed.write_text(
        "id;name;link;image_link;price;material\n"
        "G1;Wool coat;https://s.example/g1;https://img.example/g1.jpg;89.00 EUR;wool\n",
        encoding="utf-8",
    )
    mapping = {"product_id": "id", "title": "name", "url": "link", "image": "image_link"}
    item = read_feed(feed, mapping).items[0]
    assert (item.product.product_id, item.product.title) == ("G1", "Wool coat")
    assert item.product.extra == {"material": "wool"}
    with pytest.raises(FeedError, match="product_id"):
        read_feed(feed)


def test_non_utf8_feed_is_read(tmp_path: Path) -> None:
    feed = tmp_path / "latin.csv"
    feed.write_bytes(
        (HEADER + "C1,Pullover für Damen,https://s.example/c1,c.jpg,9,EUR,,,,,\n").encode("cp1252")
    )
    result = read_feed(feed)
    assert result.encoding == "cp1252"
    assert result.items[0].product.title == "Pullover für Damen"


def test_json_lines_feed(tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    good = {
        "product_id": "J1",
        "title": "Tee",
        "url": "https://s.example/j1",
        "image": "t.jpg",
        "price": 5,
    }
    feed.write_text(json.dumps(good) + "\n{not json\n" + json.dumps([1, 2]) + "\n\n")
    result = read_feed(feed)
    assert [i.product.product_id for i in result.items] == ["J1"]
    assert result.items[0].product.price == 5.0
    assert [s.reason.split(" (")[0] for s in result.skipped] == [
        "not valid JSON",
        "not a JSON object",
    ]


def test_missing_file_is_a_feed_error(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="cannot read"):
        read_feed(tmp_path / "nope.csv")
