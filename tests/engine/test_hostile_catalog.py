"""A hostile or careless catalog through `index_builder.py build` (issue 15, items 1-6):
each bad row or image is skipped with its reason, the build goes on, and nothing outside
what the operator allowed is read, fetched, cached or put into a Buy button."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

import index_builder
from engine.index import open_index
from engine.ingest.fetch import FetchError, FetchSettings, ImageFetcher, keep_in_cache
from engine.ingest.pipeline import FAILED_BUILD_SKIPPED_FILE
from engine.store import SKIPPED_FILE
from engine.types import Product
from tests.conftest import DEMO_IMAGES, REPO_ROOT
from tests.fakes.cli_env import use_tiny_model
from tests.fakes.loopback import LoopbackServer

PHOTO = (DEMO_IMAGES / "dress-1.jpg").read_bytes()
OTHER_PHOTO = (DEMO_IMAGES / "hat-1.jpg").read_bytes()
HEADER = ["product_id", "title", "url", "image"]


@pytest.fixture
def tiny_env(tiny_model_files, monkeypatch) -> dict[str, str]:
    return use_tiny_model(monkeypatch, tiny_model_files, BUILD__CATEGORY_PROBE="false")


def shop_folder(root: Path) -> Path:
    """A catalog folder with two real photos in img/."""
    (root / "img").mkdir(parents=True)
    (root / "img" / "a.jpg").write_bytes(PHOTO)
    (root / "img" / "b.jpg").write_bytes(OTHER_PHOTO)
    return root


def write_feed(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def build(feed: Path, index_dir: Path) -> int:
    return index_builder.main(["build", str(feed), "--out", str(index_dir), "--quiet"])


def served_products(index_dir: Path) -> dict[str, Product]:
    index = open_index(index_dir)
    try:
        return index.catalog.products({image.product_id for image in index.catalog.iter_images()})
    finally:
        index.close()


def current(index_dir: Path) -> str:
    return (index_dir / "CURRENT").read_text().strip()


def skipped_rows(index_dir: Path) -> list[dict[str, str]]:
    with (index_dir / "builds" / current(index_dir) / SKIPPED_FILE).open(newline="") as handle:
        return list(csv.DictReader(handle))


def reasons(rows: list[dict[str, str]]) -> dict[str, str]:
    return {row["product_id"]: row["reason"] for row in rows}


# 1. CSV records


def test_an_over_long_cell_and_an_unclosed_quote_cost_only_their_rows(
    tiny_env, tmp_path: Path
) -> None:
    shop = shop_folder(tmp_path / "shop")
    lines = [
        ",".join(HEADER),
        "A,Fine,https://s.example/a,img/a.jpg",
        f"LONG,{'x' * 200_000},https://s.example/long,img/a.jpg",
        "B,Fine,https://s.example/b,img/b.jpg",
        'OPEN,"never closed,https://s.example/open,img/a.jpg',
        "C,Fine,https://s.example/c,img/a.jpg",
        "D,Fine,https://s.example/d,img/b.jpg",
        'M,"two\nlines",https://s.example/m,img/b.jpg',  # a legitimate multi-line cell
        "E,Fine,https://s.example/e,img/a.jpg",
    ]
    feed = shop / "feed.csv"
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 0
    products = served_products(index_dir)
    assert sorted(products) == ["A", "B", "C", "D", "E", "M"]
    assert products["M"].title == "two\nlines"
    skipped = skipped_rows(index_dir)
    assert [(row["row"], row["product_id"]) for row in skipped] == [("2", ""), ("4", "")]
    assert "field larger than field limit" in skipped[0]["reason"]
    assert "line 3 skipped" in skipped[0]["reason"]
    assert "quoted cell opened on line 5 is not closed" in skipped[1]["reason"]


def test_an_unclosed_quote_in_the_last_row_is_reported(tiny_env, tmp_path: Path) -> None:
    shop = shop_folder(tmp_path / "shop")
    feed = shop / "feed.csv"
    feed.write_text(
        ",".join(HEADER) + "\nA,Fine,https://s.example/a,img/a.jpg\n"
        'Z,Last,https://s.example/z,"img/b.jpg\nstray text after it\n',
        encoding="utf-8",
    )
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 0
    assert sorted(served_products(index_dir)) == ["A"]
    assert any("line 3 is not closed" in row["reason"] for row in skipped_rows(index_dir))


# 2. Local image paths


def test_local_paths_are_confined_to_the_catalog_folder(tmp_path: Path, tiny_model_files) -> None:
    """Through the CLI in its own process: a FIFO must not hang the build."""
    shop = shop_folder(tmp_path / "shop")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(OTHER_PHOTO)  # a real photo: indexed if read
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "c.jpg").write_bytes(OTHER_PHOTO)
    (shop / "img" / "link-out.jpg").symlink_to(outside / "secret.jpg")
    (shop / "img" / "link-in.jpg").symlink_to(shop / "img" / "a.jpg")
    os.mkfifo(shop / "img" / "fifo.jpg")
    rows = {
        "GOOD": "img/a.jpg",
        "LINKIN": "img/link-in.jpg",
        "ROOTED": str(allowed / "c.jpg"),
        "UP": "../outside/secret.jpg",
        "PASSWD": "../../../../../../../../etc/passwd",
        "SHADOW": "/etc/shadow",
        "HOME": "~/.bashrc",
        "ENVIRON": "/proc/self/environ",
        "LINKOUT": "img/link-out.jpg",
        "ZERO": "/dev/zero",
        "FIFO": "img/fifo.jpg",
        "FOLDER": "img",
    }
    feed = write_feed(
        shop / "feed.csv",
        [[pid, pid, f"https://s.example/{pid}", image] for pid, image in rows.items()],
    )
    config, checkpoint = tiny_model_files
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FASHIONBOT_MODEL__NAME": str(config),
        "FASHIONBOT_MODEL__PRETRAINED": str(checkpoint),
        "FASHIONBOT_BUILD__CATEGORY_PROBE": "false",
        "FASHIONBOT_BUILD__IMAGE_ROOTS": json.dumps([str(allowed)]),
    }
    index_dir = tmp_path / "index"
    done = subprocess.run(
        [
            sys.executable,
            "index_builder.py",
            "build",
            str(feed),
            "--out",
            str(index_dir),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(served_products(index_dir)) == ["GOOD", "LINKIN", "ROOTED"]
    why = {row["product_id"]: row["reason"] for row in skipped_rows(index_dir) if row["image"]}
    for pid in ("UP", "PASSWD", "SHADOW", "HOME", "ENVIRON", "LINKOUT", "ZERO"):
        assert why[pid].startswith("outside the catalog's folder"), (pid, why[pid])
    assert why["FIFO"].startswith("not a regular file")
    assert why["FOLDER"].startswith("is a folder")


async def test_the_size_cap_holds_while_reading_not_by_stat(tmp_path: Path) -> None:
    """/proc files say they are 0 bytes long; the cap counts what is read."""
    settings = FetchSettings(
        concurrency=1,
        timeout_s=1.0,
        retries=0,
        max_bytes=64,
        image_roots=(Path("/proc/self"),),  # an operator's (odd) choice
    )
    async with ImageFetcher(tmp_path, tmp_path / "cache", settings) as fetcher:
        with pytest.raises(FetchError, match=r"over the .* size cap"):
            await fetcher.fetch("/proc/self/environ")
        with pytest.raises(FetchError, match="outside"):
            await fetcher.fetch("/proc/1/environ")


# 3. Downloads from private addresses


class ImageServer(LoopbackServer):
    """Photos, a redirect to them, and a photo that is damaged on its first download."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()
        self.etag = '"v1"'
        self.body = PHOTO

    def build_app(self) -> web.Application:
        async def photo(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            return web.Response(body=PHOTO, content_type="image/jpeg")

        async def to_loopback(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            raise web.HTTPFound(f"http://127.0.0.1:{self.port}/photo.jpg")

        async def damaged_once(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            body = PHOTO[: len(PHOTO) // 3] if self.hits[request.path] == 1 else PHOTO
            return web.Response(body=body, content_type="image/jpeg")

        async def tagged(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            if request.headers.get("If-None-Match") == self.etag:
                return web.Response(status=304, headers={"ETag": self.etag})
            return web.Response(
                body=self.body, content_type="image/jpeg", headers={"ETag": self.etag}
            )

        app = web.Application()
        app.add_routes(
            web.get(f"/{handler.__name__.replace('_', '-')}.jpg", handler)
            for handler in (photo, to_loopback, damaged_once, tagged)
        )
        return app


@pytest.fixture
async def image_server():
    server = ImageServer()
    await server.start()
    yield server
    await server.stop()


async def test_private_addresses_are_refused_unless_allowed(
    tiny_env, image_server: ImageServer, tmp_path: Path, monkeypatch
) -> None:
    shop = shop_folder(tmp_path / "shop")
    port = image_server.port
    feed = write_feed(
        shop / "feed.csv",
        [
            ["LOCAL", "Local", "https://s.example/l", "img/a.jpg"],
            ["DIRECT", "Direct", "https://s.example/d", f"http://127.0.0.1:{port}/photo.jpg"],
            # the first hop is a host the operator allowed; the redirect leaves it
            ["HOP", "Hop", "https://s.example/h", f"http://localhost:{port}/to-loopback.jpg"],
        ],
    )
    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["localhost"]')
    index_dir = tmp_path / "index"
    assert await asyncio.to_thread(build, feed, index_dir) == 0
    assert sorted(served_products(index_dir)) == ["LOCAL"]
    why = {row["product_id"]: row["reason"] for row in skipped_rows(index_dir) if row["image"]}
    assert "non-public address 127.0.0.1" in why["DIRECT"]
    assert "non-public address 127.0.0.1" in why["HOP"]
    assert image_server.hits == Counter({"/to-loopback.jpg": 1})  # never /photo.jpg

    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["localhost", "127.0.0.0/8"]')
    assert await asyncio.to_thread(build, feed, index_dir) == 0
    assert sorted(served_products(index_dir)) == ["DIRECT", "HOP", "LOCAL"]


def test_allowed_hosts_are_checked_in_the_config(tiny_env, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["images internal"]')
    feed = write_feed(shop_folder(tmp_path / "shop") / "feed.csv", [])
    assert build(feed, tmp_path / "index") == 2
    error = capsys.readouterr().err
    assert "allow_private_hosts" in error and "images internal" in error


# 4. The download cache


async def test_a_damaged_download_is_not_cached(
    tiny_env, image_server: ImageServer, tmp_path: Path, monkeypatch
) -> None:
    shop = shop_folder(tmp_path / "shop")
    url = f"http://127.0.0.1:{image_server.port}/damaged-once.jpg"
    feed = write_feed(
        shop / "feed.csv",
        [
            ["LOCAL", "Local", "https://s.example/l", "img/a.jpg"],
            ["NET", "Net", "https://s.example/n", url],
        ],
    )
    monkeypatch.setenv("FASHIONBOT_BUILD__ALLOW_PRIVATE_HOSTS", '["127.0.0.1"]')
    index_dir = tmp_path / "index"
    assert await asyncio.to_thread(build, feed, index_dir) == 0
    assert sorted(served_products(index_dir)) == ["LOCAL"]
    assert "damaged" in reasons(skipped_rows(index_dir))["NET"]
    assert not [p for p in (index_dir / "cache").rglob("*") if p.is_file()]

    assert await asyncio.to_thread(build, feed, index_dir) == 0  # the server is fixed
    assert sorted(served_products(index_dir)) == ["LOCAL", "NET"]
    assert image_server.hits["/damaged-once.jpg"] == 2
    assert await asyncio.to_thread(build, feed, index_dir) == 0  # now from the cache
    assert image_server.hits["/damaged-once.jpg"] == 2


async def test_old_cache_entries_are_revalidated(image_server: ImageServer, tmp_path: Path):
    url = f"http://127.0.0.1:{image_server.port}/tagged.jpg"

    def fetcher(max_age_s: float) -> ImageFetcher:
        settings = FetchSettings(
            concurrency=2,
            timeout_s=2.0,
            retries=0,
            max_bytes=1_000_000,
            allow_private_hosts=("127.0.0.1",),
            cache_max_age_s=max_age_s,
        )
        return ImageFetcher(tmp_path, tmp_path / "cache", settings)

    async with fetcher(3600) as fetch:
        keep_in_cache(await fetch.fetch(url))
        assert (await fetch.fetch(url)).data == PHOTO  # fresh: not asked again
    assert image_server.hits["/tagged.jpg"] == 1
    async with fetcher(0) as fetch:
        again = await fetch.fetch(url)  # stale: a conditional GET, answered 304
        assert again.data == PHOTO and again.unsaved is None
        image_server.body, image_server.etag = OTHER_PHOTO, '"v2"'
        changed = await fetch.fetch(url)  # the server has a new image under the URL
        assert changed.data == OTHER_PHOTO and changed.unsaved is not None
    assert image_server.hits["/tagged.jpg"] == 3


# 5. Reports


def test_skipped_csv_neutralises_formulas(tiny_env, tmp_path: Path) -> None:
    shop = shop_folder(tmp_path / "shop")
    feed = write_feed(
        shop / "feed.csv",
        [
            ["GOOD", "Fine", "https://s.example/g", "img/a.jpg"],
            ['=HYPERLINK("https://evil.example","x")', "t", "https://s.example/1", "=1+1"],
            ["+CMD", "t", "https://s.example/2", "@SUM(A1)"],
            ["-2", "t", "https://s.example/3", "img/missing.jpg"],
        ],
    )
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 0
    with (index_dir / "builds" / current(index_dir) / SKIPPED_FILE).open(newline="") as handle:
        cells = [cell for row in csv.reader(handle) for cell in row]
    assert cells and not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    assert '\'=HYPERLINK("https://evil.example","x")' in cells and "'@SUM(A1)" in cells


def test_a_catalog_of_only_broken_rows_still_writes_its_skip_report(
    tiny_env, tmp_path: Path, capsys
) -> None:
    shop = shop_folder(tmp_path / "shop")
    feed = write_feed(
        shop / "feed.csv",
        [
            ["NOURL", "t", "", "img/a.jpg"],
            ["GONE", "t", "https://s.example/g", "img/missing.jpg"],
        ],
    )
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 1
    report = index_dir / FAILED_BUILD_SKIPPED_FILE
    assert str(report) in capsys.readouterr().err
    with report.open(newline="") as handle:
        assert {row["product_id"] for row in csv.DictReader(handle)} == {"NOURL", "GONE"}
    assert not (index_dir / "CURRENT").exists()

    write_feed(feed, [["GOOD", "t", "https://s.example/g", "img/a.jpg"]])
    assert build(feed, index_dir) == 0
    assert not report.exists()  # the failure's report does not outlive a good build


def test_the_markdown_report_escapes_catalog_text(tiny_env, tmp_path: Path) -> None:
    shop = shop_folder(tmp_path / "shop")
    title = "<img src=x onerror=alert(1)> [win](javascript:alert(2))"
    feed = write_feed(
        shop / "feed.csv",
        [
            ["A", title, "https://s.example/a", "img/a.jpg"],
            ["B", title, "https://s.example/b", "img/b.jpg"],
        ],
    )
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 0
    report = tmp_path / "report.md"
    code = index_builder.main(
        ["eval", "--index", str(index_dir), "--self", "2", "--k", "1", "--report", str(report)]
    )
    assert code == 0
    text = report.read_text()
    assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
    assert "<img" not in text and "](javascript:" not in text


# 6. Shop URLs


def test_only_plain_http_shop_links_become_buy_buttons(tiny_env, tmp_path: Path) -> None:
    shop = shop_folder(tmp_path / "shop")
    urls = {
        "GOOD": "https://shop.example/p/1?ref=bot",
        "NOHOST": "https://",
        "NOHOST2": "https:///p/1",
        "SPACE": "https://shop.example/p 1",
        "USERINFO": "https://t.me@evil.example",
        "BACKSLASH": "https://evil.example\\@t.me",
        "JS": "javascript:alert(1)",
        "DATA": "data:text/html,<b>x</b>",
        "RELATIVE": "/p/1",
        "PORT": "https://shop.example:99999/p",
    }
    feed = write_feed(
        shop / "feed.csv", [[pid, pid, url, "img/a.jpg"] for pid, url in urls.items()]
    )
    index_dir = tmp_path / "index"
    assert build(feed, index_dir) == 0
    assert sorted(served_products(index_dir)) == ["GOOD"]
    why = reasons(skipped_rows(index_dir))
    assert set(why) == set(urls) - {"GOOD"}
    assert why["USERINFO"].startswith("url has user info")
    assert why["SPACE"].startswith("url contains spaces")
    assert why["NOHOST"] == why["NOHOST2"] == "url has no host"
    assert why["JS"] == why["DATA"] == why["RELATIVE"] == "url is not an http(s) shop link"
