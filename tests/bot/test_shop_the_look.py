"""Shop the look in chat, on the tiny model (the garment finder is the real one: it reads
the imagenet-lite0 trunk whatever the embedder): captions refine the picked garment,
groups hear only whoever asked, albums of photos get one answer, a busy engine costs only
the picker. The real model's answers are in test_real_model_bot.py."""

from __future__ import annotations

from bot.i18n import t
from engine.batcher import EngineBusy
from tests.fakes.telegram_api import (
    button,
    keyboard_message,
    keyboard_of,
)
from tests.real_model import REPO_ROOT

STREET = REPO_ROOT / "tests" / "fixtures" / "street"


def street(name: str = "0016.jpg") -> bytes:
    return (STREET / name).read_bytes()


def garment_button(picker, name: str) -> str:
    return next(
        b["callback_data"]
        for row in keyboard_of(picker)
        for b in row
        if b["text"].endswith(f" · {name}")
    )


def query_key(call, label: str) -> str:
    """The engine query key a button of this message pages (fb1:<key>:...)."""
    return button(call, label)["callback_data"].split(":")[1]


async def test_a_caption_refines_the_first_garment_and_the_picked_one(running, api) -> None:
    """The words change the query of the first garment and of each picked one (with this
    catalog the garment's six products come first either way; their query is what moves)."""
    for caption in (None, "in bright red"):
        await api.send_message(photo=street(), caption=caption)
        await api.wait_for("sendPhoto", 1 if caption is None else 2)
    plain, refined = await api.wait_for("sendMessage", 2)
    assert plain.params["text"] == refined.params["text"]  # "Results for: Jacket" both
    assert plain.params["text"].startswith("Results for: ")
    assert query_key(plain, "Surprise me") != query_key(refined, "Surprise me")

    plain_picker, refined_picker = api.sent("sendPhoto")
    assert query_key(plain_picker, "Whole photo") != query_key(refined_picker, "Whole photo")
    await api.press(keyboard_message(api, plain_picker), garment_button(plain_picker, "Shoes"))
    await api.press(keyboard_message(api, refined_picker), garment_button(refined_picker, "Shoes"))
    plain_shoes, refined_shoes = (await api.wait_for("sendMessage", 4))[2:]
    assert plain_shoes.params["text"].startswith("Results for: Shoes")
    assert refined_shoes.params["text"].startswith("Results for: Shoes")
    assert query_key(plain_shoes, "Surprise me") != query_key(refined_shoes, "Surprise me")


async def test_in_a_group_the_numbered_photo_answers_whoever_asked(running, api) -> None:
    group = -100700
    await api.send_message(chat_id=group, photo=street("0040.jpg"), chat_type="supergroup")
    asked = await api.send_message(
        chat_id=group,
        user_id=2002,
        photo=street("0040.jpg"),
        chat_type="supergroup",
        caption="@fashion_test_bot",
    )
    (picker,) = await api.wait_for("sendPhoto", 1)
    await running.stop()
    assert len(api.sent("sendMediaGroup")) == 1  # the unaddressed photo got nothing
    assert picker.params["reply_parameters"]["message_id"] == asked["message_id"]
    assert all(
        c.params["reply_parameters"]["message_id"] == asked["message_id"]
        for c in api.sent("sendMediaGroup", "sendMessage", "sendPhoto")
    )


async def test_street_photos_sent_as_an_album_get_one_answer_without_a_picker(running, api) -> None:
    for name in ("0016.jpg", "0021.jpg"):
        await api.send_message(photo=street(name), media_group_id="look-album")
    (keyboard,) = await api.wait_for("sendMessage", 1)
    await running.stop()
    assert len(api.sent("sendMediaGroup")) == 1 and not api.sent("sendPhoto")
    assert keyboard.params["text"] == t("en", "results")  # about both photos, no garment


async def test_a_busy_engine_costs_only_the_picker(running, api, monkeypatch) -> None:
    real_search = running.engine.search

    async def busy_for_the_picker(**kwargs):
        if kwargs.get("k") == 1:  # the picker's searches: one result each, for their keys
            raise EngineBusy(3.0)
        return await real_search(**kwargs)

    monkeypatch.setattr(running.engine, "search", busy_for_the_picker)
    await api.send_message(photo=street())
    (keyboard,) = await api.wait_for("sendMessage", 1)
    await running.stop()
    assert keyboard.params["text"].startswith("Results for: ")
    assert len(api.sent("sendMediaGroup")) == 1 and not api.sent("sendPhoto")
    assert running.stats.errors == 0
