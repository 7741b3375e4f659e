"""The state store on SQLite and on a real PostgreSQL server: migrations on start-up,
batched recording, the report's figures, retention, and a database that fails."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from engine.state.analytics import (
    DAY_S,
    AnalyticsWriter,
    ClickRecord,
    SearchRecord,
    ShownResult,
    new_search_id,
)
from engine.state.report import build_report
from engine.state.report_format import as_html, as_text
from engine.state.schema import clicks, metadata, searches, shown_results
from engine.state.store import StateStore
from tests.conftest import REPO_ROOT

NOW = 1_790_000_000


def search(kind: str, categories: list[str], at: int = NOW, platform: str = "telegram"):
    results = tuple(
        ShownResult(rank, f"{category}-{rank}", category, 0.9 - rank / 100)
        for rank, category in enumerate(categories, start=1)
    )
    return SearchRecord(new_search_id(), at, platform, kind, "ab" * 16, results)


async def count(store: StateStore, table) -> int:
    async with store.engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(table))).scalar_one()


async def test_migrations_build_the_schema_and_run_once(state_url: str, tmp_path: Path) -> None:
    store = await StateStore.open(state_url, tmp_path)
    try:
        async with store.engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
            version = await connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0002"  # the newest migration
        assert differences == []  # the migrations create exactly engine/state/schema.py
    finally:
        await store.close()
    again = await StateStore.open(state_url, tmp_path)  # a restart: nothing left to apply
    try:
        assert await count(again, searches) == 0
    finally:
        await again.close()


async def test_recorded_searches_and_clicks_make_the_report(state_url: str, tmp_path: Path) -> None:
    store = await StateStore.open(state_url, tmp_path)
    writer = AnalyticsWriter(store, retention_days=30, clock=lambda: NOW)
    try:
        dresses = [search("photo", ["dress", "dress", "skirt"]) for _ in range(4)]
        shoes = [search("text", ["shoes", "shoes"]) for _ in range(3)]
        yesterday = search("photo", ["dress"], at=NOW - DAY_S)
        for record in [*dresses, *shoes, yesterday]:
            writer.record_search(record)
        # clicks: two on dresses' rank 2, one on a dress search's rank 1; none on shoes
        for record, rank in ((dresses[0], 2), (dresses[1], 2), (dresses[1], 1)):
            shown = record.results[rank - 1]
            writer.record_click(
                ClickRecord(NOW + 5, record.search_id, rank, shown.product_id, "telegram")
            )
        assert await writer.flush()
        assert await count(store, shown_results) == 4 * 3 + 3 * 2 + 1

        report = await build_report(store, NOW - 2 * DAY_S, NOW + 60)
    finally:
        await writer.stop()
        await store.close()
    assert report.searches == 8 and report.clicks == 3 and report.clicked_searches == 2
    assert len(report.searches_per_day) == 2 and sum(report.searches_per_day.values()) == 8
    assert report.shown_by_rank[1] == 8 and report.shown_by_rank[3] == 4
    assert report.clicks_by_rank == {1: 1, 2: 2}
    assert report.ctr_at(2) == 2 / 7 and report.ctr_at(3) == 0.0
    assert report.by_kind["photo"].searches == 5 and report.by_kind["photo"].clicked_searches == 2
    assert report.by_kind["text"].clicked_searches == 0
    assert report.top_products[0] == ("dress-2", 2)
    assert report.top_categories == [("dress", 3)]
    assert report.rarely_clicked[0] == ("shoes", 3, 0)  # searched, never clicked
    assert report.median_clicked_score == 0.88  # two clicks at 0.88, one at 0.89
    assert "2 / 7" in as_text(report)
    page = as_html(report)
    assert page.count("<svg") == 4 and "shoes" in page and "<script" not in page
    assert json.loads(json.dumps(report.as_json()))["ctr_by_rank"]["2"] == round(2 / 7, 4)


async def test_rows_past_retention_are_deleted(state_url: str, tmp_path: Path) -> None:
    store = await StateStore.open(state_url, tmp_path)
    writer = AnalyticsWriter(store, retention_days=30, clock=lambda: NOW)
    try:
        old, recent = search("photo", ["dress"], at=NOW - 31 * DAY_S), search("text", ["bag"])
        writer.record_search(old)
        writer.record_search(recent)
        writer.record_click(ClickRecord(NOW - 31 * DAY_S, old.search_id, 1, "dress-1", "discord"))
        writer.record_click(ClickRecord(NOW, recent.search_id, 1, "bag-1", "discord"))
        await writer.flush()
        await writer.start()  # start-up purges
        async with store.engine.connect() as connection:
            left = (await connection.execute(select(searches.c.id))).scalars().all()
        assert left == [recent.search_id]
        assert await count(store, shown_results) == 1 and await count(store, clicks) == 1
    finally:
        await writer.stop()
        await store.close()


async def test_a_failing_database_loses_the_batch_not_the_bot(
    state_url: str, tmp_path: Path, caplog
) -> None:
    store = await StateStore.open(state_url, tmp_path)
    writer = AnalyticsWriter(store, retention_days=30, clock=lambda: NOW)
    try:
        async with store.engine.begin() as connection:
            await connection.execute(text("DROP TABLE shown_results"))
        writer.record_search(search("photo", ["dress"]))
        with caplog.at_level(logging.WARNING):
            assert not await writer.flush()
        assert writer.dropped == 1 and "1 searches and 0 clicks not recorded" in caplog.text
        writer.record_click(ClickRecord(NOW, 1, 1, "dress-1", "telegram"))  # still taking rows
        assert await writer.flush() and await count(store, clicks) == 1
    finally:
        await writer.stop()
        await store.close()


def test_the_report_command_loads_no_model(tmp_path: Path) -> None:
    """`index_builder.py report` reads the store without torch or a chat library."""
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    html = tmp_path / "report.html"
    script = (
        "import sys, index_builder\n"
        "code = index_builder.main(\n"
        f"    ['report', '--since', '24h', '--json', '--html', {str(html)!r}]\n"
        ")\n"
        "print('LOADED', sorted(m for m in ('torch', 'open_clip', 'telegram', 'discord') "
        "if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env={"FASHIONBOT_STATE__URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout
    assert json.loads(done.stdout.split("LOADED")[0])["searches"] == 0
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_report_periods() -> None:
    from index_builder import parse_since

    assert parse_since("7d") == 7 * DAY_S and parse_since("24h") == DAY_S
    assert parse_since("90m") == 5400


async def test_stopping_finishes_the_batch_being_written(state_url: str, tmp_path: Path) -> None:
    """A shutdown while a large batch is being written loses none of it."""
    store = await StateStore.open(state_url, tmp_path)
    writer = AnalyticsWriter(store, retention_days=30, clock=lambda: NOW, max_batch=500)
    try:
        await writer.start()
        for _ in range(1200):  # past max_batch: the background writer starts at once
            writer.record_search(search("photo", ["dress"] * 10))
        await asyncio.sleep(0)
        await writer.stop()
        assert await count(store, searches) == 1200 and writer.dropped == 0
        assert await count(store, shown_results) == 12_000
    finally:
        await store.close()


async def test_a_flush_returns_once_the_batch_in_flight_is_committed(
    state_url: str, tmp_path: Path
) -> None:
    """Finding the queue empty because the background writer took the batch is not done:
    the caller reads the rows right after (the report, /stats, the tests)."""
    store = await StateStore.open(state_url, tmp_path)
    writer = AnalyticsWriter(store, retention_days=30, clock=lambda: NOW)
    try:
        for _ in range(300):
            writer.record_search(search("photo", ["dress"] * 10))
        in_flight = asyncio.create_task(writer.flush())
        await asyncio.sleep(0)  # it takes the whole queue and starts writing
        assert await writer.flush()
        assert await count(store, searches) == 300
        await in_flight
    finally:
        await store.close()
