from __future__ import annotations

import pytest

from bot.__main__ import main


@pytest.fixture
def offline_env(tiny_model_files, demo_index_dir, monkeypatch) -> None:
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", str(config))
    monkeypatch.setenv("FASHIONBOT_MODEL__PRETRAINED", str(checkpoint))
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(demo_index_dir))
    for name in ("TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_without_tokens_it_answers_a_demo_photo_in_the_terminal(offline_env, capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "dress-1.jpg" in out
    assert "1. Floral wrap dress · 99.00 EUR" in out  # the photo finds its own product first
    assert out.count("https://shop.example.com/products/") == 6
    assert "export TELEGRAM_BOT_TOKEN=" in out and "DISCORD_BOT_TOKEN" in out


def test_missing_index_is_a_clear_error(offline_env, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FASHIONBOT_INDEX__DIR", str(tmp_path))
    assert main([]) == 2
    assert "No index found" in capsys.readouterr().err


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
