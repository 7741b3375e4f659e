"""A fake Discord on loopback for the real discord.py client: REST under /api/v10 (point
`discord.http.Route.BASE` here) and a gateway websocket that says HELLO, answers
IDENTIFY with READY and heartbeats with ACKs, and dispatches INTERACTION_CREATE events
that tests build from raw payloads. Attachments are served by the same server, and so
are the messages built with `message_payload` (GET .../messages/{id}). Messages the bot
sends in answer to an interaction carry its `interaction_metadata`, as Discord's do.
`fail` makes the next matching request answer 429, as Discord's rate limits do."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.discord_bot import DiscordBot
from bot.settings import BotSettings
from engine.search import Engine
from tests.fakes.loopback import LoopbackServer

APP_ID = "1100000000000000001"
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
BOT_USER = {
    "id": APP_ID,
    "username": "fashionbot",
    "discriminator": "0",
    "global_name": "FashionBot",
    "avatar": None,
    "bot": True,
}


def _json(body: Any) -> web.Response:
    # discord.py parses a body only when Content-Type is exactly application/json
    return web.Response(
        body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


@dataclass
class RestCall:
    method: str
    path: str
    payload: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    response: dict[str, Any] = field(default_factory=dict)  # the message, for webhooks


class FakeDiscord(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[RestCall] = []
        self.media: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = itertools.count(2)
        self._changed = asyncio.Condition()
        self.identified = asyncio.Event()
        self.messages: dict[str, dict[str, Any]] = {}  # everything posted, by id
        self._interactions: dict[str, dict[str, Any]] = {}  # by interaction token
        self._failures: list[tuple[str, str, float]] = []
        self.blocked_dms: set[str] = set()  # user ids whose direct messages answer 403

    # ---- server -----------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/media/{name}", self._media)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        return app

    async def stop(self) -> None:
        for socket in self._sockets:
            await socket.close()
        await super().stop()

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    def snowflake(self) -> str:
        return str(1_400_000_000_000_000_000 + next(self._ids))

    # ---- building interactions ----------------------------------------------------------

    def host(self, data: bytes, name: str = "photo.jpg") -> str:
        self.media[name] = data
        return f"http://127.0.0.1:{self.port}/media/{name}"

    def attachment(
        self,
        data: bytes,
        name: str = "photo.jpg",
        content_type: str = "image/jpeg",
        size: int | None = None,
    ) -> dict[str, Any]:
        url = self.host(data, name)
        return {
            "id": self.snowflake(),
            "filename": name,
            "size": size if size is not None else len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
            "width": 800,
            "height": 800,
        }

    def _base(self, kind: int, user_id: str, locale: str) -> dict[str, Any]:
        user = self._user(user_id)
        return {
            "id": self.snowflake(),
            "application_id": APP_ID,
            "type": kind,
            "token": f"interaction-token-{next(self._ids)}",
            "version": 1,
            "guild_id": GUILD_ID,
            "channel_id": CHANNEL_ID,
            "channel": {
                "id": CHANNEL_ID,
                "type": 0,
                "guild_id": GUILD_ID,
                "name": "shop-talk",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
            },
            "member": {
                "user": user,
                "roles": [],
                "joined_at": "2024-01-01T00:00:00+00:00",
                "deaf": False,
                "mute": False,
                "permissions": "2147483647",
                "flags": 0,
            },
            "locale": locale,
            "guild_locale": "en-US",
            "app_permissions": "2147483647",
            "entitlements": [],
            "authorizing_integration_owners": {"0": GUILD_ID},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }

    def slash(
        self,
        name: str,
        options: list[dict[str, Any]],
        attachments: list[dict[str, Any]] = (),
        user_id: str = "1500000000000000001",
        locale: str = "en-US",
    ) -> dict[str, Any]:
        payload = self._base(2, user_id, locale)
        payload["data"] = {"id": self.snowflake(), "name": name, "type": 1, "options": options}
        if attachments:
            payload["data"]["resolved"] = {"attachments": {a["id"]: a for a in attachments}}
        return payload

    def similar(
        self,
        data: bytes,
        *,
        user_id: str = "1500000000000000001",
        locale: str = "en-US",
        **options: Any,
    ) -> dict[str, Any]:
        attachment = options.pop("attachment", None) or self.attachment(data)
        opts = [{"name": "image", "type": 11, "value": attachment["id"]}]
        types = {"count": 4, "category": 3, "refine": 3}
        opts += [{"name": k, "type": types[k], "value": v} for k, v in options.items()]
        return self.slash("similar", opts, [attachment], user_id, locale)

    def message_payload(
        self,
        attachments: list[dict[str, Any]] = (),
        embeds: list[dict[str, Any]] = (),
        author: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        message = {
            "id": self.snowflake(),
            "channel_id": CHANNEL_ID,
            "author": author
            or {
                "id": "1600000000000000001",
                "username": "poster",
                "discriminator": "0",
                "avatar": None,
                "global_name": None,
            },
            "content": "",
            "timestamp": "2026-11-29T10:00:00+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": list(attachments),
            "embeds": list(embeds),
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": [],
        }
        self.messages[message["id"]] = message
        return message

    def fail(self, method: str, fragment: str, retry_after: float = 0.2) -> None:
        """The next `method` request whose path contains `fragment` answers 429."""
        self._failures.append((method, fragment, retry_after))

    def context_menu(
        self,
        message: dict[str, Any],
        name: str = "Find similar products",
        user_id: str = "1500000000000000001",
    ) -> dict[str, Any]:
        payload = self._base(2, user_id, "en-US")
        payload["data"] = {
            "id": self.snowflake(),
            "name": name,
            "type": 3,
            "target_id": message["id"],
            "resolved": {"messages": {message["id"]: message}},
        }
        return payload

    def button(
        self, custom_id: str, message: dict[str, Any], user_id: str = "1500000000000000001"
    ) -> dict[str, Any]:
        """A click on a button of `message` (a message the bot sent: RestCall.response)."""
        payload = self._base(3, user_id, "en-US")
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        payload["message"] = message
        return payload

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        await self.identified.wait()
        frame = json.dumps({"op": 0, "t": event, "s": next(self._sequence), "d": data})
        for socket in self._sockets:
            if not socket.closed:
                await socket.send_str(frame)

    async def interact(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._interactions[payload["token"]] = payload
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    # ---- what tests read ----------------------------------------------------------------

    def rest(self, method: str, fragment: str) -> list[RestCall]:
        return [c for c in self.calls if c.method == method and fragment in c.path]

    async def wait_for(
        self, method: str, fragment: str, count: int = 1, timeout: float = 20.0
    ) -> list[RestCall]:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.rest(method, fragment)) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.rest(method, fragment)

    # ---- handlers -------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame["op"] == 1:
                await socket.send_str(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                ready = {
                    "v": 10,
                    "user": BOT_USER,
                    "guilds": [],
                    "session_id": "fake-session",
                    "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                    "application": {"id": APP_ID, "flags": 0},
                }
                await socket.send_str(json.dumps({"op": 0, "t": "READY", "s": 1, "d": ready}))
                self.identified.set()
        return socket

    async def _media(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.media:
            return web.Response(status=404)
        return web.Response(body=self.media[name], content_type="application/octet-stream")

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        payload: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                elif key == "payload_json":
                    payload = json.loads(str(value))
        elif request.can_read_body:
            with contextlib.suppress(ValueError):
                payload = await request.json()
        call = RestCall(request.method, path, payload, files)
        response = self._rate_limited(call) or self._answer(call)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        return response

    def _rate_limited(self, call: RestCall) -> web.Response | None:
        for failure in self._failures:
            method, fragment, retry_after = failure
            if call.method == method and fragment in call.path:
                self._failures.remove(failure)
                body = {"message": "You are being rate limited.", "retry_after": retry_after}
                return web.Response(
                    status=429,
                    body=json.dumps({**body, "global": False}).encode(),
                    headers={"Content-Type": "application/json", "Via": "1.1 google"},
                )
        return None

    def _message(self, payload: dict[str, Any], token: str = "") -> dict[str, Any]:
        message = self.message_payload(author=BOT_USER)
        message.update(
            {k: payload[k] for k in ("content", "embeds", "flags", "components") if k in payload}
        )
        interaction = self._interactions.get(token)
        if interaction is not None:
            message["interaction_metadata"] = self._metadata(interaction)
        return message

    def _user(self, user_id: str) -> dict[str, Any]:
        return {
            "id": user_id,
            "username": f"member{user_id[-3:]}",
            "discriminator": "0",
            "avatar": None,
            "global_name": None,
        }

    def _metadata(self, interaction: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            "id": interaction["id"],
            "type": interaction["type"],
            "user": interaction["member"]["user"],
            "authorizing_integration_owners": interaction["authorizing_integration_owners"],
        }
        if interaction["type"] == 2 and interaction["data"].get("type") == 3:
            metadata["target_message_id"] = interaction["data"]["target_id"]
        if interaction["type"] == 3:
            metadata["interacted_message_id"] = interaction["message"]["id"]
        return metadata

    def _answer(self, call: RestCall) -> web.Response:
        path = call.path
        if path == "/users/@me":
            return _json(BOT_USER)
        if path == "/oauth2/applications/@me":
            return _json(
                {
                    "id": APP_ID,
                    "name": "fashionbot",
                    "description": "",
                    "icon": None,
                    "bot_public": True,
                    "bot_require_code_grant": False,
                    "owner": BOT_USER,
                    "verify_key": "00",
                    "flags": 0,
                }
            )
        if path == "/gateway/bot":
            return _json(
                {
                    "url": f"ws://127.0.0.1:{self.port}/gateway",
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 1000,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if path.endswith("/commands") and call.method == "PUT":
            commands = call.payload if isinstance(call.payload, list) else []
            return _json(
                [
                    {
                        "description": "",
                        "options": [],
                        **c,
                        "id": self.snowflake(),
                        "application_id": APP_ID,
                        "version": "1",
                        "default_member_permissions": None,
                        "type": c.get("type", 1),
                    }
                    for c in commands
                ]
            )
        if path.endswith("/callback"):
            interaction_id = path.split("/")[2]
            return _json(
                {
                    "interaction": {
                        "id": interaction_id,
                        "type": 2,
                        "response_message_loading": call.payload.get("type") == 5,
                        "response_message_ephemeral": bool(
                            call.payload.get("data", {}).get("flags", 0) & 64
                        ),
                    },
                    "resource": {"type": call.payload.get("type", 4)},
                }
            )
        if path.startswith("/users/") and path != "/users/@me" and call.method == "GET":
            return _json(self._user(path.rsplit("/", 1)[1]))
        if path == "/users/@me/channels" and call.method == "POST":
            recipient = str(call.payload["recipient_id"])  # its DM channel: the same id
            return _json({"id": recipient, "type": 1, "recipients": [self._user(recipient)]})
        if path.endswith("/messages") and call.method == "POST" and CHANNEL_ID not in path:
            if path.split("/")[2] in self.blocked_dms:
                body = {"message": "Cannot send messages to this user", "code": 50007}
                return web.Response(
                    status=403,
                    body=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                )
            call.response = self._message(call.payload)
            return _json(call.response)
        if path.startswith("/webhooks/") and call.method in ("POST", "PATCH"):
            call.response = self._message(call.payload, path.split("/")[3])
            return _json(call.response)
        if path.startswith(f"/channels/{CHANNEL_ID}/messages/") and call.method == "GET":
            posted = self.messages.get(path.rsplit("/", 1)[1])
            return _json(posted) if posted else web.Response(status=404)
        if call.method == "DELETE":
            return web.Response(status=204)
        return _json({})


def walk(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component of a message, nested ones and section accessories included."""
    found = []
    for component in components:
        found.append(component)
        found += walk(component.get("components", []))
        if "accessory" in component:
            found.append(component["accessory"])
    return found


def gallery_titles(call: RestCall) -> list[str]:
    """The product titles of a gallery reply, in order."""
    texts = [c["content"] for c in walk(call.payload["components"]) if c["type"] == 10]
    return [text.split("**")[1].split(". ", 1)[1] for text in texts if text.startswith("**")]


def page_button(call: RestCall, label: str) -> str | None:
    """The custom id of the reply's button labelled `label`."""
    for component in walk(call.payload["components"]):
        if component["type"] == 2 and component.get("label") == label and "custom_id" in component:
            return component["custom_id"]
    return None


async def followup(fake: FakeDiscord, count: int = 1) -> RestCall:
    """The `count`-th message the bot sent as an interaction follow-up."""
    return (await fake.wait_for("POST", f"/webhooks/{APP_ID}/", count))[count - 1]


async def start_bot(
    engine: Engine,
    settings: BotSettings,
    prepare: Callable[[DiscordBot], None] | None = None,
    **discord_settings: Any,
) -> DiscordBot:
    """A Discord bot on the fake Discord the `fake_discord` fixture points discord.py at:
    media from its loopback host allowed, searches not rate limited unless `limits` is
    given."""
    limits = discord_settings.pop("limits", {"searches_per_minute": 1000})
    configured = settings.with_overrides(
        discord={
            "media_hosts": "127.0.0.1",
            "allow_loopback_media": True,
            "guild_ready_timeout_s": 0.0,  # the fake's READY lists no servers to wait for
            **discord_settings,
        },
        limits=limits,
    )
    bot = DiscordBot(engine, configured, "fake.discord.token-not-real")
    if prepare is not None:  # what must be set before the commands are synced
        prepare(bot)
    await bot.start(timeout_s=30)
    return bot
