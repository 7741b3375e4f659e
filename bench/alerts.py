"""Price-drop alerts at scale, for docs/alerts.md:

1. Finding the alerts of a new build: 100,000 saved products of 20,000 shoppers (5 each,
   out of a 30,000-product catalog); the new build's catalog has 10% of the products
   20% cheaper and 2% back in stock. Timed: reading which products are saved, their new
   prices from the build's catalog, and the set-based comparison that writes the outbox
   (engine/state/alerts.py), on SQLite, and on PostgreSQL where its binaries are installed.
2. Photo answers while alerts go out: the real python-telegram-bot client against the
   fake Bot API, the tiny test model; shoppers' photos one after another, in alternating
   rounds with the alert sender idle and with it sending a backlog at the configured
   `alerts.messages_per_second`, side by side in one run.

    python -m bench.alerts [--shoppers 20000] [--per-shopper 5] [--out docs/alerts.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bot.alerts import AlertService
from bot.analytics import Analytics
from bot.saving import open_saving
from bot.settings import load_bot_settings
from bot.telegram_bot import TelegramBot
from engine.catalog import Catalog, CatalogWriter
from engine.config import DEFAULT_CONFIG_PATH
from engine.devmodel import write_tiny_model
from engine.embedder import load_embedder, model_identity
from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.search import Engine
from engine.state.alerts import build_prices, find_alerts, saved_product_ids
from engine.state.saved import Shopper
from engine.state.schema import saved_products, shoppers
from engine.state.store import StateStore
from engine.types import Product
from tests.fakes.demo import DEMO_CATALOG, DEMO_IMAGES
from tests.fakes.postgres import PostgresCluster, postgres_bin_dir
from tests.fakes.telegram_api import FakeBotApi, bot_settings

CATALOG_PRODUCTS = 30_000
OLD_PRICE = 50.0
CHUNK = 5_000


def new_catalog(path: Path, seed: int) -> None:
    """The new build's catalog: 10% of the products 20% cheaper, every product in stock
    (2% were saved out of stock: back in stock)."""
    rng = random.Random(seed)
    products = []
    for n in range(CATALOG_PRODUCTS):
        price = OLD_PRICE * 0.8 if rng.random() < 0.10 else OLD_PRICE
        products.append(
            Product(f"SKU-{n:06d}", f"Product {n}", f"https://shop.example/{n}", "x.jpg", price)
        )
    writer = CatalogWriter(path)
    writer.add_products(products)
    writer.close()


async def seed(store: StateStore, shoppers_count: int, per_shopper: int, seed_: int) -> int:
    """Shoppers and what they saved, at the old price; 2% of the products saved while out
    of stock. Inserted in bulk (the benchmark times the comparison, not the saving)."""
    rng = random.Random(seed_)
    out_of_stock = {n for n in range(CATALOG_PRODUCTS) if n % 50 == 0}
    people = [
        {"id": i + 1, "platform": "telegram", "user_id": str(100_000 + i), "created_at": 0}
        for i in range(shoppers_count)
    ]
    saved = [
        {
            "shopper_id": i + 1,
            "product_id": f"SKU-{n:06d}",
            "saved_at_ms": 0,
            "price": OLD_PRICE,
            "in_stock": n not in out_of_stock,
        }
        for i in range(shoppers_count)
        for n in rng.sample(range(CATALOG_PRODUCTS), per_shopper)
    ]
    async with store.engine.begin() as connection:
        for table, rows in ((shoppers, people), (saved_products, saved)):
            for start in range(0, len(rows), CHUNK):
                await connection.execute(insert(table), rows[start : start + CHUNK])
    return len(saved)


async def finding(url: str, folder: Path, shoppers_count: int, per_shopper: int) -> dict[str, Any]:
    store = await StateStore.open(url, folder)
    try:
        saved = await seed(store, shoppers_count, per_shopper, 7)
        catalog_path = folder / f"catalog-{store.dialect}.sqlite"
        new_catalog(catalog_path, 11)
        catalog = Catalog(catalog_path)
        started = time.perf_counter()
        ids = await saved_product_ids(store)
        read_ids = time.perf_counter()
        prices = build_prices(ids, await asyncio.to_thread(catalog.prices, ids))
        read_prices = time.perf_counter()
        queued = await find_alerts(store, "bench-build", prices, 5.0)
        done = time.perf_counter()
        catalog.close()
    finally:
        await store.close()
    return {
        "database": store.dialect,
        "saved": saved,
        "shoppers": shoppers_count,
        "distinct_products": len(ids),
        "alerts": queued,
        "read_saved_s": read_ids - started,
        "read_prices_s": read_prices - read_ids,
        "compare_and_queue_s": done - read_prices,
        "total_s": done - started,
    }


async def photo_latency(
    folder: Path, rounds: int, photos_per_round: int, backlog: int
) -> dict[str, Any]:
    config, checkpoint = write_tiny_model(folder / "model")
    settings = load_bot_settings(DEFAULT_CONFIG_PATH, environ={}).with_overrides(
        model={"name": str(config), "pretrained": str(checkpoint)},
        index={"dir": str(folder / "index")},
        search={"query_store": ""},
        state={"url": f"sqlite:///{folder / 'state.sqlite'}"},
    )
    embedder = load_embedder(settings.model)
    await build_index(settings, DEMO_CATALOG, folder / "index", embedder, show_progress=False)
    engine = Engine(settings, embedder, open_index(folder / "index", model_identity(embedder)))
    api = FakeBotApi()
    await api.start()
    configured = bot_settings(settings, api)
    analytics = await Analytics.open(configured, "")
    assert analytics.store is not None
    saving, _ = await open_saving(engine, configured, analytics.store, None)
    catalog = engine.index.catalog
    on_sale = [p.product_id for p in catalog.products(catalog.product_ids()).values() if p.in_stock]
    assert saving is not None
    for n in range(backlog):  # each saved at a far higher price: every one an alert
        await saving.saved.save(
            Shopper("telegram", str(500_000 + n)), on_sale[n % len(on_sale)], 9_999.0, True, 10
        )
    bot = TelegramBot(engine, configured, api.token)
    bot.use_analytics(analytics)
    bot.use_saving(saving, None)
    await bot.start()
    photos = [p.read_bytes() for p in sorted(DEMO_IMAGES.glob("*.jpg"))]
    times: dict[str, list[float]] = {"idle": [], "sending": []}
    sent: dict[str, int] = {"idle": 0, "sending": 0}
    chat = 1
    try:
        for round_ in range(rounds * 2):
            mode = "sending" if round_ % 2 else "idle"
            alerts = None
            before = len(api.sent("sendPhoto"))
            if mode == "sending":
                alerts = AlertService(engine, analytics.store, configured.alerts)
                bot.alerts = alerts
                alerts.register("telegram", bot.deliver_alert)
                await alerts.start()
                await asyncio.sleep(0.5)  # the comparison is done, sending has begun
            for _ in range(photos_per_round):
                chat += 1
                albums = len(api.sent("sendMediaGroup"))
                started = time.perf_counter()
                await api.send_message(photo=photos[chat % len(photos)], chat_id=chat, user_id=chat)
                await api.wait_until(lambda n=albums: len(api.sent("sendMediaGroup")) > n, 60)
                times[mode].append((time.perf_counter() - started) * 1000)
            if alerts is not None:
                await alerts.stop()
            sent[mode] += len(api.sent("sendPhoto")) - before
    finally:
        await bot.stop()
        await analytics.close()
        await api.stop()
        engine.close()
    return {
        "rounds": rounds,
        "photos_per_mode": len(times["idle"]),
        "idle_p50_ms": statistics.median(times["idle"]),
        "sending_p50_ms": statistics.median(times["sending"]),
        "idle_p90_ms": statistics.quantiles(times["idle"], n=10)[-1],
        "sending_p90_ms": statistics.quantiles(times["sending"], n=10)[-1],
        "alerts_sent_while_measuring": sent["sending"],
        "alerts_per_second_setting": configured.alerts.messages_per_second,
    }


def markdown(found: list[dict[str, Any]], latency: dict[str, Any]) -> str:
    lines = [
        "# Alerts at scale",
        "",
        "Produced by `python -m bench.alerts` (`make bench-alerts`); do not edit by hand.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        "",
        "## Finding the alerts of a new build",
        "",
        "| database | saved products | shoppers | alerts queued | read saved ids | "
        "new prices from the catalog | compare + write outbox | total |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in found:
        lines.append(
            f"| {f['database']} | {f['saved']:,} | {f['shoppers']:,} | {f['alerts']:,} | "
            f"{f['read_saved_s']:.2f} s | {f['read_prices_s']:.2f} s | "
            f"{f['compare_and_queue_s']:.2f} s | **{f['total_s']:.2f} s** |"
        )
    lines += [
        "",
        "The comparison is set-based: the new prices are staged in one table and two",
        "INSERT ... SELECT statements write the outbox, one UPDATE moves the baselines.",
        "",
        "## Photo answers while alerts go out",
        "",
        f"Side by side in one run, {latency['rounds']} alternating rounds of each; "
        f"{latency['photos_per_mode']} photos per mode, one after another.",
        "",
        "| alert sender | photo answer p50 | p90 |",
        "| --- | --- | --- |",
        f"| idle | {latency['idle_p50_ms']:.0f} ms | {latency['idle_p90_ms']:.0f} ms |",
        f"| sending ({latency['alerts_sent_while_measuring']} alerts sent during these rounds, "
        f"limit {latency['alerts_per_second_setting']:g}/s) | "
        f"{latency['sending_p50_ms']:.0f} ms | {latency['sending_p90_ms']:.0f} ms |",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        found.append(
            await finding(
                f"sqlite:///{folder / 'alerts.sqlite'}", folder, args.shoppers, args.per_shopper
            )
        )
        bin_dir = postgres_bin_dir()
        if bin_dir is not None and not args.sqlite_only:
            cluster = PostgresCluster(bin_dir)
            cluster.start()
            try:
                found.append(
                    await finding(cluster.new_database(), folder, args.shoppers, args.per_shopper)
                )
            finally:
                cluster.stop()
        latency = await photo_latency(folder, args.rounds, args.photos, args.backlog)
    return found, latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shoppers", type=int, default=20_000)
    parser.add_argument("--per-shopper", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photos", type=int, default=8, help="photos per round")
    parser.add_argument("--backlog", type=int, default=2_000, help="alerts waiting to go out")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--out", default="docs/alerts.md")
    args = parser.parse_args()
    found, latency = asyncio.run(run(args))
    text = markdown(found, latency)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
