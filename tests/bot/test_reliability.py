"""Reliability through the real Telegram client: hostile files, load, faults, index
switches under load. Every update gets exactly one answer; the bot keeps serving."""

from __future__ import annotations

import asyncio
import csv
import os

from bot.i18n import catalog
from bot.telegram_bot import TelegramBot
from engine.embedder import model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES, make_settings
from tests.fakes.demo import photo
from tests.fakes.hostile_images import awkward_but_valid, broken_files
from tests.fakes.load import run_load
from tests.fakes.telegram_api import HANG, Call, bot_settings, titles
from tests.fakes.waiting import eventually

ENGLISH = catalog("en")


async def start(engine, settings, api, **telegram) -> TelegramBot:
    bot = TelegramBot(engine, bot_settings(settings, api, **telegram), api.token)
    await bot.start()
    return bot


async def test_every_hostile_file_gets_its_clear_reply(engine, settings, api) -> None:
    bot = await start(engine, settings, api)
    try:
        corpus = broken_files()
        expected = {}
        for n, (name, (data, error)) in enumerate(sorted(corpus.items())):
            chat = 700_000 + n
            await api.send_message(
                chat_id=chat, user_id=chat, document=data, mime_type="image/jpeg"
            )
            # a file over the limit is refused from its declared size, before downloading
            key = "file_too_large" if error.reason == "too_large" else f"error.{error.reason}"
            expected[chat] = (name, ENGLISH[key])
        valid = awkward_but_valid()
        valid_chats = [800_000 + n for n in range(len(valid))]
        for chat, data in zip(valid_chats, valid.values(), strict=True):
            await api.send_message(chat_id=chat, user_id=chat, document=data)

        def replies() -> list[Call]:
            return [c for c in api.sent("sendMessage") if int(c.params["chat_id"]) in expected]

        await api.wait_until(lambda: len(replies()) >= len(corpus), timeout=120)
        await api.wait_for("sendMediaGroup", len(valid), timeout=120)
        await bot.stop()  # it finishes every update it took: nothing is sent after this
        texts = {int(c.params["chat_id"]): c.params["text"] for c in replies()}
        assert len(replies()) == len(texts) == len(corpus)  # exactly one reply each
        for chat, (name, text) in expected.items():
            assert texts[chat] == text, name
        albums = [int(c.params["chat_id"]) for c in api.sent("sendMediaGroup")]
        assert sorted(albums) == valid_chats
    finally:
        await bot.stop()


async def test_load_every_update_answered_exactly_once(engine, settings, api) -> None:
    busy_engine_settings = settings.with_overrides(model={"max_queue": 4})
    small = Engine(busy_engine_settings, engine.embedder, engine.index)
    bot = await start(small, settings, api)
    try:
        photos = [(DEMO_IMAGES / f"shoes-{i}.jpg").read_bytes() for i in range(1, 7)]
        result = await run_load(api, photos, users=40, until_quiet=bot.stop)
        assert result.exactly_once, result.answers_per_user
        assert result.outcomes["album"] > 0
        assert set(result.outcomes) <= {"album", "busy"}
        assert small.batcher.queue_depth == 0
    finally:
        await bot.stop()
        small.close()


async def test_server_errors_and_timeouts_are_retried_and_answered_once(
    engine, settings, api
) -> None:
    bot = await start(engine, settings, api, request_timeout_s=1.0)
    try:
        api.fail("sendMediaGroup", 500, "Internal Server Error")
        api.fail("sendMessage", HANG, "never answers", hang_s=2.5)
        await api.send_message(photo=photo())
        await api.wait_for("sendMediaGroup", timeout=30)
        await api.wait_for("sendMessage", timeout=30)
        await bot.stop()  # it finishes every update it took: nothing is sent after this
        assert len(api.sent("sendMediaGroup")) == len(api.sent("sendMessage")) == 1
    finally:
        await bot.stop()


async def test_a_failing_model_batch_fails_only_its_requests(
    tiny_model_files, demo_index_dir, embedder, api, monkeypatch
) -> None:
    # batches of 2, so that 6 shoppers at once make several batches and one of them fails
    settings = make_settings(tiny_model_files, demo_index_dir, model={"max_batch": 2})
    engine = Engine(settings, embedder, open_index(demo_index_dir, model_identity(embedder)))
    bot = await start(engine, settings, api)
    real = engine.embedder.embed_image_tensors
    failures = {"left": 1}

    def sometimes(pixels):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("CUDA error: out of memory (simulated)")
        return real(pixels)

    monkeypatch.setattr(engine.embedder, "embed_image_tensors", sometimes)

    async def serve_one_more_then_stop() -> None:
        await api.send_message(chat_id=9, user_id=9, photo=photo())
        await api.wait_for("sendMediaGroup", chat_id=9)  # the failed batch broke nothing
        await bot.stop()

    try:
        result = await run_load(
            api, [photo("dress-2.jpg")], users=6, until_quiet=serve_one_more_then_stop
        )
        assert result.exactly_once
        assert result.outcomes["apology"] >= 1 and result.outcomes["album"] >= 1
        assert result.outcomes["apology"] + result.outcomes["album"] == 6
    finally:
        await bot.stop()
        engine.close()


async def test_switching_index_under_load_fails_no_query_and_mixes_no_results(
    tiny_model_files, embedder, api, tmp_path
) -> None:
    with DEMO_CATALOG.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    catalog_path = DEMO_CATALOG.parent / f".switch-test-{os.getpid()}.csv"

    def write(version: str) -> None:
        with catalog_path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "title": f"{version} {r['title']}"} for r in rows)

    index_dir = tmp_path / "index"
    settings = make_settings(tiny_model_files, index_dir, index={"watch_interval_s": 0.0})
    try:
        write("v1")
        await build_index(settings, catalog_path, index_dir, embedder, show_progress=False)
        engine = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
        bot = await start(engine, settings, api)
        watcher = asyncio.create_task(engine.watch_index(0.05))
        try:
            write("v2")
            bot_stopped = asyncio.Event()
            shoppers = [photo("hat-2.jpg"), photo("pants-3.jpg")]
            load = asyncio.create_task(
                run_load(api, shoppers, users=30, until_quiet=bot_stopped.wait)
            )
            await api.wait_for("sendMediaGroup")  # the load is under way: switch during it
            rebuilt = await build_index(
                settings, catalog_path, index_dir, embedder, show_progress=False
            )
            await eventually(lambda: engine.index.manifest.build_id == rebuilt.build_id)
            await api.send_message(chat_id=5, user_id=5, photo=photo())
            after_the_switch = (await api.wait_for("sendMediaGroup", chat_id=5))[0]
            assert titles(after_the_switch)[0].startswith("v2 ")
            await bot.stop()  # it finishes every update it took: nothing is sent after this
            bot_stopped.set()
            result = await load
            assert result.exactly_once and result.outcomes["album"] == 30
            for album in api.sent("sendMediaGroup"):
                names = {title.split(" ")[0] for title in titles(album)}
                assert len(names) == 1, names  # never a mix of two builds
        finally:
            watcher.cancel()
            await bot.stop()
            engine.close()
    finally:
        catalog_path.unlink(missing_ok=True)
