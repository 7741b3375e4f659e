"""Issue 15's catalog cases for docs/reliability.md: one feed holding every kind of hostile
or careless row, built twice against an image server on loopback (`bench.reliability`
calls `hostile_catalog`). Each row's fate is read back from the build's skipped.csv."""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from pathlib import Path

from aiohttp import web

from engine.config import Settings
from engine.embedder import Embedder
from engine.ingest.pipeline import build_index
from engine.store import SKIPPED_FILE
from tests.fakes.demo import photo
from tests.fakes.loopback import LoopbackServer


class _ImageServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()

    def build_app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            if request.path == "/to-loopback.jpg":
                raise web.HTTPFound(f"http://127.0.0.1:{self.port}/photo.jpg")
            body = photo()
            if request.path == "/damaged-once.jpg" and self.hits[request.path] == 1:
                body = body[: len(body) // 3]
            return web.Response(body=body, content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/{name}", handle)
        return app


def _feed(shop: Path, port: int) -> tuple[Path, dict[str, str]]:
    """The feed and, per product id, what its row tries."""
    (shop / "img").mkdir(parents=True)
    (shop / "img" / "a.jpg").write_bytes(photo())
    outside = shop.parent / "outside.jpg"
    outside.write_bytes(photo("hat-1.jpg"))
    (shop / "img" / "link-out.jpg").symlink_to(outside)
    os.mkfifo(shop / "img" / "fifo.jpg")
    cases = {
        "GOOD": ("a good row", "https://s.example/good", "img/a.jpg"),
        "UP": ("`../` out of the catalog's folder", "https://s.example/1", "../outside.jpg"),
        "PASSWD": ("`../../../etc/passwd`", "https://s.example/2", "../../../../etc/passwd"),
        "SHADOW": ("`/etc/shadow`", "https://s.example/3", "/etc/shadow"),
        "HOME": ("`~/.bashrc`", "https://s.example/4", "~/.bashrc"),
        "ENVIRON": ("`/proc/self/environ`", "https://s.example/5", "/proc/self/environ"),
        "LINK": ("a link out of the folder", "https://s.example/6", "img/link-out.jpg"),
        "ZERO": ("`/dev/zero`", "https://s.example/7", "/dev/zero"),
        "FIFO": ("a FIFO in the folder", "https://s.example/8", "img/fifo.jpg"),
        "LOOP": (
            "image URL on 127.0.0.1",
            "https://s.example/9",
            f"http://127.0.0.1:{port}/photo.jpg",
        ),
        "HOP": (
            "allowed host redirecting to 127.0.0.1",
            "https://s.example/10",
            f"http://localhost:{port}/to-loopback.jpg",
        ),
        "META": (
            "cloud metadata address",
            "https://s.example/11",
            "http://169.254.169.254/latest/meta-data/x.jpg",
        ),
        "DAMAGED": (
            "download truncated the first time (built twice)",
            "https://s.example/12",
            f"http://localhost:{port}/damaged-once.jpg",
        ),
        "=1+1": ("product id `=1+1` (a formula)", "https://s.example/13", "img/missing.jpg"),
        "USERINFO": (
            "shop URL `https://t.me@evil.example`",
            "https://t.me@evil.example",
            "img/a.jpg",
        ),
        "JS": ("shop URL `javascript:alert(1)`", "javascript:alert(1)", "img/a.jpg"),
        "NOHOST": ("shop URL `https://`", "https://", "img/a.jpg"),
        "SPACE": ("shop URL with a space", "https://s.example/a b", "img/a.jpg"),
    }
    lines = ["product_id,title,url,image"]
    lines += [f"{pid},{pid},{url},{image}" for pid, (_, url, image) in cases.items()]
    lines.insert(2, f"LONG,{'x' * 200_000},https://s.example/long,img/a.jpg")
    lines.insert(3, 'OPEN,"never closed,https://s.example/open,img/a.jpg')
    feed = shop / "feed.csv"
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    what = {pid: case[0] for pid, case in cases.items()}
    return feed, what


def _skips(build_dir: Path) -> tuple[dict[str, str], list[str]]:
    """Reasons by product id, and the reasons of rows that have none (unreadable CSV)."""
    with (build_dir / SKIPPED_FILE).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_id: dict[str, str] = {}
    for row in rows:  # an image's reason says more than "no usable image; left out"
        if row["image"] or row["product_id"] not in by_id:
            by_id[row["product_id"]] = row["reason"]
    return by_id, [row["reason"] for row in rows if not row["product_id"]]


async def hostile_catalog(settings: Settings, embedder: Embedder) -> list[str]:
    server = _ImageServer()
    await server.start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            feed, what = _feed(Path(scratch) / "shop", server.port)
            index_dir = Path(scratch) / "index"
            hostile = settings.with_overrides(
                build={
                    "allow_private_hosts": ["localhost"],
                    "download_retries": 0,
                    "download_timeout_s": 5.0,
                    "category_probe": False,
                },
            )
            first = await build_index(hostile, feed, index_dir, embedder, show_progress=False)
            first_skips, unreadable = _skips(first.build_dir)
            second = await build_index(hostile, feed, index_dir, embedder, show_progress=False)
            second_skips, _ = _skips(second.build_dir)
            shop = str(feed.parent)
            first_skips = {
                pid: r.replace(shop, "<catalog folder>") for pid, r in first_skips.items()
            }
            with (first.build_dir / SKIPPED_FILE).open(encoding="utf-8") as handle:
                formula_cell = next(line for line in handle if "=1+1" in line).split(",")[1]
    finally:
        await server.stop()
    rows = [
        f"| 200,000-character title | {unreadable[0]} |",
        f"| unterminated quote | {unreadable[1]} |",
    ]
    for pid, case in what.items():
        # skipped.csv writes a formula-like id with a leading apostrophe
        result = first_skips.get(pid) or first_skips.get(f"'{pid}", "indexed")
        if pid == "DAMAGED":
            result = f"1st build: {result}; 2nd build: {second_skips.get(pid, 'indexed')}"
        rows.append(f"| {case} | {_cell(result)} |")
    rows += [
        f"| `=1+1` as written to skipped.csv | `{formula_cell}` |",
        f"| the image server's requests | {_cell(str(dict(server.hits)))} |",
        f"| builds finished | {first.products} and {second.products} products, "
        f"{len(first.skipped)} and {len(second.skipped)} skips |",
    ]
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
