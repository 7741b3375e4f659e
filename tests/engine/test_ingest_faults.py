"""A feed full of faults against a real shop server on loopback: the build finishes,
every bad row or image is in the report with its reason, and nothing good is lost."""

from __future__ import annotations

import csv
from pathlib import Path

from aiohttp import web

from engine.index import open_index
from engine.ingest.pipeline import build_index
from engine.store import SKIPPED_FILE
from tests.conftest import DEMO_IMAGES, make_settings
from tests.fakes.loopback import LoopbackServer


class ShopServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    def build_app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            self.requests.append(name)
            if name == "dead.jpg":
                return web.Response(status=404)
            if name == "to-page.jpg":
                raise web.HTTPFound("/img/page.html")
            if name == "page.html":
                return web.Response(text="<html>gone</html>", content_type="text/html")
            if name == "huge.jpg":
                response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
                response.content_length = 5 * 1024**3
                await response.prepare(request)
                return response
            if name == "slow.jpg":
                await self.stopping.wait()  # answers only once the test is over
            return web.Response(body=(DEMO_IMAGES / name).read_bytes(), content_type="image/jpeg")

        app = web.Application()
        app.router.add_get("/img/{name}", handle)
        return app


async def test_faulty_feed_builds_and_reports_every_skip(
    tiny_model_files, embedder, tmp_path: Path
) -> None:
    server = ShopServer()
    await server.start()
    base = f"http://127.0.0.1:{server.port}/img"
    header = "product_id,title,url,image,price,currency,category\n"
    lines = [
        f"G1,Good dress,https://s.example/g1,{base}/dress-1.jpg,10,EUR,dress",
        f"G2,Good hat,https://s.example/g2,{base}/hat-1.jpg|{base}/dead.jpg,12,EUR,hat",
        f"B1,Dead link,https://s.example/b1,{base}/dead.jpg,1,EUR,dress",
        f"B2,Redirect to a page,https://s.example/b2,{base}/to-page.jpg,1,EUR,dress",
        f"B3,Five gigabytes,https://s.example/b3,{base}/huge.jpg,1,EUR,dress",
        f"B4,Slow server,https://s.example/b4,{base}/slow.jpg,1,EUR,dress",
        f"G1,Duplicate id,https://s.example/g1b,{base}/shoes-1.jpg,1,EUR,shoes",
        "B5,Missing columns",
        f"G3,Caf\xe9 cr\xe8me blouse,https://s.example/g3,{base}/shirt-1.jpg,9,EUR,shirt",
    ]
    feed = tmp_path / "feed.csv"
    feed.write_bytes((header + "\n".join(lines) + "\n").encode("cp1252"))  # not UTF-8
    index_dir = tmp_path / "index"
    settings = make_settings(
        tiny_model_files,
        index_dir,
        build={
            "download_timeout_s": 1.0,
            "download_retries": 1,
            "max_image_bytes": 5_000_000,
            "allow_private_hosts": ["127.0.0.1"],  # the shop server is on loopback
        },
    )
    try:
        report = await build_index(settings, feed, index_dir, embedder, show_progress=False)
        first_requests = len(server.requests)
        with (report.build_dir / SKIPPED_FILE).open() as handle:
            skipped = list(csv.DictReader(handle))
        reasons = {
            (row["product_id"], row["reason"].split(" (")[0].split(":")[0]) for row in skipped
        }
        assert ("B1", "HTTP 404") in reasons
        assert ("B2", "not an image") in reasons
        assert ("B3", "image is 5368.7 MB, over the cap") in reasons
        assert ("B4", "timed out") in reasons
        assert ("G1", "duplicate product_id") in reasons
        assert ("B5", "no image") in reasons
        assert ("G2", "HTTP 404") in reasons  # its second photo; the product stays
        index = open_index(index_dir)
        products = index.catalog.products(["G1", "G2", "G3", "B1"])
        assert set(products) == {"G1", "G2", "G3"}
        assert products["G1"].title == "Good dress"
        assert products["G3"].title == "Café crème blouse"

        # a rebuild reuses the cached downloads and the stored vectors
        again = await build_index(settings, feed, index_dir, embedder, show_progress=False)
        assert again.embedded == 0 and again.reused == 3
        refetched = [name for name in server.requests[first_requests:] if name.endswith("-1.jpg")]
        assert refetched == []
    finally:
        await server.stop()
