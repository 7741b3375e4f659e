from __future__ import annotations

import shutil

import pytest

from bot.__main__ import main
from tests.conftest import DEMO_CATALOG, REPO_ROOT


@pytest.fixture
def offline_env(tiny_model_files, demo_index_dir, monkeypatch) -> None:
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", str(config))
    monkeypatch.setenv("FASHIONBOT_MODEL__PRETRAINED", str(checkpoint))
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(demo_index_dir))
    monkeypatch.setenv("FASHIONBOT_SEARCH__QUERY_STORE", "")
    for name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_without_tokens_it_answers_a_demo_photo_in_the_terminal(offline_env, capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "A shopper sends shoes.jpg" in out
    assert out.count("https://shop.example.com/products/") == 6
    assert "export TELEGRAM_BOT_TOKEN=" in out and "DISCORD_BOT_TOKEN" in out


def test_missing_index_is_a_clear_error(offline_env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(tmp_path))
    assert main([]) == 2
    assert "No index found" in capsys.readouterr().err


def test_without_an_index_the_demo_catalog_gets_an_index_of_the_models_own(
    offline_env, tmp_path, monkeypatch, capsys
) -> None:
    config = tmp_path / "config.toml"
    shutil.copy(REPO_ROOT / "config.toml", config)
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(tmp_path / "empty"))
    assert main(["--config", str(config), "--demo-catalog", str(DEMO_CATALOG)]) == 0
    assert (tmp_path / "data" / "demo-index" / "tiny-random" / "CURRENT").is_file()
    assert "A shopper sends shoes.jpg" in capsys.readouterr().out


@pytest.mark.slow
def test_an_unreachable_hub_falls_back_to_the_offline_preset_with_one_line(
    lite0_cache, lite0_index, monkeypatch, capsys
) -> None:
    for name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN", "FASHIONBOT_MODEL__NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FASHIONBOT_MODEL__CACHE_DIR", str(lite0_cache))
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(lite0_index))
    monkeypatch.setenv("FASHIONBOT_SEARCH__QUERY_STORE", "")
    monkeypatch.setattr(
        "bot.demo.hub_unreachable_reason",
        lambda *args: "the model hub (huggingface.co) cannot be reached: no route",
    )
    assert main([]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "cannot be reached" in notes[0] and "imagenet-lite0" in notes[0]
    first = next(line for line in captured.out.splitlines() if line.startswith("1. "))
    assert "shoes" in first.lower()


def test_a_live_bot_never_swaps_models(offline_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", "no-such-model.json")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "no-such-model.json" in err and "imagenet-lite0" not in err


def test_secrets_come_from_the_environment_or_a_secret_file(tmp_path) -> None:
    from bot.__main__ import read_secret

    secret_file = tmp_path / "telegram_token"
    secret_file.write_text("123:from-a-file\n")
    assert read_secret("TELEGRAM_BOT_TOKEN", {"TELEGRAM_BOT_TOKEN": "123:direct"}) == "123:direct"
    assert (
        read_secret("TELEGRAM_BOT_TOKEN", {"TELEGRAM_BOT_TOKEN_FILE": str(secret_file)})
        == "123:from-a-file"
    )
    assert read_secret("TELEGRAM_BOT_TOKEN", {}) == ""
