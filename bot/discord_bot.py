"""Discord front-end: /similar, /search, the "Find similar products" message menu, and
gallery (or embed) replies with shop links and paging buttons.

Buttons are persistent: their custom id carries the engine's query key (the query vector
is kept in the engine's query store), so they keep working after a restart. The bot asks
for no privileged intent: slash commands and context menus carry what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.frontend import Frontend
from bot.i18n import t
from bot.render import button_label, caption_text, format_price, shop_link, short_title
from bot.safe_fetch import UnsafeUrl, fetch_user_image
from bot.settings import BotSettings
from engine.batcher import EngineBusy
from engine.images import ImageError
from engine.query_store import QueryExpired
from engine.search import Engine
from engine.types import Filters, Hit, SearchPage

log = logging.getLogger(__name__)

PAGE_ID = re.compile(
    r"fb:p:(?P<key>[0-9a-f]{16}):(?P<offset>\d{1,6}):(?P<surprise>[01]):(?P<cat>-?\d{1,4})"
)


def _language(interaction: discord.Interaction) -> str:
    return str(interaction.locale)


def page_custom_id(key: str, offset: int, surprise: bool, category: int) -> str:
    return f"fb:p:{key}:{offset}:{int(surprise)}:{category}"


def _point_at(api_base: str, gateway_url: str) -> None:
    """discord.py keeps its endpoints in class attributes: one Discord client per process."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class PageButton(discord.ui.DynamicItem[discord.ui.Button], template=PAGE_ID):
    """ "More like this" / "Surprise me": a button any restart can still answer."""

    def __init__(
        self, key: str, offset: int, surprise: bool, category: int, label: str = "…"
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.primary if surprise else discord.ButtonStyle.secondary,
                custom_id=page_custom_id(key, offset, surprise, category),
            )
        )
        self.key, self.offset, self.surprise, self.category = key, offset, surprise, category

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> PageButton:
        return cls(match["key"], int(match["offset"]), match["surprise"] == "1", int(match["cat"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        frontend: DiscordBot = interaction.client.frontend  # type: ignore[attr-defined]
        categories = frontend.engine.categories()
        category = categories[self.category] if 0 <= self.category < len(categories) else None
        await frontend.run_search(
            interaction,
            query_key=self.key,
            offset=self.offset,
            surprise=self.surprise,
            category=category,
        )


class _RateLimitCounter(logging.Handler):
    """discord.py waits out 429s itself and only logs them; count those log records."""

    def __init__(self, frontend: DiscordBot) -> None:
        super().__init__(logging.WARNING)
        self._frontend = frontend

    def emit(self, record: logging.LogRecord) -> None:
        if "rate limit" in str(record.msg).lower() and self._frontend.metrics is not None:
            self._frontend.metrics.count_platform_rate_limit(self._frontend.platform)


class FashionClient(discord.Client):
    def __init__(self, frontend: DiscordBot) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # not privileged; no message-content intent is needed
        super().__init__(intents=intents)
        self.frontend = frontend
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = frontend.on_command_error

    async def setup_hook(self) -> None:
        self.frontend.register(self.tree)
        self.add_dynamic_items(PageButton)
        guild_id = self.frontend.settings.discord.test_guild_id
        if guild_id:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def on_ready(self) -> None:
        log.info("discord bot %s is serving", self.user)
        self.frontend.ready.set()


class DiscordBot(Frontend):
    platform = "discord"

    def __init__(
        self,
        engine: Engine,
        settings: BotSettings,
        token: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(engine, settings, clock)
        self.ready = asyncio.Event()
        _point_at(settings.discord.api_base, settings.discord.gateway_url)
        self.client = FashionClient(self)
        self._token = token
        self._runner: asyncio.Task[None] | None = None
        self._rate_limit_counter = _RateLimitCounter(self)
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, timeout_s: float = 60.0) -> None:
        logging.getLogger("discord.http").addHandler(self._rate_limit_counter)
        self._runner = asyncio.create_task(self.client.start(self._token), name="discord")
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {self._runner, ready}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._runner in done:
            ready.cancel()
            self._runner.result()  # raises the login / connection error
        if ready not in done:
            ready.cancel()
            raise TimeoutError("Discord did not become ready in time")

    async def stop(self, grace_s: float = 10.0) -> None:
        self._closing = True
        await self._drain(grace_s)
        await self.client.close()
        logging.getLogger("discord.http").removeHandler(self._rate_limit_counter)
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)

    @property
    def healthy(self) -> bool:
        return self.ready.is_set() and not self.client.is_closed()

    # ---- commands --------------------------------------------------------------------

    def register(self, tree: app_commands.CommandTree) -> None:
        frontend = self

        @tree.command(name="similar", description=t("en", "discord.similar"))
        @app_commands.describe(
            image="A photo of a garment",
            count="How many products (1-10)",
            category="Only this category",
            refine="Words to refine the photo, e.g. 'in black'",
        )
        async def similar(
            interaction: discord.Interaction,
            image: discord.Attachment,
            count: app_commands.Range[int, 1, 10] | None = None,
            category: str | None = None,
            refine: str | None = None,
        ) -> None:
            await frontend.run_search(
                interaction, attachment=image, text=refine, count=count, category=category
            )

        @tree.command(name="search", description=t("en", "discord.search"))
        @app_commands.describe(text="What you are looking for", count="How many products (1-10)")
        async def search(
            interaction: discord.Interaction,
            text: str,
            count: app_commands.Range[int, 1, 10] | None = None,
            category: str | None = None,
        ) -> None:
            await frontend.run_search(interaction, text=text, count=count, category=category)

        @similar.autocomplete("category")
        @search.autocomplete("category")
        async def category_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            names = [c for c in frontend.engine.categories() if current.lower() in c.lower()]
            return [app_commands.Choice(name=c, value=c) for c in names[:25]]

        @tree.context_menu(name=t("en", "discord.menu"))
        async def find_similar(interaction: discord.Interaction, message: discord.Message) -> None:
            attachment = next(
                (a for a in message.attachments if (a.content_type or "").startswith("image/")),
                None,
            )
            if attachment is not None:
                await frontend.run_search(interaction, attachment=attachment)
                return
            url = next(
                (
                    e.image.proxy_url or e.image.url or e.thumbnail.url
                    for e in message.embeds
                    if e.image.url or e.thumbnail.url
                ),
                None,
            )
            if url and frontend.media_url_allowed(url):
                await frontend.run_search(interaction, image_url=url)
                return
            await interaction.response.send_message(
                t(_language(interaction), "discord.no_image"), ephemeral=True
            )

    def media_url_allowed(self, url: str) -> bool:
        """Embed images are downloaded only from Discord's own media hosts (no SSRF)."""
        parts = urlsplit(url)
        return (
            parts.scheme in ("https", "http")
            and (parts.hostname or "").lower() in self.settings.discord.allowed_media_hosts
        )

    # ---- the search ------------------------------------------------------------------

    async def run_search(
        self,
        interaction: discord.Interaction,
        *,
        attachment: discord.Attachment | None = None,
        image_url: str | None = None,
        text: str | None = None,
        count: int | None = None,
        category: str | None = None,
        offset: int = 0,
        surprise: bool = False,
        query_key: str | None = None,
    ) -> None:
        search = self._search(
            interaction, attachment, image_url, text, count, category, offset, surprise, query_key
        )
        try:
            await self._tracked(search)
        except Exception as exc:  # buttons and commands alike: log, apologise, keep serving
            await self.on_command_error(interaction, exc)

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        """A short ephemeral message, whether or not the interaction was deferred."""
        if interaction.response.is_done():
            if not self.settings.discord.ephemeral:
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    async def _search(
        self,
        interaction: discord.Interaction,
        attachment: discord.Attachment | None,
        image_url: str | None,
        text: str | None,
        count: int | None,
        category: str | None,
        offset: int,
        surprise: bool,
        query_key: str | None,
    ) -> None:
        language = _language(interaction)
        if self._closing:
            await self._refuse(interaction, t(language, "discord.restarting"))
            return
        wait = self.limiter.retry_after(interaction.user.id)
        if wait:
            self._refused("rate_limited")
            await self._refuse(interaction, t(language, "rate_limited", seconds=round(wait)))
            return
        if attachment is not None:
            limit = min(interaction.filesize_limit, self.settings.images.max_bytes)
            if attachment.size > limit:
                self._refused("too_large")
                await self._refuse(interaction, t(language, "error.too_large"))
                return
            kind = (attachment.content_type or "").lower()
            if kind and not kind.startswith("image/"):
                self._refused("not_an_image")
                await self._refuse(interaction, t(language, "not_a_photo_file"))
                return
        # Within 3 s of the interaction, always: everything below may take longer.
        await interaction.response.defer(thinking=True, ephemeral=self.settings.discord.ephemeral)
        try:
            photo = None
            if attachment is not None:
                photo = await attachment.read()
            elif image_url is not None:
                photo = await fetch_user_image(
                    image_url,
                    max_bytes=self.settings.images.max_bytes,
                    allow_loopback=self.settings.discord.allow_loopback_media,
                )
            page = await self.engine.search(
                image=photo,
                text=text if not query_key else None,
                filters=Filters(category=category),
                k=count or self.settings.search.default_k,
                offset=offset,
                diversity=self.settings.search.surprise_diversity if surprise else None,
                query_key=query_key,
            )
        except ImageError as exc:
            self._refused(f"image_{exc.reason}")
            await self._refuse(interaction, t(language, f"error.{exc.reason}"))
            return
        except EngineBusy as exc:
            self._refused("busy")
            await self._refuse(interaction, t(language, "busy", seconds=round(exc.retry_after_s)))
            return
        except (UnsafeUrl, aiohttp.ClientError, TimeoutError):
            self._refused("unsafe_or_dead_url")
            await self._refuse(interaction, t(language, "discord.no_image"))
            return
        except QueryExpired:
            self._refused("expired")
            await self._refuse(interaction, t(language, "expired"))
            return
        self._served(page)
        if not page.hits:
            await self._refuse(interaction, t(language, "no_more" if offset else "no_results"))
            return
        categories = self.engine.categories()
        position = categories.index(category) if category in categories else -1
        if self.settings.discord.reply_style == "embeds":
            payload = self._embeds_reply(page, language, position)
        else:
            payload = self._gallery_reply(page, language, position)
        await interaction.followup.send(**payload)

    # ---- replies -----------------------------------------------------------------------

    def _link(self, hit: Hit) -> str:
        return shop_link(hit.product.url, "discord", self.settings.links)

    def _files(self, page: SearchPage) -> tuple[list[discord.File], list[str]]:
        """Local product photos uploaded with the reply; URLs used as they are."""
        files, media = [], []
        for number, hit in enumerate(page.hits, start=1):
            path = Path(hit.image_path) if hit.image_path else None
            if path is not None and path.is_file():
                name = f"product-{number}{path.suffix.lower() or '.jpg'}"
                files.append(discord.File(path, filename=name))
                media.append(f"attachment://{name}")
            else:
                media.append(hit.image)
        return files, media

    def _page_buttons(
        self, page: SearchPage, language: str, category: int
    ) -> list[discord.ui.Item[Any]]:
        buttons: list[discord.ui.Item[Any]] = []
        if page.has_more:
            more = PageButton(
                page.query_key,
                page.offset + len(page.hits),
                False,
                category,
                t(language, "button.more"),
            )
            buttons.append(more)
        buttons.append(
            PageButton(page.query_key, 0, True, category, t(language, "button.surprise"))
        )
        return buttons

    def _gallery_reply(self, page: SearchPage, language: str, category: int) -> dict[str, Any]:
        files, media = self._files(page)
        gallery = discord.ui.MediaGallery(
            *[
                discord.MediaGalleryItem(source, description=caption_text(hit, language)[:256])
                for source, hit in zip(media, page.hits, strict=True)
            ]
        )
        sections = [
            discord.ui.Section(
                f"**{number}. {short_title(hit.product.title, 80)}**\n{format_price(hit.product)}"
                + (f" · {t(language, 'out_of_stock')}" if not hit.product.in_stock else ""),
                accessory=discord.ui.Button(
                    style=discord.ButtonStyle.link, label=t(language, "buy"), url=self._link(hit)
                ),
            )
            for number, hit in enumerate(page.hits, start=page.offset + 1)
        ]
        view = discord.ui.LayoutView(timeout=None)
        view.add_item(
            discord.ui.Container(
                discord.ui.TextDisplay(f"### {t(language, 'discord.title')}"), gallery, *sections
            )
        )
        view.add_item(discord.ui.ActionRow(*self._page_buttons(page, language, category)))
        return {"view": view, "files": files}

    def _embeds_reply(self, page: SearchPage, language: str, category: int) -> dict[str, Any]:
        files, media = self._files(page)
        embeds, seen_urls = [], set()
        view = discord.ui.View(timeout=None)
        for number, (source, hit) in enumerate(
            zip(media, page.hits, strict=True), start=page.offset + 1
        ):
            link = self._link(hit)
            url = link
            while url in seen_urls:  # embeds that share a URL are merged into one by Discord
                url = f"{link}#{number}"
            seen_urls.add(url)
            embed = discord.Embed(
                title=short_title(hit.product.title, 250),
                url=url,
                description=caption_text(hit, language),
            )
            embed.set_image(url=source)
            embeds.append(embed)
            if number - page.offset <= 20:
                view.add_item(
                    discord.ui.Button(
                        style=discord.ButtonStyle.link,
                        label=button_label(number, hit)[:80],
                        url=link,
                    )
                )
        for button in self._page_buttons(page, language, category):
            view.add_item(button)
        return {"embeds": embeds, "files": files, "view": view}

    # ---- errors ----------------------------------------------------------------------

    async def on_command_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self._refused("unexpected")
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error(
            "command %s failed (guild %s, channel %s): %r",
            command,
            interaction.guild_id,
            interaction.channel_id,
            error,
            exc_info=error,
        )
        try:
            await self._refuse(interaction, t(_language(interaction), "apology"))
        except discord.HTTPException:
            log.warning("could not send the apology for %s", command)
