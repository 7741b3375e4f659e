"""What `make run` does without a bot token: one shopper photo answered in the terminal.

The demo serves the configured index when it has one; otherwise the demo catalog, built on
first use into an index directory of the model's own (`data/demo-index/<model>`), so
switching models never serves an index built with another. When the configured model's
weights cannot be had (no route to the model hub, nothing cached), the demo falls back to
the `imagenet-lite0` preset, whose real weights install with the package, and says so.
A live bot (a token is set) never swaps models: it stops with the model's own error.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from bot.render import album_as_text
from bot.settings import BotSettings
from engine.config import PROJECT_ROOT
from engine.embedder import (
    OFFLINE_PRESET,
    Embedder,
    ModelLoadError,
    hub_unreachable_reason,
    load_embedder,
)
from engine.ingest.pipeline import build_index
from engine.search import Engine
from engine.store import current_build_dir

DEMO_INDEX_ROOT = "data/demo-index"
DEMO_PHOTO = PROJECT_ROOT / "data" / "demo" / "shopper" / "shoes.jpg"

HOW_TO_ADD_A_TOKEN = """\
No bot token is set, so this was a terminal demo. To go live:
  Telegram: talk to @BotFather, create a bot, then  export TELEGRAM_BOT_TOKEN=...
  Discord:  create an application at the developer portal, then  export DISCORD_BOT_TOKEN=...
and run `make run` again. Tokens come from the environment (or a file named by
  TELEGRAM_BOT_TOKEN_FILE / DISCORD_BOT_TOKEN_FILE), never from the repository."""


def model_slug(name: str) -> str:
    """A folder name for a model: its preset or architecture name, or a config's stem."""
    stem = Path(name).stem if name.endswith(".json") else name.lower()
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"


def demo_index_dir(settings: BotSettings) -> Path:
    return settings.resolve_path(f"{DEMO_INDEX_ROOT}/{model_slug(settings.model.name)}")


def load_demo_model(settings: BotSettings) -> tuple[BotSettings, Embedder]:
    """The configured model, or the offline preset when its weights are out of reach."""
    base_dir = settings.source.parent
    reason = None
    if settings.model.name.lower() != OFFLINE_PRESET:
        reason = hub_unreachable_reason(settings.model, base_dir)
    if reason is None:
        try:
            return settings, load_embedder(settings.model, base_dir)
        except ModelLoadError as exc:
            if settings.model.name.lower() == OFFLINE_PRESET or settings.model.pretrained:
                raise
            reason = str(exc).splitlines()[0]
    print(
        f"note: {reason}; the demo uses the offline preset {OFFLINE_PRESET!r} instead "
        "(real ImageNet weights that install with the package).",
        file=sys.stderr,
    )
    fallback = settings.with_overrides(model={"name": OFFLINE_PRESET, "pretrained": ""})
    return fallback, load_embedder(fallback.model, base_dir)


def with_served_index(
    settings: BotSettings, embedder: Embedder, demo_catalog: Path | None
) -> BotSettings:
    """Settings whose `index.dir` holds an index for this model: the configured one when it
    is published, else the model's demo index (built from `demo_catalog` when missing)."""
    configured = settings.resolve_path(settings.index.dir)
    if demo_catalog is None or current_build_dir(configured) is not None:
        return settings
    index_dir = demo_index_dir(settings)
    if current_build_dir(index_dir) is None:
        print(
            f"building the demo index for {settings.model.name!r} in {index_dir}", file=sys.stderr
        )
        asyncio.run(build_index(settings, demo_catalog, index_dir, embedder))
    return settings.with_overrides(index={"dir": str(index_dir)})


async def terminal_demo(engine: Engine, settings: BotSettings, photo: Path = DEMO_PHOTO) -> int:
    if not photo.is_file():
        print(f"No demo photo found at {photo}.", file=sys.stderr)
        return 1
    page = await engine.search(image=photo.read_bytes())
    print(f"A shopper sends {photo.name}; the bot would answer with this album:\n")
    print(album_as_text(page))
    print(f"\n({page.timings_ms['total_ms']:.0f} ms, model {settings.model.name!r})\n")
    print(HOW_TO_ADD_A_TOKEN)
    return 0


def run_terminal_demo(settings: BotSettings, demo_catalog: Path | None) -> int:
    settings, embedder = load_demo_model(settings)
    settings = with_served_index(settings, embedder, demo_catalog)
    engine = Engine.open(settings, embedder)
    try:
        return asyncio.run(terminal_demo(engine, settings))
    finally:
        engine.close()
