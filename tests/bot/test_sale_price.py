"""A product on sale, from a Merchant Center feed with g:sale_price, through the real
python-telegram-bot client against the fake Bot API: its caption shows the regular price
struck through beside the sale price. Discord's markdown and the plain form alongside."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.render import caption_text, price_markdown, price_plain
from bot.telegram_bot import TelegramBot
from engine.embedder import model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from engine.types import Hit, Product
from tests.conftest import make_settings
from tests.fakes.demo import photo
from tests.fakes.telegram_api import bot_settings, titles

FEED = Path(__file__).resolve().parents[1] / "fixtures" / "feeds" / "merchant-rss.xml"


async def test_a_sale_shows_the_old_price_struck_through_in_the_album(
    tiny_model_files, embedder, api, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    settings = make_settings(tiny_model_files, index_dir)
    await build_index(settings, FEED, index_dir, embedder, show_progress=False)
    engine = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    await bot.start()
    try:
        await api.send_message(photo=photo("outwear-1.jpg"))
        album = (await api.wait_for("sendMediaGroup"))[0]
    finally:
        await bot.stop()
        await asyncio.to_thread(engine.close)
    captions = dict(zip(titles(album), (m["caption"] for m in album.params["media"]), strict=True))
    assert set(captions) == {"Quilted coat", "Wool beanie", "Floral wrap dress"}
    assert "\n<s>89.00 EUR</s> 59.00 EUR\n" in captions["Quilted coat"]
    assert "<s>" not in captions["Wool beanie"] and "24.99 EUR" in captions["Wool beanie"]
    assert "<s>" not in captions["Floral wrap dress"]  # its sale period has ended


def test_discord_and_plain_text_show_the_sale_too() -> None:
    coat = Product("C", "Coat", "https://s.example/c", "c.jpg", 59.0, "EUR", original_price=89.0)
    assert price_markdown(coat) == "~~89.00 EUR~~ 59.00 EUR"
    assert price_plain(coat, "en") == "59.00 EUR (was 89.00 EUR)"
    assert price_plain(coat, "de") == "59.00 EUR (statt 89.00 EUR)"
    assert "~~89.00 EUR~~ 59.00 EUR" in caption_text(Hit(coat, 0.9, "c.jpg"), "en", markdown=True)
    regular = Product("R", "Tee", "https://s.example/r", "r.jpg", 19.0, "EUR")
    assert price_markdown(regular) == price_plain(regular, "en") == "19.00 EUR"
