"""A fake Telegram Bot API on loopback (aiohttp), for running the real python-telegram-bot
client offline. It serves getUpdates from a queue of real update JSON, serves getFile and
file downloads, records every call (with uploaded files), and can inject failures."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.settings import BotSettings
from bot.telegram_bot import TelegramBot
from engine.search import Engine
from tests.fakes.loopback import LoopbackServer

BOT_USER = {
    "id": 777000111,
    "is_bot": True,
    "first_name": "FashionBot",
    "username": "fashion_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": True,
}


DROP_CONNECTION = 0  # a Rule status: close the socket without answering
HANG = -1  # a Rule status: answer nothing for `hang_s`, then close the socket


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    ok: bool = True
    at: float = field(default_factory=time.perf_counter)  # when the call arrived


@dataclass
class Rule:
    """Answer `method` with an error while `matches(call)` holds, `times` times."""

    method: str
    status: int
    description: str
    times: int = 1
    retry_after: int | None = None
    hang_s: float = 3.0
    matches: Callable[[Call], bool] = lambda call: True


def _decode_field(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class FakeBotApi(LoopbackServer):
    def __init__(self, token: str = "123456:TEST-token-not-real") -> None:
        super().__init__()
        self.token = token
        self.calls: list[Call] = []
        self.rules: list[Rule] = []
        self.files: dict[str, bytes] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Condition()
        self._new_call = asyncio.Condition()
        self._ids = itertools.count(1)
        self.download_delay_s = 0.0
        # Files served in chunks without a declared size (getFile leaves out file_size, the
        # download has no Content-Length): file id -> size, and how much was sent so far.
        self.streamed: dict[str, int] = {}
        self.bytes_served: dict[str, int] = {}
        self.downloads: list[tuple[str, float]] = []  # (file id, when its request arrived)

    # ---- server -----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"/bot{self.token}/{{method}}", self._handle)
        app.router.add_get(f"/file/bot{self.token}/{{path:.*}}", self._download)
        return app

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ---- what tests use -----------------------------------------------------------------

    def add_file(self, data: bytes) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        return file_id

    def add_streamed_file(self, size: int) -> str:
        file_id = f"streamed-{next(self._ids)}"
        self.streamed[file_id] = size
        self.bytes_served[file_id] = 0
        return file_id

    def user(self, user_id: int = 1001, language: str = "en") -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": f"User{user_id}",
            "language_code": language,
        }

    def chat(self, chat_id: int, kind: str = "private") -> dict[str, Any]:
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = "Shopper"
        else:
            chat["title"] = "Fashion group"
        return chat

    def message(
        self,
        chat_id: int = 1001,
        user_id: int = 1001,
        *,
        text: str | None = None,
        photo: bytes | None = None,
        document: bytes | None = None,
        mime_type: str = "image/jpeg",
        caption: str | None = None,
        chat_type: str = "private",
        language: str = "en",
        declared_size: int | None = None,
        reply_to: dict[str, Any] | None = None,
        media_group_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": self.chat(chat_id, chat_type),
            "from": self.user(user_id, language),
        }
        if text is not None:
            message["text"] = text
            if text.startswith("/"):
                command = text.split()[0]
                message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if photo is not None:
            file_id = self.add_file(photo)
            size = declared_size or len(photo)
            message["photo"] = [
                {
                    "file_id": file_id + "-thumb",
                    "file_unique_id": file_id + "t",
                    "width": 90,
                    "height": 90,
                    "file_size": 1000,
                },
                {
                    "file_id": file_id,
                    "file_unique_id": file_id + "u",
                    "width": 800,
                    "height": 800,
                    "file_size": size,
                },
            ]
            self.files[file_id + "-thumb"] = photo
        if document is not None:
            file_id = self.add_file(document)
            message["document"] = {
                "file_id": file_id,
                "file_unique_id": file_id + "u",
                "file_name": "upload.bin",
                "mime_type": mime_type,
                "file_size": declared_size or len(document),
            }
        if caption is not None:
            message["caption"] = caption
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        if media_group_id is not None:
            message["media_group_id"] = media_group_id
        message.update(extra or {})
        self.messages[(chat_id, message["message_id"])] = message
        return message

    async def push(self, **payload: Any) -> int:
        """Queue one update (message=..., callback_query=..., inline_query=...)."""
        update_id = next(self._ids)
        async with self._new_update:
            self._updates.append({"update_id": update_id, **payload})
            self._new_update.notify_all()
        return update_id

    async def send_message(self, **kwargs: Any) -> dict[str, Any]:
        message = self.message(**kwargs)
        await self.push(message=message)
        return message

    async def press(self, keyboard_message: dict[str, Any], data: str, user_id: int = 1001) -> None:
        await self.push(
            callback_query={
                "id": f"cb-{next(self._ids)}",
                "from": self.user(user_id),
                "chat_instance": "instance",
                "data": data,
                "message": keyboard_message,
            }
        )

    def sent(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods and c.ok]

    async def wait_for(
        self, method: str, count: int = 1, timeout: float = 20.0, **match: Any
    ) -> list[Call]:
        def found() -> list[Call]:
            return [
                c
                for c in self.calls
                if c.method == method
                and c.ok
                and all(c.params.get(k) == v for k, v in match.items())
            ]

        await self.wait_until(lambda: len(found()) >= count, timeout)
        return found()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> None:
        """Until `condition()` holds, re-checked whenever a call arrives; TimeoutError after
        `timeout` seconds."""

        async def until_true() -> None:
            async with self._new_call:
                await self._new_call.wait_for(condition)

        await asyncio.wait_for(until_true(), timeout)

    def fail(self, method: str, status: int, description: str, **kwargs: Any) -> Rule:
        rule = Rule(method, status, description, **kwargs)
        self.rules.append(rule)
        return rule

    # ---- handlers -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.perf_counter()  # before its body is read: an upload's parse is ours
        method = request.match_info["method"]
        form = await request.post()
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
            else:
                params[key] = _decode_field(str(value))
        call = Call(method, params, files, at=arrived)
        for rule in self.rules:
            if rule.method == method and rule.times > 0 and rule.matches(call):
                rule.times -= 1
                call.ok = False
                await self._record(call)
                if rule.status == HANG:  # until hang_s has passed or the test is over
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), rule.hang_s)
                if rule.status in (DROP_CONNECTION, HANG):
                    assert request.transport is not None
                    request.transport.abort()
                    return web.Response(status=500)
                body: dict[str, Any] = {
                    "ok": False,
                    "error_code": rule.status,
                    "description": rule.description,
                }
                if rule.retry_after is not None:
                    body["parameters"] = {"retry_after": rule.retry_after}
                return web.json_response(body, status=rule.status)
        if method == "getUpdates":
            await self._record(call)
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        result = self._result(method, params, files)
        await self._record(call)
        return web.json_response({"ok": True, "result": result})

    async def _record(self, call: Call) -> None:
        async with self._new_call:
            self.calls.append(call)
            self._new_call.notify_all()

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        wait = min(float(params.get("timeout") or 0), 0.5)

        def pending() -> list[dict[str, Any]]:
            return [u for u in self._updates if u["update_id"] >= offset]

        async with self._new_update:
            # As Telegram does: asking from `offset` confirms every earlier update, which
            # no later getUpdates (a restarted bot's) returns again.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not pending() and wait:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait_for(lambda: bool(pending())), wait)
            return pending()[:100]

    def _bot_message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        message: dict[str, Any] = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": self.chat(chat_id),
            "from": BOT_USER,
            **content,
        }
        reply = params.get("reply_parameters")
        if isinstance(reply, dict) and (chat_id, reply.get("message_id")) in self.messages:
            message["reply_to_message"] = self.messages[(chat_id, reply["message_id"])]
        if "reply_markup" in params:
            message["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, message["message_id"])] = message
        return message

    def _photo(self, media: Any, files: dict[str, bytes]) -> list[dict[str, Any]]:
        if isinstance(media, str) and media.startswith("attach://"):
            data = files[media.removeprefix("attach://")]
            file_id = self.add_file(data)
        else:
            file_id = str(media)  # a file id or URL Telegram would resolve
        return [{"file_id": file_id, "file_unique_id": file_id + "u", "width": 512, "height": 512}]

    def _result(self, method: str, params: dict[str, Any], files: dict[str, bytes]) -> Any:
        if method == "getMe":
            return BOT_USER
        if method == "getFile":
            file_id = str(params["file_id"])
            if file_id in self.streamed:
                return {"file_id": file_id, "file_unique_id": file_id + "u", "file_path": file_id}
            if file_id not in self.files:
                return None
            return {
                "file_id": file_id,
                "file_unique_id": file_id + "u",
                "file_size": len(self.files[file_id]),
                "file_path": f"photos/{file_id}.jpg",
            }
        if method == "sendMessage":
            return self._bot_message(params, text=params.get("text", ""))
        if method == "sendPhoto":
            photo = params.get("photo", "attach://photo" if "photo" in files else None)
            return self._bot_message(
                params, photo=self._photo(photo, files), caption=params.get("caption", "")
            )
        if method == "sendMediaGroup":
            return [
                self._bot_message(
                    params, photo=self._photo(item["media"], files), caption=item.get("caption", "")
                )
                for item in params["media"]
            ]
        return True  # setMyCommands, sendChatAction, answerCallbackQuery, deleteWebhook, ...

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        file_id = path.removeprefix("photos/").removesuffix(".jpg")
        self.downloads.append((file_id, time.perf_counter()))
        await asyncio.sleep(self.download_delay_s)
        if file_id in self.streamed:
            return await self._stream(request, file_id)
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def _stream(self, request: web.Request, file_id: str) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await response.prepare(request)
        chunk = bytes(64 * 1024)
        with contextlib.suppress(ConnectionError):
            while self.bytes_served[file_id] < self.streamed[file_id]:
                await response.write(chunk)
                self.bytes_served[file_id] += len(chunk)
        return response


def bot_settings(settings: BotSettings, api: FakeBotApi, **telegram: Any) -> BotSettings:
    """`settings` with the Telegram client pointed at `api`. Albums are gathered for 300 ms
    (tests wait less than shoppers would), user 4242 is an admin, and searches are not
    rate limited unless a test passes its own `limits`."""
    limits = telegram.pop("limits", {"searches_per_minute": 1000})
    return settings.with_overrides(
        telegram={
            "base_url": api.base_url,
            "base_file_url": api.base_file_url,
            "media_group_wait_ms": 300,
            "admin_ids": "4242",
            **telegram,
        },
        limits=limits,
    )


def titles(album: Call) -> list[str]:
    """The product titles of an album the bot sent, in order (captions start <b>title</b>)."""
    return [item["caption"].split("</b>")[0].removeprefix("<b>") for item in album.params["media"]]


def keyboard_of(call: Call) -> list[list[dict[str, Any]]]:
    return call.params["reply_markup"]["inline_keyboard"]


def button(call: Call, label: str) -> dict[str, Any] | None:
    return next((b for row in keyboard_of(call) for b in row if b["text"].startswith(label)), None)


def keyboard_message(api: FakeBotApi, call: Call) -> dict[str, Any]:
    """The message the bot sent (as the fake server stored it, with reply_to_message)."""
    return next(
        m
        for m in reversed(list(api.messages.values()))
        if m.get("reply_markup") == call.params["reply_markup"]
        and m["from"]["id"] == BOT_USER["id"]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_webhook_bot(
    engine: Engine, settings: BotSettings, api: FakeBotApi, public_url: str, secret: str
) -> tuple[TelegramBot, int]:
    """A bot in webhook mode listening on a free loopback port."""
    port = free_port()
    hooked = bot_settings(
        settings,
        api,
        mode="webhook",
        webhook_url=public_url,
        webhook_listen="127.0.0.1",
        webhook_port=port,
    )
    bot = TelegramBot(engine, hooked, api.token, webhook_secret=secret)
    await bot.start()
    return bot, port
