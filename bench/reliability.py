"""Reliability figures for docs/reliability.md: hostile files, 200 shoppers at once, and
Bot API faults, all through the real Telegram client against the fake Bot API on
loopback. The model is the tiny random one: what is measured here is the plumbing
(every update answered once, bounded queue, memory), not retrieval quality.

    python -m bench.reliability [--users 200] [--out docs/reliability.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.hostile_bots import forged_and_flooding
from bench.hostile_catalog import hostile_catalog
from bot.settings import load_bot_settings
from bot.telegram_bot import TelegramBot
from engine.config import DEFAULT_CONFIG_PATH
from engine.devmodel import write_tiny_model
from engine.embedder import load_embedder, model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from tests.fakes.demo import DEMO_CATALOG, DEMO_IMAGES, photo
from tests.fakes.hostile_images import awkward_but_valid, broken_files
from tests.fakes.load import run_load
from tests.fakes.telegram_api import DROP_CONNECTION, HANG, Call, FakeBotApi, bot_settings

ROOT = Path(__file__).resolve().parent.parent


def memory_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


async def bot_for(engine: Engine, api: FakeBotApi, **telegram) -> TelegramBot:
    bot = TelegramBot(engine, bot_settings(engine.settings, api, **telegram), api.token)
    await bot.start()
    return bot


async def hostile(engine: Engine, settle_s: float = 1.0) -> list[str]:
    api = FakeBotApi()
    await api.start()
    bot = await bot_for(engine, api)
    corpus = broken_files()
    valid = awkward_but_valid()
    peak_before = memory_kib("VmHWM")
    for n, (data, _) in enumerate(corpus.values()):
        await api.send_message(chat_id=10_000 + n, user_id=10_000 + n, document=data)
    for n, data in enumerate(valid.values()):
        await api.send_message(chat_id=20_000 + n, user_id=20_000 + n, document=data)
    await api.wait_for("sendMessage", len(corpus) + len(valid), timeout=300)
    await asyncio.sleep(settle_s)
    peak_after = memory_kib("VmHWM")
    replies = {
        int(c.params["chat_id"]) for c in api.sent("sendMessage") if "reply_markup" not in c.params
    }
    albums = {int(c.params["chat_id"]) for c in api.sent("sendMediaGroup")}
    broken_chats = set(range(10_000, 10_000 + len(corpus)))
    await bot.stop()
    await api.stop()
    return [
        f"| broken or hostile files sent | {len(corpus)} kinds |",
        f"| ... answered with a clear message | {len(replies & broken_chats)} |",
        f"| awkward but valid files (CMYK, 16-bit, 1,000-frame GIF, ...) answered with an album | "
        f"{len(albums & set(range(20_000, 20_000 + len(valid))))} of {len(valid)} |",
        f"| peak resident memory before / after (incl. a 30,000 x 30,000 PNG bomb) | "
        f"{peak_before / 1024:.0f} MiB / {peak_after / 1024:.0f} MiB |",
    ]


async def load(engine: Engine, users: int, settle_s: float = 2.0) -> list[str]:
    api = FakeBotApi()
    await api.start()
    bot = await bot_for(engine, api)
    photos = [p.read_bytes() for p in sorted(DEMO_IMAGES.glob("*.jpg"))]
    rss_before = memory_kib("VmRSS")
    deepest = 0

    async def sample() -> None:
        nonlocal deepest
        while True:
            deepest = max(deepest, engine.batcher.queue_depth)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    result = await run_load(api, photos, users=users, until_quiet=bot.stop)
    sampler.cancel()
    await asyncio.sleep(settle_s)  # memory after the load, once the freed buffers settled
    rss_after = memory_kib("VmRSS")
    await api.stop()
    outcomes = ", ".join(f"{kind}: {count}" for kind, count in sorted(result.outcomes.items()))
    exactly = "yes" if result.exactly_once else "NO"
    p50, p99 = result.percentile_ms(50), result.percentile_ms(99)
    bound = engine.settings.model.max_queue
    return [
        f"| simultaneous shoppers | {users} |",
        f"| every update answered exactly once | {exactly} ({outcomes}) |",
        f"| deepest model queue (bound: model.max_queue = {bound}) | {deepest} |",
        f"| answers per second | {users / result.seconds:.1f} |",
        f"| latency to answer, p50 / p99 | {p50:.0f} ms / {p99:.0f} ms |",
        f"| resident memory before / after | {rss_before >> 10} / {rss_after >> 10} MiB |",
        "",
        "Answers per second are bounded by python-telegram-bot's AIORateLimiter, which holds",
        "the bot to Telegram's limit of about 30 messages per second across all chats, not by",
        "the model: the model queue stays short.",
    ]


async def faults(engine: Engine, settle_s: float = 1.5) -> list[str]:
    """`settle_s`: how long after each answer late deliveries are still counted."""
    api = FakeBotApi()
    await api.start()
    bot = await bot_for(engine, api, request_timeout_s=1.0)
    injected = [
        ("sendMediaGroup", 500, "Internal Server Error", {}),
        ("sendMediaGroup", 429, "Too Many Requests: retry after 1", {"retry_after": 1}),
        ("sendMediaGroup", DROP_CONNECTION, "dropped", {}),
        ("sendMessage", HANG, "no answer", {"hang_s": 2.0}),
        ("sendMediaGroup", 400, "Bad Request: wrong file identifier", {}),
    ]
    rows = []
    for n, (method, status, description, extra) in enumerate(injected):
        chat = 30_000 + n
        api.fail(
            method,
            status,
            description,
            matches=lambda call, chat=chat: call.params.get("chat_id") == chat,
            **extra,
        )
        started = time.perf_counter()
        await api.send_message(chat_id=chat, user_id=chat, photo=photo("dress-1.jpg"))
        while not [c for c in api.sent("sendMessage") if c.params.get("chat_id") == chat]:
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle_s)

        def to_chat(*methods: str, chat: int = chat) -> list[Call]:
            return [c for c in api.sent(*methods) if c.params.get("chat_id") == chat]

        delivered = to_chat("sendMediaGroup", "sendPhoto")
        photos = sum(len(c.params.get("media", [None])) for c in delivered)
        # One answer: one message after the photos (the results keyboard, or an apology)
        # and at most one album; a retried request that had gone through shows as two.
        messages, albums = len(to_chat("sendMessage")), len(to_chat("sendMediaGroup"))
        once = "answered once" if messages == 1 and albums <= 1 else "ANSWERED MORE THAN ONCE"
        kind = {0: "connection dropped", -1: f"no answer for {extra.get('hang_s')} s"}.get(
            status, f"HTTP {status}"
        )
        rows.append(
            f"| {method}: {kind} | {once} ({albums} albums, {messages} messages), {photos} "
            f"product photos delivered, {time.perf_counter() - started - settle_s:.1f} s |"
        )
    await bot.stop()
    await api.stop()
    return rows


async def main(users: int, out: Path, huge_pngs: int = 4, settle_s: float | None = None) -> None:
    """`huge_pngs`: see `forged_and_flooding`; `settle_s`: every section's wait before it
    reads memory or counts late deliveries (None: each section's own). The smoke test
    makes both small: it checks that the report is produced, not the figures."""
    settle = {} if settle_s is None else {"settle_s": settle_s}
    with tempfile.TemporaryDirectory() as scratch:
        config, checkpoint = write_tiny_model(Path(scratch) / "model")
        settings = load_bot_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
            model={"name": str(config), "pretrained": str(checkpoint)},
            index={"dir": str(Path(scratch) / "index")},
            search={"query_store": ""},
        )
        embedder = load_embedder(settings.model)
        index_dir = Path(scratch) / "index"
        await build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False)
        engine = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
        try:
            sections = {
                "Hostile input": await hostile(engine, **settle),
                f"Load: {users} shoppers at once": await load(engine, users, **settle),
                "Bot API faults (each injected once, for one shopper)": await faults(
                    engine, **settle
                ),
                "Forged pages, floods, undeclared sizes, huge pictures": await forged_and_flooding(
                    engine, huge_pngs
                ),
                "A hostile catalog (index_builder.py build, each row's skip reason)": (
                    await hostile_catalog(settings, embedder)
                ),
            }
        finally:
            engine.close()
    lines = [
        "# Reliability",
        "",
        "Produced by `python -m bench.reliability` (`make reliability`); do not edit by hand.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}. Model: the tiny random-init test model (this",
        "measures the plumbing, not retrieval quality); the real Telegram client",
        "(python-telegram-bot) against a fake Bot API on loopback.",
        "",
    ]
    for title, rows in sections.items():
        lines += [f"## {title}", "", "| what | result |", "| --- | --- |", *rows, ""]
    lines += [
        "## What is logged",
        "",
        "Update ids, chat ids, user ids of refused admin commands, error types with tracebacks,",
        "timings. Never photo bytes, never message text or captions, never bot tokens (masked",
        "in every record by `bot.logs.SecretRedactor`, tracebacks included). User photos are",
        "processed in memory and never written to disk.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    asyncio.run(main(args.users, args.out))
