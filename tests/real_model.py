"""The real `imagenet-lite0` model for tests where meaning matters: loaded once per test
session through the production loading path (the preset's folder written from the
installed package into a temporary model cache), with the demo catalog indexed once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

from bot.settings import BotSettings
from engine.config import DEFAULT_CONFIG_PATH
from engine.embedder import Embedder, load_embedder
from tests.fakes.demo import index_demo_catalog

REPO_ROOT = Path(__file__).resolve().parent.parent
SHOPPER_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "shopper"
DEMO_SHOPPER = REPO_ROOT / "data" / "demo" / "shopper"


def lite0_settings(cache_dir: Path, index_dir: Path, **search: object) -> BotSettings:
    from bot.settings import load_bot_settings

    base = load_bot_settings(DEFAULT_CONFIG_PATH, environ={})
    return base.with_overrides(
        model={"name": "imagenet-lite0", "cache_dir": str(cache_dir)},
        index={"dir": str(index_dir)},
        search={"query_store": "", **search},
    )


@pytest.fixture(scope="session")
def lite0_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def lite0_embedder(lite0_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    settings = lite0_settings(lite0_cache, tmp_path_factory.mktemp("unused"))
    return load_embedder(settings.model)


@pytest.fixture(scope="session")
def lite0_index(lite0_cache, lite0_embedder, tmp_path_factory) -> Path:
    """Built once per test run: under `make test`'s parallel workers the first worker
    builds it in their shared temporary folder and the others wait for it and read it
    (the tests only read it)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        index_dir = tmp_path_factory.mktemp("lite0-index")
        return index_demo_catalog(lite0_settings(lite0_cache, index_dir), index_dir, lite0_embedder)
    shared = tmp_path_factory.getbasetemp().parent
    index_dir = shared / "lite0-index"
    with FileLock(shared / "lite0-index.lock"):
        if not (index_dir / "CURRENT").is_file():
            index_demo_catalog(lite0_settings(lite0_cache, index_dir), index_dir, lite0_embedder)
    return index_dir
