"""The chat front-ends' settings: the engine's sections plus the bots' own, read from the
same file and environment (engine/config.py). This is the complete schema of config.toml,
so a misspelt section is an error here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator
from pydantic_settings import SettingsConfigDict

from engine.config import Section, Settings, load_settings


class TelegramSettings(Section):
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    album_size: Annotated[int, Field(ge=1, le=10)] = 6
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str = ""
    webhook_listen: str = "0.0.0.0"
    webhook_port: Annotated[int, Field(ge=1, le=65535)] = 8443
    media_group_wait_ms: NonNegativeInt = 800
    chat_action_after_ms: NonNegativeInt = 500
    request_timeout_s: PositiveFloat = 15.0
    photo_source: Literal["upload", "url"] = "upload"
    admin_ids: str = ""

    @field_validator("admin_ids")
    @classmethod
    def _numeric_ids(cls, value: str) -> str:
        if not all(part.strip().lstrip("-").isdigit() for part in value.split(",") if part.strip()):
            raise ValueError("must be comma-separated numeric user ids")
        return value

    @property
    def admins(self) -> frozenset[int]:
        return frozenset(int(p) for p in self.admin_ids.split(",") if p.strip())


class LimitSettings(Section):
    searches_per_minute: PositiveInt = 10
    replies_per_minute: PositiveInt = 20


class LinkSettings(Section):
    utm_medium: str = "chatbot"
    utm_campaign: str = "fashionbot"
    redirect_base_url: str = ""  # "" = shop links go straight to the shop
    max_age_days: PositiveInt = 30

    @field_validator("redirect_base_url")
    @classmethod
    def _http_address(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// address, or empty")
        return value.rstrip("/")


class DiscordSettings(Section):
    test_guild_id: NonNegativeInt = 0
    reply_style: Literal["gallery", "embeds"] = "gallery"
    ephemeral: bool = False
    media_hosts: str = "cdn.discordapp.com,media.discordapp.net"
    allow_loopback_media: bool = False  # only for tests against a local fake Discord
    guild_ready_timeout_s: Annotated[float, Field(ge=0.0)] = 2.0

    @property
    def allowed_media_hosts(self) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in self.media_hosts.split(",") if h.strip())


class HttpSettings(Section):
    # Loopback unless the operator opens it: /metrics tells anyone who can reach it about
    # traffic and the catalog. The Docker image listens on 0.0.0.0 (its network is private).
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080  # 0 disables the server


class SavedSettings(Section):
    enabled: bool = True
    max_per_shopper: Annotated[int, Field(ge=1, le=10_000)] = 200
    list_size: Annotated[int, Field(ge=1, le=40)] = 20


class AlertSettings(Section):
    enabled: bool = True
    min_drop_percent: Annotated[float, Field(ge=0.0, lt=100.0)] = 5.0
    messages_per_second: PositiveFloat = 20.0
    per_chat_interval_s: Annotated[float, Field(ge=0.0)] = 1.0
    check_interval_s: PositiveFloat = 2.0
    max_attempts: PositiveInt = 5


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class BotSettings(Settings):
    model_config = SettingsConfigDict(extra="forbid")

    telegram: TelegramSettings = TelegramSettings()
    limits: LimitSettings = LimitSettings()
    links: LinkSettings = LinkSettings()
    discord: DiscordSettings = DiscordSettings()
    http: HttpSettings = HttpSettings()
    saved: SavedSettings = SavedSettings()
    alerts: AlertSettings = AlertSettings()
    log: LogSettings = LogSettings()


def load_bot_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> BotSettings:
    """The engine's and the bots' settings, read like `engine.config.load_settings`."""
    return load_settings(path, environ, BotSettings)
