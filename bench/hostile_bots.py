"""Issue 15's bot cases for docs/reliability.md: forged pages, a flooding chat, a photo of
undeclared size, and huge PNGs at once, through the real Telegram client against the fake
Bot API (`bench.reliability` calls `forged_and_flooding`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.telegram_bot import TelegramBot
from engine.search import Engine
from tests.fakes.hostile_images import huge_transparent_png
from tests.fakes.telegram_api import Call, FakeBotApi

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data/demo/images/dress-1.jpg"


def _peak_reset() -> float:
    """Resets the peak resident memory (Linux) and returns the current one, in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _sent_to(api: FakeBotApi, chat: int) -> list[Call]:
    methods = ("sendMessage", "sendMediaGroup", "sendPhoto")
    return [c for c in api.sent(*methods) if int(c.params.get("chat_id", 0)) == chat]


async def _replies_to(api: FakeBotApi, chat: int, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while len(_sent_to(api, chat)) < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)


async def _forged_pages(api: FakeBotApi, chat: int) -> str:
    await api.send_message(chat_id=chat, user_id=chat, photo=PHOTO.read_bytes())
    await _replies_to(api, chat, 2)
    shown = next(m for m in reversed(list(api.messages.values())) if m.get("reply_markup"))
    started = time.perf_counter()
    await api.press(shown, "p:999999:0:-1", user_id=chat)
    await _replies_to(api, chat, 3)
    took_ms = (time.perf_counter() - started) * 1000
    return f"| forged button for page 999,999 | answered 'that's everything' in {took_ms:.0f} ms |"


async def _flood(api: FakeBotApi, flooder: int, shopper: int) -> str:
    for n in range(400):
        text = "/start" if n < 300 else None
        sticker = {"file_id": "s", "file_unique_id": "su", "width": 9, "height": 9}
        sticker |= {"type": "regular", "is_animated": False, "is_video": False}
        extra = None if text else {"sticker": sticker}
        await api.push(
            message=api.message(chat_id=flooder, user_id=flooder, text=text, extra=extra)
        )
    started = time.perf_counter()
    await api.send_message(chat_id=shopper, user_id=shopper, photo=PHOTO.read_bytes())
    await _replies_to(api, shopper, 2)
    album_s = time.perf_counter() - started
    await asyncio.sleep(1.0)
    return (
        f"| 300 /start + 100 stickers from one chat | {len(_sent_to(api, flooder))} replies to it "
        f"(the budget, then 'slow down' once); another shopper's album in {album_s:.2f} s |"
    )


async def _undeclared_size(api: FakeBotApi, chat: int, limit: int) -> str:
    file_id = api.add_streamed_file(64 * 1024 * 1024)
    message = api.message(chat_id=chat, user_id=chat, document=b"-")
    message["document"] = {"file_id": file_id, "file_unique_id": file_id + "u"}
    await api.push(message=message)
    await _replies_to(api, chat, 1)
    read_mb = api.bytes_served[file_id] / 1e6
    return (
        f"| 64 MB photo whose size Telegram does not declare | refused after {read_mb:.1f} MB "
        f"were sent (limit {limit / 1e6:.0f} MB) |"
    )


async def _huge_pngs(api: FakeBotApi, first_chat: int, count: int) -> str:
    huge = huge_transparent_png()
    base = _peak_reset()
    chats = range(first_chat, first_chat + count)
    for chat in chats:
        await api.send_message(chat_id=chat, user_id=chat, document=huge, mime_type="image/png")
    for chat in chats:
        await _replies_to(api, chat, 2)
    growth = _status_mib("VmHWM") - base
    return (
        f"| {count} x {len(huge) // 1000} KB PNG of 6300 x 6300 RGBA at once | answered with "
        f"albums; peak memory +{growth:.0f} MiB |"
    )


async def forged_and_flooding(engine: Engine, huge_pngs: int = 4) -> list[str]:
    """`huge_pngs`: how many 6300 x 6300 PNGs arrive at once (each takes seconds to decode)."""
    api = FakeBotApi()
    await api.start()
    settings = engine.settings.with_overrides(
        telegram={"base_url": api.base_url, "base_file_url": api.base_file_url},
        limits={"searches_per_minute": 1000},
    )
    bot = TelegramBot(engine, settings, api.token)
    await bot.start()
    try:
        return [
            await _forged_pages(api, 40_001),
            await _flood(api, 40_002, 40_003),
            await _undeclared_size(api, 40_004, bot.download_limit),
            await _huge_pngs(api, 40_010, huge_pngs),
        ]
    finally:
        await bot.stop()
        await api.stop()
