"""The analytics report as text (a terminal), and as one self-contained HTML page with
small inline-SVG bar charts (no plotting library, no scripts, nothing fetched)."""

from __future__ import annotations

import datetime
from html import escape

from engine.state.report import RANKS, AnalyticsReport


def _date(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def as_text(report: AnalyticsReport) -> str:
    lines = [
        f"Searches and clicks, {_date(report.since)} to {_date(report.until)} UTC",
        f"searches {report.searches}, clicks {report.clicks}, "
        f"searches with a click {report.clicked_searches} ({report.ctr:.1%})",
        "",
        "searches per day:",
        *(f"  {day}  {n}" for day, n in report.searches_per_day.items()),
        "",
        "click-through by rank (clicks / times shown):",
        *(
            f"  {rank:>2}  {report.clicks_by_rank.get(rank, 0)} / "
            f"{report.shown_by_rank.get(rank, 0)}  {report.ctr_at(rank):.1%}"
            for rank in RANKS
            if report.shown_by_rank.get(rank) or report.clicks_by_rank.get(rank)
        ),
        "",
        "by kind (searches, with a click):",
        *(
            f"  {kind:<8} {f.searches}  {f.clicked_searches} ({f.ctr:.1%})"
            for kind, f in sorted(report.by_kind.items())
        ),
        "",
        "top clicked products:",
        *(f"  {n:>5}  {product}" for product, n in report.top_products),
        "",
        "top clicked categories:",
        *(f"  {n:>5}  {category}" for category, n in report.top_categories),
        "",
        "searched but rarely clicked (searches, clicks):",
        *(f"  {c}  {s}, {k}" for c, s, k in report.rarely_clicked),
        "",
        f"median similarity: clicked results {_score(report.median_clicked_score)}, "
        f"all results shown {_score(report.median_shown_score)}",
    ]
    return "\n".join(lines)


def bar_chart(bars: list[tuple[str, float]], label: str, percent: bool = False) -> str:
    """A horizontal bar chart as an inline <svg>, one labelled bar per item."""
    row, width, left = 18, 420, 110
    top = max((value for _, value in bars), default=0.0) or 1.0
    height = row * len(bars) + 4
    parts = [
        f'<svg role="img" aria-label="{escape(label)}" width="{width + left + 60}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg" font-size="12">'
    ]
    for i, (name, value) in enumerate(bars):
        y = i * row + 2
        length = width * value / top
        shown = f"{value:.1%}" if percent else f"{value:g}"
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{row - 4}" fill="#4c78a8"/>'
            f'<text x="{left + length + 4:.1f}" y="{y + 12}">{shown}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def as_html(report: AnalyticsReport) -> str:
    ranks = [(str(r), report.ctr_at(r)) for r in RANKS if report.shown_by_rank.get(r)]
    kinds = sorted(report.by_kind.items())
    sections = [
        f"<h1>Searches and clicks</h1><p>{escape(_date(report.since))} to "
        f"{escape(_date(report.until))} UTC: {report.searches} searches, {report.clicks} "
        f"clicks, {report.ctr:.1%} of searches led to a click. Median similarity of clicked "
        f"results {_score(report.median_clicked_score)} (all shown: "
        f"{_score(report.median_shown_score)}).</p>",
        "<h2>Searches per day</h2>"
        + bar_chart([(d, float(n)) for d, n in report.searches_per_day.items()], "searches"),
        "<h2>Click-through by rank</h2>" + bar_chart(ranks, "click-through", percent=True),
        "<h2>Photo vs text</h2>"
        + bar_chart([(k, float(f.searches)) for k, f in kinds], "searches by kind")
        + _table(
            ("kind", "searches", "with a click", "click-through"),
            [(k, f.searches, f.clicked_searches, f"{f.ctr:.1%}") for k, f in kinds],
        ),
        "<h2>Top clicked products</h2>"
        + _table(("product", "clicks"), [tuple(p) for p in report.top_products]),
        "<h2>Top clicked categories</h2>"
        + bar_chart([(c, float(n)) for c, n in report.top_categories], "clicks by category"),
        "<h2>Searched but rarely clicked</h2><p>The category of a search's first result, "
        "least clicked first: what the catalog may lack.</p>"
        + _table(("category", "searches", "clicks"), [tuple(r) for r in report.rarely_clicked]),
    ]
    style = (
        "body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>fashionbot report</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n"
    )
