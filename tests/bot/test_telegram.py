"""End to end: the real python-telegram-bot client against a fake Bot API on loopback,
the real engine on the tiny model, real demo photos."""

from __future__ import annotations

import pytest

from bot.flow import Results
from bot.i18n import catalog, languages
from bot.paging import PageToken
from bot.telegram_bot import TelegramBot
from engine.batcher import EngineBusy
from engine.query_store import QueryStore
from tests.fakes.demo import category_of_title, photo
from tests.fakes.hostile_images import png_bomb
from tests.fakes.telegram_api import (
    BOT_USER,
    bot_settings,
    button,
    keyboard_message,
    keyboard_of,
    titles,
)

CATEGORY_OF_TITLE = category_of_title()


async def start_bot(engine, settings, api, **telegram) -> TelegramBot:
    bot = TelegramBot(engine, bot_settings(settings, api, **telegram), api.token)
    await bot.start()
    return bot


async def test_start_help_and_command_registration(running, api) -> None:
    await api.send_message(text="/start")
    reply = (await api.wait_for("sendMessage"))[0]
    assert "Send me a photo" in reply.params["text"]
    registered = api.sent("setMyCommands")
    assert {c.params.get("language_code") for c in registered} == {None, "de"}
    assert {c["command"] for c in registered[0].params["commands"]} == {
        "start",
        "help",
        "search",
        "similar",
    }
    await api.send_message(text="/help", language="de")
    german = (await api.wait_for("sendMessage", 2))[1]
    assert "Schick mir ein Foto" in german.params["text"]


async def test_sending_a_photo_shows_only_where_the_wait_is_noticeable(
    engine, settings, api
) -> None:
    """Telegram recommends chat actions only for answers that take noticeable time: past
    `telegram.chat_action_after_ms` the shopper sees "sending a photo...", until the
    album; an album ready sooner sends no chat action at all."""
    for after_ms, chat in ((60_000, 501), (0, 502)):
        bot = await start_bot(engine, settings, api, chat_action_after_ms=after_ms)
        try:
            await api.send_message(photo=photo("dress-1.jpg"), chat_id=chat)
            (album,) = await api.wait_for("sendMediaGroup", chat_id=chat)
        finally:
            await bot.stop()
        actions = [c for c in api.sent("sendChatAction") if c.params["chat_id"] == chat]
        if after_ms:
            assert actions == []
        else:
            assert [a.params["action"] for a in actions] == ["upload_photo"]
            assert actions[0].at < album.at


async def test_a_photo_gets_one_album_with_prices_and_shop_links(running, api) -> None:
    sent = await api.send_message(photo=photo("dress-1.jpg"))
    album = (await api.wait_for("sendMediaGroup"))[0]
    media = album.params["media"]
    assert len(media) == 6
    assert titles(album)[0] == "Floral wrap dress"  # the photo's own product comes first
    first = media[0]["caption"]
    assert "99.00 EUR" in first and "utm_source=telegram" in first and "utm_medium=chatbot" in first
    assert 'href="https://shop.example.com/products/demo-001?' in first
    assert media[0]["parse_mode"] == "HTML"
    assert len(album.files) == 6  # product photos uploaded from the index's images
    assert album.params["reply_parameters"]["message_id"] == sent["message_id"]

    keyboard = (await api.wait_for("sendMessage"))[0]
    rows = keyboard_of(keyboard)
    assert [b["text"].split(". ")[0] for row in rows[:6] for b in row] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]
    assert all("utm_source=telegram" in row[0]["url"] for row in rows[:6])
    assert button(keyboard, "More like this") and button(keyboard, "Surprise me")
    assert button(keyboard, "Only ")
    assert all(
        len(b["callback_data"].encode()) <= 64 for row in rows for b in row if "callback_data" in b
    )


async def test_product_photos_are_uploaded_only_once(running, api) -> None:
    await api.send_message(photo=photo("dress-1.jpg"))
    await api.wait_for("sendMessage")
    await api.send_message(photo=photo("dress-1.jpg"))
    second = (await api.wait_for("sendMediaGroup", 2))[1]
    assert second.files == {}
    assert all(not item["media"].startswith("attach://") for item in second.params["media"])


async def test_more_like_this_pages_through_everything_without_repeats(running, api) -> None:
    await api.send_message(photo=photo("skirt-2.jpg"))
    seen: list[str] = []
    for page in range(1, 20):
        albums = await api.wait_for("sendMediaGroup", page)
        seen += titles(albums[-1])
        keyboard = (await api.wait_for("sendMessage", page))[-1]
        more = button(keyboard, "More like this")
        if more is None:
            break
        await api.press(keyboard_message(api, keyboard), more["callback_data"])
    assert len(seen) == len(set(seen)) == 60
    assert len(api.sent("answerCallbackQuery")) == 9


async def test_category_and_surprise_buttons(running, api) -> None:
    await api.send_message(photo=photo("hat-1.jpg"))
    keyboard = (await api.wait_for("sendMessage"))[0]
    only = button(keyboard, "Only ")
    assert only is not None
    category = only["text"].removeprefix("Only ")
    await api.press(keyboard_message(api, keyboard), only["callback_data"])
    filtered = (await api.wait_for("sendMediaGroup", 2))[1]
    assert {CATEGORY_OF_TITLE[title] for title in titles(filtered)} == {category}
    assert len(titles(filtered)) == 6
    surprise = button(keyboard, "Surprise me")
    await api.press(keyboard_message(api, keyboard), surprise["callback_data"])
    varied = (await api.wait_for("sendMediaGroup", 3))[2]
    assert len(set(CATEGORY_OF_TITLE[t] for t in titles(varied))) >= 2


async def test_expired_button_says_so(running, api) -> None:
    orphan = api.message(text="results", extra={"from": BOT_USER})
    await api.press(orphan, "p:6:0:-1")
    answer = (await api.wait_for("answerCallbackQuery"))[0]
    assert "send the photo again" in answer.params["text"]


async def test_image_files_and_forwarded_photos(running, api) -> None:
    await api.send_message(document=photo("shoes-2.jpg"), mime_type="image/jpeg")
    assert titles((await api.wait_for("sendMediaGroup"))[0])[0] == "Canvas shoes"
    forwarded = {
        "forward_origin": {
            "type": "channel",
            "date": 1,
            "chat": {"id": -1001, "type": "channel", "title": "Shop"},
            "message_id": 9,
        }
    }
    await api.send_message(photo=photo("shorts-3.jpg"), extra=forwarded)
    assert titles((await api.wait_for("sendMediaGroup", 2))[1])[0] == "Running shorts"


async def test_caption_refines_and_search_command_uses_words(running, api) -> None:
    await api.send_message(photo=photo("pants-1.jpg"))
    await api.send_message(photo=photo("pants-1.jpg"), caption="in bright red")
    plain, refined = await api.wait_for("sendMediaGroup", 2)
    assert titles(plain) != titles(refined)
    await api.send_message(text="/search red summer dress")
    assert len((await api.wait_for("sendMediaGroup", 3))[2].params["media"]) == 6
    await api.send_message(text="/search")
    usage = await api.wait_for(
        "sendMessage", 1, text="Tell me what you're looking for, e.g. /search red summer dress"
    )
    assert usage


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            {"document": b"%PDF-1.4 invoice", "mime_type": "application/pdf"},
            "That file isn't a photo",
        ),
        (
            {"document": b"just some text" * 20, "mime_type": "image/jpeg"},
            "That isn't a photo I can read",
        ),
        ({"document": png_bomb(), "mime_type": "image/png"}, "far too big"),
        ({"document": photo()[:3000], "mime_type": "image/jpeg"}, "damaged or incomplete"),
        ({"photo": photo(), "declared_size": 25 * 1024 * 1024}, "larger than 20 MB"),
        (
            {
                "extra": {
                    "sticker": {
                        "file_id": "s1",
                        "file_unique_id": "s1u",
                        "width": 512,
                        "height": 512,
                        "is_animated": False,
                        "is_video": False,
                        "type": "regular",
                    }
                }
            },
            "Stickers",
        ),
        (
            {
                "extra": {
                    "video": {
                        "file_id": "v1",
                        "file_unique_id": "v1u",
                        "width": 640,
                        "height": 480,
                        "duration": 3,
                    }
                }
            },
            "not videos",
        ),
    ],
)
async def test_bad_input_gets_a_clear_reply(running, api, kind, expected) -> None:
    await api.send_message(**kind)
    reply = (await api.wait_for("sendMessage"))[0]
    assert expected in reply.params["text"]
    assert not api.sent("sendMediaGroup")
    if "declared_size" in kind:
        assert not api.sent("getFile")  # refused before downloading
    await api.send_message(photo=photo())  # and the bot keeps serving
    await api.wait_for("sendMediaGroup")


async def test_one_result_is_a_single_photo(engine, settings, api) -> None:
    bot = await start_bot(engine, settings, api, album_size=1)
    try:
        await api.send_message(photo=photo("hat-3.jpg"))
        single = (await api.wait_for("sendPhoto"))[0]
        assert "photo" in single.files and single.params["caption"].startswith("<b>")
        assert not api.sent("sendMediaGroup")
    finally:
        await bot.stop()


async def test_group_chats_answer_only_when_asked(running, api) -> None:
    group = -100500
    await api.send_message(chat_id=group, photo=photo(), chat_type="supergroup")
    await api.send_message(chat_id=group, text="/similar", chat_type="supergroup")
    hint = (await api.wait_for("sendMessage"))[0]
    assert "Reply to a photo with /similar" in hint.params["text"]
    assert not api.sent("sendMediaGroup")  # the first photo was not answered

    posted = await api.send_message(
        chat_id=group, photo=photo("shirt-1.jpg"), chat_type="supergroup"
    )
    await api.send_message(chat_id=group, text="/similar", chat_type="supergroup", reply_to=posted)
    assert titles((await api.wait_for("sendMediaGroup"))[0])[0] == "Oxford shirt"
    await api.send_message(
        chat_id=group,
        photo=photo("skirt-1.jpg"),
        chat_type="supergroup",
        caption="@fashion_test_bot",
    )
    assert titles((await api.wait_for("sendMediaGroup", 2))[1])[0] == "Pleated skirt"
    assert len(api.sent("sendMediaGroup")) == 2


async def test_photos_sent_as_an_album_get_one_answer(running, api) -> None:
    for name in ("dress-1.jpg", "dress-2.jpg", "dress-3.jpg"):
        await api.send_message(photo=photo(name), media_group_id="album-1")
    await api.wait_for("sendMediaGroup")
    await running.stop()  # it finishes every update it took: nothing is sent after this
    assert len(api.sent("sendMediaGroup")) == 1


async def test_rate_limit_says_when_to_try_again(engine, settings, api) -> None:
    bot = await start_bot(engine, settings, api, limits={"searches_per_minute": 2})
    try:
        for answered in range(1, 4):  # one at a time: the third is the one over the limit
            await api.send_message(photo=photo())
            replies = await api.wait_for("sendMessage", answered)
        limited = [c for c in replies if "try again in" in c.params["text"]]
        assert len(limited) == 1 and "searching quickly" in limited[0].params["text"]
        assert len(api.sent("sendMediaGroup")) == 2
        await api.send_message(photo=photo(), user_id=2002)  # other users are not affected
        await api.wait_for("sendMediaGroup", 3)
    finally:
        await bot.stop()


async def test_busy_engine_answers_try_again(running, api, monkeypatch) -> None:
    async def saturated(**kwargs):
        raise EngineBusy(7.0)

    monkeypatch.setattr(running.engine, "search", saturated)
    await api.send_message(photo=photo())
    reply = (await api.wait_for("sendMessage"))[0]
    assert "very busy" in reply.params["text"] and "7 s" in reply.params["text"]


async def test_telegram_429_is_retried_and_the_album_arrives_once(running, api) -> None:
    api.fail("sendMediaGroup", 429, "Too Many Requests: retry after 1", retry_after=1)
    await api.send_message(photo=photo())
    albums = await api.wait_for("sendMediaGroup", timeout=30)
    await api.wait_for("sendMessage")
    assert len(albums) == 1
    assert [c.ok for c in api.calls if c.method == "sendMediaGroup"] == [False, True]


async def test_a_rejected_product_photo_does_not_sink_the_album(running, api) -> None:
    api.fail("sendMediaGroup", 400, "Bad Request: wrong file identifier/HTTP URL specified")
    api.fail(
        "sendPhoto",
        400,
        "Bad Request: IMAGE_PROCESS_FAILED",
        matches=lambda call: "Floral wrap dress" in str(call.params.get("caption")),
    )
    await api.send_message(photo=photo("dress-1.jpg"))
    await api.wait_for("sendMessage")
    delivered = api.sent("sendPhoto")
    assert len(delivered) == 5
    assert all("Floral wrap dress" not in c.params["caption"] for c in delivered)


async def test_unexpected_errors_get_an_apology_and_the_bot_keeps_serving(
    running, api, monkeypatch
) -> None:
    real_search = running.engine.search
    calls = {"n": 0}

    async def flaky(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk on fire")
        return await real_search(**kwargs)

    monkeypatch.setattr(running.engine, "search", flaky)
    await api.send_message(photo=photo())
    apology = (await api.wait_for("sendMessage"))[0]
    assert "something went wrong" in apology.params["text"]
    await api.send_message(photo=photo())
    await api.wait_for("sendMediaGroup")
    assert running.stats.errors == 1


async def test_inline_mode_returns_paged_results(running, api) -> None:
    await api.push(
        inline_query={"id": "iq1", "from": api.user(), "query": "red dress", "offset": ""}
    )
    answer = (await api.wait_for("answerInlineQuery"))[0]
    results = answer.params["results"]
    assert len(results) == 10 and str(answer.params["next_offset"]) == "10"
    assert all("utm_source=telegram" in r["input_message_content"]["message_text"] for r in results)


async def test_admin_commands(running, api) -> None:
    await api.send_message(text="/stats", user_id=1001)
    refusal = (await api.wait_for("sendMessage"))[0]
    assert "for the shop's admins" in refusal.params["text"]
    await api.send_message(photo=photo(), user_id=4242, chat_id=4242)
    await api.wait_for("sendMediaGroup")
    await api.send_message(text="/stats", user_id=4242, chat_id=4242)
    replies = await api.wait_for("sendMessage", 3)
    assert any("Searches: 1" in c.params["text"] for c in replies)
    await api.send_message(text="/reload", user_id=4242, chat_id=4242)
    replies = await api.wait_for("sendMessage", 4)
    assert "Already serving the newest index" in replies[-1].params["text"]


def test_every_message_exists_in_every_language() -> None:
    english = set(catalog("en"))
    assert len(languages()) >= 2
    for language in languages():
        assert set(catalog(language)) == english, language
        assert all(catalog(language)[key].strip() for key in english)


def test_long_product_ids_keep_callback_data_small(running) -> None:
    from engine.types import Hit, Product, SearchPage

    product = Product(
        "P" * 500, "T" * 300, "https://shop.example.com/" + "a" * 500, "x.jpg", 1.0, "EUR"
    )
    page = SearchPage(
        [Hit(product, 0.9, "x.jpg")] * 6, offset=999_990, has_more=True, query_key="f" * 16
    )
    markup = running.keyboard(Results(page, PageToken("f" * 16, 999_990)), "en")
    for row in markup.inline_keyboard:
        for key in row:
            assert key.callback_data is None or len(key.callback_data.encode()) <= 64


async def test_page_buttons_never_run_the_model_or_download_again(running, api) -> None:
    await api.send_message(photo=photo("hat-1.jpg"))
    await api.wait_for("sendMediaGroup")
    keyboard = (await api.wait_for("sendMessage"))[0]
    model_batches = running.engine.batcher.stats.batches
    shown = keyboard_message(api, keyboard)
    for label in ("More like this", "Only ", "Surprise me"):
        await api.press(shown, button(keyboard, label)["callback_data"])
    await api.wait_for("sendMediaGroup", 4)
    assert running.engine.batcher.stats.batches == model_batches
    assert len(api.sent("getFile")) == 1  # only the shopper's photo, once


async def test_a_forgotten_search_is_embedded_again_from_the_original_photo(running, api) -> None:
    await api.send_message(photo=photo("skirt-2.jpg"))
    keyboard = (await api.wait_for("sendMessage"))[0]
    more = button(keyboard, "More like this")["callback_data"]
    await api.press(keyboard_message(api, keyboard), more)
    remembered = (await api.wait_for("sendMediaGroup", 2))[1]
    model_batches = running.engine.batcher.stats.batches

    running.engine.queries = QueryStore(None)  # the store forgot every search
    await api.press(keyboard_message(api, keyboard), more)
    re_embedded = (await api.wait_for("sendMediaGroup", 3))[2]
    assert titles(re_embedded) == titles(remembered)  # the same page, found again
    assert running.engine.batcher.stats.batches > model_batches
    assert len(api.sent("getFile")) == 2
    assert not api.sent("answerCallbackQuery")[-1].params.get("show_alert")


@pytest.mark.parametrize(
    "data",
    [
        "hello",
        "fb1:0123456789abcdef:6:n:deadbeef:-",  # a category this index does not have
        "fb1:0123456789abcdef:99999999:n:-:-",
        "p:1:1",
        "x" * 64,
    ],
)
async def test_forged_button_data_gets_a_clear_answer(running, api, data) -> None:
    await api.send_message(photo=photo("hat-1.jpg"))
    keyboard = (await api.wait_for("sendMessage"))[0]
    await api.press(keyboard_message(api, keyboard), data)
    answer = (await api.wait_for("answerCallbackQuery"))[0]
    assert "send the photo again" in answer.params["text"] and answer.params["show_alert"]
    assert len(api.sent("sendMediaGroup")) == 1 and running.stats.errors == 0


async def test_a_page_of_an_unknown_search_without_its_photo_says_expired(running, api) -> None:
    orphan = api.message(text="results", extra={"from": BOT_USER})
    await api.press(orphan, "fb1:0123456789abcdef:6:n:-:-")
    notice = (await api.wait_for("sendMessage"))[0]
    assert "send the photo again" in notice.params["text"]
    assert running.stats.errors == 0
