"""Telegram front-end: platform events in, `SearchFlow` requests, albums out.

Paging: each button's callback data is a page token (bot/paging.py) naming the search by
the engine's query key, so a page is ranked from the stored query vector without running
the model. The keyboard under an album replies to the shopper's own message, so when the
engine's query store has forgotten a search, the page re-reads the original (photo file
id, caption or /search text) from Telegram and embeds it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultArticle,
    InlineQueryResultCachedPhoto,
    InlineQueryResultPhoto,
    InputMediaPhoto,
    InputTextMessageContent,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    filters,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.alerts import Delivery
from bot.analytics import last_day_text
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
from bot.i18n import languages, t
from bot.limits import Admission, ReplyBudget
from bot.paging import BadToken, PageToken, decode_token, encode_token, inline_offset
from bot.render import (
    button_label,
    caption_html,
    garment_button_label,
    results_for,
)
from bot.saving import (
    REMOVE,
    SAVE,
    ProductRef,
    SavedListing,
    alert_text,
    button_data,
    forgotten_text,
    listing_html,
    outcome_text,
    parse_button_data,
    privacy_text,
)
from bot.settings import BotSettings
from bot.telegram_downloads import CappedDownloadRequest, DownloadTooLarge
from bot.telegram_webhook import PATH as WEBHOOK_PATH
from bot.telegram_webhook import WebhookServer
from engine.catalog import ImageRecord
from engine.index import IndexLoadError
from engine.search import Engine
from engine.state.alerts import PendingAlert
from engine.state.saved import Shopper
from engine.types import Hit, Product

log = logging.getLogger(__name__)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB
CHAT_ACTION_EVERY_S = 4.0  # Telegram shows an action for 5 s
# Telegram's wording where it differs: its Bot API downloads at most 20 MB.
TELEGRAM_WORDING = {"too_large": "file_too_large"}
INLINE_REFUSAL_CACHE_S = {"rate_limited": 5, "busy": 1}  # others: the usual 30 s
FILE_ID_CACHE_SIZE = 20_000
WEBHOOK_SECRET_VARIABLE = "TELEGRAM_WEBHOOK_SECRET"
_NOT_PHOTO_MIME = ("video/", "audio/", "text/", "application/pdf", "application/zip")
# python-telegram-bot's handler classes take coroutine functions (Coroutine, not Awaitable).
Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Query:
    """What to search for, re-derivable from a Telegram message."""

    photo_file_ids: tuple[str, ...] = ()
    photo_sizes: tuple[int, ...] = ()
    text: str | None = None

    @property
    def empty(self) -> bool:
        return not self.photo_file_ids and not self.text


class FileIdCache:
    """Product image -> Telegram file id, so a product photo is uploaded only once."""

    def __init__(self, size: int = FILE_ID_CACHE_SIZE) -> None:
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._size = size

    def get(self, image: str) -> str | None:
        file_id = self._ids.get(image)
        if file_id is not None:
            self._ids.move_to_end(image)
        return file_id

    def put(self, image: str, file_id: str) -> None:
        self._ids[image] = file_id
        self._ids.move_to_end(image)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


def counting_request(
    on_too_many_requests: Callable[[], None], timeout_s: float, max_download_bytes: int
) -> CappedDownloadRequest:
    """python-telegram-bot's own HTTP client, counting each 429 the Bot API answers
    (python-telegram-bot's AIORateLimiter then waits it out and retries), with file
    downloads cut off past `max_download_bytes`."""

    async def on_response(response: httpx.Response) -> None:
        if response.status_code == HTTPStatus.TOO_MANY_REQUESTS:
            on_too_many_requests()

    return CappedDownloadRequest(
        max_download_bytes,
        timeout_s,
        media_write_timeout=max(20.0, timeout_s),
        httpx_kwargs={"event_hooks": {"response": [on_response]}},
    )


class TelegramBot(Frontend):
    platform = "telegram"

    def __init__(
        self,
        engine: Engine,
        settings: BotSettings,
        token: str,
        clock: Callable[[], float] = time.monotonic,
        webhook_secret: str = "",
    ) -> None:
        super().__init__(engine, settings, clock)
        self.replies = ReplyBudget(settings.limits.replies_per_minute, clock)
        self.download_limit = min(TELEGRAM_DOWNLOAD_LIMIT, settings.images.max_bytes)
        self._webhook_secret = webhook_secret
        self._webhook: WebhookServer | None = None
        self.file_ids = FileIdCache()
        self._albums: dict[str, list[Message]] = {}  # media_group_id -> photos so far
        self.application: Application = (
            ApplicationBuilder()
            .token(token)
            .base_url(settings.telegram.base_url)
            .base_file_url(settings.telegram.base_file_url)
            .rate_limiter(AIORateLimiter(max_retries=3))
            .request(
                counting_request(
                    self.count_platform_rate_limit,
                    settings.telegram.request_timeout_s,
                    self.download_limit,
                )
            )
            .concurrent_updates(64)
            .build()
        )
        self._register_handlers()

    # ---- lifecycle -------------------------------------------------------------------

    def _register_handlers(self) -> None:
        app = self.application
        private = filters.ChatType.PRIVATE
        budgeted = self._within_reply_budget
        app.add_handler(CommandHandler(["start", "help"], budgeted(self.on_start)))
        app.add_handler(CommandHandler("search", budgeted(self.on_search_command)))
        app.add_handler(CommandHandler("similar", budgeted(self.on_similar_command)))
        app.add_handler(CommandHandler("stats", budgeted(self.on_stats)))
        app.add_handler(CommandHandler("reload", budgeted(self.on_reload)))
        app.add_handler(CommandHandler("saved", budgeted(self.on_saved)))
        app.add_handler(CommandHandler("alerts", budgeted(self.on_alerts)))
        app.add_handler(CommandHandler("forget", budgeted(self.on_forget)))
        app.add_handler(CommandHandler("privacy", budgeted(self.on_privacy)))
        # Photos count against the budget themselves: only those addressed to the bot, and
        # an album once.
        app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, self.on_photo))
        app.add_handler(MessageHandler(private & filters.Sticker.ALL, budgeted(self.on_sticker)))
        videos = filters.VIDEO | filters.ANIMATION | filters.VIDEO_NOTE
        app.add_handler(MessageHandler(private & videos, budgeted(self.on_video)))
        saved_buttons = re.compile(rf"^({SAVE}|{REMOVE})[:#]")
        app.add_handler(CallbackQueryHandler(self.on_saved_button, pattern=saved_buttons))
        app.add_handler(CallbackQueryHandler(budgeted(self.on_page_button)))
        app.add_handler(InlineQueryHandler(self.on_inline_query))  # no chat: searches' limit
        app.add_error_handler(self.on_error)

    def _within_reply_budget(self, handler: Handler) -> Handler:
        async def within_budget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            if await self._may_reply(update):
                await handler(update, context)

        return within_budget

    async def _may_reply(self, update: Update) -> bool:
        """Count one reply to the update's chat against `limits.replies_per_minute`. Past
        it the chat hears "slow down" once, then nothing until the window has room."""
        chat = update.effective_chat
        if chat is None:
            return True
        admission = self.replies.admit(chat.id)
        if admission is Admission.REPLY:
            return True
        self.counter.refused("flooding")
        if admission is Admission.SLOW_DOWN:
            with contextlib.suppress(NetworkError, BadRequest, Forbidden):
                await self.application.bot.send_message(chat.id, t(_language(update), "slow_down"))
        return False

    async def start(self) -> None:
        telegram = self.settings.telegram
        secret = self._webhook_secret
        if telegram.mode == "webhook" and not (telegram.webhook_url and secret):
            raise BotConfigError(
                "telegram.mode = 'webhook' needs telegram.webhook_url (the public https "
                f"URL) and {WEBHOOK_SECRET_VARIABLE} in the environment"
            )
        await self.application.initialize()
        await self._register_commands()
        await self.application.start()
        updater = self.application.updater
        assert updater is not None
        if telegram.mode == "webhook":
            await self._start_webhook(secret)
        else:
            await updater.start_polling(poll_interval=0.0, timeout=10, bootstrap_retries=-1)
        me = self.application.bot
        log.info("telegram bot @%s is serving (%s)", me.username, telegram.mode)

    async def _start_webhook(self, secret: str) -> None:
        """Our own endpoint rather than the updater's, which reads a whole body before it
        checks the secret (bot/telegram_webhook.py); then tell Telegram where it is."""
        telegram = self.settings.telegram
        self._webhook = WebhookServer(
            secret, self._deliver, telegram.webhook_listen, telegram.webhook_port
        )
        await self._webhook.start()
        url = telegram.webhook_url.rstrip("/") + WEBHOOK_PATH
        await self.application.bot.set_webhook(url, secret_token=secret)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        try:
            update = Update.de_json(payload, self.application.bot)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an update: {exc!r}") from None
        await self.application.update_queue.put(update)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking updates, let in-flight searches finish (bounded), then close."""
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._webhook is not None:
            await self._webhook.stop()
        await self._drain(grace_s)
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()

    @property
    def healthy(self) -> bool:
        updater = self.application.updater
        polling = updater is not None and updater.running
        hooked = self._webhook is not None and self._webhook.running
        return self.application.running and (polling or hooked)

    async def _register_commands(self) -> None:
        for language in languages():
            commands = [
                BotCommand(name, t(language, f"command.{name}"))
                for name in ("start", "help", "search", "similar", *self._saved_commands())
            ]
            code = None if language == "en" else language
            try:
                await self.application.bot.set_my_commands(commands, language_code=code)
            except (NetworkError, BadRequest) as exc:
                log.warning("could not register bot commands (%s): %s", language, exc)

    def _saved_commands(self) -> tuple[str, ...]:
        return ("saved", "alerts", "forget", "privacy") if self.saving is not None else ()

    # ---- commands --------------------------------------------------------------------

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            language = _language(update)
            saved = f"\n{t(language, 'start.saved')}" if self.saving is not None else ""
            await message.reply_text(t(language, "start") + saved)

    async def on_search_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        text = " ".join(context.args or []).strip()
        if not text:
            await message.reply_text(t(_language(update), "search_usage"))
            return
        await self._tracked(self._answer(update, message, Query(text=text), PageToken()))

    async def on_similar_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        target = message.reply_to_message
        query = self.query_of(target) if target is not None else Query()
        extra = " ".join(context.args or []).strip()
        if not query.photo_file_ids:
            await message.reply_text(t(_language(update), "similar_needs_photo"))
            return
        if extra:
            query = Query(query.photo_file_ids, query.photo_sizes, extra)
        await self._tracked(self._answer(update, message, query, PageToken()))

    async def on_stats(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not await self._is_admin(update):
            return
        manifest = self.engine.index.manifest
        await message.reply_text(
            t(
                _language(update),
                "stats",
                searches=self.stats.searches,
                errors=self.stats.errors,
                rate_limited=self.stats.rate_limited,
                busy=self.stats.busy,
                p50_ms=self.stats.percentile_ms(50),
                p95_ms=self.stats.percentile_ms(95),
                build=manifest.build_id,
                products=manifest.products,
            )
            + await last_day_text(self.analytics, _language(update))
        )

    async def on_reload(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not await self._is_admin(update):
            return
        language = _language(update)
        try:
            changed = await asyncio.to_thread(self.engine.reload_if_changed)
        except IndexLoadError as exc:
            await message.reply_text(t(language, "reload_failed", reason=str(exc)))
            return
        build = self.engine.index.manifest.build_id
        await message.reply_text(
            t(language, "reloaded" if changed else "reload_unchanged", build=build)
        )
        if changed and self.alerts is not None:
            self.alerts.wake()

    async def _is_admin(self, update: Update) -> bool:
        user = update.effective_user
        if user is not None and user.id in self.settings.telegram.admins:
            return True
        if update.effective_message is not None:
            await update.effective_message.reply_text(t(_language(update), "admin_only"))
        log.info("refused an admin command from user %s", user.id if user else "?")
        return False

    # ---- photos ----------------------------------------------------------------------

    def query_of(self, message: Message | None) -> Query:
        """The search a message asks for: its photo (or image file) and caption, or the
        words after /search; for a /similar reply, the photo it replies to."""
        if message is None:
            return Query()
        text = message.text or ""
        if text.startswith("/search"):
            return Query(text=text.partition(" ")[2].strip() or None)
        if text.startswith("/similar"):
            inner = self.query_of(message.reply_to_message)
            refine = text.partition(" ")[2].strip()
            return Query(inner.photo_file_ids, inner.photo_sizes, refine or inner.text)
        caption = self._strip_mention(message.caption or "") or None
        if message.photo:
            largest = message.photo[-1]
            return Query((largest.file_id,), (largest.file_size or 0,), caption)
        document = message.document
        if document is not None:
            return Query((document.file_id,), (document.file_size or 0,), caption)
        return Query()

    def _strip_mention(self, caption: str) -> str:
        username = self.application.bot.username if self.application.bot else ""
        if username:
            caption = re.sub(rf"@{re.escape(username)}\b", "", caption, flags=re.IGNORECASE)
        return caption.strip()

    def _addressed_to_me(self, message: Message) -> bool:
        """In groups, answer only when asked: a mention in the caption, or a reply to us."""
        if message.chat.type == ChatType.PRIVATE:
            return True
        username = (self.application.bot.username or "").lower()
        if username and f"@{username}" in (message.caption or "").lower():
            return True
        replied = message.reply_to_message
        return bool(
            replied and replied.from_user and replied.from_user.id == self.application.bot.id
        )

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not self._addressed_to_me(message):
            return
        pending = self._albums.get(str(message.media_group_id))
        if message.media_group_id and pending is not None:
            pending.append(message)  # answered with the album's first photo
            return
        if not await self._may_reply(update):
            return
        document = message.document
        if document is not None and not message.photo:
            mime = (document.mime_type or "").lower()
            if mime.startswith(_NOT_PHOTO_MIME):
                await message.reply_text(t(_language(update), "not_a_photo_file"))
                return
        if message.media_group_id:
            await self._collect_album_photo(update, message)
            return
        await self._tracked(self._answer(update, message, self.query_of(message), PageToken()))

    async def _collect_album_photo(self, update: Update, message: Message) -> None:
        """Photos sent together arrive as separate updates: gather them for a moment,
        then answer once for the whole look (their embeddings are averaged)."""
        group_id = str(message.media_group_id)
        pending = self._albums[group_id] = [message]
        await asyncio.sleep(self.settings.telegram.media_group_wait_ms / 1000)
        del self._albums[group_id]
        messages = sorted(pending, key=lambda m: m.message_id)
        queries = [self.query_of(m) for m in messages]
        combined = Query(
            tuple(fid for q in queries for fid in q.photo_file_ids),
            tuple(size for q in queries for size in q.photo_sizes),
            next((q.text for q in queries if q.text), None),
        )
        await self._tracked(self._answer(update, messages[0], combined, PageToken()))

    async def on_sticker(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(t(_language(update), "sticker"))

    async def on_video(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(t(_language(update), "video"))

    async def on_page_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        callback = update.callback_query
        if callback is None:
            return
        keyboard_message = callback.message if isinstance(callback.message, Message) else None
        origin = keyboard_message.reply_to_message if keyboard_message is not None else None
        query = self.query_of(origin)
        try:
            token = decode_token(callback.data or "", self.engine.categories())
        except BadToken:
            log.info("refused a button press with unknown data %r", (callback.data or "")[:64])
            token = None
        answerable = token is not None and (token.query_key or not query.empty)
        if token is None or keyboard_message is None or not answerable:
            await callback.answer(t(_language(update), "expired"), show_alert=True)
            return
        await callback.answer()
        await self._tracked(self._answer(update, origin or keyboard_message, query, token))

    # ---- the search and the reply ----------------------------------------------------

    async def _answer(
        self, update: Update, origin: Message, query: Query, token: PageToken
    ) -> None:
        """Run the search flow for `query` (or the page `token` names) and reply to `origin`."""
        language = _language(update)
        chat_id = origin.chat_id
        user = update.effective_user
        request = SearchRequest(
            user_id=user.id if user is not None else None,
            read_inputs=self._reader(query),
            page=token,
            k=self.settings.telegram.album_size,
            declared_sizes=query.photo_sizes,
            size_limit=self.download_limit,
        )
        outcome = await self.flow.run(request, lambda: self._uploading(chat_id))
        if isinstance(outcome, Refusal):
            await self._say(chat_id, origin, refusal_text(outcome, language, TELEGRAM_WORDING))
            return
        await self._send_album(chat_id, origin, outcome, language)
        await self._send_keyboard(chat_id, origin, outcome, language)
        if outcome.look is not None:
            await self._send_garment_picker(chat_id, origin, outcome.look, language)

    def _reader(self, query: Query) -> ReadInputs | None:
        """How to (re-)read a query's photos and words from Telegram."""
        if query.empty:
            return None

        async def read() -> Inputs:
            photos = await asyncio.gather(*(self._download(fid) for fid in query.photo_file_ids))
            return Inputs(list(photos), query.text)

        return read

    async def _download(self, file_id: str) -> bytes:
        file = await self.application.bot.get_file(file_id)
        if file.file_size and file.file_size > self.download_limit:
            raise Unreadable("too_large")
        try:  # getFile may leave out the size: the download itself stops at the limit
            return bytes(await file.download_as_bytearray())
        except DownloadTooLarge:
            raise Unreadable("too_large") from None

    @contextlib.asynccontextmanager
    async def _uploading(self, chat_id: int) -> AsyncIterator[None]:
        action = asyncio.create_task(self._keep_uploading_action(chat_id))
        try:
            yield
        finally:
            action.cancel()

    async def _keep_uploading_action(self, chat_id: int) -> None:
        """From `telegram.chat_action_after_ms` on, until cancelled: an album ready before
        sends no chat action, and its requests (getFile, the download) go out alone."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(self.settings.telegram.chat_action_after_ms / 1000)
            while True:
                with contextlib.suppress(NetworkError, BadRequest, Forbidden):
                    await self.application.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
                await asyncio.sleep(CHAT_ACTION_EVERY_S)

    async def _say(self, chat_id: int, origin: Message, text: str, **kwargs: Any) -> None:
        await _with_network_retries(
            lambda: self.application.bot.send_message(
                chat_id, text, reply_parameters=_reply_to(origin), **kwargs
            )
        )

    def _photo_source(self, hit: Hit) -> tuple[str, Any]:
        """(cache key, what to hand Telegram) for a product photo."""
        key = hit.image_path or hit.image
        cached = self.file_ids.get(key)
        if cached is not None:
            return key, cached
        is_url = hit.image.lower().startswith(("http://", "https://"))
        if is_url and (self.settings.telegram.photo_source == "url" or not hit.image_path):
            return key, hit.image
        if hit.image_path and Path(hit.image_path).is_file():
            return key, Path(hit.image_path).read_bytes()
        return key, hit.image

    def _item(self, hit: Hit, link: str, language: str | None) -> tuple[str, Any, str]:
        """(cache key, photo source, HTML caption) for one product of an album."""
        key, source = self._photo_source(hit)
        return key, source, caption_html(hit, link, language)

    def _remember_file_ids(
        self, keys: list[str], sent: tuple[Message, ...] | list[Message]
    ) -> None:
        for key, message in zip(keys, sent, strict=False):
            if message.photo:
                self.file_ids.put(key, message.photo[-1].file_id)

    async def _send_album(
        self, chat_id: int, origin: Message, results: Results, language: str | None
    ) -> None:
        items = [self._item(hit, self.link(results, hit), language) for hit in results.page.hits]
        keys = [key for key, _, _ in items]
        bot = self.application.bot
        if len(items) > 1:
            media = [
                InputMediaPhoto(media=source, caption=caption, parse_mode=ParseMode.HTML)
                for _, source, caption in items
            ]
            try:
                sent = await _with_network_retries(
                    lambda: bot.send_media_group(chat_id, media, reply_parameters=_reply_to(origin))
                )
                self._remember_file_ids(keys, sent)
                return
            except BadRequest as exc:
                # One photo Telegram cannot use sinks the whole album: send them one by one.
                log.warning("album rejected (%s); sending its photos one by one", exc.message)
        for key, source, caption in items:
            try:
                message = await _with_network_retries(
                    lambda source=source, caption=caption: bot.send_photo(  # type: ignore[misc]  # mypy cannot type a lambda with default arguments
                        chat_id,
                        source,
                        caption=caption,
                        parse_mode=ParseMode.HTML,
                        reply_parameters=_reply_to(origin),
                    )
                )
                self._remember_file_ids([key], [message])
            except BadRequest as exc:
                log.warning("product photo %s rejected: %s", key, exc.message)

    def keyboard(self, results: Results, language: str | None) -> InlineKeyboardMarkup:
        page = results.page
        rows: list[list[InlineKeyboardButton]] = [
            [
                InlineKeyboardButton(
                    button_label(n, hit),
                    url=self.link(results, hit),
                )
            ]
            for n, hit in enumerate(page.hits, start=page.offset + 1)
        ]
        if self.saving is not None:
            rows.append(
                [
                    InlineKeyboardButton(
                        t(language, "button.save", number=n),
                        callback_data=button_data(SAVE, hit.product.product_id),
                    )
                    for n, hit in enumerate(page.hits, start=page.offset + 1)
                ]
            )
        rows.append([_page_button(t(language, key), token) for key, token in results.navigation()])
        buttons = [
            _page_button(t(language, "button.category", category=c), results.only(c))
            for c in self._category_choices(results)
        ]
        if results.token.category:
            buttons.append(_page_button(t(language, "button.all"), results.only(None)))
        rows += [buttons[i : i + 3] for i in range(0, len(buttons), 3)]
        return InlineKeyboardMarkup(rows)

    def _category_choices(self, results: Results) -> list[str]:
        """Categories of what is on screen first: the likeliest refinements."""
        shown = [h.product.category for h in results.page.hits if h.product.category]
        everything = dict.fromkeys(shown + self.engine.categories())
        return [c for c in everything if c != results.token.category][:6]

    async def _send_keyboard(
        self, chat_id: int, origin: Message, results: Results, language: str | None
    ) -> None:
        lines = [t(language, "results")]
        garment = results_for(language, results.garment_kind)
        if garment is not None:
            lines.insert(0, garment)
        if results.page.text_ignored:
            lines.insert(0, t(language, "caption_ignored"))
        markup = self.keyboard(results, language)
        await self._say(chat_id, origin, "\n".join(lines), reply_markup=markup)

    async def _send_garment_picker(
        self, chat_id: int, origin: Message, look: Look, language: str | None
    ) -> None:
        """The shopper's photo with numbered garments, a button for each: a reply to the
        shopper's own message, so in a group it answers only whoever asked."""
        picker = await self.flow.garment_picker(look)
        if picker is None:
            return
        buttons = [
            _page_button(garment_button_label(language, c.number, c.kind), c.token)
            for c in picker.choices
        ]
        rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
        bot = self.application.bot
        await _with_network_retries(
            lambda: bot.send_photo(
                chat_id,
                picker.picture,
                caption=t(language, "garments.pick"),
                reply_markup=InlineKeyboardMarkup(rows),
                reply_parameters=_reply_to(origin),
            )
        )

    # ---- saved products and alerts ------------------------------------------------------

    async def on_saved_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """ "♡ n" under an album saves its product; "✕ n" under /saved removes one. The
        answer is a toast that disappears, not a message."""
        callback = update.callback_query
        if callback is None:
            return
        language = _language(update)
        ref = parse_button_data(callback.data or "")
        if self.saving is None or ref is None:
            await callback.answer(t(language, "expired"), show_alert=True)
            return
        shopper = _shopper(update)
        if ref.action == SAVE:
            product = self.saving.product(ref)
            if product is None:
                await callback.answer(t(language, "saved.gone"), show_alert=True)
                return
            await callback.answer(outcome_text(await self.saving.save(shopper, product), language))
            return
        removed = await self._remove(shopper, ref)
        await callback.answer(t(language, "saved.removed" if removed else "saved.not_saved"))
        keyboard_message = callback.message if isinstance(callback.message, Message) else None
        if keyboard_message is not None:
            listing = await self.saving.listing(shopper)
            text, markup = self._listing_message(listing, language)
            with contextlib.suppress(BadRequest):  # "message is not modified"
                await keyboard_message.edit_text(
                    text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                    disable_web_page_preview=True,
                )

    async def _remove(self, shopper: Shopper, ref: ProductRef) -> bool:
        assert self.saving is not None
        if ref.product_id is not None:
            return await self.saving.remove(shopper, ref.product_id)
        return await self.saving.remove_by_digest(shopper, ref.digest or "")

    def _listing_message(
        self, listing: SavedListing, language: str | None
    ) -> tuple[str, InlineKeyboardMarkup | None]:
        assert self.saving is not None
        links = [
            self.saving.buy_link(e.product, self.platform) if e.product is not None else None
            for e in listing.entries
        ]
        rows = []
        for number, (entry, link) in enumerate(zip(listing.entries, links, strict=True), start=1):
            row = (
                []
                if link is None
                else [InlineKeyboardButton(t(language, "saved.buy", number=number), url=link)]
            )
            remove = button_data(REMOVE, entry.item.product_id)
            row.append(
                InlineKeyboardButton(
                    t(language, "saved.remove", number=number), callback_data=remove
                )
            )
            rows.append(row)
        markup = InlineKeyboardMarkup(rows) if rows else None
        return listing_html(listing, language, links), markup

    async def on_saved(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or self.saving is None or update.effective_user is None:
            return
        language = _language(update)
        listing = await self.saving.listing(_shopper(update))
        text, markup = self._listing_message(listing, language)
        await message.reply_text(
            text, parse_mode=ParseMode.HTML, reply_markup=markup, disable_web_page_preview=True
        )

    async def on_alerts(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or self.saving is None or update.effective_user is None:
            return
        language = _language(update)
        shopper = _shopper(update)
        choice = " ".join(context.args or []).strip().lower()
        if choice in ("on", "off"):
            await self.saving.set_alerts(shopper, choice == "on")
            await message.reply_text(t(language, f"alerts.{choice}"))
            return
        state = "on" if await self.saving.alerts_on(shopper) else "off"
        await message.reply_text(t(language, f"alerts.state_{state}"))

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = update.effective_user
        if message is None or self.saving is None or user is None:
            return
        forgotten = await self.saving.forget(_shopper(update), user.id)
        await message.reply_text(forgotten_text(forgotten, _language(update)))

    async def on_privacy(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await message.reply_text(privacy_text(self.settings, _language(update)))

    async def deliver_alert(
        self, alert: PendingAlert, product: Product, image: ImageRecord | None
    ) -> Delivery:
        """The alert as a photo with its Buy link, to the shopper's private chat (its id is
        the user id)."""
        assert self.saving is not None
        language = alert.language or None
        source = image.source if image is not None else product.image
        hit = Hit(product, 0.0, source, image.local_path if image is not None else None)
        key, photo = self._photo_source(hit)
        link = self.saving.buy_link(product, self.platform)
        caption = (
            f"<b>{html.escape(alert_text(alert.kind, product, alert.old_price, language))}</b>\n"
            f'<a href="{html.escape(link, quote=True)}">{html.escape(t(language, "buy"))}</a>'
        )
        try:
            sent = await self.application.bot.send_photo(
                int(alert.user_id), photo, caption=caption, parse_mode=ParseMode.HTML
            )
        except Forbidden:
            return Delivery.BLOCKED
        except BadRequest as exc:
            log.warning("alert %d refused: %s", alert.id, exc.message)
            return Delivery.FAILED
        except TelegramError as exc:  # the network, or 429s past the rate limiter's retries
            log.info("alert %d not sent now: %r", alert.id, exc)
            return Delivery.RETRY
        self._remember_file_ids([key], [sent])
        return Delivery.SENT

    # ---- inline mode -------------------------------------------------------------------

    async def on_inline_query(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        inline = update.inline_query
        if inline is None or not inline.query.strip():
            return
        words = inline.query.strip()

        async def read() -> Inputs:
            return Inputs(text=words)

        offset = inline_offset(inline.offset)
        request = SearchRequest(
            inline.from_user.id, read, PageToken(offset=offset), k=self.settings.search.max_k
        )
        outcome = await self.flow.run(request, contextlib.nullcontext)
        if isinstance(outcome, Refusal):
            await inline.answer([], cache_time=INLINE_REFUSAL_CACHE_S.get(outcome.kind, 30))
            return
        page, language = outcome.page, _language(update)
        results = [self._inline_result(hit, self.link(outcome, hit), language) for hit in page.hits]
        next_offset = str(offset + len(page.hits)) if page.has_more else ""
        await inline.answer(results, cache_time=30, next_offset=next_offset)

    def _inline_result(
        self, hit: Hit, link: str, language: str | None
    ) -> InlineQueryResultPhoto | InlineQueryResultCachedPhoto | InlineQueryResultArticle:
        caption = caption_html(hit, link, language)
        result_id = hit.product.product_id.encode()[:60].hex()[:64]
        cached = self.file_ids.get(hit.image_path or hit.image)
        if hit.image.lower().startswith(("http://", "https://")):
            return InlineQueryResultPhoto(
                result_id,
                hit.image,
                hit.image,
                caption=caption,
                parse_mode=ParseMode.HTML,
                title=hit.product.title,
            )
        if cached is not None:
            return InlineQueryResultCachedPhoto(
                result_id, cached, caption=caption, parse_mode=ParseMode.HTML
            )
        return InlineQueryResultArticle(
            result_id,
            hit.product.title,
            InputTextMessageContent(caption, parse_mode=ParseMode.HTML),
            url=link,
            description=button_label(1, hit).partition(" ")[2],
        )

    # ---- errors ----------------------------------------------------------------------

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """One place for everything a handler did not expect: log with context, apologise."""
        error = context.error
        self.counter.refused("unexpected")
        where = ""
        if isinstance(update, Update):
            chat = update.effective_chat
            where = f"update {update.update_id} chat {chat.id if chat else '?'}"
        log.error("unhandled error in %s: %r", where or "the bot", error, exc_info=error)
        if isinstance(update, Update) and update.effective_chat is not None:
            if not await self._may_reply(update):
                return
            with contextlib.suppress(Exception):
                await context.bot.send_message(
                    update.effective_chat.id, t(_language(update), "apology")
                )


class BotConfigError(ValueError):
    """The bot cannot start with these settings; the message says what to set."""


def _language(update: Update) -> str | None:
    user = update.effective_user
    return user.language_code if user is not None else None


def _shopper(update: Update) -> Shopper:
    user = update.effective_user
    assert user is not None
    return Shopper("telegram", str(user.id), user.language_code or "")


def _page_button(label: str, token: PageToken) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=encode_token(token))


def _reply_to(message: Message) -> ReplyParameters:
    return ReplyParameters(message_id=message.message_id, allow_sending_without_reply=True)


def _is_transient(error: BaseException) -> bool:
    # BadRequest subclasses NetworkError in python-telegram-bot, but retrying cannot fix it.
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


async def _with_network_retries(send: Callable[[], Awaitable[Any]], attempts: int = 3) -> Any:
    """Network errors and timeouts are retried with backoff; 429s are the rate limiter's."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=4.0),
        retry=retry_if_exception(_is_transient),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await send()
    raise AssertionError("unreachable: tenacity re-raises the last error")
