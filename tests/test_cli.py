"""index_builder.py build / query / info, as a shop owner runs them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import index_builder
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES, REPO_ROOT
from tests.fakes.cli_env import tiny_model_environ, use_tiny_model


@pytest.fixture
def tiny_env(tiny_model_files, monkeypatch) -> dict[str, str]:
    return use_tiny_model(monkeypatch, tiny_model_files)


@pytest.fixture(scope="module")
def cli_index(tiny_model_files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Built once for the module: the tests only read it (a build per test was most of
    this module's time)."""
    index_dir = tmp_path_factory.mktemp("cli") / "index"
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(output):
        for name, value in tiny_model_environ(tiny_model_files).items():
            patch.setenv(name, value)
        built = index_builder.main(["build", str(DEMO_CATALOG), "--out", str(index_dir), "--quiet"])
        assert built == 0
        assert "60 products" in output.getvalue()
        yield index_dir


def test_query_json_lists_products(cli_index: Path, tiny_env, capsys) -> None:
    photo = DEMO_IMAGES / "outwear-2.jpg"
    code = index_builder.main(
        ["query", str(photo), "--index", str(cli_index), "--k", "4", "--json"]
    )
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 4
    assert set(results[0]) == {
        "product_id",
        "title",
        "url",
        "price",
        "original_price",
        "currency",
        "category",
        "score",
    }
    assert results[0]["category"] == "outwear" and results[0]["score"] > 0.99


def test_query_filters_and_text(cli_index: Path, tiny_env, capsys) -> None:
    code = index_builder.main(
        [
            "query",
            "--text",
            "black boots",
            "--index",
            str(cli_index),
            "--category",
            "shoes",
            "--json",
        ]
    )
    assert code == 0
    assert {r["category"] for r in json.loads(capsys.readouterr().out)} == {"shoes"}


def test_query_prints_a_table(cli_index: Path, tiny_env, capsys) -> None:
    assert (
        index_builder.main(["query", str(DEMO_IMAGES / "hat-1.jpg"), "--index", str(cli_index)])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(" 1. ") and "https://shop.example.com/products/" in out


def test_unusable_photo_exits_2_with_one_line(
    cli_index: Path, tiny_env, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a broken")
    assert index_builder.main(["query", str(bad), "--index", str(cli_index)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.jpg" in err and "Traceback" not in err
    assert (
        index_builder.main(["query", str(tmp_path / "missing.jpg"), "--index", str(cli_index)]) == 2
    )


def test_info_prints_the_manifest(cli_index: Path, tiny_env, capsys) -> None:
    assert index_builder.main(["info", "--index", str(cli_index)]) == 0
    out = capsys.readouterr().out
    manifest = json.loads(out[out.index("{") :])
    assert manifest["products"] == 60 and manifest["dtype"] == "i8"
    built = manifest["model"]["precision"]
    # "auto" on a CPU: int8, as the tiny model agrees with fp32 (tests/engine/test_quantize.py)
    assert (
        built == "int8" and "precision: built in int8, this configuration serves in int8 if" in out
    )
    assert manifest["model"]["dim"] == 64 and manifest["format_version"] == 1


def test_missing_index_and_bad_config_are_one_line_errors(
    tiny_env, tmp_path: Path, capsys, monkeypatch
):
    assert index_builder.main(["info", "--index", str(tmp_path)]) == 2
    assert "No index found" in capsys.readouterr().err
    monkeypatch.setenv("FASHIONBOT_INDEX__DTYPE", "f64")
    assert index_builder.main(["info"]) == 2
    assert "index.dtype" in capsys.readouterr().err


def test_unavailable_weights_say_what_to_set(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", "marqo-fashionclip")
    code = index_builder.main(["build", str(DEMO_CATALOG), "--out", str(tmp_path / "i")])
    err = capsys.readouterr().err
    assert code == 2
    assert "marqo-fashionclip" in err and "FASHIONBOT_MODEL__PRETRAINED" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_real_process_exit_code_and_stderr(cli_index: Path, tiny_env, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "index_builder.py"),
            "query",
            str(bad),
            "--index",
            str(cli_index),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **tiny_env, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "Traceback" not in result.stderr
