"""What the recorded searches and clicks say (`index_builder.py report`, /stats): searches
per day, click-through overall and by rank, what is clicked, what is searched for but
rarely clicked, photo vs text, and how similar the clicked results were."""

from __future__ import annotations

import datetime
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.state.analytics import DAY_S
from engine.state.schema import clicks, searches, shown_results
from engine.state.store import StateStore

RANKS = range(1, 11)
TOP = 10
# A category needs this many searches before "rarely clicked" says anything about it.
MIN_SEARCHES_FOR_GAPS = 3


@dataclass
class KindFigures:
    searches: int = 0
    clicked_searches: int = 0

    @property
    def ctr(self) -> float:
        return self.clicked_searches / self.searches if self.searches else 0.0


@dataclass
class AnalyticsReport:
    since: int  # seconds since the epoch
    until: int
    searches: int = 0
    clicks: int = 0
    clicked_searches: int = 0  # searches with at least one click
    searches_per_day: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" -> count
    shown_by_rank: dict[int, int] = field(default_factory=dict)
    clicks_by_rank: dict[int, int] = field(default_factory=dict)
    by_kind: dict[str, KindFigures] = field(default_factory=dict)
    by_platform: dict[str, int] = field(default_factory=dict)  # searches
    top_products: list[tuple[str, int]] = field(default_factory=list)
    top_categories: list[tuple[str, int]] = field(default_factory=list)
    # (category, searches whose first result is of it, clicks on it): least clicked first
    rarely_clicked: list[tuple[str, int, int]] = field(default_factory=list)
    median_clicked_score: float | None = None
    median_shown_score: float | None = None

    @property
    def ctr(self) -> float:
        """Share of searches that led to at least one click."""
        return self.clicked_searches / self.searches if self.searches else 0.0

    def ctr_at(self, rank: int) -> float:
        shown = self.shown_by_rank.get(rank, 0)
        return self.clicks_by_rank.get(rank, 0) / shown if shown else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ctr"] = round(self.ctr, 4)
        data["ctr_by_rank"] = {str(r): round(self.ctr_at(r), 4) for r in RANKS}
        data["by_kind"] = {
            kind: {**asdict(figures), "ctr": round(figures.ctr, 4)}
            for kind, figures in self.by_kind.items()
        }
        return data


def _day(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d")


async def build_report(store: StateStore, since: int, until: int) -> AnalyticsReport:
    report = AnalyticsReport(since, until)
    async with store.engine.connect() as connection:
        await _searches(connection, report)
        await _clicks(connection, report)
        await _categories(connection, report)
        await _scores(connection, report)
    return report


def _in_window(column: Any, report: AnalyticsReport) -> Any:
    return and_(column >= report.since, column < report.until)


async def _searches(connection: AsyncConnection, report: AnalyticsReport) -> None:
    window = _in_window(searches.c.at, report)
    day = (searches.c.at // DAY_S).label("day")  # whole days on both engines
    rows = await connection.execute(
        select(day, func.count()).where(window).group_by(day).order_by(day)
    )
    report.searches_per_day = {_day(int(d) * DAY_S): n for d, n in rows}
    report.searches = sum(report.searches_per_day.values())
    clicked = (
        select(clicks.c.search_id).where(_in_window(clicks.c.at, report)).distinct().subquery()
    )
    rows = await connection.execute(
        select(searches.c.kind, func.count(), func.count(clicked.c.search_id))
        .select_from(searches.outerjoin(clicked, clicked.c.search_id == searches.c.id))
        .where(window)
        .group_by(searches.c.kind)
    )
    report.by_kind = {kind: KindFigures(n, c) for kind, n, c in rows}
    report.clicked_searches = sum(f.clicked_searches for f in report.by_kind.values())
    rows = await connection.execute(
        select(searches.c.platform, func.count()).where(window).group_by(searches.c.platform)
    )
    report.by_platform = {key: n for key, n in rows}
    rows = await connection.execute(
        select(shown_results.c.rank, func.count())
        .select_from(shown_results.join(searches, searches.c.id == shown_results.c.search_id))
        .where(window, shown_results.c.rank <= max(RANKS))
        .group_by(shown_results.c.rank)
    )
    report.shown_by_rank = {key: n for key, n in rows}


async def _clicks(connection: AsyncConnection, report: AnalyticsReport) -> None:
    window = _in_window(clicks.c.at, report)
    rows = await connection.execute(
        select(clicks.c.rank, func.count()).where(window).group_by(clicks.c.rank)
    )
    by_rank: dict[int, int] = {key: n for key, n in rows}
    report.clicks = sum(by_rank.values())
    report.clicks_by_rank = {rank: n for rank, n in by_rank.items() if rank in RANKS}
    count = func.count().label("n")
    rows = await connection.execute(
        select(clicks.c.product_id, count)
        .where(window)
        .group_by(clicks.c.product_id)
        .order_by(count.desc(), clicks.c.product_id)
        .limit(TOP)
    )
    report.top_products = [(p, n) for p, n in rows]


def _clicked_results() -> Any:
    """Clicks joined to the result row they clicked (its category and score)."""
    return clicks.join(
        shown_results,
        and_(
            shown_results.c.search_id == clicks.c.search_id,
            shown_results.c.rank == clicks.c.rank,
        ),
    )


async def _categories(connection: AsyncConnection, report: AnalyticsReport) -> None:
    count = func.count().label("n")
    rows = await connection.execute(
        select(shown_results.c.category, count)
        .select_from(_clicked_results())
        .where(_in_window(clicks.c.at, report), shown_results.c.category != "")
        .group_by(shown_results.c.category)
        .order_by(count.desc(), shown_results.c.category)
    )
    clicked: dict[str, int] = {key: n for key, n in rows}
    report.top_categories = list(clicked.items())[:TOP]
    # What a search was for: the category of its first result (the closest match).
    rows = await connection.execute(
        select(shown_results.c.category, func.count())
        .select_from(shown_results.join(searches, searches.c.id == shown_results.c.search_id))
        .where(
            _in_window(searches.c.at, report),
            shown_results.c.rank == 1,
            shown_results.c.category != "",
        )
        .group_by(shown_results.c.category)
    )
    searched = {c: n for c, n in rows if n >= MIN_SEARCHES_FOR_GAPS}
    gaps = sorted(searched, key=lambda c: (clicked.get(c, 0) / searched[c], -searched[c], c))
    report.rarely_clicked = [(c, searched[c], clicked.get(c, 0)) for c in gaps[:TOP]]


async def _scores(connection: AsyncConnection, report: AnalyticsReport) -> None:
    rows = await connection.execute(
        select(shown_results.c.score)
        .select_from(_clicked_results())
        .where(_in_window(clicks.c.at, report))
    )
    clicked = [score for (score,) in rows]
    report.median_clicked_score = statistics.median(clicked) if clicked else None
    rows = await connection.execute(
        select(shown_results.c.score)
        .select_from(shown_results.join(searches, searches.c.id == shown_results.c.search_id))
        .where(_in_window(searches.c.at, report))
        .limit(200_000)
    )
    shown = [score for (score,) in rows]
    report.median_shown_score = statistics.median(shown) if shown else None
