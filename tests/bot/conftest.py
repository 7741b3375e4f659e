from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.telegram_api import FakeBotApi


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram Bot API server on loopback."""
    fake = FakeBotApi()
    await fake.start()
    yield fake
    await fake.stop()
