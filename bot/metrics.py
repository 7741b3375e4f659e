"""Prometheus metrics for operators: search latency per stage, queue depth, batches,
results, errors by kind, and the index's size and age."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.search import Engine

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _EngineCollector(Collector):
    """Read at scrape time, so the numbers are never stale."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        engine = self._engine
        yield GaugeMetricFamily(
            "fashionbot_queue_depth", "Queries waiting for the model", engine.batcher.queue_depth
        )
        stats = engine.batcher.stats
        yield CounterMetricFamily("fashionbot_model_batches", "Forward passes run", stats.batches)
        yield CounterMetricFamily(
            "fashionbot_model_items",
            "Images and texts embedded (items / batches = batch size)",
            stats.items,
        )
        manifest = engine.index.manifest
        yield GaugeMetricFamily(
            "fashionbot_index_products", "Products in the served index", manifest.products
        )
        yield GaugeMetricFamily(
            "fashionbot_index_images", "Images in the served index", manifest.images
        )
        try:
            built = datetime.strptime(manifest.built_at, "%Y-%m-%dT%H:%M:%S%z").timestamp()
            age = max(0.0, time.time() - built)
        except ValueError:
            age = float("nan")
        yield GaugeMetricFamily("fashionbot_index_age_seconds", "Age of the served index", age)


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.search_seconds = Histogram(
            "fashionbot_search_seconds",
            "Search latency by stage",
            ["platform", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.results = Counter(
            "fashionbot_results_served",
            "Products shown to shoppers",
            ["platform"],
            registry=self.registry,
        )
        self.errors = Counter(
            "fashionbot_errors",
            "Searches not answered with results, by kind",
            ["platform", "kind"],
            registry=self.registry,
        )
        self.platform_rate_limits = Counter(
            "fashionbot_platform_rate_limits",
            "Times the chat platform told the bot to slow down (Telegram 429, Discord 429)",
            ["platform"],
            registry=self.registry,
        )
        self.clicks = Counter(
            "fashionbot_clicks",
            "Shop links followed (links.redirect_base_url), by platform and rank shown",
            ["platform", "rank"],
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))

    def observe_search(self, platform: str, timings_ms: dict[str, float], results: int) -> None:
        for stage, milliseconds in timings_ms.items():
            self.search_seconds.labels(platform, stage.removesuffix("_ms")).observe(
                milliseconds / 1000
            )
        self.results.labels(platform).inc(results)

    def count_error(self, platform: str, kind: str) -> None:
        self.errors.labels(platform, kind).inc()

    def count_platform_rate_limit(self, platform: str) -> None:
        self.platform_rate_limits.labels(platform).inc()

    def count_click(self, platform: str, rank: int) -> None:
        # Ranks past 10 share a label: a label per rank up to max_results would bloat it.
        self.clicks.labels(platform, str(rank) if rank <= 10 else "11+").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
