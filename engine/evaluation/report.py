"""Evaluation results for people: a text table, and a Markdown or HTML report with the
worst queries and their results as thumbnails."""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from engine.evaluation.runner import Outcome, Run

# Inline Markdown: emphasis, code, links and images, tables, strikethrough. (Line-start
# syntax cannot apply: catalog text never starts a line of the report.)
_MARKDOWN_PUNCTUATION = re.compile(r"[\\`*_\[\]()!|~]")


def table(summary: dict[str, Any]) -> str:
    overall = summary["overall"]
    assert isinstance(overall, dict)
    columns = [c for c in overall if overall[c] is not None]
    rows = [("overall", overall), *summary["by_category"].items()]
    width = max(len(str(name)) for name, _ in rows)
    lines = [" ".join([f"{'':<{width}}", *(f"{c:>14}" for c in columns)])]
    for name, row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append(
                f"{'-':>14}"
                if value is None
                else f"{value:>14.3f}"
                if isinstance(value, float)
                else f"{value:>14}"
            )
        lines.append(" ".join([f"{name:<{width}}", *cells]))
    unusable = summary.get("unusable_queries") or []
    if unusable:
        lines.append(f"{len(unusable)} query photos could not be used: {', '.join(unusable[:5])}")
    return "\n".join(lines)


def _thumbnail(data: bytes | None, path: str | None = None, side: int = 112) -> str:
    try:
        image: Image.Image = Image.open(io.BytesIO(data) if data is not None else Path(path or ""))
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()
    except (OSError, ValueError):
        return ""


def worst(run: Run, k: int, count: int = 8) -> list[Outcome]:
    return sorted(run.outcomes, key=lambda o: (o.precision(k) or 0.0, o.reciprocal_rank()))[:count]


def write_report(path: Path, summary: dict[str, object], run: Run, k: int) -> None:
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(_html(summary, run, k), encoding="utf-8")
    else:
        path.write_text(_markdown(summary, run, k), encoding="utf-8")


def _markdown(summary: dict[str, object], run: Run, k: int) -> str:
    lines = [
        "# Retrieval quality",
        "",
        "```",
        table(summary),
        "```",
        "",
        f"## Worst queries (precision@{k})",
        "",
    ]
    for outcome in worst(run, k):
        results = ", ".join(
            f"{markdown_text(h.product.title)} \\[{markdown_text(h.product.category)}\\]"
            for h in outcome.hits[:k]
        )
        expected = markdown_text(outcome.query.category or outcome.query.product_id or "")
        lines.append(f"- **{markdown_text(outcome.query.name)}** ({expected}): {results}")
    return "\n".join(lines) + "\n"


def markdown_text(text: str) -> str:
    """Catalog text shown as itself in Markdown: HTML escaped (renderers pass raw HTML
    through), Markdown's punctuation backslash-escaped, line breaks as spaces."""
    flat = " ".join(text.split())
    return _MARKDOWN_PUNCTUATION.sub(r"\\\g<0>", html.escape(flat, quote=False))


def _html(summary: dict[str, object], run: Run, k: int) -> str:
    rows = []
    for outcome in worst(run, k):
        query = outcome.query
        cells = [
            f'<td class="query"><img src="{_thumbnail(query.photo)}" alt="query"><br>'
            f"{html.escape(query.name)}<br><b>{html.escape(query.category or '')}</b></td>"
        ]
        for hit in outcome.hits[:k]:
            good = (
                hit.product.category == outcome.query.category
                or hit.product.product_id == outcome.query.product_id
            )
            picture = _thumbnail(None, hit.image_path)
            label = f"{html.escape(hit.product.title)}<br>{html.escape(hit.product.category)}"
            cells.append(
                f'<td class="{"good" if good else "bad"}"><img src="{picture}" alt="">'
                f"<br>{label} · {hit.score:.2f}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    style = (
        "body{font-family:sans-serif}"
        " td{vertical-align:top;font-size:12px;padding:4px;text-align:center}"
        ".good{background:#e6f4ea}.bad{background:#fce8e6}.query{background:#eef}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Retrieval quality</title>"
        f"<style>{style}</style></head><body><h1>Retrieval quality</h1>"
        f"<pre>{html.escape(table(summary))}</pre><h2>Worst queries (precision@{k})</h2>"
        f"<table>{''.join(rows)}</table></body></html>\n"
    )
