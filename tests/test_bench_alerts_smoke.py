"""bench/alerts.py at a tiny size, so it cannot rot: no timing checks, only that the
comparison queues the alerts the synthetic data holds and the page renders."""

from __future__ import annotations

import argparse
import asyncio


def test_the_alerts_benchmark_runs_and_renders() -> None:
    from bench import alerts

    args = argparse.Namespace(
        shoppers=200, per_shopper=5, rounds=1, photos=2, backlog=10, sqlite_only=True
    )
    found, latency = asyncio.run(alerts.run(args))
    (sqlite,) = found
    assert sqlite["saved"] == 1_000 and sqlite["shoppers"] == 200
    # About 10% cheaper plus 2% back in stock: far from none, far from all.
    assert 50 < sqlite["alerts"] < 250
    assert latency["photos_per_mode"] == 2 and latency["alerts_sent_while_measuring"] > 0
    page = alerts.markdown(found, latency)
    assert "| sqlite | 1,000 | 200 |" in page and "| idle |" in page
