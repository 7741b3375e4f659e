"""Operating the Telegram bot: webhook mode, network faults, index reload, SIGTERM,
and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import csv
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.logs import SecretRedactor
from bot.telegram_bot import BotConfigError, TelegramBot
from engine.embedder import model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from engine.types import Hit, Product
from tests.conftest import DEMO_CATALOG, REPO_ROOT, make_settings
from tests.fakes.demo import photo
from tests.fakes.telegram_api import DROP_CONNECTION, bot_settings, start_webhook_bot, titles


async def test_dropped_connections_are_retried(engine, settings, api) -> None:
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    await bot.start()
    try:
        api.fail("sendMediaGroup", DROP_CONNECTION, "connection dropped")
        api.fail("sendMessage", DROP_CONNECTION, "connection dropped")
        await api.send_message(photo=photo())
        albums = await api.wait_for("sendMediaGroup", timeout=30)
        keyboards = await api.wait_for("sendMessage", timeout=30)
        assert len(albums) == 1 and len(keyboards) == 1
    finally:
        await bot.stop()


async def test_webhook_mode_takes_updates_with_the_secret_only(
    engine, settings, api, monkeypatch
) -> None:
    bot, port = await start_webhook_bot(
        engine, settings, api, "https://bot.example.com/hooks", "s3cret-webhook-token"
    )
    try:
        registered = (await api.wait_for("setWebhook"))[0]
        assert registered.params["url"] == "https://bot.example.com/hooks/telegram"
        assert registered.params["secret_token"] == "s3cret-webhook-token"
        update = {"update_id": 1, "message": api.message(photo=photo("shoes-4.jpg"))}
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}/telegram"
            wrong = await http.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"}
            )
            assert wrong.status == 403
            right = await http.post(
                url,
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-webhook-token"},
            )
            assert right.status == 200
        assert titles((await api.wait_for("sendMediaGroup"))[0])[0] == "Suede shoes"
        assert not api.sent("getUpdates")
    finally:
        await bot.stop()


async def test_webhook_mode_without_secret_refuses_to_start(
    engine, settings, api, monkeypatch
) -> None:
    hooked = bot_settings(settings, api, mode="webhook", webhook_url="https://bot.example.com")
    bot = TelegramBot(engine, hooked, api.token)
    with pytest.raises(BotConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        await bot.start()
    assert not api.calls  # refused before talking to Telegram


async def test_reload_switches_to_a_new_index_without_a_failed_query(
    tiny_model_files, embedder, api, tmp_path
) -> None:
    with DEMO_CATALOG.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = list(rows[0])

    def write(subset: list[dict[str, str]]) -> Path:
        path = DEMO_CATALOG.parent / f".reload-test-{os.getpid()}.csv"
        with path.open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            writer.writerows(subset)
        return path

    index_dir = tmp_path / "index"
    settings = make_settings(tiny_model_files, index_dir)
    catalog = write([r for r in rows if r["category"] != "shoes"])
    try:
        await build_index(settings, catalog, index_dir, embedder, show_progress=False)
        engine = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
        bot = TelegramBot(engine, bot_settings(settings, api), api.token)
        await bot.start()
        try:
            await api.send_message(photo=photo("shoes-1.jpg"), user_id=4242, chat_id=4242)
            before = (await api.wait_for("sendMediaGroup"))[0]
            assert "Leather shoes" not in titles(before)
            catalog = write(rows)
            await build_index(settings, catalog, index_dir, embedder, show_progress=False)
            await api.send_message(text="/reload", user_id=4242, chat_id=4242)
            await api.wait_for("sendMessage", 2)
            assert any(
                "Switched to the new index" in c.params["text"] for c in api.sent("sendMessage")
            )
            await api.send_message(photo=photo("shoes-1.jpg"), user_id=4242, chat_id=4242)
            after = (await api.wait_for("sendMediaGroup", 2))[1]
            assert titles(after)[0] == "Leather shoes"
        finally:
            await bot.stop()
            engine.close()
    finally:
        catalog.unlink(missing_ok=True)


def test_product_photo_by_url_when_configured(engine, settings) -> None:
    api_settings = settings.with_overrides(telegram={"photo_source": "url"})
    bot = TelegramBot(engine, api_settings, "123:abc-not-a-real-token")
    product = Product(
        "U1", "Linen shirt", "https://shop.example.com/u1", "https://cdn.example.com/u1.jpg"
    )
    remote = Hit(product, 0.9, "https://cdn.example.com/u1.jpg", "/cache/u1.jpg")
    assert bot._photo_source(remote) == ("/cache/u1.jpg", "https://cdn.example.com/u1.jpg")
    local = Hit(product, 0.9, "images/dress-1.jpg", str(DEMO_CATALOG.parent / "images/dress-1.jpg"))
    key, source = bot._photo_source(local)
    assert isinstance(source, bytes) and source[:2] == b"\xff\xd8"
    bot.file_ids.put(key, "cached-file-id")
    assert bot._photo_source(local) == (key, "cached-file-id")


def test_tokens_never_reach_the_logs_even_in_tracebacks(caplog) -> None:
    token = "123456789:AAHk-very-secret-token-value"
    logger = logging.getLogger("fashionbot.test")
    redactor = SecretRedactor([token])
    handler_records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_records.append(self.format(record))

    capture = Capture()
    capture.addFilter(redactor)
    logger.addHandler(capture)
    try:
        logger.warning("GET https://api.telegram.org/bot%s/getUpdates failed", token)
        try:
            raise RuntimeError(f"request to /bot{token}/sendMessage failed")
        except RuntimeError:
            logger.exception("send failed")
    finally:
        logger.removeHandler(capture)
    joined = "\n".join(handler_records)
    assert token not in joined and joined.count("***") >= 2
    assert "Traceback" in joined


@pytest.mark.slow
async def test_both_bots_in_one_process_and_sigterm_drains_searches(
    tiny_model_files, demo_index_dir, api, tmp_path
) -> None:
    """The real `python -m bot` with both tokens: one engine serves Telegram and Discord;
    a photo is being searched when SIGTERM arrives, and still gets its album."""
    from tests.fakes.discord_api import APP_ID, FakeDiscord
    from tests.fakes.discord_redirect import API_BASE_VARIABLE, GATEWAY_VARIABLE

    fake_discord = FakeDiscord()
    await fake_discord.start()
    config, checkpoint = tiny_model_files
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TELEGRAM_BOT_TOKEN": api.token,
        "DISCORD_BOT_TOKEN": "discord.secret-token-for-tests",
        "FASHIONBOT_MODEL__NAME": str(config),
        "FASHIONBOT_MODEL__PRETRAINED": str(checkpoint),
        "FASHIONBOT_INDEX__DIR": str(demo_index_dir),
        "FASHIONBOT_SEARCH__QUERY_STORE": str(tmp_path / "queries.sqlite"),
        "FASHIONBOT_TELEGRAM__BASE_URL": api.base_url,
        "FASHIONBOT_TELEGRAM__BASE_FILE_URL": api.base_file_url,
        API_BASE_VARIABLE: fake_discord.api_base,
        GATEWAY_VARIABLE: fake_discord.gateway_url,
        "FASHIONBOT_DISCORD__GUILD_READY_TIMEOUT_S": "0",  # the fake has no servers
        "FASHIONBOT_HTTP__PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.discord_redirect",  # `python -m bot`, with discord.py pointed at the fake
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await api.wait_for("getUpdates", timeout=60)
        await asyncio.wait_for(fake_discord.identified.wait(), 60)
        await fake_discord.interact(fake_discord.similar(photo("shirt-3.jpg")))
        await fake_discord.wait_for("POST", f"/webhooks/{APP_ID}/", timeout=30)

        api.download_delay_s = 1.5  # the photo download is slow: the search is in flight
        await api.send_message(photo=photo("hat-4.jpg"))
        await api.wait_for("getFile", timeout=30)
        process.send_signal(signal.SIGTERM)
        album = (await api.wait_for("sendMediaGroup", timeout=30))[0]
        assert titles(album)[0] == "Bucket hat"
        code = await asyncio.wait_for(process.wait(), 30)
        output = (await process.stdout.read()).decode()
        assert code == 0, output
        assert api.token not in output and "discord.secret-token-for-tests" not in output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await fake_discord.stop()


async def test_two_webhook_replicas_serve_from_one_index_directory(
    tiny_model_files, embedder, demo_index_dir, api
) -> None:
    """Scale-out: two `python -m bot` replicas behind a load balancer, each memory-mapping
    the same read-only index; each answers the updates the balancer sends it."""
    replicas = []
    try:
        for _ in range(2):
            settings = make_settings(tiny_model_files, demo_index_dir)
            engine = Engine(
                settings, embedder, open_index(demo_index_dir, model_identity(embedder))
            )
            bot, port = await start_webhook_bot(
                engine, settings, api, "https://bot.example.com", "shared-secret-value"
            )
            replicas.append((engine, bot, port))
        headers = {"X-Telegram-Bot-Api-Secret-Token": "shared-secret-value"}
        async with aiohttp.ClientSession() as http:
            for n, name in enumerate(["dress-4.jpg", "shoes-6.jpg", "hat-5.jpg", "skirt-6.jpg"]):
                _, _, port = replicas[n % 2]  # round robin, as a load balancer would
                update = {
                    "update_id": 100 + n,
                    "message": api.message(chat_id=900 + n, photo=photo(name)),
                }
                response = await http.post(
                    f"http://127.0.0.1:{port}/telegram", json=update, headers=headers
                )
                assert response.status == 200
        albums = await api.wait_for("sendMediaGroup", 4)
        firsts = {int(a.params["chat_id"]): titles(a)[0] for a in albums}
        assert firsts == {
            900: "Linen shift dress",
            901: "Slip-on shoes",
            902: "Fedora hat",
            903: "Wrap skirt",
        }
        assert replicas[0][1].stats.searches == replicas[1][1].stats.searches == 2
        assert replicas[0][0].index.build_dir == replicas[1][0].index.build_dir
    finally:
        for engine, bot, _ in replicas:
            await bot.stop()
            engine.close()
