"""Benchmarks and report scripts run at tiny sizes, so they cannot rot. No timing checks."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest


@pytest.mark.slow
def test_reliability_report_is_produced(tmp_path: Path) -> None:
    from bench import reliability

    out = tmp_path / "reliability.md"
    asyncio.run(reliability.main(users=5, out=out))
    text = out.read_text()
    assert "every update answered exactly once | yes" in text
    assert "| ... answered with a clear message | 33 |" in text


@pytest.mark.slow
def test_quality_report_is_produced(tmp_path: Path) -> None:
    """The demo evaluation, on a miniature of clothing-small made from the demo photos."""
    import shutil

    from bench import quality
    from tests.conftest import DEMO_IMAGES

    for split, numbers in (("train", range(1, 5)), ("validation", (5, 6))):
        for category in ("dress", "shoes", "hat"):
            folder = tmp_path / "data" / split / category
            folder.mkdir(parents=True)
            for n in numbers:
                shutil.copy(DEMO_IMAGES / f"{category}-{n}.jpg", folder / f"{category}-{n}.jpg")
    out = tmp_path / "quality.md"
    quality.main(["--dataset", str(tmp_path / "data"), "--out", str(out), "--self-count", "6"])
    text = out.read_text()
    assert "Catalog: `train/` of clothing-small (12 photos" in text
    assert "a random ranking would score 0.333" in text
    assert "| Marqo-FashionCLIP | `marqo-fashionclip` (default) | 56.88 |" in text


@pytest.mark.slow
def test_perf_benchmarks_run_at_tiny_sizes(tmp_path: Path, monkeypatch, tiny_model_files) -> None:
    """Every benchmark section runs on the tiny model at tiny sizes and renders; no timing
    is checked (benchmarks are not tests), only that the measurements are sane."""
    import shutil

    from bench import perf
    from tests.conftest import DEMO_IMAGES

    for n, photo in enumerate(sorted(DEMO_IMAGES.glob("*.jpg"))[:8]):
        folder = tmp_path / "data" / "train" / photo.stem.rsplit("-", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / f"{n}.jpg")
    monkeypatch.setattr(perf, "DATASET", tmp_path / "data")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    results = {
        "quick": True,
        "machine": perf.machine(),
        "query": [perf.query_overhead("tiny-random", 300, 2, scratch)],
        "concurrency": perf.concurrency("tiny-random", [1, 16], 1, scratch),
        "build": perf.build_throughput("tiny-random", 8, scratch),
        "ann": [perf.vector_search(2000, 64, 20, scratch)],
        "startup": perf.startup(2000, 64, scratch),
        "filtered": perf.filtered_recall(4000, 64, 5, scratch),
        "gflops_per_image": {"tiny-random": perf.gflops_per_image("tiny-random")},
        "cores": 2,
        "large_photo": perf.large_photo_decode("tiny-random", 1),
    }
    results["headline"] = perf.headline(results)
    assert results["build"]["images"] == 8
    assert results["headline"]["ann_recall_at_10_20k"] > 0.9
    assert results["ann"][0]["usearch_i8"]["sweep"][-1]["recall_at_10"] > 0.9
    assert results["filtered"]["recall_at_10"] > 0.9
    assert all(row["engine_qps"] > 0 for row in results["concurrency"])
    text = perf.render(results)
    assert "## 6. Filtered search" in text and "| usearch_i8 | 192 |" in text
    assert results["gflops_per_image"]["tiny-random"] > 0
    assert "## What the speed settings buy" in text and "JPEG draft decoding" in text

    from bench import scaling

    sizing = scaling.render(results)
    assert "## Where one index per machine ends" in sizing
    assert "| tiny-random |" in sizing  # build and query throughput derived per architecture

    # The command line: rerun one section into these results; both documents are written.
    import json

    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(results))
    docs = tmp_path / "docs"
    perf.main(
        [
            *("--quick", "--only", "flops", "--architectures", "tiny-random"),
            *("--json", str(saved), "--out", str(docs / "benchmarks.md")),
        ]
    )
    assert "Sections rerun later" in (docs / "benchmarks.md").read_text()
    assert (docs / "scaling.md").read_text().startswith("# Scaling and sizing")


def test_the_faiss_comparison_alternates_rounds_and_reports_their_median() -> None:
    """FAISS is a benchmark extra (not in the test environment): the head-to-head and its
    sentence run here on two plain searches."""
    import numpy as np

    from bench import perf

    calls: list[str] = []
    duel = perf.head_to_head(
        lambda q: calls.append("ours"), lambda q: calls.append("theirs"), np.zeros((3, 4)), 4
    )
    firsts = [calls[i] for i in range(0, len(calls), 3)][::2]  # who went first each round
    assert firsts == ["ours", "theirs", "ours", "theirs"] and len(calls) == 24
    assert duel["rounds"] == 4 and len(duel["ratios"]) == 4
    assert duel["ratio"] == float(np.median(duel["ratios"]))
    row = {"expansion": 64, "recall_at_10": 0.991, "qps": 1.0}
    summary = {"usearch_at_target": row, "faiss_at_target": row, "head_to_head": duel}
    assert "4 alternating rounds" in perf.equal_recall_sentence(summary, "i8")
