"""Operators' view: /healthz, /metrics, JSON logs with request ids."""

from __future__ import annotations

import io
import json
import logging

import aiohttp

from bot.http_server import HealthServer
from bot.logs import JsonFormatter, SecretRedactor, new_request_id
from bot.metrics import Metrics
from bot.telegram_bot import TelegramBot
from tests.fakes.demo import photo
from tests.fakes.telegram_api import bot_settings


async def test_health_and_metrics(engine, settings, api) -> None:
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    metrics = Metrics(engine)
    bot.metrics = metrics
    health = HealthServer(engine, metrics, [bot], port=0, host="127.0.0.1")
    await health.start()
    base = f"http://127.0.0.1:{health.port}"
    try:
        async with aiohttp.ClientSession() as http:
            cold = await http.get(f"{base}/healthz")
            assert cold.status == 503  # model not warmed up, bot not connected
            await engine.warm_up()
            await bot.start()
            ready = await http.get(f"{base}/healthz")
            report = await ready.json()
            assert ready.status == 200 and report["bots"] == {"telegram": True}
            assert report["model_warm"] and report["products"] == 60

            await api.send_message(photo=photo())
            await api.send_message(document=b"not a photo at all" * 5, mime_type="image/jpeg")
            await api.wait_for("sendMediaGroup")
            await api.wait_for("sendMessage", 2)
            page = await (await http.get(f"{base}/metrics")).text()
        assert 'fashionbot_search_seconds_count{platform="telegram",stage="total"} 1.0' in page
        assert 'fashionbot_results_served_total{platform="telegram"} 6.0' in page
        assert 'fashionbot_errors_total{kind="image_not_an_image",platform="telegram"} 1.0' in page
        assert "fashionbot_queue_depth 0.0" in page
        assert "fashionbot_index_products 60.0" in page
        assert "fashionbot_model_batches_total" in page and "fashionbot_index_age_seconds" in page
    finally:
        await bot.stop()
        await health.stop()


def test_json_logs_carry_the_request_id_and_no_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretRedactor(["123456:very-secret-token"]))
    logger = logging.getLogger("fashionbot.json-test")
    logger.addHandler(handler)
    try:
        request_id = new_request_id()
        logger.warning("calling /bot123456:very-secret-token/sendMessage")
    finally:
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["request_id"] == request_id and entry["level"] == "WARNING"
    assert "very-secret-token" not in stream.getvalue()


async def test_platform_rate_limits_are_counted(engine, settings, api) -> None:
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    metrics = Metrics(engine)
    bot.metrics = metrics
    await bot.start()
    try:
        api.fail("sendMediaGroup", 429, "Too Many Requests: retry after 1", retry_after=1)
        await api.send_message(photo=photo())
        await api.wait_for("sendMediaGroup", timeout=30)
    finally:
        await bot.stop()
    page = metrics.render().decode()
    assert 'fashionbot_platform_rate_limits_total{platform="telegram"} 1.0' in page
