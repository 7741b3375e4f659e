"""Environment for `index_builder.py` runs in tests: the tiny test model, plus whatever
settings a test adds (as FASHIONBOT_* variables, the way a shop owner sets them)."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_model_environ(tiny_model_files: tuple[Path, Path], **settings: str) -> dict[str, str]:
    """FASHIONBOT_* variables naming the tiny model; `settings` as SECTION__KEY=value."""
    config, checkpoint = tiny_model_files
    env = {"FASHIONBOT_MODEL__NAME": str(config), "FASHIONBOT_MODEL__PRETRAINED": str(checkpoint)}
    env.update({f"FASHIONBOT_{name}": value for name, value in settings.items()})
    return env


def use_tiny_model(
    monkeypatch: pytest.MonkeyPatch, tiny_model_files: tuple[Path, Path], **settings: str
) -> dict[str, str]:
    """Sets `tiny_model_environ` for this test; returns it (for subprocesses)."""
    env = tiny_model_environ(tiny_model_files, **settings)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
