"""The bot on the real `imagenet-lite0` model (real python-telegram-bot against the fake
Bot API, real discord.py against the fake Discord): a shoe photo gets an album of shoes;
words, which this model cannot read, get one clear line instead of meaningless results;
a street photo gets its largest garment's album, then the photo with numbered garments
and a button for each, and the shoes button gets shoes."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest
from PIL import Image

from bot.i18n import t
from bot.telegram_bot import TelegramBot
from engine.index import open_index
from engine.query_store import QueryStore
from engine.search import Engine, model_identity
from tests.fakes.demo import category_of_title
from tests.fakes.discord_api import APP_ID, FakeDiscord, followup, gallery_titles, start_bot, walk
from tests.fakes.telegram_api import (
    FakeBotApi,
    bot_settings,
    button,
    keyboard_message,
    keyboard_of,
    titles,
)
from tests.real_model import DEMO_SHOPPER, REPO_ROOT, lite0_settings

pytestmark = pytest.mark.slow


STREET_PHOTO = REPO_ROOT / "tests" / "fixtures" / "street" / "0016.jpg"
CATEGORY_OF = category_of_title()


@pytest.fixture
def lite0_engine(lite0_cache, lite0_index, lite0_embedder) -> Iterator[Engine]:
    settings = lite0_settings(lite0_cache, lite0_index)
    engine = Engine(
        settings, lite0_embedder, open_index(lite0_index, model_identity(lite0_embedder))
    )
    yield engine
    engine.close()


@pytest.fixture
async def lite0_bot(lite0_engine: Engine, api) -> AsyncIterator[TelegramBot]:
    bot = TelegramBot(lite0_engine, bot_settings(lite0_engine.settings, api), api.token)
    await bot.start()
    yield bot
    await bot.stop()


async def largest_garment(engine: Engine, photo: bytes) -> str:
    """What the finder sees largest in the photo: the garment the first album is for."""
    garments = await engine.find_garments(photo)
    return max(garments, key=lambda g: g.area).category


def categories(album) -> list[str]:
    return [CATEGORY_OF[title] for title in titles(album)]


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


async def test_a_street_photo_gets_its_largest_garment_then_a_button_per_garment(
    lite0_bot, api: FakeBotApi
) -> None:
    photo = STREET_PHOTO.read_bytes()
    found = await lite0_bot.engine.find_garments(photo)
    assert len(found) >= 2 and not any(g.whole_photo for g in found)
    main = await largest_garment(lite0_bot.engine, photo)
    asked = await api.send_message(photo=photo)

    (album,) = await api.wait_for("sendMediaGroup", 1)
    assert set(categories(album)) == {main}, categories(album)
    (keyboard,) = await api.wait_for("sendMessage", 1)
    assert keyboard.params["text"].startswith(f"Results for: {t('en', f'garment.{main}')}\n")

    (picker,) = await api.wait_for("sendPhoto", 1)
    assert picker.params["caption"] == t("en", "garments.pick")
    assert picker.params["reply_parameters"]["message_id"] == asked["message_id"]
    drawn = Image.open(io.BytesIO(picker.files["photo"]))
    assert drawn.format == "JPEG" and drawn.size == Image.open(io.BytesIO(photo)).size
    buttons = [b for row in keyboard_of(picker) for b in row]
    numbers, names = zip(*(b["text"].split(" · ") for b in buttons[:-1]), strict=True)
    assert list(numbers) == [str(n) for n in range(1, len(found) + 1)]
    assert sorted(names) == sorted(t("en", f"garment.{g.category}") for g in found)
    assert buttons[-1]["text"] == "Whole photo"
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)

    model_batches = lite0_bot.engine.batcher.stats.batches
    shown = keyboard_message(api, picker)
    shoes = next(b for b in buttons if b["text"].endswith(" · Shoes"))
    await api.press(shown, shoes["callback_data"])
    shoes_album = (await api.wait_for("sendMediaGroup", 2))[1]
    assert set(categories(shoes_album)) == {"shoes"}, categories(shoes_album)
    shoes_keyboard = (await api.wait_for("sendMessage", 2))[1]
    assert shoes_keyboard.params["text"].startswith("Results for: Shoes\n")
    assert lite0_bot.engine.batcher.stats.batches == model_batches  # the press ran no model

    surprise = button(shoes_keyboard, "Surprise me")
    await api.press(keyboard_message(api, shoes_keyboard), surprise["callback_data"])
    await api.wait_for("sendMediaGroup", 3)
    surprised = (await api.wait_for("sendMessage", 3))[2]
    assert surprised.params["text"].startswith("Results for: Shoes\n")  # paging keeps it

    await api.press(shown, buttons[-1]["callback_data"])  # the whole photo, as before
    await api.wait_for("sendMediaGroup", 4)
    whole = (await api.wait_for("sendMessage", 4))[3]
    assert whole.params["text"] == t("en", "results")
    assert len(api.sent("sendPhoto")) == 1  # the picker came once, with the first album


async def test_garment_buttons_work_after_the_engine_forgot_the_search(
    lite0_engine: Engine, api: FakeBotApi
) -> None:
    """A restart that lost the query store: the press re-reads the photo from Telegram
    and finds the same garment again."""
    first = TelegramBot(lite0_engine, bot_settings(lite0_engine.settings, api), api.token)
    await first.start()
    try:
        await api.send_message(photo=STREET_PHOTO.read_bytes())
        (picker,) = await api.wait_for("sendPhoto", 1)
    finally:
        await first.stop()
    lite0_engine.queries = QueryStore(None)
    restarted = TelegramBot(lite0_engine, bot_settings(lite0_engine.settings, api), api.token)
    await restarted.start()
    try:
        shoes = next(b for row in keyboard_of(picker) for b in row if b["text"].endswith("Shoes"))
        await api.press(keyboard_message(api, picker), shoes["callback_data"])
        shoes_album = (await api.wait_for("sendMediaGroup", 2))[1]
        assert set(categories(shoes_album)) == {"shoes"}, categories(shoes_album)
        assert len(api.sent("getFile")) == 2  # the photo, read again
    finally:
        await restarted.stop()


async def test_a_single_product_photo_gets_no_garment_buttons(lite0_bot, api: FakeBotApi) -> None:
    await api.send_message(photo=(DEMO_SHOPPER / "shoes.jpg").read_bytes())
    await api.wait_for("sendMediaGroup", 1)
    (keyboard,) = await api.wait_for("sendMessage", 1)
    assert keyboard.params["text"] == t("en", "results")  # no "Results for: ..."
    await lite0_bot.stop()  # every update it took is answered: nothing more comes
    assert not api.sent("sendPhoto")
    buttons = [b for row in keyboard_of(keyboard) for b in row]
    assert t("en", "garment.photo") not in {b["text"] for b in buttons}
    pages = [b["callback_data"] for b in buttons if "callback_data" in b]
    assert pages and all(data.endswith(":-") for data in pages)  # no garment in any token


async def test_similar_with_a_category_searches_that_garment_of_the_look(
    lite0_engine: Engine, fake_discord: FakeDiscord
) -> None:
    """`/similar category:shoes` on a street photo: the first album is the shoes', not
    the largest garment's crop filtered to shoes."""
    photo = STREET_PHOTO.read_bytes()
    assert await largest_garment(lite0_engine, photo) != "shoes"
    bot = await start_bot(lite0_engine, lite0_engine.settings)
    try:
        await fake_discord.interact(fake_discord.similar(photo, category="shoes"))
        gallery = await followup(fake_discord, 1)
        texts = [c["content"] for c in walk(gallery.payload["components"]) if c["type"] == 10]
        assert f"Results for: {t('en', 'garment.shoes')}" in texts[0]
        assert {CATEGORY_OF[title] for title in gallery_titles(gallery)} == {"shoes"}
    finally:
        await bot.stop()


async def test_discord_similar_and_the_message_menu_offer_the_garments(
    lite0_engine: Engine, fake_discord: FakeDiscord
) -> None:
    photo = STREET_PHOTO.read_bytes()
    main = await largest_garment(lite0_engine, photo)
    found = await lite0_engine.find_garments(photo)
    bot = await start_bot(lite0_engine, lite0_engine.settings)
    try:
        await fake_discord.interact(fake_discord.similar(photo))
        gallery = await followup(fake_discord, 1)
        assert {CATEGORY_OF[title] for title in gallery_titles(gallery)} == {main}
        texts = [c["content"] for c in walk(gallery.payload["components"]) if c["type"] == 10]
        assert f"Results for: {t('en', f'garment.{main}')}" in texts[0]

        picker = await followup(fake_discord, 2)
        assert picker.payload["content"] == t("en", "garments.pick")
        (picture,) = picker.files.values()
        assert Image.open(io.BytesIO(picture)).size == Image.open(io.BytesIO(photo)).size
        buttons = [c for c in walk(picker.payload["components"]) if c["type"] == 2]
        labels = [b["label"] for b in buttons]
        assert len(labels) == len(found) + 1 and labels[-1] == "Whole photo"
        shoes = next(b["custom_id"] for b in buttons if b["label"].endswith(" · Shoes"))

        await fake_discord.interact(fake_discord.button(shoes, picker.response))
        shoes_gallery = await followup(fake_discord, 3)
        assert {CATEGORY_OF[title] for title in gallery_titles(shoes_gallery)} == {"shoes"}

        posted = fake_discord.message_payload(
            attachments=[fake_discord.attachment(photo, "look.jpg")]
        )
        await fake_discord.interact(fake_discord.context_menu(posted))
        menu_gallery = await followup(fake_discord, 4)
        assert {CATEGORY_OF[title] for title in gallery_titles(menu_gallery)} == {main}
        menu_picker = await followup(fake_discord, 5)
        menu_buttons = [c for c in walk(menu_picker.payload["components"]) if c["type"] == 2]
        menu_shoes = next(b["custom_id"] for b in menu_buttons if b["label"].endswith("Shoes"))
        lite0_engine.queries = QueryStore(None)  # forgotten: the message's photo is read again
        await fake_discord.interact(fake_discord.button(menu_shoes, menu_picker.response))
        again = await followup(fake_discord, 6)
        assert {CATEGORY_OF[title] for title in gallery_titles(again)} == {"shoes"}
    finally:
        await bot.stop()
    assert len(fake_discord.rest("POST", f"/webhooks/{APP_ID}/")) == 6
