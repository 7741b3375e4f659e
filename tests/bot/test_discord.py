"""End to end: the real discord.py client against a fake Discord (REST + gateway) on
loopback, the real engine on the tiny model, real demo photos."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator

import pytest

from bot.discord_bot import DiscordBot
from bot.metrics import Metrics
from engine.batcher import EngineBusy
from engine.query_store import QueryStore
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES
from tests.fakes.discord_api import (
    APP_ID,
    followup,
    gallery_titles,
    page_button,
    start_bot,
    walk,
)
from tests.fakes.hostile_images import png_bomb

with DEMO_CATALOG.open(newline="") as _handle:
    CATEGORY_OF_TITLE = {row["title"]: row["category"] for row in csv.DictReader(_handle)}

IS_COMPONENTS_V2 = 1 << 15
EPHEMERAL = 1 << 6


def photo(name: str = "dress-1.jpg") -> bytes:
    return (DEMO_IMAGES / name).read_bytes()


@pytest.fixture
async def discord_bot(engine, settings, fake_discord) -> AsyncIterator[DiscordBot]:
    bot = await start_bot(engine, settings)
    yield bot
    await bot.stop()


async def test_commands_are_synced_and_only_needed_intents_used(discord_bot, fake_discord) -> None:
    synced = fake_discord.rest("PUT", f"/applications/{APP_ID}/commands")[0].payload
    assert {c["name"] for c in synced} == {"similar", "search", "Find similar products"}
    intents = discord_bot.client.intents
    assert not intents.message_content and not intents.members and not intents.presences


async def test_similar_defers_then_sends_a_gallery_with_shop_links(
    discord_bot, fake_discord
) -> None:
    interaction = await fake_discord.interact(fake_discord.similar(photo("dress-1.jpg")))
    callback = (await fake_discord.wait_for("POST", f"/interactions/{interaction['id']}/"))[0]
    assert callback.payload["type"] == 5  # deferred, "thinking"
    reply = await followup(fake_discord)
    assert reply.payload["flags"] & IS_COMPONENTS_V2
    components = walk(reply.payload["components"])
    gallery = next(c for c in components if c["type"] == 12)
    assert len(gallery["items"]) == 6
    assert all(
        item["media"]["url"].startswith("attachment://product-") for item in gallery["items"]
    )
    assert len(reply.files) == 6
    assert gallery_titles(reply)[0] == "Floral wrap dress"
    links = [c["url"] for c in components if c["type"] == 2 and c.get("style") == 5]
    assert len(links) == 6 and len(set(links)) == 6
    assert all("utm_source=discord" in url for url in links)
    assert page_button(reply, "More like this") and page_button(reply, "Surprise me")


async def test_count_category_and_refine_options(discord_bot, fake_discord) -> None:
    await fake_discord.interact(fake_discord.similar(photo("hat-2.jpg"), count=3, category="shoes"))
    reply = await followup(fake_discord)
    titles = gallery_titles(reply)
    assert len(titles) == 3 and {CATEGORY_OF_TITLE[t] for t in titles} == {"shoes"}
    await fake_discord.interact(fake_discord.similar(photo("hat-2.jpg"), refine="in black"))
    await fake_discord.interact(fake_discord.similar(photo("hat-2.jpg")))
    refined, plain = (await fake_discord.wait_for("POST", f"/webhooks/{APP_ID}/", 3))[1:]
    assert gallery_titles(refined) != gallery_titles(plain)


async def test_more_like_this_pages_without_repeats_even_after_a_restart(
    engine, settings, fake_discord
) -> None:
    first_bot = await start_bot(engine, settings)
    try:
        await fake_discord.interact(fake_discord.similar(photo("skirt-5.jpg")))
        first = await followup(fake_discord)
        more = page_button(first, "More like this")
    finally:
        await first_bot.stop()
    second_bot = await start_bot(engine, settings)  # a restarted process
    try:
        seen = gallery_titles(first)
        replies, shown = 1, first
        while more:
            await fake_discord.interact(fake_discord.button(more, shown.response))
            replies += 1
            shown = await followup(fake_discord, replies)
            seen += gallery_titles(shown)
            more = page_button(shown, "More like this")
        assert len(seen) == len(set(seen)) == 60
    finally:
        await second_bot.stop()


async def test_search_by_words(discord_bot, fake_discord) -> None:
    await fake_discord.interact(
        fake_discord.slash("search", [{"name": "text", "type": 3, "value": "red summer dress"}])
    )
    assert len(gallery_titles(await followup(fake_discord))) == 6


async def test_context_menu_on_a_message_with_a_photo_or_none(discord_bot, fake_discord) -> None:
    posted = fake_discord.message_payload(
        attachments=[fake_discord.attachment(photo("outwear-1.jpg"), "coat.jpg")]
    )
    await fake_discord.interact(fake_discord.context_menu(posted))
    assert gallery_titles(await followup(fake_discord))[0] == "Quilted jacket"

    embed_only = fake_discord.message_payload(
        embeds=[
            {
                "type": "image",
                "image": {
                    "url": fake_discord.host(photo("pants-2.jpg"), "p.jpg"),
                    "width": 10,
                    "height": 10,
                },
            }
        ]
    )
    await fake_discord.interact(fake_discord.context_menu(embed_only))
    assert gallery_titles(await followup(fake_discord, 2))[0] == "Wide-leg trousers"

    text_only = fake_discord.message_payload()
    interaction = await fake_discord.interact(fake_discord.context_menu(text_only))
    answer = (await fake_discord.wait_for("POST", f"/interactions/{interaction['id']}/"))[0]
    assert answer.payload["type"] == 4 and answer.payload["data"]["flags"] & EPHEMERAL
    assert "no image" in answer.payload["data"]["content"]


async def test_embed_images_from_other_hosts_are_not_fetched(discord_bot, fake_discord) -> None:
    foreign = fake_discord.message_payload(
        embeds=[{"type": "image", "image": {"url": "http://10.0.0.1/internal.jpg"}}]
    )
    interaction = await fake_discord.interact(fake_discord.context_menu(foreign))
    answer = (await fake_discord.wait_for("POST", f"/interactions/{interaction['id']}/"))[0]
    assert "no image" in answer.payload["data"]["content"]


@pytest.mark.parametrize(
    ("attachment", "expected", "deferred"),
    [
        ({"data": b"%PDF-1.4", "content_type": "application/pdf"}, "isn't a photo", False),
        ({"data": b"x", "size": 11 * 1024 * 1024}, "too large", False),
        ({"data": png_bomb(), "content_type": "image/png"}, "far too big", True),
        ({"data": b"not really a jpeg" * 10}, "isn't a photo I can read", True),
    ],
)
async def test_bad_attachments_get_an_ephemeral_message(
    discord_bot, fake_discord, attachment, expected, deferred
) -> None:
    data = attachment.pop("data")
    payload = fake_discord.similar(data, attachment=fake_discord.attachment(data, **attachment))
    await fake_discord.interact(payload)
    if deferred:
        message = await followup(fake_discord)
        assert message.payload["flags"] & EPHEMERAL and expected in message.payload["content"]
        await fake_discord.wait_for("DELETE", "/messages/@original")  # the "thinking" note goes
    else:
        answer = (await fake_discord.wait_for("POST", f"/interactions/{payload['id']}/"))[0]
        assert (
            answer.payload["data"]["flags"] & EPHEMERAL
            and expected in answer.payload["data"]["content"]
        )
    await fake_discord.interact(fake_discord.similar(photo()))  # and the bot keeps serving
    await fake_discord.wait_for("POST", f"/webhooks/{APP_ID}/", 2 if deferred else 1)


async def test_cooldown_says_how_long_to_wait(engine, settings, fake_discord) -> None:
    bot = await start_bot(engine, settings, limits={"searches_per_minute": 1})
    try:
        await fake_discord.interact(fake_discord.similar(photo()))
        await followup(fake_discord)
        second = await fake_discord.interact(fake_discord.similar(photo()))
        answer = (await fake_discord.wait_for("POST", f"/interactions/{second['id']}/"))[0]
        assert "try again in" in answer.payload["data"]["content"]
        assert answer.payload["data"]["flags"] & EPHEMERAL
    finally:
        await bot.stop()


async def test_busy_and_unexpected_errors_get_short_answers(
    discord_bot, fake_discord, monkeypatch
) -> None:
    outcomes = iter([EngineBusy(5.0), RuntimeError("boom")])

    async def failing(**kwargs):
        raise next(outcomes)

    monkeypatch.setattr(discord_bot.engine, "search", failing)
    await fake_discord.interact(fake_discord.similar(photo()))
    busy = await followup(fake_discord)
    assert "very busy" in busy.payload["content"] and "5 s" in busy.payload["content"]
    await fake_discord.interact(fake_discord.similar(photo()))
    apology = await followup(fake_discord, 2)
    assert "something went wrong" in apology.payload["content"]
    assert discord_bot.stats.errors == 1


async def test_embeds_reply_style_has_distinct_urls(engine, settings, fake_discord) -> None:
    bot = await start_bot(engine, settings, reply_style="embeds", ephemeral=True)
    try:
        payload = fake_discord.similar(photo("t-shirt-3.jpg"), count=8)
        await fake_discord.interact(payload)
        callback = (await fake_discord.wait_for("POST", f"/interactions/{payload['id']}/"))[0]
        assert callback.payload["data"]["flags"] & EPHEMERAL
        reply = await followup(fake_discord)
        embeds = reply.payload["embeds"]
        assert len(embeds) == 8 and len({e["url"] for e in embeds}) == 8
        assert all(e["image"]["url"].startswith("attachment://") for e in embeds)
        assert all("utm_source=discord" in e["url"] for e in embeds)
    finally:
        await bot.stop()


async def test_german_locale(discord_bot, fake_discord) -> None:
    await fake_discord.interact(fake_discord.similar(photo(), locale="de"))
    reply = await followup(fake_discord)
    assert page_button(reply, "Mehr davon") and page_button(reply, "Überrasch mich")


async def test_gateway_heartbeat_is_not_blocked_by_searches(discord_bot, fake_discord) -> None:
    """Searches run off the event loop: the loop stays responsive while 8 run at once."""
    loop = asyncio.get_running_loop()
    for _ in range(8):
        await fake_discord.interact(fake_discord.similar(photo("shoes-5.jpg")))
    worst = 0.0
    for _ in range(40):
        before = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - before - 0.01)
    await fake_discord.wait_for("POST", f"/webhooks/{APP_ID}/", 8)
    assert worst < 0.5


async def test_commands_sync_to_a_test_guild_when_configured(
    engine, settings, fake_discord
) -> None:
    bot = await start_bot(engine, settings, test_guild_id=987654321)
    try:
        synced = fake_discord.rest("PUT", f"/applications/{APP_ID}/guilds/987654321/commands")
        assert {c["name"] for c in synced[0].payload} == {
            "similar",
            "search",
            "Find similar products",
        }
    finally:
        await bot.stop()


async def test_discord_429s_are_waited_out_and_counted(engine, settings, fake_discord) -> None:
    bot = await start_bot(engine, settings)
    metrics = Metrics(engine)
    bot.metrics = metrics
    try:
        fake_discord.fail("POST", f"/webhooks/{APP_ID}/", retry_after=0.2)
        await fake_discord.interact(fake_discord.similar(photo()))
        refused, delivered = await fake_discord.wait_for("POST", f"/webhooks/{APP_ID}/", 2)
        assert gallery_titles(delivered) == gallery_titles(refused)  # the same reply, retried
    finally:
        await bot.stop()
    page = metrics.render().decode()
    assert 'fashionbot_platform_rate_limits_total{platform="discord"} 1.0' in page


async def test_page_buttons_never_run_the_model(discord_bot, fake_discord) -> None:
    await fake_discord.interact(fake_discord.similar(photo("skirt-5.jpg")))
    first = await followup(fake_discord)
    model_batches = discord_bot.engine.batcher.stats.batches
    for n, label in enumerate(("More like this", "Surprise me"), start=2):
        await fake_discord.interact(fake_discord.button(page_button(first, label), first.response))
        assert gallery_titles(await followup(fake_discord, n))
    assert discord_bot.engine.batcher.stats.batches == model_batches


async def test_a_forgotten_menu_search_reads_the_message_photo_again(
    discord_bot, fake_discord
) -> None:
    posted = fake_discord.message_payload(
        attachments=[fake_discord.attachment(photo("outwear-1.jpg"), "coat.jpg")]
    )
    await fake_discord.interact(fake_discord.context_menu(posted))
    first = await followup(fake_discord)
    more = page_button(first, "More like this")
    await fake_discord.interact(fake_discord.button(more, first.response))
    remembered = await followup(fake_discord, 2)
    model_batches = discord_bot.engine.batcher.stats.batches

    discord_bot.engine.queries = QueryStore(None)  # the store forgot every search
    await fake_discord.interact(fake_discord.button(more, first.response))
    re_embedded = await followup(fake_discord, 3)
    assert gallery_titles(re_embedded) == gallery_titles(remembered)
    assert discord_bot.engine.batcher.stats.batches > model_batches

    discord_bot.engine.queries = QueryStore(None)  # a later page: found back via its reply
    third = page_button(re_embedded, "More like this")
    await fake_discord.interact(fake_discord.button(third, re_embedded.response))
    assert gallery_titles(await followup(fake_discord, 4))


async def test_a_forgotten_similar_search_asks_for_the_photo_again(
    discord_bot, fake_discord
) -> None:
    await fake_discord.interact(fake_discord.similar(photo("hat-2.jpg")))
    first = await followup(fake_discord)
    discord_bot.engine.queries = QueryStore(None)
    await fake_discord.interact(
        fake_discord.button(page_button(first, "More like this"), first.response)
    )
    notice = await followup(fake_discord, 2)
    assert notice.payload["flags"] & EPHEMERAL
    assert "send the photo again" in notice.payload["content"]
    assert discord_bot.stats.errors == 0


@pytest.mark.parametrize(
    "custom_id", ["hello", "fb1:0123456789abcdef:6:n:deadbeef:-", "fb:p:zz:1:0:0", "é" * 100]
)
async def test_forged_custom_ids_get_a_clear_answer(discord_bot, fake_discord, custom_id) -> None:
    await fake_discord.interact(fake_discord.similar(photo()))
    first = await followup(fake_discord)
    # Discord only sends presses of buttons a message has: forge the message's button.
    real = json.dumps(page_button(first, "More like this"))
    forged = json.loads(json.dumps(first.response).replace(real, json.dumps(custom_id)))
    press = await fake_discord.interact(fake_discord.button(custom_id, forged))
    answer = (await fake_discord.wait_for("POST", f"/interactions/{press['id']}/"))[0]
    assert answer.payload["data"]["flags"] & EPHEMERAL
    assert "send the photo again" in answer.payload["data"]["content"]
    assert discord_bot.stats.errors == 0
