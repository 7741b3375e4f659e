"""Benchmarks and report scripts run at tiny sizes, so they cannot rot. No timing checks
and no figures copied from the documents: each section must produce well-formed results
that relate sanely (p50 <= p99, int8 smaller than f16, every hostile file answered) and
render them into the documents."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.fakes.demo import DEMO_IMAGES


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of a document's "| what | value | ... |" tables, by their first cell."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            first, *rest = (cell.strip() for cell in line.strip().strip("|").split("|"))
            rows[first] = rest
    return rows


def numbers(cell: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", cell.replace(",", ""))]


@pytest.mark.slow
def test_reliability_report_is_produced(tmp_path: Path) -> None:
    from bench import reliability

    out = tmp_path / "reliability.md"
    # One huge PNG instead of four and short settling waits: the section runs, the
    # figures are not checked.
    asyncio.run(reliability.main(users=5, out=out, huge_pngs=1, settle_s=0.2))
    text = out.read_text()
    rows = table_rows(text)
    assert rows["simultaneous shoppers"] == ["5"]
    assert rows["every update answered exactly once"][0].startswith("yes")
    (kinds,) = numbers(rows["broken or hostile files sent"][0])
    assert numbers(rows["... answered with a clear message"][0]) == [kinds]  # each of them
    valid = next(cells for name, cells in rows.items() if name.startswith("awkward but valid"))
    answered, sent = numbers(valid[0])
    assert answered == sent > 0
    p50, p99 = numbers(rows["latency to answer, p50 / p99"][0])
    assert 0 < p50 <= p99
    faults = [name for name in rows if name.startswith(("sendMediaGroup:", "sendMessage:"))]
    assert len(faults) == 5 and all(rows[f][0].startswith("answered once") for f in faults)
    for title in ("Hostile input", "Load: 5 shoppers at once", "Bot API faults", "Forged pages"):
        assert f"## {title}" in text
    assert any(name.startswith("1 x ") and "PNG" in name for name in rows)


@pytest.mark.slow
def test_quality_report_is_produced(tmp_path: Path) -> None:
    """The demo evaluation, on a miniature of clothing-small made from the demo photos."""
    import shutil

    from bench import quality

    for split, numbers_of_photos in (("train", range(1, 5)), ("validation", (5, 6))):
        for category in ("dress", "shoes", "hat"):
            folder = tmp_path / "data" / split / category
            folder.mkdir(parents=True)
            for n in numbers_of_photos:
                shutil.copy(DEMO_IMAGES / f"{category}-{n}.jpg", folder / f"{category}-{n}.jpg")
    out = tmp_path / "quality.md"
    quality.main(["--dataset", str(tmp_path / "data"), "--out", str(out), "--self-count", "6"])
    text = out.read_text()
    assert "Catalog: `train/` of clothing-small (12 photos" in text
    assert "Model: `imagenet-lite0`." in text  # real weights, installed with the package
    rows = table_rows(text)
    for name in quality.CONFIGS:
        p1, p5, p10, mrr, latency, *_ = numbers(" ".join(rows[name]))
        assert all(0 <= value <= 1 for value in (p1, p5, p10, mrr)), name
        assert latency > 0
    for _, _, setting in quality.COMPARISONS:
        for cell in rows[setting][1:]:  # B - A [low, high] for P@1, P@10 and MRR
            mean, low, high = numbers(cell)
            assert -1 <= low <= mean <= high <= 1, (setting, cell)
    recall = re.search(r"recall@1 (\d\.\d+), recall@10 (\d\.\d+)", text)
    assert recall is not None
    assert 0 <= float(recall[1]) <= float(recall[2]) <= 1


@pytest.mark.slow
def test_perf_benchmarks_run_at_tiny_sizes(
    tmp_path: Path, monkeypatch, tiny_model_files, lite0_cache
) -> None:
    """Every benchmark section runs on the tiny model at tiny sizes and renders; no timing
    is checked (benchmarks are not tests), only that the measurements are sane."""
    import shutil

    from bench import finder_speed, perf
    from bench import precision as model_precision

    for n, photo in enumerate(sorted(DEMO_IMAGES.glob("*.jpg"))[:8]):
        for part in ("train", "validation"):
            folder = tmp_path / "data" / part / photo.stem.rsplit("-", 1)[0]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, folder / f"{n}.jpg")
    monkeypatch.setattr(perf, "DATASET", tmp_path / "data")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    results = {
        "quick": True,
        "machine": perf.machine(),
        "query": [perf.query_overhead("tiny-random", 300, 2, scratch)],
        # the query section's 300-vector index: no second synthetic index to build
        "concurrency": perf.concurrency("tiny-random", [1, 16], 1, scratch, catalog_size=300),
        "build": perf.build_throughput("tiny-random", 8, scratch),
        "ann": [perf.vector_search(2000, 64, 20, scratch)],
        "startup": perf.startup(2000, 64, scratch),
        "filtered": perf.filtered_recall(2000, 64, 5, scratch),  # startup's index
        "gflops_per_image": {"tiny-random": perf.gflops_per_image("tiny-random")},
        "cores": 2,
        "large_photo": perf.large_photo_decode("tiny-random", 1),
        "precision": model_precision.measure(
            ["tiny-random"], tmp_path / "data", True, perf.random_embedder, lite0_cache
        ),
        "finder": finder_speed.measure(quick=True, model_cache=lite0_cache, photos=2),
    }
    results["headline"] = perf.headline(results)
    assert results["build"]["images"] == 8
    assert [row["concurrent"] for row in results["concurrency"]] == [1, 16]
    assert all(row["engine_qps"] > 0 for row in results["concurrency"])
    assert all(row["precision"] == perf.SERVED_PRECISION for row in results["concurrency"])
    assert results["gflops_per_image"]["tiny-random"] > 0
    ann = results["ann"][0]
    f16, i8 = ann["usearch_f16"], ann["usearch_i8"]
    assert i8["bytes_per_vector"] < f16["bytes_per_vector"]  # int8 codes are half of f16
    for graph in (f16, i8):
        sweep = graph["sweep"]
        assert [r["expansion"] for r in sweep] == sorted(r["expansion"] for r in sweep)
        assert sweep[-1]["recall_at_10"] >= sweep[0]["recall_at_10"]  # wider looks find more
        assert sweep[-1]["recall_at_10"] > 0.9  # 2,000 vectors: the graph finds nearly all
        assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in sweep)
    assert results["filtered"]["recall_at_10"] > 0.9
    assert results["headline"]["ann_recall_at_10_20k"] == ann["summary"]["recall_at_10"]
    assert results["query"][0]["precision"] == perf.SERVED_PRECISION
    assert results["query"][0]["page_ms"] > 0  # the next page, from the stored query
    agreement = results["precision"]["agreement"]
    assert agreement["queries"] == 8  # every photo, embedded in fp32 and in bf16
    assert 0.99 <= agreement["cosine_mean"] <= 1.0 + 1e-6  # real weights: bf16 stays close
    assert results["headline"]["bf16_top10_overlap"] == agreement["top10_overlap"]
    assert [r["batch"] for r in results["precision"]["speed"]["tiny-random"]] == [1, 16]
    assert all(r["int8_ms"] > 0 for r in results["precision"]["speed"]["tiny-random"])
    check = results["precision"]["load_check"]["tiny-random"]
    assert check["photos"] == 8 and check["serves"] == "int8" and check["check_ms"] > 0
    # lite0's image tower has no matrix product: int8 does not apply to it
    assert agreement["image_tower_linear_layers"] == 0 and "int8" not in agreement
    assert perf.SERVED_PRECISION == "int8" and results["build"]["precision"] == "int8"

    finder_rows = {row["name"]: row for row in results["finder"]["rows"]}
    assert finder_rows["model forward (reference)"]["ratio_to_model"] == 1.0
    assert any(name.endswith("(shipped)") for name in finder_rows)
    assert all(0 < row["min_ms"] <= row["median_ms"] for row in finder_rows.values())

    results["steal"] = {"query": 0.25, "album": 0.125}
    text = perf.render(results)
    assert "(steal) while each section ran" in text and "query 25%, album 12%" in text
    assert "| tiny-random | 1 |" in text and "int8 time / fp32" in text
    assert "no matrix product" in text  # why lite0 has no int8 figures
    for name in finder_rows:
        assert f"| {name} |" in text
    for section in range(1, 9):
        assert f"## {section}. " in text
    assert "## What the speed settings buy" in text and "JPEG draft decoding" in text
    for name, graph in (("usearch_f16", f16), ("usearch_i8", i8)):
        for r in graph["sweep"]:  # every measured row is in the document, as measured
            assert f"| {name} | {r['expansion']} | {r['recall_at_10']:.4f} |" in text

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
    rerun = (docs / "benchmarks.md").read_text()
    assert "Sections rerun later" in rerun and f"flops on {perf.machine()}" in rerun
    assert f"Machine: {results['machine']}." in rerun  # the first run's machine line stays
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
