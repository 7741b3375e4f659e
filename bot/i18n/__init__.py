"""Shopper-facing messages, one JSON catalog per language; English is the fallback."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

FALLBACK = "en"
_FOLDER = Path(__file__).resolve().parent


@cache
def catalog(language: str) -> dict[str, str]:
    path = _FOLDER / f"{language}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def languages() -> list[str]:
    return sorted(p.stem for p in _FOLDER.glob("*.json"))


def pick_language(code: str | None) -> str:
    """'de-AT' -> 'de' when we have German; otherwise English."""
    base = (code or "").replace("_", "-").split("-")[0].lower()
    return base if base in languages() else FALLBACK


def t(language: str | None, key: str, **values: object) -> str:
    text = catalog(pick_language(language)).get(key) or catalog(FALLBACK)[key]
    return text.format(**values) if values else text
