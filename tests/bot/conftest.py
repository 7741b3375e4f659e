from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.telegram_bot import TelegramBot
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.discord_redirect import endpoints
from tests.fakes.telegram_api import FakeBotApi, bot_settings


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram Bot API server on loopback."""
    fake = FakeBotApi()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_discord(monkeypatch) -> AsyncIterator[FakeDiscord]:
    """A fake Discord (REST and gateway) on loopback, discord.py pointed at it."""
    fake = FakeDiscord()
    await fake.start()
    for owner, name, value in endpoints(fake.api_base, fake.gateway_url):
        monkeypatch.setattr(owner, name, value)  # for this test only
    yield fake
    await fake.stop()


@pytest.fixture
async def running(engine, settings, api: FakeBotApi) -> AsyncIterator[TelegramBot]:
    """The Telegram bot over the tiny demo engine, talking to the fake Bot API."""
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    await bot.start()
    yield bot
    await bot.stop()
