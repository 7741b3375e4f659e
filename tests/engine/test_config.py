from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import DEFAULT_CONFIG_PATH, ConfigError, load_settings


def test_defaults_come_from_config_toml() -> None:
    settings = load_settings(DEFAULT_CONFIG_PATH, environ={})
    assert settings.model.name == "marqo-fashionclip"
    assert settings.index.dtype == "i8"
    assert settings.http.port == 8080
    assert settings.telegram.base_url.startswith("https://")


def test_environment_overrides_any_key() -> None:
    env = {
        "FASHIONBOT_MODEL__NAME": "vit-b-32",
        "FASHIONBOT_HTTP__PORT": "0",
        "FASHIONBOT_INDEX__VERIFY_CHECKSUMS": "false",
        "FASHIONBOT_SEARCH__DIVERSITY": "0.25",
        "FASHIONBOT_CATALOG__COLUMNS__TITLE": "name",
    }
    settings = load_settings(DEFAULT_CONFIG_PATH, environ=env)
    assert settings.model.name == "vit-b-32"
    assert settings.http.port == 0
    assert settings.index.verify_checksums is False
    assert settings.search.diversity == 0.25
    assert settings.catalog.columns == {"title": "name"}


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("FASHIONBOT_HTTP__PORT", "eighty", "http.port"),
        ("FASHIONBOT_HTTP__PORT", "70000", "http.port"),
        ("FASHIONBOT_INDEX__DTYPE", "f64", "index.dtype"),
        ("FASHIONBOT_MODEL__MAX_BATCH", "0", "model.max_batch"),
        ("FASHIONBOT_SEARCH__DIVERSITY", "2", "search.diversity"),
        ("FASHIONBOT_INDEX__VERIFY_CHECKSUMS", "maybe", "index.verify_checksums"),
        ("FASHIONBOT_MODEL__NMAE", "typo", "model.nmae"),
    ],
)
def test_invalid_values_name_the_key(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(DEFAULT_CONFIG_PATH, environ={variable: value})


def test_another_file_via_argument_or_environment(tmp_path: Path) -> None:
    other = tmp_path / "shop.toml"
    other.write_text('[model]\nname = "vit-b-32"\n[index]\ndir = "idx"\n')
    by_arg = load_settings(other, environ={})
    by_env = load_settings(None, environ={"FASHIONBOT_CONFIG": str(other)})
    assert by_arg.model.name == by_env.model.name == "vit-b-32"
    # relative paths resolve against the config file's folder, and unset keys keep defaults
    assert by_arg.resolve_path(by_arg.index.dir) == tmp_path / "idx"
    assert by_arg.search.default_k == 6


def test_broken_file_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_tokens_are_not_settings() -> None:
    text = DEFAULT_CONFIG_PATH.read_text()
    with pytest.raises(ConfigError):
        load_settings(DEFAULT_CONFIG_PATH, environ={"FASHIONBOT_TELEGRAM__TOKEN": "123:abc"})
    assert "token =" not in text
