"""Click analytics figures for docs/analytics.md, on SQLite (the default state store):

1. What recording adds to a search: simulated searches (each awaits 2 ms of "model" time,
   then records its page of 10 results and makes its 10 signed /go/ links) arrive at a
   steady rate while the writer flushes in the background, side by side with the same
   searches without analytics (direct UTM links, nothing recorded), in alternating rounds.
2. How many clicks the redirect answers per second: the real aiohttp handler
   (bot/redirect.py, token check, catalog lookup, queued click, Prometheus counter) on
   loopback, driven by a real HTTP client (aiohttp, keep-alive) in another process, beside
   a trivial endpoint on the same server and client as the reference.

    python -m bench.analytics [--searches 4000] [--clicks 20000] [--out docs/analytics.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from aiohttp import web
from sqlalchemy import func, select

from bot.analytics import Analytics, ClickTracking
from bot.click_links import ClickToken, LinkSigner
from bot.metrics import Metrics
from bot.redirect import ClickRedirect, served_products
from bot.settings import BotSettings, LinkSettings, load_bot_settings
from engine.catalog import Catalog, CatalogWriter
from engine.config import DEFAULT_CONFIG_PATH
from engine.search import Engine
from engine.state.analytics import AnalyticsWriter
from engine.state.schema import clicks, searches, shown_results
from engine.state.store import StateStore
from engine.types import Hit, Product, SearchPage

SECRET = "bench-link-secret-0123456789abcdef"
BASE = "https://bot.example.com"
MODEL_S = 0.002  # the awaited part of a search (the engine's work, elsewhere)
RESULTS = 10


def products(count: int) -> list[Product]:
    return [
        Product(
            f"SKU-{n:06d}",
            f"Product {n}",
            f"https://shop.example.com/products/sku-{n:06d}?colour=blue",
            f"images/{n}.jpg",
            19.99,
            "EUR",
            ("dress", "shoes", "bag", "shirt")[n % 4],
        )
        for n in range(count)
    ]


def page_of(items: list[Product], start: int) -> SearchPage:
    hits = [
        Hit(items[(start + i) % len(items)], 0.9 - i / 100, f"images/{i}.jpg")
        for i in range(RESULTS)
    ]
    return SearchPage(hits, 0, True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def timed_searches(
    tracking: ClickTracking, items: list[Product], count: int, rate: float
) -> list[float]:
    durations: list[float] = []

    async def search(n: int) -> None:
        started = time.perf_counter()
        await asyncio.sleep(MODEL_S)
        page = page_of(items, n)
        tracking.links(page, tracking.record("photo", 10_000 + n, page))
        durations.append(time.perf_counter() - started)

    tasks = []
    for n in range(count):
        tasks.append(asyncio.create_task(search(n)))
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return durations


async def count_rows(store: StateStore, table: Any) -> int:
    async with store.engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def recording_overhead(folder: Path, total: int, rate: float) -> dict[str, Any]:
    store = await StateStore.open(f"sqlite:///{folder / 'record.sqlite'}", folder)
    writer = AnalyticsWriter(store, retention_days=90)
    await writer.start()
    signer = LinkSigner(SECRET)
    items = products(1000)
    plain = ClickTracking("telegram", LinkSettings())
    recording = ClickTracking(
        "telegram", LinkSettings(redirect_base_url=BASE), signer=signer, writer=writer
    )
    # the recording call alone, call by call: its CPU time (what it costs, whatever else
    # the machine runs) and its wall time
    calls, calls_cpu = [], []
    for n in range(2000):
        page = page_of(items, n)
        started, started_cpu = time.perf_counter(), time.thread_time()
        recording.links(page, recording.record("photo", n, page))
        calls_cpu.append(time.thread_time() - started_cpu)
        calls.append(time.perf_counter() - started)
    without: list[float] = []
    with_recording: list[float] = []
    rounds = 16
    for _ in range(rounds):  # alternating, so that machine noise hits both alike
        without += await timed_searches(plain, items, total // rounds, rate)
        with_recording += await timed_searches(recording, items, total // rounds, rate)
    await writer.stop()
    written = await count_rows(store, searches)
    shown = await count_rows(store, shown_results)
    await store.close()
    ms = 1000.0
    return {
        "searches": len(with_recording),
        "rate": rate,
        "call_p50_ms": statistics.median(calls) * ms,
        "call_p99_ms": percentile(calls, 99) * ms,
        "call_cpu_p50_ms": statistics.median(calls_cpu) * ms,
        "call_cpu_p99_ms": percentile(calls_cpu, 99) * ms,
        "without_p50_ms": statistics.median(without) * ms,
        "without_p99_ms": percentile(without, 99) * ms,
        "with_p50_ms": statistics.median(with_recording) * ms,
        "with_p99_ms": percentile(with_recording, 99) * ms,
        "added_p99_ms": (percentile(with_recording, 99) - percentile(without, 99)) * ms,
        "rows_expected": len(with_recording) + len(calls),
        "rows_written": written,
        "results_written": shown,
        "dropped": writer.dropped,
    }


CLIENT = """
import asyncio, json, sys, time, aiohttp
urls = json.load(open(sys.argv[1])); concurrency = int(sys.argv[2]); warm_up = sys.argv[3]
async def main():
    statuses = {}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        queue = iter(urls)
        async def worker():
            for url in queue:
                async with http.get(url, allow_redirects=False) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
        for _ in range(concurrency):  # connections open before timing
            async with http.get(warm_up) as response:
                await response.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    print(json.dumps({"seconds": elapsed, "statuses": statuses}))
asyncio.run(main())
"""


async def drive(
    urls: list[str], warm_up: str, folder: Path, concurrency: int, name: str
) -> dict[str, Any]:
    url_file = folder / f"{name}.json"
    url_file.write_text(json.dumps(urls))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(url_file),
        str(concurrency),
        warm_up,
        stdout=subprocess.PIPE,
    )
    out, _ = await process.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


async def redirect_throughput(folder: Path, total: int, concurrency: int) -> dict[str, Any]:
    items = products(5000)
    catalog_path = folder / "catalog.sqlite"
    catalog_writer = CatalogWriter(catalog_path)
    catalog_writer.add_products(items)
    catalog_writer.close()
    catalog = Catalog(catalog_path)
    store = await StateStore.open(f"sqlite:///{folder / 'clicks.sqlite'}", folder)
    writer = AnalyticsWriter(store, retention_days=90)
    await writer.start()
    signer = LinkSigner(SECRET)
    settings: BotSettings = load_bot_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        links={"redirect_base_url": BASE}
    )
    analytics = Analytics(settings, store, writer, signer)
    # The metrics' engine collector is read only when /metrics is scraped, never here.
    metrics = Metrics(cast(Engine, None))
    served = cast(Engine, SimpleNamespace(index=SimpleNamespace(catalog=catalog)))
    redirect = ClickRedirect(served_products(served), analytics, metrics=metrics)

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_routes(redirect.routes())
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    now = int(time.time())
    tokens = [
        signer.sign(
            ClickToken(items[n % len(items)].product_id, n + 1, n % 10 + 1, "telegram", now)
        )
        for n in range(total)
    ]
    warm_up, rounds = f"{base}/ping", 4
    step = total // rounds
    ping_s = go_s = ping_cpu = go_cpu = 0.0
    statuses: dict[str, int] = {}
    for start in range(0, step * rounds, step):  # alternating, so noise hits both alike
        cpu = time.process_time()  # this process: the server and the writer's thread
        pings = await drive([warm_up] * step, warm_up, folder, concurrency, "ping")
        ping_cpu += time.process_time() - cpu
        chunk = [f"{base}/go/{t}" for t in tokens[start : start + step]]
        cpu = time.process_time()
        clicked = await drive(chunk, warm_up, folder, concurrency, "go")
        await writer.flush()  # the clicks' writes count against them
        go_cpu += time.process_time() - cpu
        ping_s, go_s = ping_s + pings["seconds"], go_s + clicked["seconds"]
        for status, n in clicked["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    await runner.cleanup()
    await writer.stop()
    recorded = await count_rows(store, clicks)
    await store.close()
    catalog.close()
    return {
        "clicks": step * rounds,
        "concurrency": concurrency,
        "go_per_s": step * rounds / go_s,
        "go_statuses": statuses,
        "ping_per_s": step * rounds / ping_s,
        "ratio": ping_s / go_s,
        "go_cpu_ms": go_cpu / (step * rounds) * 1000,
        "ping_cpu_ms": ping_cpu / (step * rounds) * 1000,
        "recorded": recorded,
    }


def markdown(record: dict[str, Any], redirect: dict[str, Any], load: tuple[float, ...]) -> str:
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"""# Click analytics: measured cost

`make bench-analytics` (bench/analytics.py) writes this page. Machine: {machine}; load
average {load[0]:.1f} when the run began, {load[1]:.1f} when it ended (other work shared
the machine: wall-clock figures vary from run to run with it, CPU times much less). SQLite
state store (WAL), Python {platform.python_version()}.

## Recording a search

{record["searches"]} simulated searches at {record["rate"]:.0f} per second, each awaiting
{MODEL_S * 1000:.0f} ms of engine time, then recording its page of {RESULTS} results and
making {RESULTS} signed `/go/` links, while the writer flushes batches in the background;
the same searches without analytics (direct UTM links, nothing recorded) ran in alternating
rounds beside them.

| | p50 | p99 |
| --- | ---: | ---: |
| search without analytics | {record["without_p50_ms"]:.2f} ms | {record["without_p99_ms"]:.2f} ms |
| search with recording | {record["with_p50_ms"]:.2f} ms | {record["with_p99_ms"]:.2f} ms |
| **added by recording** | | **{record["added_p99_ms"]:+.2f} ms** |
| the recording call alone (queue + 10 links), wall | {record["call_p50_ms"]:.3f} ms | {record["call_p99_ms"]:.3f} ms |
| the recording call alone, CPU time of its thread | {record["call_cpu_p50_ms"]:.3f} ms | {record["call_cpu_p99_ms"]:.3f} ms |

Rows written: {record["rows_written"]} of {record["rows_expected"]} searches queued
({record["results_written"]} results shown), {record["dropped"]} dropped. The target is at
most 2 ms added at p99.

## Following a click link

{redirect["clicks"]} different signed tokens, {redirect["concurrency"]} keep-alive
connections from an aiohttp client in another process, loopback, in 4 rounds alternating
with the reference endpoint. Each click: the token
checked (HMAC), the product looked up in the catalog (SQLite), the click queued for the
writer, the Prometheus counter raised, a 302 to the UTM-tagged shop URL.

| endpoint | requests/s |
| --- | ---: |
| `/go/<token>` (302) | {redirect["go_per_s"]:,.0f} |
| `/ping` (a trivial 200 on the same server, the reference) | {redirect["ping_per_s"]:,.0f} |
| ratio | {redirect["ratio"]:.2f} |

The server's CPU time per request (the bench process: the aiohttp server and the
writer's thread, clicks written included), which the other work on the machine does not
inflate: `/go/` {redirect["go_cpu_ms"]:.3f} ms, `/ping` {redirect["ping_cpu_ms"]:.3f} ms, so
one core answers up to {1000 / redirect["go_cpu_ms"]:,.0f} clicks/s.

Answers: {redirect["go_statuses"]}; clicks in the database afterwards:
{redirect["recorded"]} of {redirect["clicks"]}. The target is at least 1,000 clicks/s.
"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        record = await recording_overhead(Path(folder), args.searches, args.rate)
        redirect = await redirect_throughput(Path(folder), args.clicks, args.concurrency)
    return {"record": record, "redirect": redirect, "load": (load, os.getloadavg()[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--searches", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=200.0, help="searches per second")
    parser.add_argument("--clicks", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default="docs/analytics.md")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    print(json.dumps(figures, indent=2))
    page = markdown(figures["record"], figures["redirect"], figures["load"])
    Path(args.out).write_text(page, encoding="utf-8")


if __name__ == "__main__":
    main()
