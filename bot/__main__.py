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

from bot.alerts import AlertService
from bot.analytics import Analytics, AnalyticsConfigError
from bot.click_links import LINK_SECRET, LinkSecretError
from bot.demo import run_terminal_demo, with_served_index
from bot.discord_bot import DiscordBot
from bot.frontend import Frontend
from bot.http_server import HealthServer
from bot.logs import configure_logging
from bot.metrics import Metrics
from bot.redirect import ClickRedirect, served_products
from bot.saving import open_saving
from bot.settings import BotSettings, load_bot_settings
from bot.telegram_bot import BotConfigError, TelegramBot
from engine.config import ConfigError
from engine.embedder import ModelLoadError, load_embedder
from engine.index import IndexLoadError
from engine.ingest.pipeline import BuildError
from engine.search import Engine

log = logging.getLogger("fashionbot")

TOKEN_VARIABLES = ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN")
SECRET_VARIABLES = (
    *TOKEN_VARIABLES,
    "TELEGRAM_WEBHOOK_SECRET",
    LINK_SECRET,
)  # masked in every log line


def read_secret(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    if environ.get(name):
        return environ[name].strip()
    path = environ.get(f"{name}_FILE")
    return Path(path).read_text(encoding="utf-8").strip() if path else ""


def frontends(
    engine: Engine,
    settings: BotSettings,
    tokens: dict[str, str],
    webhook_secret: str,
    metrics: Metrics,
) -> list[Frontend]:
    """The bots whose tokens are set, sharing `engine` and one metrics registry."""
    bots: list[Frontend] = []
    if "TELEGRAM_BOT_TOKEN" in tokens:
        bots.append(
            TelegramBot(
                engine, settings, tokens["TELEGRAM_BOT_TOKEN"], webhook_secret=webhook_secret
            )
        )
    if "DISCORD_BOT_TOKEN" in tokens:
        bots.append(DiscordBot(engine, settings, tokens["DISCORD_BOT_TOKEN"]))
    for bot in bots:
        bot.metrics = metrics
    return bots


async def serve(
    engine: Engine,
    settings: BotSettings,
    tokens: dict[str, str],
    webhook_secret: str = "",
    link_secret: str = "",
) -> int:
    """Run the enabled bots on this event loop, sharing the engine, until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = Metrics(engine)
    bots = frontends(engine, settings, tokens, webhook_secret, metrics)
    try:
        analytics = await Analytics.open(settings, link_secret)
    except (AnalyticsConfigError, LinkSecretError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    saving, alerts = await open_saving(engine, settings, analytics.store, analytics.signer)
    for bot in bots:
        bot.use_analytics(analytics)
        bot.use_saving(saving, alerts)
    await engine.warm_up()
    redirect = ClickRedirect(served_products(engine), analytics, metrics).routes()
    health = HealthServer.configured(engine, metrics, bots, settings.http, redirect)
    try:
        return await _run_until_stopped(engine, settings, bots, health, alerts, stop)
    finally:
        await analytics.close()


async def _run_until_stopped(
    engine: Engine,
    settings: BotSettings,
    bots: list[Frontend],
    health: HealthServer | None,
    alerts: AlertService | None,
    stop: asyncio.Event,
) -> int:
    """Start the servers and bots, wait for `stop`, then stop them all: the exit code."""
    watcher = None
    code = 0
    try:
        if health is not None:
            await health.start()
        for bot in bots:
            await bot.start()
        if alerts is not None:
            await alerts.start()
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
        if alerts is not None:
            await alerts.stop()
        await asyncio.gather(*(bot.stop() for bot in bots), return_exceptions=True)
        if health is not None:
            await health.stop()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $FASHIONBOT_CONFIG or config.toml)")
    parser.add_argument(
        "--demo-catalog",
        help="when index.dir holds no index, serve this catalog (built on first use into "
        "data/demo-index/<model>); `make run` passes the demo catalog",
    )
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
    demo_catalog = Path(args.demo_catalog) if args.demo_catalog else None
    try:
        if not tokens:
            return run_terminal_demo(settings, demo_catalog)
        return run_live(settings, demo_catalog, tokens, secrets)
    except (ModelLoadError, IndexLoadError, BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_live(
    settings: BotSettings,
    demo_catalog: Path | None,
    tokens: dict[str, str],
    secrets: Mapping[str, str],
) -> int:
    """The bots with the configured model (never swapped for another: a model that cannot
    be loaded stops start-up with its error), on the demo catalog when no index is built."""
    embedder = load_embedder(settings.model, settings.source.parent)
    settings = with_served_index(settings, embedder, demo_catalog)
    engine = Engine.open(settings, embedder)
    try:
        return asyncio.run(
            serve(
                engine,
                settings,
                tokens,
                secrets.get("TELEGRAM_WEBHOOK_SECRET", ""),
                secrets.get(LINK_SECRET, ""),
            )
        )
    finally:
        engine.close()


if __name__ == "__main__":
    sys.exit(main())
