"""bench/analytics.py at a tiny size, so it cannot rot: no timing checks, only that every
row queued and every click sent is in the database and the page renders."""

from __future__ import annotations

import argparse
import asyncio


def test_the_analytics_benchmark_runs_and_renders() -> None:
    from bench import analytics

    args = argparse.Namespace(searches=32, rate=400.0, clicks=40, concurrency=2)
    figures = asyncio.run(analytics.run(args))
    record, redirect = figures["record"], figures["redirect"]
    assert record["rows_written"] == record["rows_expected"] and record["dropped"] == 0
    assert record["results_written"] == 10 * record["rows_expected"]
    assert record["with_p50_ms"] <= record["with_p99_ms"]
    assert redirect["go_statuses"] == {"302": redirect["clicks"]}
    assert redirect["recorded"] == redirect["clicks"] == 40
    page = analytics.markdown(record, redirect, figures["load"])
    assert "| `/go/<token>` (302) |" in page and "added by recording" in page
