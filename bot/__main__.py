"""`python -m bot`: build the engine once, then run the bots whose tokens are set.

With no token it answers one demo photo in the terminal and says how to add a token.
Tokens come from the environment only (TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from bot.discord_bot import DiscordBot
from bot.frontend import Frontend
from bot.http_server import HealthServer
from bot.logs import configure_logging
from bot.metrics import Metrics
from bot.render import album_as_text
from bot.settings import BotSettings, load_bot_settings
from bot.telegram_bot import BotConfigError, TelegramBot
from engine.config import ConfigError
from engine.embedder import ModelLoadError
from engine.index import IndexLoadError
from engine.search import Engine

log = logging.getLogger("fashionbot")

TOKEN_VARIABLES = ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")
SECRET_VARIABLES = (*TOKEN_VARIABLES, "TELEGRAM_WEBHOOK_SECRET")  # masked in every log line

HOW_TO_ADD_A_TOKEN = """\
No bot token is set, so this was a terminal demo. To go live:
  Telegram: talk to @BotFather, create a bot, then  export TELEGRAM_BOT_TOKEN=...
  Discord:  create an application at the developer portal, then  export DISCORD_BOT_TOKEN=...
and run `make run` again. Tokens come from the environment (or a file named by
  TELEGRAM_BOT_TOKEN_FILE / DISCORD_BOT_TOKEN_FILE), never from the repository."""


def read_secret(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    if environ.get(name):
        return environ[name].strip()
    path = environ.get(f"{name}_FILE")
    return Path(path).read_text(encoding="utf-8").strip() if path else ""


def demo_photo(settings: BotSettings) -> Path | None:
    folder = settings.resolve_path("data/demo/images")
    photos = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
    return photos[0] if photos else None


async def terminal_demo(engine: Engine, settings: BotSettings) -> int:
    photo = demo_photo(settings)
    if photo is None:
        print("No demo photo found in data/demo/images.", file=sys.stderr)
        return 1
    page = await engine.search(image=photo.read_bytes())
    print(f"A shopper sends {photo.name}; the bot would answer with this album:\n")
    print(album_as_text(page))
    print(f"\n({page.timings_ms['total_ms']:.0f} ms)\n")
    print(HOW_TO_ADD_A_TOKEN)
    return 0


async def serve(
    engine: Engine, settings: BotSettings, tokens: dict[str, str], webhook_secret: str = ""
) -> int:
    """Run the enabled bots on this event loop, sharing the engine, until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bots: list[Frontend] = []
    if "TELEGRAM_BOT_TOKEN" in tokens:
        bots.append(
            TelegramBot(
                engine, settings, tokens["TELEGRAM_BOT_TOKEN"], webhook_secret=webhook_secret
            )
        )
    if "DISCORD_BOT_TOKEN" in tokens:
        bots.append(DiscordBot(engine, settings, tokens["DISCORD_BOT_TOKEN"]))
    metrics = Metrics(engine)
    for bot in bots:
        bot.metrics = metrics
    await engine.warm_up()
    health = HealthServer.configured(engine, metrics, bots, settings.http)
    watcher = None
    code = 0
    try:
        if health is not None:
            await health.start()
        for bot in bots:
            await bot.start()
        if settings.index.watch_interval_s:
            watcher = asyncio.create_task(engine.watch_index(settings.index.watch_interval_s))
        await stop.wait()
        log.info("stopping: finishing searches in flight")
    except BotConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except Exception as exc:  # a bad token, an unreachable API, a port in use: say so
        log.error("could not start: %s", exc)
        code = 1
    finally:
        if watcher is not None:
            watcher.cancel()
        await asyncio.gather(*(bot.stop() for bot in bots), return_exceptions=True)
        if health is not None:
            await health.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $FASHIONBOT_CONFIG or config.toml)")
    args = parser.parse_args(argv)
    try:
        settings = load_bot_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        secrets = {name: read_secret(name) for name in SECRET_VARIABLES}
    except OSError as exc:
        print(f"error: cannot read a secret file: {exc}", file=sys.stderr)
        return 2
    tokens = {name: secrets[name] for name in TOKEN_VARIABLES if secrets[name]}
    configure_logging(settings.log.level, secrets.values(), settings.log.format)
    try:
        engine = Engine.open(settings)
    except (ModelLoadError, IndexLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if not tokens:
            return asyncio.run(terminal_demo(engine, settings))
        webhook_secret = secrets["TELEGRAM_WEBHOOK_SECRET"]
        return asyncio.run(serve(engine, settings, tokens, webhook_secret))
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
