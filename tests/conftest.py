"""Shared fixtures: a tiny random-init open_clip model loaded through the production
loading code, the demo index built once per session, and an engine over it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a model hub
# `make test` runs one worker per core: one torch thread each, here and in the builder and
# bot processes tests start. With torch's default (a thread per core) in every worker the
# cores are oversubscribed, and small operations such as the category probe's LBFGS steps
# wait on each other's thread pools: 4-5x slower on two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.settings import BotSettings, load_bot_settings
from engine.config import DEFAULT_CONFIG_PATH, Settings
from engine.devmodel import write_tiny_model
from engine.embedder import Embedder, load_embedder
from tests.fakes.demo import DEMO_CATALOG as DEMO_CATALOG  # tests import it from here too
from tests.fakes.demo import DEMO_IMAGES as DEMO_IMAGES
from tests.fakes.demo import index_demo_catalog

# The real imagenet-lite0 model's session fixtures, for tests where meaning matters.
pytest_plugins = ["tests.real_model", "tests.state_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def make_settings(tiny_model_files: tuple[Path, Path], index_dir: Path, **sections) -> BotSettings:
    config, checkpoint = tiny_model_files
    base = load_bot_settings(DEFAULT_CONFIG_PATH, environ={})
    model = {"name": str(config), "pretrained": str(checkpoint), "max_wait_ms": 2.0}
    model.update(sections.pop("model", {}))
    index = {"dir": str(index_dir)}
    index.update(sections.pop("index", {}))
    # Query store in memory: tests never write into the repository. No category probe:
    # a random model's probe guesses categories at random, which plumbing tests don't
    # want; the probe is tested with the real imagenet-lite0 model. No colour re-score:
    # plumbing tests read the similarity order (tests/engine/test_colour.py tests it).
    search = {"query_store": "", "category_probe": False, "colour_weight": 0.0}
    search.update(sections.pop("search", {}))
    # Test feeds in tmp folders list the demo photos by absolute path (tests/fakes/demo.py).
    build = {"image_roots": [str(DEMO_IMAGES)]}
    build.update(sections.pop("build", {}))
    return base.with_overrides(model=model, index=index, search=search, build=build, **sections)


@pytest.fixture(scope="session")
def embedder(tiny_model_files: tuple[Path, Path], tmp_path_factory) -> Embedder:
    settings = make_settings(tiny_model_files, tmp_path_factory.mktemp("unused"))
    return load_embedder(settings.model)


@pytest.fixture(scope="session")
def demo_index_dir(tiny_model_files, embedder, tmp_path_factory) -> Path:
    index_dir = tmp_path_factory.mktemp("demo-index")
    return index_demo_catalog(make_settings(tiny_model_files, index_dir), index_dir, embedder)


@pytest.fixture
def settings(tiny_model_files, demo_index_dir) -> BotSettings:
    return make_settings(tiny_model_files, demo_index_dir)


@pytest.fixture
def engine(settings: Settings, embedder: Embedder) -> Iterator:
    from engine.embedder import model_identity
    from engine.index import open_index
    from engine.search import Engine

    index = open_index(demo_index_dir_of(settings), model_identity(embedder))
    eng = Engine(settings, embedder, index)
    yield eng
    eng.close()


def demo_index_dir_of(settings: Settings) -> Path:
    return settings.resolve_path(settings.index.dir)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`python -m bot`'s main() installs its own root handler; keep it out of later tests."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
