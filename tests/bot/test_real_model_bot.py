"""The bot on the real `imagenet-lite0` model (real python-telegram-bot against the fake
Bot API): a shoe photo gets an album of shoes; words, which this model cannot read, get
one clear line instead of meaningless results."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.i18n import t
from bot.telegram_bot import TelegramBot
from engine.index import open_index
from engine.search import Engine, model_identity
from tests.fakes.demo import category_of_title
from tests.fakes.telegram_api import FakeBotApi, bot_settings, titles
from tests.real_model import DEMO_SHOPPER, lite0_settings

pytestmark = pytest.mark.slow


@pytest.fixture
async def lite0_bot(lite0_cache, lite0_index, lite0_embedder, api) -> AsyncIterator[TelegramBot]:
    settings = lite0_settings(lite0_cache, lite0_index)
    engine = Engine(
        settings, lite0_embedder, open_index(lite0_index, model_identity(lite0_embedder))
    )
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    await bot.start()
    yield bot
    await bot.stop()
    engine.close()


async def test_a_shoe_photo_gets_shoes_and_words_get_one_clear_line(
    lite0_bot, api: FakeBotApi
) -> None:
    await api.send_message(photo=(DEMO_SHOPPER / "shoes.jpg").read_bytes())
    (album,) = await api.wait_for("sendMediaGroup", 1)
    category_of = category_of_title()
    categories = [category_of[title] for title in titles(album)]
    assert categories[0] == "shoes" and categories.count("shoes") >= 5, categories

    await api.send_message(text="/search red summer dress")
    assert await api.wait_for("sendMessage", 1, text=t("en", "no_text_search"))
    assert len(await api.wait_for("sendMediaGroup", 1)) == 1  # no album for words


async def test_a_caption_is_ignored_and_the_shopper_is_told(lite0_bot, api: FakeBotApi) -> None:
    await api.send_message(photo=(DEMO_SHOPPER / "shoes.jpg").read_bytes(), caption="in red")
    await api.wait_for("sendMediaGroup", 1)
    (keyboard,) = await api.wait_for("sendMessage", 1)  # the buttons under the album
    assert keyboard.params["text"].startswith(t("en", "caption_ignored"))
    assert "reply_markup" in keyboard.params
