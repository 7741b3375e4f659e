"""Build, inspect and query a fashionbot product index.

    python index_builder.py build CATALOG|URL [--out DIR] [--config F] [--model M]
                                  [--pretrained P] [--ray [ADDRESS]] [--every 6h]
    python index_builder.py query PHOTO [--index DIR] [--k N] [--text T] [--category C] [--json]
    python index_builder.py info [--index DIR]
    python index_builder.py eval [QUERIES] [--index DIR] [--self N] [--k 1,5,10] [--json]
                                 [--report FILE] [--compare CONFIG_A CONFIG_B]
    python index_builder.py eval ITEMS.csv [--index DIR] [--boxes found|whole|true] [--json]
    python index_builder.py report [--since 7d] [--json] [--html FILE]

Exit codes: 0 ok, 1 build failed, 2 bad input (unusable photo, bad config, missing index).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import ConfigError, Settings, load_settings
from engine.types import Filters, SearchPage, TextSearchUnavailable

if TYPE_CHECKING:
    from engine.embedder import Embedder
    from engine.images import ImageError
    from engine.state.report import AnalyticsReport
    from engine.store import Manifest

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    model: dict[str, str] = {}
    if getattr(args, "model", None):
        model["name"] = args.model
    if getattr(args, "pretrained", None):
        model["pretrained"] = args.pretrained
    index_dir = getattr(args, "out", None) or getattr(args, "index", None)
    index = {"dir": str(Path(index_dir).resolve())} if index_dir else {}
    return settings.with_overrides(model=model, index=index) if model or index else settings


def _index_dir(settings: Settings) -> Path:
    return settings.resolve_path(settings.index.dir)


def cmd_build(args: argparse.Namespace) -> int:
    from engine.embedder import load_embedder
    from engine.ingest.feed import FeedError
    from engine.ingest.fetch import is_url
    from engine.ingest.pipeline import BuildError
    from engine.ingest.schedule import parse_interval, run_every

    settings = _settings(args)
    catalog = args.catalog if is_url(args.catalog) else Path(args.catalog).resolve()
    try:
        interval = parse_interval(args.every) if args.every else None
    except ValueError as exc:
        print(f"error: --every: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    embedder = load_embedder(settings.model, settings.source.parent)

    def build_once() -> None:
        _build_and_report(args, settings, catalog, embedder)

    if interval is None:
        build_once()
        return EXIT_OK
    run_every(interval, build_once, expected=(BuildError, FeedError))
    return EXIT_OK  # not reached: only an interrupt ends the schedule


def _build_and_report(
    args: argparse.Namespace, settings: Settings, catalog: Path | str, embedder: Embedder
) -> None:
    from engine.ingest.pipeline import build_index

    report = asyncio.run(
        build_index(
            settings,
            catalog,
            _index_dir(settings),
            embedder,
            not args.quiet,
            ray_address=args.ray or None,
            use_ray=args.ray is not None,
        )
    )
    print(report.summary(), flush=True)
    if report.skipped:
        # Group by the reason's stem ("HTTP 404", "file not found"), not its details.
        reasons = Counter(skip.reason.split(" (")[0].split(":")[0] for skip in report.skipped)
        for reason, count in reasons.most_common(8):
            print(f"  skipped {count:>6}  {reason}")
        print(f"Skipped rows and images with reasons: {report.build_dir / 'skipped.csv'}")


def _page_as_json(page: SearchPage) -> str:
    return json.dumps(
        [
            {
                "product_id": hit.product.product_id,
                "title": hit.product.title,
                "url": hit.product.url,
                "price": hit.product.price,
                "original_price": hit.product.original_price,  # before a sale; else null
                "currency": hit.product.currency,
                "category": hit.product.category,
                "score": round(hit.score, 6),
            }
            for hit in page.hits
        ],
        ensure_ascii=False,
        indent=2,
    )


def format_hits(page: SearchPage) -> str:
    lines = []
    for rank, hit in enumerate(page.hits, start=page.offset + 1):
        product = hit.product
        price = (
            f"{product.price:.2f} {product.currency}".strip() if product.price is not None else ""
        )
        if price and product.original_price is not None and product.original_price > product.price:
            price += f" (was {product.original_price:.2f})"
        lines.append(
            f"{rank:>2}. {product.title}  {price}  [{product.category}]  score {hit.score:.3f}"
        )
        lines.append(f"    {product.url}")
    return "\n".join(lines) if lines else "No matching products."


def cmd_query(args: argparse.Namespace) -> int:
    from engine.search import Engine

    settings = _settings(args)
    try:
        data = Path(args.photo).read_bytes() if args.photo else None
    except OSError as exc:
        print(f"error: cannot read {args.photo}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    engine = Engine.open(settings)
    try:
        page = asyncio.run(
            engine.search(
                image=data,
                text=args.text,
                filters=Filters(category=args.category),
                k=args.k,
                diversity=args.diversity,
            )
        )
    finally:
        engine.close()
    if page.text_ignored:
        print(
            f"note: model {settings.model.name!r} reads no text, so --text was ignored",
            file=sys.stderr,
        )
    print(_page_as_json(page) if args.json else format_hits(page))
    return EXIT_OK


def _load_queries(args: argparse.Namespace, catalog):
    from engine.evaluation import queries

    if args.self_count:
        return queries.from_catalog(catalog, args.self_count, seed=args.seed)
    source = Path(args.queries)
    if source.is_dir():
        return queries.from_folder(source)
    if source.suffix.lower() == ".csv":
        return queries.from_pairs(source, catalog)
    raise queries.QuerySetError(f"{source}: give a folder of category sub-folders or a CSV")


def _evaluate(settings: Settings, args: argparse.Namespace, ks: list[int], query_set=None):
    from engine.evaluation.runner import run_queries
    from engine.search import Engine

    settings = settings.with_overrides(
        search={"max_k": max(ks), "default_k": max(ks), "query_store": ""}
    )
    engine = Engine.open(settings)
    try:
        query_set = query_set or _load_queries(args, engine.index.catalog)
        return asyncio.run(run_queries(engine, query_set, max(ks))), query_set
    finally:
        engine.close()


def _is_street_csv(queries: str | None) -> bool:
    from engine.evaluation.street import is_street_csv

    path = Path(queries or "")
    return path.suffix.lower() == ".csv" and path.is_file() and is_street_csv(path)


def cmd_eval_street(args: argparse.Namespace, ks: list[int]) -> int:
    """Street photos with their garments (photo,category[,x0,y0,x1,y1])."""
    from engine.evaluation.street import (
        read_street_items,
        run_street,
        street_table,
        summarise_street,
    )
    from engine.search import Engine

    settings = _settings(args).with_overrides(
        search={"max_k": max(ks), "default_k": max(ks), "query_store": ""}
    )
    photos = read_street_items(Path(args.queries))
    engine = Engine.open(settings)
    try:
        outcomes, unusable = asyncio.run(run_street(engine, photos, max(ks), args.boxes))
    finally:
        engine.close()
    summary = summarise_street(outcomes, unusable, ks)
    print(json.dumps(summary, indent=2) if args.json else street_table(summary, ks))
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.evaluation.metrics import paired_bootstrap
    from engine.evaluation.report import table, write_report
    from engine.evaluation.runner import per_query, summarise

    if not args.queries and not args.self_count:
        print("error: give QUERIES (a folder or a CSV) or --self N", file=sys.stderr)
        return EXIT_BAD_INPUT
    ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    if not args.self_count and not args.compare and _is_street_csv(args.queries):
        return cmd_eval_street(args, ks)
    if args.compare:
        first, second = (_settings_from(path, args) for path in args.compare)
        run_a, query_set = _evaluate(first, args, ks)
        run_b, _ = _evaluate(second, args, ks, query_set)
        top = max(ks)
        differences = {
            f"{metric}@{k}" if metric != "mrr" else metric: paired_bootstrap(
                per_query(run_a, metric, k), per_query(run_b, metric, k)
            )
            for metric, k in (
                ("precision", ks[0]),
                ("precision", top),
                ("recall", top),
                ("mrr", top),
            )
        }
        result = {
            "a": summarise(run_a, ks),
            "b": summarise(run_b, ks),
            "difference_b_minus_a": {n: vars(d) for n, d in differences.items()},
        }
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"A: {args.compare[0]}\n{table(result['a'])}\n")
            print(f"B: {args.compare[1]}\n{table(result['b'])}\n")
            print("B - A (mean over the same queries, 95% paired bootstrap interval):")
            for name, d in differences.items():
                verdict = "a real difference" if d.significant else "no clear difference"
                print(f"  {name:<14} {d.mean:+.4f}  [{d.low:+.4f}, {d.high:+.4f}]  {verdict}")
        return EXIT_OK
    run, _ = _evaluate(_settings(args), args, ks)
    summary = summarise(run, ks)
    print(json.dumps(summary, indent=2) if args.json else table(summary))
    if args.report:
        write_report(Path(args.report), summary, run, max(ks))
        if not args.json:
            print(f"report: {args.report}")
    return EXIT_OK


def _settings_from(path: str, args: argparse.Namespace) -> Settings:
    settings = load_settings(path)
    if args.index:
        return settings.with_overrides(index={"dir": str(Path(args.index).resolve())})
    return settings


def cmd_info(args: argparse.Namespace) -> int:
    from engine.index import IndexLoadError
    from engine.store import MANIFEST_FILE, Manifest, current_build_dir

    settings = _settings(args)
    build_dir = current_build_dir(_index_dir(settings))
    if build_dir is None or not (build_dir / MANIFEST_FILE).is_file():
        raise IndexLoadError(f"No index found in {_index_dir(settings)}.")
    manifest_text = (build_dir / MANIFEST_FILE).read_text(encoding="utf-8")
    print(f"index: {build_dir}")
    print(_precision_line(settings, Manifest.from_json(manifest_text)))
    print(manifest_text)
    return EXIT_OK


def _precision_line(settings: Settings, manifest: Manifest) -> str:
    """Built and served precision side by side: they may differ (the vectors compare)."""
    from engine.embedder import pick_device
    from engine.precision import PrecisionError, resolve_precision

    configured = settings.model.precision
    device = pick_device(settings.model.device)
    try:
        served = resolve_precision(configured, device.type)
    except PrecisionError as exc:
        served = f"none ({exc})"
    if configured == "auto" and served == "int8":
        served = "int8 if it agrees with fp32 on these weights (checked at start), else fp32,"
    return (
        f"precision: built in {manifest.model.precision}, this configuration serves in "
        f"{served} on {device} (model.precision = {configured!r})"
    )


def parse_since(text: str) -> int:
    """A period like 7d, 24h or 90m, in seconds."""
    units = {"d": 86_400, "h": 3_600, "m": 60}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a period like 7d, 24h or 90m")
    return int(number) * units[unit]


def cmd_report(args: argparse.Namespace) -> int:
    """Searches and clicks from the state store; loads no model."""
    import time

    from engine.state.report import build_report
    from engine.state.report_format import as_html, as_text
    from engine.state.store import StateStore

    settings = load_settings(args.config)

    async def read() -> AnalyticsReport:
        store = await StateStore.open(settings.state.url, settings.source.parent)
        try:
            until = int(time.time()) + 1
            return await build_report(store, until - args.since, until)
        finally:
            await store.close()

    report = asyncio.run(read())
    if args.html:
        Path(args.html).write_text(as_html(report), encoding="utf-8")
    print(json.dumps(report.as_json(), indent=2) if args.json else as_text(report))
    return EXIT_OK


def _add_street_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "--boxes",
        choices=("found", "whole", "true"),
        default="found",
        help="street photos (a CSV of photo,category[,x0,y0,x1,y1]): search the found "
        "garments (default), the whole photos, or each row's own box (for comparison)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="index_builder.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="config file (default: $FASHIONBOT_CONFIG or config.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build (or incrementally update) the index")
    build.add_argument(
        "catalog",
        help="product feed, a file or an http(s) URL: CSV, JSON Lines, Google Merchant "
        "Center XML or TSV, or Shopify products.json (told apart by content)",
    )
    build.add_argument("--out", help="index directory (default: index.dir)")
    build.add_argument("--model", help="model.name override")
    build.add_argument("--pretrained", help="model.pretrained override")
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="embed on a Ray cluster (ADDRESS, e.g. ray://head:10001; without it: "
        "$RAY_ADDRESS or a local Ray instance). Needs pip install 'fashionbot[ray]'",
    )
    build.add_argument(
        "--every",
        metavar="INTERVAL",
        help="keep rebuilding on a schedule, e.g. 6h, 30m, 1d (incremental: unchanged "
        "images are not embedded again); a failed build is logged and tried again next time",
    )
    build.set_defaults(run=cmd_build)

    query = commands.add_parser("query", help="find products similar to a photo")
    query.add_argument("photo", nargs="?", help="photo file (omit for a text-only search)")
    query.add_argument("--index", help="index directory (default: index.dir)")
    query.add_argument("--k", type=int, default=None, help="number of results")
    query.add_argument("--text", help="text query, or a refinement of the photo")
    query.add_argument("--category", help="only this category")
    query.add_argument("--diversity", type=float, default=None, help="0 similar .. 1 varied")
    query.add_argument("--json", action="store_true", help="print JSON")
    query.set_defaults(run=cmd_query)

    evaluate = commands.add_parser("eval", help="measure retrieval quality on query photos")
    evaluate.add_argument(
        "queries", nargs="?", help="folder of <category>/<photo>, or a CSV (see README)"
    )
    evaluate.add_argument("--index", help="index directory (default: index.dir)")
    evaluate.add_argument(
        "--self",
        dest="self_count",
        type=int,
        metavar="N",
        help="N catalog photos changed like a chat app would; each must find its product",
    )
    evaluate.add_argument("--k", default="1,5,10", help="cut-offs, e.g. 1,5,10")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--report", help="write a Markdown (.md) or HTML (.html) report")
    evaluate.add_argument(
        "--compare",
        nargs=2,
        metavar=("CONFIG_A", "CONFIG_B"),
        help="run two configurations (each with its own index) on the same queries",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed for --self")
    _add_street_arguments(evaluate)
    evaluate.set_defaults(run=cmd_eval)

    info = commands.add_parser("info", help="print the served index's manifest")
    info.add_argument("--index", help="index directory (default: index.dir)")
    info.set_defaults(run=cmd_info)

    report = commands.add_parser("report", help="searches and shop-link clicks (state.url)")
    report.add_argument(
        "--since", type=parse_since, default="7d", help="the period to report: 7d, 24h, 90m"
    )
    report.add_argument("--json", action="store_true", help="print JSON")
    report.add_argument("--html", metavar="FILE", help="also write an HTML report with charts")
    report.set_defaults(run=cmd_report)
    return parser


def _shopper_wording(error: ImageError) -> str:
    """What the bots would tell a shopper about this photo: the same English catalog."""
    from bot.i18n import t

    return t("en", f"error.{error.reason}")


def _report_without_a_model(args: argparse.Namespace) -> int:
    """`report` before the model's modules are imported: it needs none of them."""
    from engine.state.store import StateStoreError

    try:
        return cmd_report(args)
    except (ConfigError, StateStoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "report":
        return _report_without_a_model(args)

    from engine.embedder import ModelLoadError
    from engine.evaluation.queries import QuerySetError
    from engine.images import ImageError
    from engine.index import IndexLoadError
    from engine.ingest.feed import FeedError
    from engine.ingest.pipeline import BuildError

    if args.command == "query" and not args.photo and not args.text:
        print("error: give a photo, --text, or both", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.run(args)
    except ImageError as exc:
        print(f"error: {args.photo}: {_shopper_wording(exc)} ({exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (
        ConfigError,
        ModelLoadError,
        IndexLoadError,
        FeedError,
        QuerySetError,
        TextSearchUnavailable,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted; the served index is unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
