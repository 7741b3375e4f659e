"""Saved products on Discord (issue 18): the real discord.py client against the fake Discord,
the state store on SQLite and PostgreSQL. "♡ n" buttons under a gallery, /saved, /alerts,
/forget and /privacy as slash commands answered only to the member (ephemeral), and an
alert as a direct message; a member whose DMs are closed (403) is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from bot.alerts import AlertService
from bot.analytics import Analytics
from bot.discord_bot import DiscordBot
from bot.saving import Saving, open_saving
from engine.state.saved import SavedProducts, Shopper
from engine.state.schema import alert_outbox, saved_products, shoppers
from engine.state.store import StateStore
from tests.fakes.demo import photo
from tests.fakes.discord_api import APP_ID, BOT_USER, FakeDiscord, followup, start_bot, walk

EPHEMERAL = 1 << 6
MEMBER = "1500000000000000001"


@dataclass
class DiscordShop:
    bot: DiscordBot
    analytics: Analytics
    saving: Saving
    alerts: AlertService
    store: StateStore


@pytest.fixture
async def shop(engine, settings, fake_discord, state_url: str) -> AsyncIterator[DiscordShop]:
    configured = settings.with_overrides(
        state={"url": state_url},
        alerts={
            "messages_per_second": 1000.0,
            "per_chat_interval_s": 0.0,
            "check_interval_s": 0.05,
        },
    )
    analytics = await Analytics.open(configured, "test-link-secret-0123456789abcdef")
    assert analytics.store is not None
    saving, alerts = await open_saving(engine, configured, analytics.store, analytics.signer)
    assert saving is not None and alerts is not None
    bot = await start_bot(engine, configured, prepare=lambda b: b.use_saving(saving, alerts))
    yield DiscordShop(bot, analytics, saving, alerts, analytics.store)
    await alerts.stop()
    await bot.stop()
    await analytics.close()


async def count(store: StateStore, table, *where) -> int:
    async with store.engine.connect() as connection:
        query = select(func.count()).select_from(table).where(*where)
        return (await connection.execute(query)).scalar_one()


async def answer(fake: FakeDiscord, interaction: dict) -> dict:
    """The interaction's immediate answer (type 4): its data."""
    call = (await fake.wait_for("POST", f"/interactions/{interaction['id']}/"))[0]
    assert call.payload["type"] == 4
    return call.payload["data"]


def buttons(components: list[dict], prefix: str) -> list[dict]:
    return [c for c in walk(components) if c["type"] == 2 and c.get("label", "").startswith(prefix)]


async def test_save_list_remove_forget(shop: DiscordShop, fake_discord: FakeDiscord) -> None:
    synced = fake_discord.rest("PUT", f"/applications/{APP_ID}/commands")[0].payload
    assert {"saved", "alerts", "forget", "privacy"} <= {c["name"] for c in synced}

    await fake_discord.interact(fake_discord.similar(photo("dress-1.jpg")))
    reply = await followup(fake_discord)
    saves = buttons(reply.payload["components"], "♡")
    assert [b["label"] for b in saves] == [f"♡ {n}" for n in range(1, 7)]
    for button in (saves[0], saves[0]):  # saving twice is saving once
        pressed = await fake_discord.interact(
            fake_discord.button(button["custom_id"], reply.response)
        )
        data = await answer(fake_discord, pressed)
        assert data["flags"] & EPHEMERAL
    assert data["content"] == "Already saved ♡"
    assert await count(shop.store, saved_products) == 1

    listed = await fake_discord.interact(fake_discord.slash("saved", []))
    data = await answer(fake_discord, listed)
    assert data["flags"] & EPHEMERAL and "Your saved products (1)" in data["content"]
    assert "Floral wrap dress" in data["content"]
    buy = [c for c in walk(data["components"]) if c.get("style") == 5]
    assert len(buy) == 1 and "utm_source=discord" in buy[0]["url"]
    remove = buttons(data["components"], "✕")
    message = fake_discord.message_payload(author=BOT_USER)  # the ephemeral /saved answer
    message["components"] = data["components"]
    pressed = await fake_discord.interact(fake_discord.button(remove[0]["custom_id"], message))
    assert (await answer(fake_discord, pressed))["content"] == "Removed."
    assert await count(shop.store, saved_products) == 0

    off = await fake_discord.interact(
        fake_discord.slash("alerts", [{"name": "switch", "type": 3, "value": "off"}])
    )
    assert (await answer(fake_discord, off))["content"].startswith("Alerts are off")
    privacy = await fake_discord.interact(fake_discord.slash("privacy", []))
    assert "user id" in (await answer(fake_discord, privacy))["content"]
    forget = await fake_discord.interact(fake_discord.slash("forget", []))
    assert (await answer(fake_discord, forget))["content"].startswith("Done: everything")
    assert await count(shop.store, shoppers) == 0


async def test_alerts_arrive_as_direct_messages(shop: DiscordShop, fake_discord) -> None:
    catalog = shop.bot.engine.index.catalog
    on_sale = sorted(
        p.product_id for p in catalog.products(catalog.product_ids()).values() if p.in_stock
    )[:1]
    saved = SavedProducts(shop.store)
    closed = "1500000000000000777"
    fake_discord.blocked_dms.add(closed)
    for member in (MEMBER, closed):
        await saved.save(Shopper("discord", member), on_sale[0], 9_999.0, True, 10)
    await shop.alerts.start()

    def direct_messages() -> list:
        return [c for c in fake_discord.rest("POST", "/messages") if "/channels/" in c.path]

    await fake_discord.wait_for("POST", f"/channels/{MEMBER}/messages")
    await asyncio.sleep(0.3)
    sent = [c for c in direct_messages() if c.response]
    assert len(sent) == 1 and sent[0].path == f"/channels/{MEMBER}/messages"
    assert sent[0].payload["content"].startswith("Price drop: ")
    assert "was 9,999.00" in sent[0].payload["content"] and sent[0].files  # with the photo
    blocked = shoppers.c.user_id == closed
    assert await count(shop.store, shoppers, blocked, shoppers.c.blocked) == 1
    assert await count(shop.store, alert_outbox, alert_outbox.c.status == "dropped") == 1


async def test_a_gallery_of_ten_stays_within_discords_component_limit(
    shop: DiscordShop, fake_discord: FakeDiscord
) -> None:
    await fake_discord.interact(fake_discord.similar(photo("dress-1.jpg"), count=10))
    reply = await followup(fake_discord)
    components = walk(reply.payload["components"])
    assert len(components) <= 40  # Discord refuses a message with more
    saves = buttons(reply.payload["components"], "♡")
    assert saves and [b["label"] for b in saves] == [f"♡ {n}" for n in range(1, len(saves) + 1)]
