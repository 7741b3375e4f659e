"""The bot's own time: a shopper's photo through the real Telegram bot, beside the bare model.

    HF_HUB_OFFLINE=1 python -m bench.album_latency [--rounds 12] [--architectures ViT-B-32]

(section `album` of `python -m bench.perf`). Per architecture: random weights wrapped as
production wraps them, the demo catalog indexed with that model, the engine and the bot
with config.toml's settings (the garment finder, analytics in a scratch SQLite file), and
python-telegram-bot polling the fake Bot API on loopback in the same process. Each round,
in rotating order:
- bare: fp32 `encode_image` at batch 1 on a thread of its own, the reference of the ratios;
- engine: `Engine.search(image=photo)`, the whole-photo search alone;
- flow: the shared chat flow's answer without a chat (`SearchFlow.run`: the garment finder's
  pass, then the search, the results recorded);
- album: the fake API queues the shopper's photo message, and the clock runs until the
  bot's sendMediaGroup request arrives. The fake stamps each request as it arrives
  (getFile, the photo's download), which splits the album's time into "before the flow"
  (update to download) and "after" (the rest, the flow included). An album this quick
  sends no chat action (`telegram.chat_action_after_ms`).
The first album of a run uploads the product photos; later ones send the file ids the API
returned (the bot caches them), as a running bot does for the products it has shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.look_latency import unlimited_flow
from bench.reference import SERVED_PRECISION, bare_forward, random_embedder
from bot.flow import Inputs, SearchRequest
from bot.settings import BotSettings, load_bot_settings
from bot.telegram_bot import TelegramBot
from engine.config import DEFAULT_CONFIG_PATH
from engine.embedder import Embedder, model_identity
from engine.index import open_index
from engine.search import Engine
from tests.fakes.demo import index_demo_catalog
from tests.fakes.telegram_api import Call, FakeBotApi, bot_settings

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "data" / "demo" / "shopper" / "dress.jpg"
FIRST_CHAT = 700_000


def product_settings(scratch: Path, **overrides: Any) -> BotSettings:
    """config.toml's settings, with the index and the state store in `scratch`."""
    base = load_bot_settings(DEFAULT_CONFIG_PATH, environ={})
    return base.with_overrides(
        index={"dir": str(scratch / "index")},
        search={"query_store": ""},
        state={"url": f"sqlite:///{scratch / 'state.sqlite'}"},
    ).with_overrides(**overrides)


async def album_stamps(api: FakeBotApi, chat: int, photo: bytes) -> dict[str, float]:
    """One shopper's photo until the album request arrives: ms from the update to each
    request the bot made for this chat."""
    message = api.message(chat_id=chat, user_id=chat, photo=photo)
    file_id = message["photo"][-1]["file_id"]
    queued = time.perf_counter()
    await api.push(message=message)
    (album,) = await api.wait_for("sendMediaGroup", chat_id=chat, timeout=120)

    def first(method: str) -> Call:
        return next(c for c in api.calls if c.method == method and c.at >= queued)

    downloaded = next(at for fid, at in api.downloads if fid == file_id)
    return {
        "album_ms": (album.at - queued) * 1000,
        "get_file_ms": (first("getFile").at - queued) * 1000,
        "download_ms": (downloaded - queued) * 1000,
    }


def rotated(jobs: list[tuple[str, Callable[[], Awaitable[Any]]]], turn: int) -> list[Any]:
    shift = turn % len(jobs)
    return jobs[shift:] + jobs[:shift]


async def measure_one(
    reference: Embedder, engine: Engine, settings: BotSettings, rounds: int
) -> dict[str, Any]:
    photo = PHOTO.read_bytes()
    bare = bare_forward(reference, photo)
    flow = unlimited_flow(engine, settings)

    async def read() -> Inputs:
        return Inputs([photo])

    album_size = settings.telegram.album_size
    api = FakeBotApi()
    await api.start()
    bot = TelegramBot(engine, bot_settings(settings, api), api.token)
    await bot.start()
    samples: dict[str, list[float]] = {}
    chats = iter(range(FIRST_CHAT, FIRST_CHAT + 10 * rounds + 10))
    try:
        bare()
        await engine.warm_up()  # as `python -m bot` does before it serves
        first_album = await album_stamps(api, next(chats), photo)  # uploads the photos
        await album_stamps(api, next(chats), photo)  # warm: the file ids cached

        async def bare_job() -> None:
            await asyncio.get_running_loop().run_in_executor(None, bare)

        async def album_job() -> None:
            for name, value in (await album_stamps(api, next(chats), photo)).items():
                samples.setdefault(name, []).append(value)

        jobs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("bare_ms", bare_job),
            ("engine_ms", lambda: engine.search(image=photo, k=album_size)),
            (
                "flow_ms",
                lambda: flow.run(SearchRequest(None, read, k=album_size), contextlib.nullcontext),
            ),
            ("album", album_job),
        ]
        for turn in range(rounds):
            for name, job in rotated(jobs, turn):
                started = time.perf_counter()
                await job()
                if name != "album":
                    samples.setdefault(name, []).append((time.perf_counter() - started) * 1000)
    finally:
        await bot.stop()
        await api.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        **medians,
        "first_album_ms": first_album["album_ms"],
        "ratio": medians["album_ms"] / medians["bare_ms"],
        # The bare fp32 pass on two threads is this machine's noisiest figure (medians of
        # 12 passes in one process ranged 95-197 ms): the fastest rounds' ratio beside it.
        "fastest_ratio": min(samples["album_ms"]) / min(samples["bare_ms"]),
        "bot_own_ms": medians["album_ms"] - medians["flow_ms"],
        "after_download_ms": medians["album_ms"] - medians["download_ms"],
    }


def measure(architectures: list[str], rounds: int, **overrides: Any) -> list[dict[str, Any]]:
    """One row per architecture; `overrides` change settings sections (smoke tests)."""
    results = []
    for architecture in architectures:
        reference = random_embedder(architecture)
        embedder = reference.in_precision(SERVED_PRECISION)
        with tempfile.TemporaryDirectory() as scratch_name:
            scratch = Path(scratch_name)
            settings = product_settings(scratch, **overrides)
            index_dir = scratch / "index"
            index_dir.mkdir()
            index_demo_catalog(settings, index_dir, embedder)
            engine = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
            try:
                row = asyncio.run(measure_one(reference, engine, settings, rounds))
            finally:
                engine.close()
        results.append(
            {"architecture": architecture, "precision": SERVED_PRECISION, "rounds": rounds, **row}
        )
    return results


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| architecture | bare model | engine search | chat flow | album | album / bare "
        "| fastest album / fastest bare | update -> getFile | -> download | download -> album "
        "| first album (uploads) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [f"{row[key]:.0f} ms" for key in ("bare_ms", "engine_ms", "flow_ms", "album_ms")]
        cells.append(f"**{row['ratio']:.2f}x**")
        cells.append(f"{row['fastest_ratio']:.2f}x")
        cells += [
            f"{row[key]:.1f} ms" for key in ("get_file_ms", "download_ms", "after_download_ms")
        ]
        cells.append(f"{row['first_album_ms']:.0f} ms")
        lines.append(f"| {row['architecture']} ({row['precision']}) | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--architectures", default="ViT-B-32,ViT-B-16")
    args = parser.parse_args()
    rows = measure(args.architectures.split(","), args.rounds)
    print("\n".join(report(rows)))


if __name__ == "__main__":
    main()
