from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bot.settings import BotSettings, load_bot_settings
from engine.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings


def test_defaults_come_from_config_toml() -> None:
    settings = load_bot_settings(DEFAULT_CONFIG_PATH, environ={})
    assert settings.model.name == "marqo-fashionclip"
    assert settings.index.dtype == "i8"
    assert settings.http.port == 8080
    assert settings.telegram.base_url.startswith("https://")
    assert settings.source == DEFAULT_CONFIG_PATH


def model_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field's default, sections as nested tables, the shape config.toml has."""
    defaults: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        defaults[name] = (
            model_defaults(type(default)) if isinstance(default, BaseModel) else default
        )
    return defaults


def test_config_toml_states_exactly_the_models_defaults() -> None:
    """The models hold the defaults; config.toml documents them. Neither may drift: every
    key of the file is a field with the same default, and every field is in the file."""
    in_file = tomllib.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    assert in_file == model_defaults(BotSettings)


def test_constructing_settings_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", "vit-b-32")
    assert Settings().model.name == "marqo-fashionclip"


def test_environment_overrides_any_key() -> None:
    env = {
        "FASHIONBOT_MODEL__NAME": "vit-b-32",
        "FASHIONBOT_HTTP__PORT": "0",
        "FASHIONBOT_INDEX__VERIFY_CHECKSUMS": "false",
        "FASHIONBOT_SEARCH__DIVERSITY": "0.25",
        "FASHIONBOT_CATALOG__COLUMNS__TITLE": "name",
        "fashionbot_images__max_bytes": "1_000_000",  # names are case-insensitive
    }
    settings = load_bot_settings(DEFAULT_CONFIG_PATH, environ=env)
    assert settings.model.name == "vit-b-32"
    assert settings.http.port == 0
    assert settings.index.verify_checksums is False
    assert settings.search.diversity == 0.25
    assert settings.catalog.columns == {"title": "name"}
    assert settings.images.max_bytes == 1_000_000


def test_environment_overrides_the_file_key_by_key(tmp_path: Path) -> None:
    other = tmp_path / "shop.toml"
    other.write_text('[model]\nname = "vit-b-32"\ndevice = "cpu"\n')
    settings = load_settings(other, environ={"FASHIONBOT_MODEL__DEVICE": "cuda"})
    assert (settings.model.name, settings.model.device) == ("vit-b-32", "cuda")


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
        ("FASHIONBOT_TELEGRAM__ADMIN_IDS", "12,alice", "telegram.admin_ids"),
        ("FASHIONBOT_SERACH__MAX_K", "5", "[serach]"),
    ],
)
def test_invalid_values_name_the_key(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("[", r"\[")) as caught:
        load_bot_settings(DEFAULT_CONFIG_PATH, environ={variable: value})
    assert "\n" not in str(caught.value)


def test_a_bad_value_in_a_file_gives_one_line_naming_the_key(tmp_path: Path) -> None:
    other = tmp_path / "shop.toml"
    other.write_text("[search]\nmax_k = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(other, environ={})
    assert str(caught.value) == "search.max_k must be greater than 0 (got 0)"
    other.write_text("[search]\ndefault_k = 12\nmax_k = 10\n")
    with pytest.raises(ConfigError, match=r"search: default_k \(12\) must not exceed max_k \(10\)"):
        load_settings(other, environ={})
    other.write_text("[model]\nmax_wait_ms = true\n")
    with pytest.raises(ConfigError, match=r"model\.max_wait_ms must be a number, not true"):
        load_settings(other, environ={})
    other.write_text("[model]\nmax_batch = 2.5\nnmae = 1\n")
    with pytest.raises(ConfigError, match=r"model\.max_batch must be a whole number .* 1 more"):
        load_settings(other, environ={})


def float_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            keys += float_keys(type(default), f"{prefix}{name}.")
        elif field.annotation is float:
            keys.append(prefix + name)
    return keys


@pytest.mark.parametrize("key", float_keys(BotSettings))
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_no_float_setting_takes_a_non_finite_number(key: str, value: str) -> None:
    variable = "FASHIONBOT_" + key.upper().replace(".", "__")
    with pytest.raises(ConfigError, match=rf"{key.replace('.', '[.]')} must be a finite number"):
        load_bot_settings(DEFAULT_CONFIG_PATH, environ={variable: value})


def test_float_keys_are_found() -> None:
    assert {"images.max_aspect", "search.diversity", "telegram.request_timeout_s"} <= set(
        float_keys(BotSettings)
    )


def test_the_engine_reads_its_sections_and_leaves_the_bots_alone(tmp_path: Path) -> None:
    env = {"FASHIONBOT_TELEGRAM__MODE": "webhook", "FASHIONBOT_HTTP__PORT": "eighty"}
    settings = load_settings(DEFAULT_CONFIG_PATH, environ=env)
    assert type(settings) is Settings and not hasattr(settings, "telegram")
    other = tmp_path / "shop.toml"
    other.write_text("[serach]\nmax_k = 5\n")
    assert load_settings(other, environ={}).search.max_k == 10
    with pytest.raises(ConfigError, match=r"\[serach\]: unknown section"):
        load_bot_settings(other, environ={})


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
    with pytest.raises(ConfigError, match="a folder, not a config file"):
        load_settings(tmp_path, environ={})
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('[model]\nname = "Kleidergröße"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text") as caught:
        load_settings(latin1, environ={})
    assert "\n" not in str(caught.value)


def test_overrides_are_validated_and_keep_the_source(tmp_path: Path) -> None:
    other = tmp_path / "shop.toml"
    other.write_text('[index]\ndir = "idx"\n')
    settings = load_bot_settings(other, environ={})
    changed = settings.with_overrides(search={"max_k": 8}, telegram={"album_size": 4})
    assert type(changed) is BotSettings and changed.source == other
    assert (changed.search.max_k, changed.search.default_k) == (8, 6)
    assert changed.telegram.album_size == 4
    assert settings.search.max_k == 10  # a copy
    with pytest.raises(ConfigError, match=r"telegram\.album_size"):
        settings.with_overrides(telegram={"album_size": 11})
    with pytest.raises(ConfigError, match=r"\[telegram\]: unknown section"):
        load_settings(other, environ={}).with_overrides(telegram={"album_size": 4})


def test_tokens_are_not_settings() -> None:
    text = DEFAULT_CONFIG_PATH.read_text()
    with pytest.raises(ConfigError):
        load_bot_settings(DEFAULT_CONFIG_PATH, environ={"FASHIONBOT_TELEGRAM__TOKEN": "123:abc"})
    assert "token =" not in text
