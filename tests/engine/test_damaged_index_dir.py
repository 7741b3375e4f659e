"""A damaged index directory (issue 15, items 13-14): `index_builder.py query` answers one
line naming the problem, and the bot's reload watcher logs it, keeps serving the last good
build and still picks up the next good one."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path

import pytest

import index_builder
from engine.embedder import model_identity
from engine.index import open_index
from engine.serving import ServedIndex
from engine.store import (
    CATALOG_FILE,
    CURRENT_FILE,
    MANIFEST_FILE,
    READ_ONLY_MODE,
    current_build_dir,
)
from tests.conftest import DEMO_IMAGES, make_settings


@pytest.fixture
def index_dir(demo_index_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the demo index, free to damage."""
    copy = tmp_path / "index"
    shutil.copytree(demo_index_dir, copy, ignore=shutil.ignore_patterns("cache", ".build.lock"))
    return copy


@pytest.fixture
def tiny_env(tiny_model_files, monkeypatch) -> None:
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", str(config))
    monkeypatch.setenv("FASHIONBOT_MODEL__PRETRAINED", str(checkpoint))


def query(index_dir: Path) -> int:
    photo = DEMO_IMAGES / "dress-1.jpg"
    return index_builder.main(["query", str(photo), "--index", str(index_dir), "--k", "1"])


def damage_current(index_dir: Path, content: bytes) -> None:
    (index_dir / CURRENT_FILE).write_bytes(content)


def point_current_elsewhere(index_dir: Path) -> None:
    """CURRENT naming a complete build by absolute path, outside builds/."""
    elsewhere = index_dir.parent / "elsewhere"
    shutil.copytree(current_build_dir(index_dir), elsewhere)  # type: ignore[arg-type]
    damage_current(index_dir, f"{elsewhere}\n".encode())


def damage_manifest_files(index_dir: Path, files: dict[str, str]) -> None:
    path = current_build_dir(index_dir) / MANIFEST_FILE  # type: ignore[operator]
    manifest = json.loads(path.read_text())
    manifest["files"] = files
    path.chmod(0o644)  # published builds are read-only
    path.write_text(json.dumps(manifest))


def delete_catalog(index_dir: Path) -> None:
    (current_build_dir(index_dir) / CATALOG_FILE).unlink()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (point_current_elsewhere, "not a build id"),
        (lambda d: damage_current(d, b"../../elsewhere\n"), "not a build id"),
        (lambda d: damage_current(d, b"\xff\xfe\x00binary"), "binary bytes"),
        (delete_catalog, f"missing {CATALOG_FILE}"),
        (lambda d: damage_manifest_files(d, {}), "lists no checksum for"),
    ],
    ids=["absolute", "dotdot", "binary", "deleted-catalog", "empty-files-map"],
)
def test_a_damaged_index_dir_is_one_line_of_error(
    tiny_env, index_dir: Path, damage, words: str, capsys
) -> None:
    assert query(index_dir) == 0
    capsys.readouterr()
    damage(index_dir)
    assert query(index_dir) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and words in error, error


async def test_published_builds_are_read_only(index_dir: Path) -> None:
    build = current_build_dir(index_dir)
    assert build is not None
    modes = {p.name: p.stat().st_mode & 0o777 for p in build.iterdir()}
    assert MANIFEST_FILE in modes and CATALOG_FILE in modes
    assert set(modes.values()) == {READ_ONLY_MODE}


async def test_the_reload_watcher_survives_garbage_and_takes_the_next_build(
    tiny_model_files, embedder, index_dir: Path, caplog
) -> None:
    settings = make_settings(tiny_model_files, index_dir)
    identity = model_identity(embedder)
    served = ServedIndex(settings, identity, open_index(index_dir, identity))
    good = served.current.build_dir
    watcher = asyncio.create_task(served.watch(0.01))
    try:
        with caplog.at_level(logging.ERROR, logger="engine.serving"):
            damage_current(index_dir, b"\xff\xfe\x00binary")
            await asyncio.sleep(0.3)
        assert not watcher.done()
        assert served.current.build_dir == good  # still serving the last good build
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "binary bytes" in errors[0].getMessage()

        fresh = good.with_name(f"{good.name}-copy")
        shutil.copytree(good, fresh)
        (index_dir / CURRENT_FILE).write_text(fresh.name + "\n")
        for _ in range(200):
            if served.current.build_dir == fresh:
                break
            await asyncio.sleep(0.01)
        assert served.current.build_dir == fresh
    finally:
        watcher.cancel()
        served.current.close()
