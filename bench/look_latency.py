"""Shop the look: what the garment finder adds to the time before the first album.

    HF_HUB_OFFLINE=1 python -m bench.look_latency [--rounds 10] [--index DIR]

The demo catalog indexed with `imagenet-lite0` (in a temporary folder unless --index names
a built one); per photo, in alternating order within each round, on one torch thread:
- before: the engine call the chat flow made before the finder (`search(images=[photo])`),
- finder: `Engine.find_garments(photo)` alone (decode + the finder's pass),
- now: the chat flow's first answer (`SearchFlow.run`: the finder, then the largest
  garment's search, or the whole photo's for a product photo),
- picker: what follows the first album for a street photo (`SearchFlow.garment_picker`).
Growth = now - before, per photo from medians; the issue's bound is growth <= finder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

from bot.flow import Inputs, Results, SearchCounter, SearchFlow, SearchRequest
from bot.limits import RateLimiter
from bot.settings import BotSettings, load_bot_settings
from bot.stats import BotStats
from engine.config import DEFAULT_CONFIG_PATH
from engine.embedder import load_embedder, model_identity
from engine.index import open_index
from engine.search import Engine

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = {
    "street 0016 (6 garments)": ROOT / "tests/fixtures/street/0016.jpg",
    "street 0021 (4 garments)": ROOT / "tests/fixtures/street/0021.jpg",
    "street 0040 (5 garments)": ROOT / "tests/fixtures/street/0040.jpg",
    "product: shoes": ROOT / "data/demo/shopper/shoes.jpg",
    "product: dress": ROOT / "data/demo/shopper/dress.jpg",
}


def lite0_settings(cache: Path, index: Path, crops_per_pass: int | None = None) -> BotSettings:
    """The default configuration with the imagenet-lite0 model (and `crops_per_pass`, when
    given, instead of config.toml's `garments.crops_per_pass`)."""
    base = load_bot_settings(DEFAULT_CONFIG_PATH, environ={})
    garments = {} if crops_per_pass is None else {"crops_per_pass": crops_per_pass}
    return base.with_overrides(
        model={"name": "imagenet-lite0", "cache_dir": str(cache)},
        garments=garments,
        index={"dir": str(index)},
        search={"query_store": ""},
    )


def unlimited_flow(engine: Engine, settings: BotSettings) -> SearchFlow:
    """The chat flow as the bots run it, without a rate limit (the benches search often)."""
    return SearchFlow(engine, settings, RateLimiter(10_000), SearchCounter("bench", BotStats()))


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


async def measure(
    engine: Engine, settings: BotSettings, rounds: int
) -> dict[str, dict[str, list[float]]]:
    flow = unlimited_flow(engine, settings)
    photos = {name: path.read_bytes() for name, path in PHOTOS.items()}
    times: dict[str, dict[str, list[float]]] = {n: {} for n in photos}

    def request(data: bytes) -> SearchRequest:
        async def read() -> Inputs:
            return Inputs([data])

        return SearchRequest(None, read, k=6)

    for data in photos.values():  # warm every path once
        await engine.search(images=[data], k=6)
        await flow.run(request(data), contextlib.nullcontext)
    for round_number in range(rounds):
        for name, data in photos.items():
            jobs: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("before", lambda d=data: engine.search(images=[d], k=6)),
                ("finder", lambda d=data: engine.find_garments(d)),
                ("now", lambda d=data: flow.run(request(d), contextlib.nullcontext)),
            ]
            order = jobs[round_number % len(jobs) :] + jobs[: round_number % len(jobs)]
            for label, job in order:
                elapsed, result = await timed(job)
                times[name].setdefault(label, []).append(elapsed)
                if label == "now" and isinstance(result, Results) and result.look is not None:
                    picker = functools.partial(flow.garment_picker, result.look)
                    picked, _ = await timed(picker)
                    times[name].setdefault("picker", []).append(picked)
    return times


def report(times: dict[str, dict[str, list[float]]], rounds: int) -> str:
    lines = [
        f"Medians of {rounds} rounds, ms (imagenet-lite0, demo catalog, 1 torch thread):",
        "",
        "| photo | before | finder | now | growth (now - before) | growth / finder | picker |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, series in times.items():
        med = {label: statistics.median(values) for label, values in series.items()}
        growth = med["now"] - med["before"]
        cells = [name, *(f"{med[label]:.0f}" for label in ("before", "finder", "now"))]
        cells += [f"{growth:.0f}", f"{growth / med['finder']:.2f}"]
        cells.append(f"{med['picker']:.0f}" if "picker" in med else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--index", type=Path, help="an imagenet-lite0 index of the demo catalog")
    parser.add_argument("--cache", type=Path, help="model cache folder")
    parser.add_argument(
        "--crops-per-pass", type=int, help="garments.crops_per_pass (default: config.toml's)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or Path(scratch) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        index = args.index or Path(scratch) / "index"
        settings = lite0_settings(cache, index, args.crops_per_pass)
        embedder = load_embedder(settings.model)
        if args.index is None:
            from tests.fakes.demo import index_demo_catalog

            index.mkdir()
            index_demo_catalog(settings, index, embedder)
        engine = Engine(settings, embedder, open_index(index, model_identity(embedder)))
        try:
            times = asyncio.run(measure(engine, settings, args.rounds))
        finally:
            engine.close()
    print(report(times, args.rounds))


if __name__ == "__main__":
    main()
