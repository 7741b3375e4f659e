"""Issue 15, item 17: a bad config file or value stops `python -m bot` and
`index_builder.py` with one line naming the file or the key, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import index_builder
from bot.__main__ import main as bot_main

CASES = {
    "a folder": ({}, "{folder}", "a folder, not a config file"),
    "UTF-16": ({}, "{utf16}", "not UTF-8 text"),
    "bogus device": ({"FASHIONBOT_MODEL__DEVICE": "bogus"}, "", "model.device must be"),
    "device typo": ({"FASHIONBOT_MODEL__DEVICE": "cuda:x"}, "", "model.device must be"),
    "infinite weight": (
        {"FASHIONBOT_SEARCH__TEXT_WEIGHT": "inf"},
        "",
        "search.text_weight must be a finite number",
    ),
}


@pytest.fixture
def config_paths(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "configs"
    folder.mkdir()
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text('[model]\ndevice = "cpu"\n', encoding="utf-16")
    return {"folder": str(folder), "utf16": str(utf16)}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("entry_point", ["bot", "index_builder"])
def test_a_bad_config_is_one_line_naming_the_file_or_key(
    case: str, entry_point: str, config_paths: dict[str, str], monkeypatch, capsys
) -> None:
    environment, config, expected = CASES[case]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config_args = ["--config", config.format(**config_paths)] if config else []
    if entry_point == "bot":
        code = bot_main(config_args)
    else:
        code = index_builder.main([*config_args, "info"])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    if config:
        assert config.format(**config_paths) in err


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_every_real_device_name_is_accepted(device: str) -> None:
    from engine.config import DEFAULT_CONFIG_PATH, load_settings

    settings = load_settings(DEFAULT_CONFIG_PATH, environ={"FASHIONBOT_MODEL__DEVICE": device})
    assert settings.model.device == device
