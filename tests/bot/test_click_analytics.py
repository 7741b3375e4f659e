"""Click analytics end to end, on SQLite and on a real PostgreSQL server: the real
python-telegram-bot client against the fake Bot API, the real engine, the bot's real HTTP
server on loopback. A shopper's album carries /go/ links; following one records the click
and redirects to the UTM-tagged shop page; anything forged gets a 404; the report and
/stats show the click at its rank."""

from __future__ import annotations

import csv
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from sqlalchemy import text

from bot.analytics import Analytics, AnalyticsConfigError
from bot.click_links import ClickToken, LinkSigner
from bot.http_server import HealthServer
from bot.metrics import Metrics
from bot.redirect import ClickRedirect, served_products
from bot.telegram_bot import TelegramBot
from engine.types import Product
from tests.fakes.analytics_report import last_hour_report
from tests.fakes.demo import DEMO_CATALOG, photo
from tests.fakes.telegram_api import FakeBotApi, bot_settings, free_port, keyboard_of, titles

SECRET = "test-link-secret-0123456789abcdef"
ADMIN = 4242


@dataclass
class Shop:
    bot: TelegramBot
    analytics: Analytics
    metrics: Metrics
    base: str


@pytest.fixture
async def shop(engine, settings, api: FakeBotApi, state_url: str) -> AsyncIterator[Shop]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    configured = bot_settings(settings, api).with_overrides(
        links={"redirect_base_url": base},
        state={"url": state_url},
        http={"host": "127.0.0.1", "port": port},
    )
    analytics = await Analytics.open(configured, SECRET)
    bot = TelegramBot(engine, configured, api.token)
    metrics = Metrics(engine)
    bot.metrics = metrics
    bot.use_analytics(analytics)
    routes = ClickRedirect(served_products(engine), analytics, metrics).routes()
    server = HealthServer.configured(engine, metrics, [bot], configured.http, routes)
    assert server is not None
    await server.start()
    await bot.start()
    yield Shop(bot, analytics, metrics, base)
    await bot.stop()
    await server.stop()
    await analytics.close()


def product_titled(title: str) -> Product:
    with DEMO_CATALOG.open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["title"] == title)
    return Product(row["product_id"], title, row["url"], row["image"], category=row["category"])


def album_links(album) -> list[str]:
    return [re.search(r'href="([^"]+)"', m["caption"]).group(1) for m in album.params["media"]]


async def test_a_click_is_recorded_and_lands_on_the_tagged_shop_page(
    shop: Shop, api: FakeBotApi
) -> None:
    await api.send_message(photo=photo(), user_id=ADMIN, chat_id=ADMIN)
    album = (await api.wait_for("sendMediaGroup"))[0]
    links = album_links(album)
    assert len(links) == 6 and all(link.startswith(f"{shop.base}/go/") for link in links)
    keyboard = (await api.wait_for("sendMessage"))[0]
    buttons = [row[0]["url"] for row in keyboard_of(keyboard) if "url" in row[0]]
    assert [urlsplit(b).path.startswith("/go/") for b in buttons] == [True] * 6

    second = product_titled(titles(album)[1])
    async with aiohttp.ClientSession() as http:
        response = await http.get(links[1], allow_redirects=False)
        assert response.status == 302
        target = urlsplit(response.headers["Location"])
        assert target._replace(query="").geturl() == second.url
        tags = parse_qs(target.query)
        assert tags == {
            "utm_source": ["telegram"],
            "utm_medium": ["chatbot"],
            "utm_campaign": ["fashionbot"],
        }
        assert response.headers["Cache-Control"] == "private, no-store"

        token = links[1].rsplit("/", 1)[1]
        altered = token[:-1] + ("A" if token[-1] != "A" else "B")
        other_key = LinkSigner("another-secret-0123456789").sign(
            ClickToken(second.product_id, 1, 1, "telegram", int(time.time()))
        )
        expired = LinkSigner(SECRET).sign(
            ClickToken(second.product_id, 1, 1, "telegram", int(time.time()) - 31 * 86_400)
        )
        unknown = LinkSigner(SECRET).sign(
            ClickToken("NOT-IN-CATALOG", 1, 1, "telegram", int(time.time()))
        )
        for forged in (altered, other_key, expired, unknown, "x", "A" * 300):
            refused = await http.get(f"{shop.base}/go/{forged}", allow_redirects=False)
            assert refused.status == 404 and "Location" not in refused.headers, forged
        metrics_page = await (await http.get(f"{shop.base}/metrics")).text()
    assert 'fashionbot_clicks_total{platform="telegram",rank="2"} 1.0' in metrics_page

    report = await last_hour_report(shop.analytics)
    assert report.searches == 1 and report.by_kind["photo"].searches == 1
    assert report.clicks == 1 and report.clicks_by_rank == {2: 1}
    assert report.ctr_at(2) == 1.0 and report.ctr_at(1) == 0.0
    assert report.top_products == [(second.product_id, 1)]
    assert report.top_categories == [(second.category, 1)]
    async with shop.analytics.store.engine.connect() as connection:
        hashes = (await connection.execute(text("SELECT user_hash FROM searches"))).scalars()
        stored = list(hashes)
    assert len(stored) == 1 and str(ADMIN) not in stored[0]  # a keyed hash, not the id

    await api.send_message(text="/stats", user_id=ADMIN, chat_id=ADMIN)
    stats = (await api.wait_for("sendMessage", 2))[1]
    assert (
        "Last 24 hours: 1 searches, 1 clicks; 100% of searches led to a click"
        in (stats.params["text"])
    )


async def test_a_failing_database_never_costs_the_shopper_the_answer(
    shop: Shop, api: FakeBotApi, caplog
) -> None:
    assert shop.analytics.store is not None and shop.analytics.writer is not None
    async with shop.analytics.store.engine.begin() as connection:
        await connection.execute(text("DROP TABLE shown_results"))
    writer = shop.analytics.writer
    with caplog.at_level(logging.WARNING):
        await api.send_message(photo=photo())
        album = (await api.wait_for("sendMediaGroup"))[0]
        await writer.flush()
        await api.wait_until(lambda: writer.dropped == 1)
    assert all("/go/" in link for link in album_links(album))
    assert "1 searches and 0 clicks not recorded" in caplog.text


async def test_click_links_need_a_secret(settings) -> None:
    configured = settings.with_overrides(links={"redirect_base_url": "https://bot.example"})
    with pytest.raises(AnalyticsConfigError, match="FASHIONBOT_LINK_SECRET"):
        await Analytics.open(configured, "")


async def test_an_unreachable_database_leaves_the_bot_serving(settings, caplog) -> None:
    configured = settings.with_overrides(state={"url": "postgresql://nobody@127.0.0.1:1/none"})
    with caplog.at_level(logging.ERROR):
        analytics = await Analytics.open(configured, SECRET)
    assert analytics.store is None and analytics.writer is None
    assert "analytics off" in caplog.text and await analytics.last_day() is None
    await analytics.close()
