"""Click analytics on Discord: the real discord.py client against the fake Discord, the
bot's real HTTP server on loopback, the state store on SQLite and PostgreSQL. A gallery's
shop buttons are signed /go/ links; following one records a Discord click at its rank and
lands on the shop page tagged utm_source=discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from bot.analytics import Analytics
from bot.http_server import HealthServer
from bot.metrics import Metrics
from bot.redirect import ClickRedirect, served_products
from tests.fakes.analytics_report import last_hour_report
from tests.fakes.demo import photo
from tests.fakes.discord_api import FakeDiscord, followup, gallery_titles, start_bot, walk
from tests.fakes.telegram_api import free_port

SECRET = "test-link-secret-0123456789abcdef"


@dataclass
class DiscordShop:
    analytics: Analytics
    base: str


@pytest.fixture
async def shop(engine, settings, fake_discord, state_url: str) -> AsyncIterator[DiscordShop]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    configured = settings.with_overrides(
        links={"redirect_base_url": base},
        state={"url": state_url},
        http={"host": "127.0.0.1", "port": port},
    )
    analytics = await Analytics.open(configured, SECRET)
    metrics = Metrics(engine)

    def prepare(bot) -> None:
        bot.metrics = metrics
        bot.use_analytics(analytics)

    bot = await start_bot(engine, configured, prepare=prepare)
    routes = ClickRedirect(served_products(engine), analytics, metrics).routes()
    server = HealthServer.configured(engine, metrics, [bot], configured.http, routes)
    assert server is not None
    await server.start()
    yield DiscordShop(analytics, base)
    await server.stop()
    await bot.stop()
    await analytics.close()


async def test_a_gallery_link_is_a_tracked_discord_click(
    shop: DiscordShop, fake_discord: FakeDiscord
) -> None:
    await fake_discord.interact(fake_discord.similar(photo("dress-1.jpg")))
    reply = await followup(fake_discord)
    components = walk(reply.payload["components"])
    links = [c["url"] for c in components if c["type"] == 2 and c.get("style") == 5]
    assert len(links) == 6 and all(link.startswith(f"{shop.base}/go/") for link in links)
    assert len(gallery_titles(reply)) == 6

    async with aiohttp.ClientSession() as http:
        response = await http.get(links[2], allow_redirects=False)
        assert response.status == 302
        tags = parse_qs(urlsplit(response.headers["Location"]).query)
        assert tags["utm_source"] == ["discord"]
        metrics_page = await (await http.get(f"{shop.base}/metrics")).text()
    assert 'fashionbot_clicks_total{platform="discord",rank="3"} 1.0' in metrics_page

    report = await last_hour_report(shop.analytics)
    assert report.searches == 1 and report.clicks == 1 and report.clicks_by_rank == {3: 1}
