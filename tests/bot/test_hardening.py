"""Issue 15, "The bots": what forged buttons, floods, oversized downloads and bodies, and
huge pictures may cost. Each case runs the real bot against the fake Bot API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bot.http_server import HealthServer
from bot.i18n import catalog
from bot.metrics import Metrics
from bot.paging import PageToken, encode_token
from bot.settings import load_bot_settings
from bot.telegram_bot import TelegramBot
from bot.telegram_webhook import SECRET_HEADER
from engine.config import DEFAULT_CONFIG_PATH
from engine.search import Engine
from tests.conftest import REPO_ROOT
from tests.fakes.demo import photo
from tests.fakes.hostile_images import huge_transparent_png
from tests.fakes.memory import PeakMemory
from tests.fakes.telegram_api import (
    FakeBotApi,
    bot_settings,
    button,
    free_port,
    keyboard_message,
    start_webhook_bot,
)


def record_ranking(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many results each ranking the engine runs asks for."""
    wanted: list[int] = []
    rank_and_join: Callable[..., Any] = engine._rank_and_join

    def recorded(query, filters, count, *rest):
        wanted.append(count)
        return rank_and_join(query, filters, count, *rest)

    monkeypatch.setattr(engine, "_rank_and_join", recorded)
    return wanted


# ---- 7. forged paging ------------------------------------------------------------------


async def test_pages_past_max_results_say_no_more_without_ranking(
    engine, settings, api: FakeBotApi, monkeypatch
) -> None:
    shallow = settings.with_overrides(search={"max_results": 20})
    monkeypatch.setattr(engine, "settings", shallow)  # the engine's own guard, too
    bot = TelegramBot(engine, bot_settings(shallow, api), api.token)
    await bot.start()
    try:
        await api.send_message(photo=photo("skirt-2.jpg"))
        keyboard = (await api.wait_for("sendMessage"))[0]
        shown = keyboard_message(api, keyboard)
        key = button(keyboard, "More like this")["callback_data"].split(":")[1]
        wanted = record_ranking(engine, monkeypatch)
        deep = [encode_token(PageToken(key, 999_999)), "p:999999:0:-1", "p:20:1:-1"]
        for n, forged in enumerate(deep, start=2):
            await api.press(shown, forged)
            replies = await api.wait_for("sendMessage", n)
            assert "That's everything" in replies[-1].params["text"]
        assert wanted == []  # answered at once: nothing was ranked
        await api.press(shown, encode_token(PageToken(key, 18)))
        album = (await api.wait_for("sendMediaGroup", 2))[-1]
        assert len(album.params["media"]) == 2  # results 19 and 20, and no page after them
        assert wanted == [20]
        last = (await api.wait_for("sendMessage", 5))[-1]
        assert button(last, "More like this") is None
    finally:
        await bot.stop()


async def test_the_engine_itself_never_ranks_past_max_results(engine, monkeypatch) -> None:
    first = await engine.search(image=photo("hat-1.jpg"))
    wanted = record_ranking(engine, monkeypatch)
    deep = await engine.search(query_key=first.query_key, offset=10**11)
    assert (deep.hits, deep.has_more, wanted) == ([], False, [])
    last = await engine.search(query_key=first.query_key, offset=98)
    assert len(last.hits) == 0 and not last.has_more and wanted == [100]  # 60 products


@pytest.mark.parametrize("offset", ["²", "٣", "1e3", "-5", " 7", "100000000000", "9" * 64])
async def test_a_forged_inline_offset_is_the_first_page_or_none(
    running, api: FakeBotApi, offset: str
) -> None:
    await api.push(
        inline_query={"id": "iq-forged", "from": api.user(), "query": "dress", "offset": offset}
    )
    answer = (await api.wait_for("answerInlineQuery"))[0]
    results = answer.params["results"]
    if offset.isascii() and offset.isdigit():  # a page past search.max_results
        assert results == [] and not answer.params.get("next_offset")
    else:
        assert len(results) == 10
    assert running.stats.errors == 0 and not api.sent("sendMessage")


async def test_inline_scrolling_stops_at_max_results(
    engine, settings, api: FakeBotApi, monkeypatch
) -> None:
    shallow = settings.with_overrides(search={"max_results": 15})
    monkeypatch.setattr(engine, "settings", shallow)
    bot = TelegramBot(engine, bot_settings(shallow, api), api.token)
    await bot.start()
    try:
        await api.push(inline_query={"id": "a", "from": api.user(), "query": "dress", "offset": ""})
        first = (await api.wait_for("answerInlineQuery"))[0]
        assert str(first.params["next_offset"]) == "10"
        await api.push(
            inline_query={"id": "b", "from": api.user(), "query": "dress", "offset": "10"}
        )
        second = (await api.wait_for("answerInlineQuery", 2))[1]
        assert len(second.params["results"]) == 5 and not second.params.get("next_offset")
    finally:
        await bot.stop()


# ---- 8. every reply counts against a per-chat budget ------------------------------------


async def test_a_flooding_chat_is_told_once_and_cannot_delay_another(
    running, api: FakeBotApi
) -> None:
    flooder, shopper = 5001, 5002
    for _ in range(300):
        await api.push(message=api.message(chat_id=flooder, user_id=flooder, text="/start"))
    sticker = {"file_id": "st", "file_unique_id": "stu", "width": 512, "height": 512}
    sticker |= {"type": "regular", "is_animated": False, "is_video": False}
    for _ in range(100):
        await api.push(
            message=api.message(chat_id=flooder, user_id=flooder, extra={"sticker": sticker})
        )
    sent_at = time.perf_counter()
    await api.send_message(chat_id=shopper, user_id=shopper, photo=photo("dress-1.jpg"))
    album = (await api.wait_for("sendMediaGroup", timeout=30))[0]
    assert int(album.params["chat_id"]) == shopper
    assert album.at - sent_at < 5.0  # 12 s when the flood's 400 replies went first
    await asyncio.sleep(0.5)
    to_flooder = [
        c.params["text"] for c in api.sent("sendMessage") if int(c.params["chat_id"]) == flooder
    ]
    slow_down = catalog("en")["slow_down"]
    assert len(to_flooder) == 21 and to_flooder.count(slow_down) == 1  # the budget, then once


async def test_the_budget_refills_and_the_chat_is_answered_again(
    engine, settings, api: FakeBotApi
) -> None:
    now = [0.0]
    limits = {"searches_per_minute": 1000, "replies_per_minute": 2}
    bot = TelegramBot(engine, bot_settings(settings, api, limits=limits), api.token, lambda: now[0])
    await bot.start()
    try:
        for count in (1, 2, 3):
            await api.send_message(text="/start")
            await api.wait_for("sendMessage", count)
        await api.send_message(text="/start")
        await api.send_message(photo=photo())
        await asyncio.sleep(0.5)  # both dropped: no reply, no search
        now[0] += 61.0
        await api.send_message(text="/start")
        replies = [c.params["text"] for c in await api.wait_for("sendMessage", 4)]
        await asyncio.sleep(0.3)
        assert len(api.sent("sendMessage")) == 4 and not api.sent("sendMediaGroup", "getFile")
        assert replies[2] == catalog("en")["slow_down"]
        assert all("Send me a photo" in text for text in (replies[0], replies[1], replies[3]))
    finally:
        await bot.stop()


# ---- 9. downloads stop at the cap -------------------------------------------------------


async def test_a_photo_of_undeclared_size_is_not_downloaded_past_the_cap(
    engine, settings, api: FakeBotApi
) -> None:
    capped = settings.with_overrides(images={"max_bytes": 1_000_000})
    bot = TelegramBot(engine, bot_settings(capped, api), api.token)
    await bot.start()
    try:
        file_id = api.add_streamed_file(64 * 1024 * 1024)
        message = api.message(document=b"placeholder")
        message["document"] = {"file_id": file_id, "file_unique_id": file_id + "u"}
        await api.push(message=message)  # no file_size anywhere: only the download can tell
        reply = (await api.wait_for("sendMessage", timeout=30))[0]
        assert reply.params["text"] == catalog("en")["file_too_large"]
        assert api.bytes_served[file_id] < 16 * 1024 * 1024  # the cap, plus socket buffers
        await api.send_message(photo=photo())  # the bot still downloads what fits
        await api.wait_for("sendMediaGroup")
    finally:
        await bot.stop()


# ---- 10. a small file of many pixels ----------------------------------------------------


async def test_huge_pngs_at_once_cost_their_pixels_once_each(running, api: FakeBotApi) -> None:
    huge = huge_transparent_png()
    chats = range(6001, 6004)  # one more than the engine's two decodes at a time
    with PeakMemory() as peak:
        for chat in chats:
            await api.send_message(chat_id=chat, user_id=chat, document=huge, mime_type="image/png")
        albums = await api.wait_for("sendMediaGroup", len(chats), timeout=120)
    assert {int(album.params["chat_id"]) for album in albums} == set(chats)
    # Two decode at a time (the engine's CPU pool), 160 MB of pixels each: +1.8 GB before.
    assert peak.growth_mb < 500


# ---- 11. the webhook reads nothing it will refuse ---------------------------------------


async def status_without_sending_the_body(port: int, headers: dict[str, str]) -> int:
    """POST only the headers and see how the webhook answers: a server that wants the
    body first never answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [
            "POST /telegram HTTP/1.1",
            "Host: bot.example.com",
            "Content-Type: application/json",
        ]
        head += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_the_webhook_checks_the_secret_and_size_before_reading(
    engine, settings, api: FakeBotApi
) -> None:
    secret = "s3cret-webhook-token"
    bot, port = await start_webhook_bot(engine, settings, api, "https://bot.example.com", secret)
    try:
        huge = {"Content-Length": "95000000"}
        assert await status_without_sending_the_body(port, huge) == 403
        wrong = {**huge, SECRET_HEADER: "nope"}
        assert await status_without_sending_the_body(port, wrong) == 403
        right = {"Content-Length": "2000000", SECRET_HEADER: secret}
        assert await status_without_sending_the_body(port, right) == 413
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/telegram"
            padded = {"update_id": 1, "padding": "x" * 1_100_000}
            chunked = await http.post(  # no Content-Length: refused once past the limit
                url, data=_chunks(json.dumps(padded).encode()), headers={SECRET_HEADER: secret}
            )
            assert chunked.status == 413
            garbage = await http.post(url, data=b"[1, 2", headers={SECRET_HEADER: secret})
            assert garbage.status == 400
            update = {"update_id": 2, "message": api.message(photo=photo("shoes-4.jpg"))}
            good = await http.post(url, json=update, headers={SECRET_HEADER: secret})
            assert good.status == 200
        await api.wait_for("sendMediaGroup")
        assert bot.healthy and bot.stats.errors == 0
    finally:
        await bot.stop()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


# ---- 12. the operator's endpoint -------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "address"),
    [({}, "127.0.0.1"), ({"FASHIONBOT_HTTP__HOST": "0.0.0.0"}, "0.0.0.0")],
)
async def test_health_and_metrics_listen_on_loopback_unless_opened(
    engine, environment: dict[str, str], address: str
) -> None:
    port = free_port()
    environ = {"FASHIONBOT_HTTP__PORT": str(port), **environment}
    settings = load_bot_settings(DEFAULT_CONFIG_PATH, environ=environ)
    health = HealthServer.configured(engine, Metrics(engine), [], settings.http)
    assert health is not None
    await health.start()
    try:
        assert (health.host, health.port) == (address, port)
        async with aiohttp.ClientSession() as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert response.status == 200
    finally:
        await health.stop()


def test_the_docker_image_opens_the_endpoint_to_its_network() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "FASHIONBOT_HTTP__HOST=0.0.0.0" in dockerfile
