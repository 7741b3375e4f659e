"""Recording searches, the results shown and clicks without slowing a search down: the
caller only appends to an in-memory queue; one background task writes what has gathered
in a single transaction per batch. A failing database is logged and the batch dropped
(analytics may lose rows; a shopper never waits for them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import delete, insert, select

from engine.state.schema import clicks, searches, shown_results
from engine.state.store import StateStore

log = logging.getLogger(__name__)

DAY_S = 86_400
ROWS_PER_STATEMENT = 200
T = TypeVar("T")


@dataclass(frozen=True)
class ShownResult:
    rank: int  # 1 = the first result of the search (a later page continues the count)
    product_id: str
    category: str
    score: float


@dataclass(frozen=True)
class SearchRecord:
    search_id: int
    at: int  # seconds since the epoch
    platform: str
    kind: str  # photo, text, garment, page
    user_hash: str | None
    results: tuple[ShownResult, ...]


@dataclass(frozen=True)
class ClickRecord:
    at: int
    search_id: int
    rank: int
    product_id: str
    platform: str


def new_search_id() -> int:
    """Random, positive, fits a signed 64-bit column: unique across replicas without a
    round trip to the database."""
    return secrets.randbits(63) or 1


class AnalyticsWriter:
    """Queues records and writes them in batches from one background task (`start`)."""

    def __init__(
        self,
        store: StateStore,
        retention_days: int,
        flush_interval_s: float = 0.25,
        max_batch: int = 2_000,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.clock = clock
        self._searches: deque[SearchRecord] = deque()
        self._clicks: deque[ClickRecord] = deque()
        self._wake = asyncio.Event()
        # One batch in flight at a time: a flush that finds the queue empty returns only
        # once an earlier flush's rows are committed (callers read them right after).
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_purge = 0.0
        self.dropped = 0  # records lost: the queue was full or the database failed

    # ---- the callers' side: never waits ------------------------------------------------

    def record_search(self, record: SearchRecord) -> None:
        if self._room():
            self._searches.append(record)
            self._nudge()

    def record_click(self, record: ClickRecord) -> None:
        if self._room():
            self._clicks.append(record)
            self._nudge()

    def _room(self) -> bool:
        if len(self._searches) + len(self._clicks) < self.max_pending:
            return True
        self.dropped += 1
        return False

    def _nudge(self) -> None:
        if len(self._searches) + len(self._clicks) >= self.max_batch:
            self._wake.set()

    # ---- the writer --------------------------------------------------------------------

    async def start(self) -> None:
        """Delete expired rows, then write in the background until `stop`."""
        await self.purge()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Write what is queued, then stop. A batch being written is finished, never
        cancelled half-way (its rows are already off the queue)."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        while self._searches or self._clicks:
            if not await self.flush():
                break

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()
            if self.clock() - self._last_purge >= DAY_S:
                await self.purge()

    async def flush(self) -> bool:
        """Write one batch of what is queued; False when the database refused it."""
        async with self._flushing:
            return await self._write_batch()

    async def _write_batch(self) -> bool:
        batch_searches = _take(self._searches, self.max_batch)
        batch_clicks = _take(self._clicks, self.max_batch)
        if not batch_searches and not batch_clicks:
            return True
        try:
            async with self.store.engine.begin() as connection:
                for table, rows in (
                    (searches, _search_rows(batch_searches)),
                    (shown_results, _shown_rows(batch_searches)),
                    (clicks, [_click_row(click) for click in batch_clicks]),
                ):
                    # A few hundred rows per statement: preparing them runs on the event
                    # loop, so each step holds up a concurrent search for well under 1 ms.
                    for start in range(0, len(rows), ROWS_PER_STATEMENT):
                        chunk = rows[start : start + ROWS_PER_STATEMENT]
                        await connection.execute(insert(table), chunk)
        except Exception as exc:  # analytics must never take the bot down with them
            self.dropped += len(batch_searches) + len(batch_clicks)
            log.warning(
                "analytics: %d searches and %d clicks not recorded: %s",
                len(batch_searches),
                len(batch_clicks),
                str(exc).splitlines()[0],
            )
            return False
        return True

    async def purge(self) -> None:
        """Delete searches, results and clicks older than the retention period."""
        self._last_purge = self.clock()
        cutoff = int(self.clock()) - self.retention_days * DAY_S
        try:
            async with self.store.engine.begin() as connection:
                old = select(searches.c.id).where(searches.c.at < cutoff)
                await connection.execute(
                    delete(shown_results).where(shown_results.c.search_id.in_(old))
                )
                await connection.execute(delete(searches).where(searches.c.at < cutoff))
                await connection.execute(delete(clicks).where(clicks.c.at < cutoff))
        except Exception as exc:
            log.warning("analytics: expired rows not deleted: %s", exc)


def _take(queue: deque[T], count: int) -> list[T]:
    return [queue.popleft() for _ in range(min(count, len(queue)))]


def _search_rows(records: list[SearchRecord]) -> list[dict[str, object]]:
    return [
        {
            "id": r.search_id,
            "at": r.at,
            "platform": r.platform,
            "kind": r.kind,
            "user_hash": r.user_hash,
            "results": len(r.results),
        }
        for r in records
    ]


def _shown_rows(records: list[SearchRecord]) -> list[dict[str, object]]:
    return [
        {
            "search_id": r.search_id,
            "rank": shown.rank,
            "product_id": shown.product_id[:200],
            "category": shown.category[:200],
            "score": float(shown.score),
        }
        for r in records
        for shown in r.results
    ]


def _click_row(click: ClickRecord) -> dict[str, object]:
    return {
        "at": click.at,
        "search_id": click.search_id,
        "rank": click.rank,
        "product_id": click.product_id[:200],
        "platform": click.platform,
    }
