from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import index_builder
from engine.evaluation.metrics import (
    Ranked,
    category_precision,
    overlap,
    paired_bootstrap,
    product_recall,
    reciprocal_rank,
    top_is_duplicate,
)
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES


def test_metrics_by_hand() -> None:
    ranked = Ranked(["p1", "p2", "p3", "p4"], ["dress", "hat", "dress", "dress"])
    assert category_precision(ranked, "dress", 1) == 1.0
    assert category_precision(ranked, "dress", 2) == 0.5
    assert category_precision(ranked, "dress", 4) == 0.75
    assert product_recall(ranked, "p3", 2) == 0.0 and product_recall(ranked, "p3", 3) == 1.0
    assert reciprocal_rank(ranked, "p3", "dress") == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, None, "hat") == pytest.approx(1 / 2)
    assert reciprocal_rank(ranked, "missing", "dress") == 0.0
    assert overlap(["a", "b", "c"], ["c", "a", "x"], 3) == pytest.approx(2 / 3)
    near_copy = np.array([[1.0, 0.0], [0.0, 1.0], [0.99, 0.141]])
    assert top_is_duplicate(near_copy) and not top_is_duplicate(near_copy[:2])


def test_paired_bootstrap() -> None:
    same = paired_bootstrap([0.2, 0.5, 0.9, 0.4], [0.2, 0.5, 0.9, 0.4])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.significant
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 1, 200)
    better = paired_bootstrap(a, a + 0.1 + rng.normal(0, 0.02, 200))
    assert better.significant and better.low > 0.05
    noise = paired_bootstrap(a, a + rng.normal(0, 0.05, 200))
    assert noise.low <= 0 <= noise.high


@pytest.fixture
def eval_env(tiny_model_files, demo_index_dir, monkeypatch) -> Path:
    config, checkpoint = tiny_model_files
    monkeypatch.setenv("FASHIONBOT_MODEL__NAME", str(config))
    monkeypatch.setenv("FASHIONBOT_MODEL__PRETRAINED", str(checkpoint))
    monkeypatch.setenv("FASHIONBOT_SEARCH__QUERY_STORE", "")
    # a random model's probe reorders at random (see make_settings in tests/conftest.py)
    monkeypatch.setenv("FASHIONBOT_SEARCH__CATEGORY_PROBE", "false")
    return demo_index_dir


def run_eval(args: list[str], capsys) -> dict:
    assert index_builder.main(["eval", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_self_queries_find_every_original(eval_env: Path, capsys) -> None:
    summary = run_eval(["--self", "60", "--index", str(eval_env)], capsys)
    overall = summary["overall"]
    assert overall["queries"] == 60
    assert overall["recall@10"] == 1.0
    assert overall["ann_overlap@10"] >= 0.95  # the HNSW graph against brute force
    assert set(summary["by_category"]) == {
        "dress",
        "hat",
        "longsleeve",
        "outwear",
        "pants",
        "shirt",
        "shoes",
        "shorts",
        "skirt",
        "t-shirt",
    }


def test_folder_and_pair_queries(eval_env: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "queries"
    for category in ("dress", "shoes"):
        (folder / category).mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(DEMO_IMAGES / f"{category}-{n}.jpg", folder / category / f"{n}.jpg")
    (folder / "shoes" / "notes.txt").write_text("not a photo")
    summary = run_eval([str(folder), "--index", str(eval_env), "--k", "1,3"], capsys)
    assert summary["overall"]["queries"] == 4
    assert summary["overall"]["precision@1"] == 1.0  # catalog photos find themselves first
    assert 0 < summary["by_category"]["shoes"]["precision@3"] <= 1

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "photo,product_id\n"
        f"{DEMO_IMAGES / 'hat-3.jpg'},DEMO-009\n"
        f"{DEMO_IMAGES / 'hat-4.jpg'},DEMO-001\n"
    )
    summary = run_eval([str(pairs), "--index", str(eval_env), "--k", "1"], capsys)
    assert summary["overall"]["recall@1"] == 0.5  # the second pair names the wrong product
    assert summary["overall"]["mrr"] < 1.0


def test_reports_render(eval_env: Path, tmp_path: Path, capsys) -> None:
    html_report = tmp_path / "report.html"
    assert (
        index_builder.main(
            ["eval", "--self", "12", "--index", str(eval_env), "--report", str(html_report)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "overall" in out and "precision@10" in out
    page = html_report.read_text()
    assert "Worst queries" in page and page.count('src="data:image/jpeg;base64,') >= 8 * 2
    markdown = tmp_path / "report.md"
    assert (
        index_builder.main(
            ["eval", "--self", "12", "--index", str(eval_env), "--report", str(markdown)]
        )
        == 0
    )
    assert markdown.read_text().startswith("# Retrieval quality")


def test_compare_identical_configs_shows_no_difference(
    eval_env: Path, tmp_path: Path, capsys
) -> None:
    configs = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'[index]\ndir = "{eval_env}"\n')
        configs.append(str(path))
    result = run_eval(["--self", "20", "--compare", *configs], capsys)
    for difference in result["difference_b_minus_a"].values():
        assert difference["mean"] == 0.0 and difference["low"] <= 0.0 <= difference["high"]
    assert result["a"]["overall"] == {
        **result["b"]["overall"],
        **{k: v for k, v in result["a"]["overall"].items() if k.startswith("latency")},
    }


def test_bad_query_set_is_a_clear_error(eval_env: Path, tmp_path: Path, capsys) -> None:
    assert index_builder.main(["eval", str(tmp_path), "--index", str(eval_env)]) == 2
    assert "no category sub-folders" in capsys.readouterr().err
    assert index_builder.main(["eval", "--index", str(eval_env)]) == 2
    assert index_builder.main(["eval", str(DEMO_CATALOG), "--index", str(eval_env)]) == 2
    assert "photo,product_id" in capsys.readouterr().err
