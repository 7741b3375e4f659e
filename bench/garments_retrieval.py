"""Street-to-shop figures for docs/garments.md: street-ccp's validation photos as queries,
clothing-small `train/` as the catalog, with the `imagenet-lite0` embedder.

    python -m bench.garments_retrieval --index DIR [--dataset ../shared/datasets/street-ccp]

DIR is a catalog index built with imagenet-lite0 (make it with
`FASHIONBOT_MODEL__NAME=imagenet-lite0 index_builder.py build CATALOG --out DIR`, CATALOG
from `bench.quality.write_catalog`). Each setting is one `index_builder.py eval` run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.train_garments import (
    DEFAULT_DATASET,
    ROOT,
    VALIDATION_FOLD,
    photo_fold,
    replace_section,
)

SECTION = "## Street-to-shop retrieval (validation split)"
# (label, --boxes, extra environment)
SETTINGS = (
    ("whole photo", "whole", {}),
    ("true boxes, no category preference", "true", {"FASHIONBOT_GARMENTS__PREFER_CATEGORY": "0"}),
    (
        "found garments, no category preference",
        "found",
        {"FASHIONBOT_GARMENTS__PREFER_CATEGORY": "0"},
    ),
    ("**found garments** (the engine's default)", "found", {}),
)


def write_validation_items(dataset: Path, out: Path) -> int:
    """items.csv rows of the validation photos, photo paths made absolute."""
    with (dataset / "items.csv").open(newline="", encoding="utf-8") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if photo_fold(Path(r["photo"]).stem) == VALIDATION_FOLD
        ]
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["photo", "category", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "photo": str((dataset / row["photo"]).resolve())})
    return len(rows)


def evaluate(items: Path, index: Path, boxes: str, extra: dict[str, str]) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FASHIONBOT_MODEL__NAME": "imagenet-lite0", **extra}
    command = [sys.executable, "index_builder.py", "eval", str(items), "--index", str(index)]
    command += ["--boxes", boxes, "--json"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def section_lines(results: list[tuple[str, dict]], rows: int) -> list[str]:
    lines = [
        SECTION,
        "",
        "Produced by `python -m bench.garments_retrieval --index DIR`; do not edit by hand.",
        f"{rows} garments of street-ccp's validation photos as queries, clothing-small `train/` "
        "(3,068 photos, ten categories) as the catalog, `imagenet-lite0` as the embedder. "
        "A result is right when it is of the garment's category.",
        "",
        "| searched | precision@1 | precision@5 | precision@10 | MRR | found rate | box IoU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, summary in results:
        row = summary["overall"]
        cells = [row["precision@1"], row["precision@5"], row["precision@10"], row["mrr"]]
        cells += [row["garment_found_rate"], row["box_iou_mean"]]
        lines.append(
            f"| {label} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |"
        )
    default = results[-1][1]["by_category"]
    lines += ["", "By category, found garments (the engine's default):", ""]
    lines += [
        "| category | garments | precision@1 | found rate | box IoU |",
        "|---|---:|---:|---:|---:|",
    ]
    for category, row in default.items():
        iou = "-" if row["box_iou_mean"] is None else f"{row['box_iou_mean']:.3f}"
        lines.append(
            f"| {category} | {row['queries']} | {row['precision@1']:.3f} "
            f"| {row['garment_found_rate']:.3f} | {iou} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--items", type=Path, default=Path("/tmp/garments-validation-items.csv"))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "garments.md")
    args = parser.parse_args(argv)
    rows = write_validation_items(args.dataset, args.items)
    results = []
    for label, boxes, extra in SETTINGS:
        summary = evaluate(args.items, args.index, boxes, extra)
        print(label, json.dumps(summary["overall"]), flush=True)
        results.append((label, summary))
    replace_section(args.doc, SECTION, section_lines(results, rows))
    print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
