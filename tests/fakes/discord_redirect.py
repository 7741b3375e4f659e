"""Pointing discord.py at the fake Discord. discord.py keeps its endpoints in class
attributes, with no public setting, so the redirection lives in the tests only: the
`fake_discord` fixture patches them for one test, and

    python -m tests.fakes.discord_redirect

runs the real `python -m bot` with them patched, for tests of the whole process (the
fake's URLs come from FAKE_DISCORD_API_BASE and FAKE_DISCORD_GATEWAY_URL)."""

from __future__ import annotations

import os
import runpy

import discord
import yarl

API_BASE_VARIABLE = "FAKE_DISCORD_API_BASE"
GATEWAY_VARIABLE = "FAKE_DISCORD_GATEWAY_URL"


def endpoints(api_base: str, gateway_url: str) -> list[tuple[type, str, object]]:
    """(class, attribute, value) for each endpoint discord.py must use."""
    return [
        (discord.http.Route, "BASE", api_base.rstrip("/")),
        (discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(gateway_url)),
    ]


if __name__ == "__main__":
    for owner, name, value in endpoints(
        os.environ[API_BASE_VARIABLE], os.environ[GATEWAY_VARIABLE]
    ):
        setattr(owner, name, value)
    runpy.run_module("bot", run_name="__main__", alter_sys=True)
