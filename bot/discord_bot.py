"""Discord front-end: /similar, /search, the "Find similar products" message menu, and
gallery (or embed) replies with shop links and paging buttons.

Buttons are persistent: their custom id is a page token (bot/paging.py) carrying the
engine's query key (the query vector is kept in the engine's query store), so they keep
working after a restart and never run the model. When the store has forgotten a search
made from the message menu, the page reads that message's photo again; a /similar
attachment cannot be reached again, so that page asks for the photo. The bot asks for
no privileged intent: slash commands and context menus carry what they need.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import app_commands

from bot.alerts import Delivery
from bot.flow import (
    Inputs,
    Look,
    ReadInputs,
    Refusal,
    Results,
    SearchRequest,
    Unreadable,
    refusal_text,
)
from bot.frontend import Frontend
from bot.i18n import t
from bot.paging import BadToken, PageToken, decode_token, encode_token
from bot.render import (
    button_label,
    caption_text,
    garment_button_label,
    price_markdown,
    results_for,
    short_title,
)
from bot.safe_fetch import UnsafeUrl, fetch_user_image
from bot.saving import (
    REMOVE,
    SAVE,
    alert_text,
    button_data,
    entry_line,
    forgotten_text,
    outcome_text,
    parse_button_data,
    privacy_text,
)
from bot.settings import BotSettings
from engine.catalog import ImageRecord
from engine.search import Engine
from engine.state.alerts import PendingAlert
from engine.state.saved import Shopper
from engine.types import Product, SearchPage

log = logging.getLogger(__name__)

MAX_LAYOUT_COMPONENTS = 40  # Discord's limit on the components of one message

# Every component custom id reaches PageButton, so that a garbled or forged one gets a
# clear answer instead of Discord's "This interaction failed".
ANY_CUSTOM_ID = r"(?s).{1,100}"

# Replies followed back to the menu search they page (one fetch each), before giving up.
MENU_TARGET_HOPS = 30
ImageSource = discord.Attachment | str  # an attachment, or an allowed media URL


def _language(interaction: discord.Interaction) -> str:
    return str(interaction.locale)


def _shopper(interaction: discord.Interaction) -> Shopper:
    return Shopper("discord", str(interaction.user.id), _language(interaction))


async def _menu_target(channel: discord.abc.Messageable, shown: discord.Message) -> int:
    """The message a "Find similar products" search was made on, found from a reply of
    that search: its own interaction names it, a later page's names the reply whose
    button was pressed. Raises Unreadable where the chain ends elsewhere (/similar)."""
    message = shown
    for _ in range(MENU_TARGET_HOPS):
        metadata = message.interaction_metadata
        if metadata is not None and metadata.target_message_id:
            return metadata.target_message_id
        if metadata is None or not metadata.interacted_message_id:
            break
        message = await channel.fetch_message(metadata.interacted_message_id)
    raise Unreadable("expired")


def rate_limit_trace(on_too_many_requests: Callable[[], None]) -> aiohttp.TraceConfig:
    """Counts each 429 Discord answers (discord.py waits it out and retries by itself)."""

    async def on_request_end(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        if params.response.status == HTTPStatus.TOO_MANY_REQUESTS:
            on_too_many_requests()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


class PageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=ANY_CUSTOM_ID):
    """ "More like this" / "Surprise me": a button any restart can still answer."""

    def __init__(
        self, custom_id: str, label: str = "…", style: discord.ButtonStyle | None = None
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label, style=style or discord.ButtonStyle.secondary, custom_id=custom_id
            )
        )

    @classmethod
    def for_token(
        cls, token: PageToken, label: str, style: discord.ButtonStyle | None = None
    ) -> PageButton:
        if style is None and token.surprise:
            style = discord.ButtonStyle.primary
        return cls(encode_token(token), label, style)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> PageButton:
        return cls(match.string)

    async def callback(self, interaction: discord.Interaction) -> None:
        frontend = cast(FashionClient, interaction.client).frontend  # our client class
        await frontend.on_page_button(interaction, self.custom_id)


class FashionClient(discord.Client):
    def __init__(self, frontend: DiscordBot) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # not privileged; no message-content intent is needed
        trace = rate_limit_trace(frontend.count_platform_rate_limit)
        super().__init__(
            intents=intents,
            http_trace=trace,
            guild_ready_timeout=frontend.settings.discord.guild_ready_timeout_s,
        )
        self.frontend = frontend
        self.tree = app_commands.CommandTree(self)
        self.tree.error(frontend.on_command_error)  # the public way to set tree.on_error

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
        self.client = FashionClient(self)
        self._token = token
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, timeout_s: float = 60.0) -> None:
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
            await frontend.search_photo(interaction, image, refine, count, category)

        @tree.command(name="search", description=t("en", "discord.search"))
        @app_commands.describe(text="What you are looking for", count="How many products (1-10)")
        async def search(
            interaction: discord.Interaction,
            text: str,
            count: app_commands.Range[int, 1, 10] | None = None,
            category: str | None = None,
        ) -> None:
            await frontend.search_words(interaction, text, count, category)

        @similar.autocomplete("category")
        @search.autocomplete("category")
        async def category_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            names = [c for c in frontend.engine.categories() if current.lower() in c.lower()]
            return [app_commands.Choice(name=c, value=c) for c in names[:25]]

        if frontend.saving is not None:
            self._register_saved_commands(tree)

        @tree.context_menu(name=t("en", "discord.menu"))
        async def find_similar(interaction: discord.Interaction, message: discord.Message) -> None:
            source = frontend.image_source(message)
            if source is None:
                await interaction.response.send_message(
                    t(_language(interaction), "discord.no_image"), ephemeral=True
                )
                return
            await frontend.search_photo(interaction, source)

    def _register_saved_commands(self, tree: app_commands.CommandTree) -> None:
        frontend = self

        @tree.command(name="saved", description=t("en", "discord.saved"))
        async def saved(interaction: discord.Interaction) -> None:
            await frontend.show_saved(interaction)

        @tree.command(name="alerts", description=t("en", "discord.alerts"))
        @app_commands.describe(switch="on or off (empty: say which)")
        async def alerts(
            interaction: discord.Interaction, switch: Literal["on", "off"] | None = None
        ) -> None:
            await frontend.set_alerts(interaction, switch)

        @tree.command(name="forget", description=t("en", "discord.forget"))
        async def forget(interaction: discord.Interaction) -> None:
            await frontend.forget(interaction)

        @tree.command(name="privacy", description=t("en", "discord.privacy"))
        async def privacy(interaction: discord.Interaction) -> None:
            text = privacy_text(frontend.settings, _language(interaction))
            await interaction.response.send_message(text, ephemeral=True)

    def media_url_allowed(self, url: str) -> bool:
        """Embed images are downloaded only from Discord's own media hosts (no SSRF)."""
        parts = urlsplit(url)
        return (
            parts.scheme in ("https", "http")
            and (parts.hostname or "").lower() in self.settings.discord.allowed_media_hosts
        )

    def image_source(self, message: discord.Message) -> ImageSource | None:
        """A message's photo: its first image attachment, else an embed image from an
        allowed media host."""
        attachment = next(
            (a for a in message.attachments if (a.content_type or "").startswith("image/")), None
        )
        if attachment is not None:
            return attachment
        url = next(
            (
                e.image.proxy_url or e.image.url or e.thumbnail.url
                for e in message.embeds
                if e.image.url or e.thumbnail.url
            ),
            None,
        )
        return url if url and self.media_url_allowed(url) else None

    # ---- turning interactions into searches ------------------------------------------

    async def search_photo(
        self,
        interaction: discord.Interaction,
        source: ImageSource,
        refine: str | None = None,
        count: int | None = None,
        category: str | None = None,
    ) -> None:
        sizes: tuple[int, ...] = ()
        if isinstance(source, discord.Attachment):
            kind = (source.content_type or "").lower()
            if kind and not kind.startswith("image/"):
                self.counter.refused("not_an_image")
                await self._refuse(interaction, t(_language(interaction), "not_a_photo_file"))
                return
            sizes = (source.size,)
        request = SearchRequest(
            interaction.user.id,
            self._reader(source, refine),
            PageToken(category=category),
            k=count or self.settings.search.default_k,
            declared_sizes=sizes,
            size_limit=min(interaction.filesize_limit, self.settings.images.max_bytes),
        )
        await self.run_search(interaction, request)

    async def search_words(
        self,
        interaction: discord.Interaction,
        text: str,
        count: int | None = None,
        category: str | None = None,
    ) -> None:
        async def read() -> Inputs:
            return Inputs(text=text)

        k = count or self.settings.search.default_k
        request = SearchRequest(interaction.user.id, read, PageToken(category=category), k=k)
        await self.run_search(interaction, request)

    async def on_page_button(self, interaction: discord.Interaction, custom_id: str) -> None:
        if parse_button_data(custom_id) is not None:
            await self.on_saved_button(interaction, custom_id)
            return
        try:
            token = decode_token(custom_id, self.engine.categories())
        except BadToken:
            log.info("refused a button press with unknown custom id %r", custom_id[:100])
            self.counter.refused("bad_token")
            await self._refuse(interaction, t(_language(interaction), "expired"))
            return
        reread = self._reread_menu_target(interaction)
        request = SearchRequest(interaction.user.id, reread, token, self.settings.search.default_k)
        await self.run_search(interaction, request)

    def _reader(self, source: ImageSource, text: str | None) -> ReadInputs:
        async def read() -> Inputs:
            if isinstance(source, discord.Attachment):
                return Inputs([await source.read()], text)
            try:
                photo = await fetch_user_image(
                    source,
                    max_bytes=self.settings.images.max_bytes,
                    allow_loopback=self.settings.discord.allow_loopback_media,
                )
            except (UnsafeUrl, aiohttp.ClientError, TimeoutError) as exc:
                raise Unreadable("unsafe_or_dead_url") from exc
            return Inputs([photo], text)

        return read

    def _reread_menu_target(self, interaction: discord.Interaction) -> ReadInputs | None:
        """For a page of a "Find similar products" search: how to read that message's photo
        again. A /similar attachment belongs to its interaction and cannot be re-read."""
        shown, channel = interaction.message, interaction.channel
        if shown is None or not isinstance(channel, discord.abc.Messageable):
            return None

        async def read() -> Inputs:
            try:
                target = await _menu_target(channel, shown)
                source = self.image_source(await channel.fetch_message(target))
                if source is None:
                    raise Unreadable("expired")
                return await self._reader(source, None)()
            except (discord.HTTPException, Unreadable) as exc:
                raise Unreadable("expired") from exc

        return read

    # ---- the search ------------------------------------------------------------------

    async def run_search(self, interaction: discord.Interaction, request: SearchRequest) -> None:
        try:
            await self._tracked(self._search(interaction, request))
        except Exception as exc:  # buttons and commands alike: log, apologise, keep serving
            await self.on_command_error(interaction, exc)

    async def _search(self, interaction: discord.Interaction, request: SearchRequest) -> None:
        language = _language(interaction)
        if self._closing:
            await self._refuse(interaction, t(language, "discord.restarting"))
            return
        outcome = await self.flow.run(request, lambda: self._deferred(interaction))
        if isinstance(outcome, Refusal):
            await self._refuse(interaction, refusal_text(outcome, language))
            return
        if self.settings.discord.reply_style == "embeds":
            payload = self._embeds_reply(outcome, language)
        else:
            payload = self._gallery_reply(outcome, language)
        await interaction.followup.send(**payload)
        if outcome.look is not None:
            await self._send_garment_picker(interaction, outcome.look, language)

    async def _send_garment_picker(
        self, interaction: discord.Interaction, look: Look, language: str
    ) -> None:
        """The photo with numbered garments and a button for each, as a follow-up of the
        shopper's own interaction (in a channel it answers only whoever asked)."""
        picker = await self.flow.garment_picker(look)
        if picker is None:
            return
        view = discord.ui.View(timeout=None)
        for choice in picker.choices:
            label = garment_button_label(language, choice.number, choice.kind)
            style = discord.ButtonStyle.primary if choice.kind else discord.ButtonStyle.secondary
            view.add_item(PageButton.for_token(choice.token, label[:80], style))
        await interaction.followup.send(
            t(language, "garments.pick"),
            file=discord.File(io.BytesIO(picker.picture), filename="garments.jpg"),
            view=view,
            ephemeral=self.settings.discord.ephemeral,
        )

    @contextlib.asynccontextmanager
    async def _deferred(self, interaction: discord.Interaction) -> AsyncIterator[None]:
        # Within 3 s of the interaction, always: what follows may take longer.
        await interaction.response.defer(thinking=True, ephemeral=self.settings.discord.ephemeral)
        yield

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        """A short ephemeral message, whether or not the interaction was deferred."""
        if interaction.response.is_done():
            if not self.settings.discord.ephemeral:
                with contextlib.suppress(discord.HTTPException):
                    await interaction.delete_original_response()
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    # ---- replies -----------------------------------------------------------------------

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

    def _page_buttons(self, results: Results, language: str) -> list[discord.ui.Item[Any]]:
        return [
            PageButton.for_token(token, t(language, key)) for key, token in results.navigation()
        ]

    def _gallery_reply(self, results: Results, language: str) -> dict[str, Any]:
        page = results.page
        files, media = self._files(page)
        gallery: discord.ui.MediaGallery[discord.ui.LayoutView] = discord.ui.MediaGallery(
            *[
                discord.MediaGalleryItem(source, description=caption_text(hit, language)[:256])
                for source, hit in zip(media, page.hits, strict=True)
            ]
        )
        sections: list[discord.ui.Section[discord.ui.LayoutView]] = [
            discord.ui.Section(
                f"**{number}. {short_title(hit.product.title, 80)}**\n{price_markdown(hit.product)}"
                + (f" · {t(language, 'out_of_stock')}" if not hit.product.in_stock else ""),
                accessory=discord.ui.Button(
                    style=discord.ButtonStyle.link,
                    label=t(language, "buy"),
                    url=self.link(results, hit),
                ),
            )
            for number, hit in enumerate(page.hits, start=page.offset + 1)
        ]
        heading = f"### {t(language, 'discord.title')}"
        garment = results_for(language, results.garment_kind)
        if garment is not None:
            heading += f"\n{garment}"
        if page.text_ignored:
            heading += f"\n{t(language, 'caption_ignored')}"
        view = discord.ui.LayoutView(timeout=None)
        view.add_item(discord.ui.Container(discord.ui.TextDisplay(heading), gallery, *sections))
        paging = discord.ui.ActionRow(*self._page_buttons(results, language))
        if self.saving is not None:
            room = MAX_LAYOUT_COMPONENTS - view.total_children_count - 1 - len(paging.children)
            for row in self._save_rows(results, language, room):
                view.add_item(row)
        view.add_item(paging)
        return {"view": view, "files": files}

    def _embeds_reply(self, results: Results, language: str) -> dict[str, Any]:
        page = results.page
        files, media = self._files(page)
        embeds, seen_urls = [], set()
        view = discord.ui.View(timeout=None)
        for number, (source, hit) in enumerate(
            zip(media, page.hits, strict=True), start=page.offset + 1
        ):
            link = self.link(results, hit)
            url = link
            while url in seen_urls:  # embeds that share a URL are merged into one by Discord
                url = f"{link}#{number}"
            seen_urls.add(url)
            embed = discord.Embed(
                title=short_title(hit.product.title, 250),
                url=url,
                description=caption_text(hit, language, markdown=True),
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
        for button in self._page_buttons(results, language):
            view.add_item(button)
        garment = results_for(language, results.garment_kind)
        return {"content": garment, "embeds": embeds, "files": files, "view": view}

    # ---- saved products and alerts ------------------------------------------------------

    def _save_rows(
        self, results: Results, language: str, room: int
    ) -> list[discord.ui.ActionRow[Any]]:
        """A "♡ n" button per product, five to a row, as many as `room` components allow
        (a message holds 40: a gallery of 10 leaves room for the first few)."""
        page = results.page
        buttons = [
            PageButton(
                button_data(SAVE, hit.product.product_id), t(language, "button.save", number=n)
            )
            for n, hit in enumerate(page.hits, start=page.offset + 1)
        ]
        rows: list[discord.ui.ActionRow[Any]] = []
        while buttons and room >= 2:  # a row and at least one button
            take = min(5, room - 1, len(buttons))
            rows.append(discord.ui.ActionRow(*buttons[:take]))
            buttons, room = buttons[take:], room - take - 1
        return rows

    async def on_saved_button(self, interaction: discord.Interaction, custom_id: str) -> None:
        """Save (under an album) or remove (under /saved): an ephemeral confirmation."""
        language = _language(interaction)
        ref = parse_button_data(custom_id)
        if self.saving is None or ref is None:
            await self._refuse(interaction, t(language, "expired"))
            return
        shopper = _shopper(interaction)
        if ref.action == SAVE:
            product = self.saving.product(ref)
            if product is None:
                await self._refuse(interaction, t(language, "saved.gone"))
                return
            outcome = await self.saving.save(shopper, product)
            await self._refuse(interaction, outcome_text(outcome, language))
            return
        if ref.product_id is not None:
            removed = await self.saving.remove(shopper, ref.product_id)
        else:
            removed = await self.saving.remove_by_digest(shopper, ref.digest or "")
        await self._refuse(
            interaction, t(language, "saved.removed" if removed else "saved.not_saved")
        )

    async def show_saved(self, interaction: discord.Interaction) -> None:
        language = _language(interaction)
        if self.saving is None:
            await self._refuse(interaction, t(language, "expired"))
            return
        listing = await self.saving.listing(_shopper(interaction))
        if not listing.entries:
            await self._refuse(interaction, t(language, "saved.empty"))
            return
        lines = [t(language, "saved.header", count=listing.total)]
        view = discord.ui.View(timeout=None)
        for number, entry in enumerate(listing.entries, start=1):
            lines.append(entry_line(number, entry, language))
            if number > 12:  # a message holds 25 components: a Buy and a remove per product
                continue
            if entry.product is not None:
                link = self.saving.buy_link(entry.product, self.platform)
                label = t(language, "saved.buy", number=number)
                view.add_item(
                    discord.ui.Button(style=discord.ButtonStyle.link, label=label, url=link)
                )
            remove = button_data(REMOVE, entry.item.product_id)
            view.add_item(PageButton(remove, t(language, "saved.remove", number=number)))
        if listing.total > len(listing.entries):
            lines.append(t(language, "saved.more", count=listing.total - len(listing.entries)))
        await interaction.response.send_message("\n".join(lines)[:2000], view=view, ephemeral=True)

    async def set_alerts(self, interaction: discord.Interaction, choice: str | None) -> None:
        language = _language(interaction)
        if self.saving is None:
            await self._refuse(interaction, t(language, "expired"))
            return
        shopper = _shopper(interaction)
        if choice in ("on", "off"):
            await self.saving.set_alerts(shopper, choice == "on")
            await self._refuse(interaction, t(language, f"alerts.{choice}"))
            return
        state = "on" if await self.saving.alerts_on(shopper) else "off"
        await self._refuse(interaction, t(language, f"alerts.state_{state}"))

    async def forget(self, interaction: discord.Interaction) -> None:
        language = _language(interaction)
        if self.saving is None:
            await self._refuse(interaction, t(language, "expired"))
            return
        forgotten = await self.saving.forget(_shopper(interaction), interaction.user.id)
        await self._refuse(interaction, forgotten_text(forgotten, language))

    async def deliver_alert(
        self, alert: PendingAlert, product: Product, image: ImageRecord | None
    ) -> Delivery:
        """The alert as a direct message with the product photo and a Buy button."""
        assert self.saving is not None
        language = alert.language or "en"
        text = alert_text(alert.kind, product, alert.old_price, language)
        view = discord.ui.View(timeout=None)
        link = self.saving.buy_link(product, self.platform)
        view.add_item(
            discord.ui.Button(style=discord.ButtonStyle.link, label=t(language, "buy"), url=link)
        )
        path = Path(image.local_path) if image is not None and image.local_path else None
        try:
            user = await self.client.fetch_user(int(alert.user_id))
            if path is not None and path.is_file():
                photo = discord.File(path, filename=f"product{path.suffix.lower() or '.jpg'}")
                await user.send(text, file=photo, view=view)
            else:
                embed = discord.Embed(title=short_title(product.title, 250), url=link)
                if image is not None and image.source.startswith(("https://", "http://")):
                    embed.set_image(url=image.source)
                await user.send(text, embed=embed, view=view)
        except discord.Forbidden:
            return Delivery.BLOCKED
        except discord.NotFound:
            return Delivery.FAILED
        except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            log.info("alert %d not sent now: %r", alert.id, exc)
            return Delivery.RETRY
        return Delivery.SENT

    # ---- errors ----------------------------------------------------------------------

    async def on_command_error(self, interaction: discord.Interaction, error: Exception) -> None:
        self.counter.refused("unexpected")
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
