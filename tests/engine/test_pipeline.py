from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine.embedder import load_embedder, model_identity
from engine.index import open_index
from engine.ingest import pipeline
from engine.ingest.pipeline import BuildError, build_index
from engine.store import CURRENT_FILE, MANIFEST_FILE, SKIPPED_FILE, current_build_dir
from tests.conftest import DEMO_CATALOG, REPO_ROOT, make_settings
from tests.fakes.cli_env import tiny_model_environ
from tests.fakes.demo import demo_rows, unreadable_image_rows, write_catalog
from tests.fakes.waiting import eventually


async def build(settings, catalog: Path, index_dir: Path, embedder):
    return await build_index(settings, catalog, index_dir, embedder, show_progress=False)


async def test_bad_rows_and_images_are_skipped_and_reported(tiny_model_files, embedder, tmp_path):
    rows = demo_rows(6)
    rows += [
        *unreadable_image_rows(rows[0], tmp_path),
        {**rows[0], "product_id": "HALF", "image": f"{tmp_path / 'nope.jpg'}|{rows[1]['image']}"},
        {**rows[0], "product_id": rows[2]["product_id"]},
        {**rows[0], "product_id": "NOURL", "url": "ftp://x"},
    ]
    catalog = write_catalog(tmp_path / "c.csv", rows)
    settings = make_settings(tiny_model_files, tmp_path / "idx")
    report = await build(settings, catalog, tmp_path / "idx", embedder)
    assert (report.products, report.images) == (7, 7)  # 6 good + HALF with its one good photo
    with (report.build_dir / SKIPPED_FILE).open() as handle:
        skipped = [(r["product_id"], r["reason"]) for r in csv.DictReader(handle)]

    def reported(product_id: str, words: str) -> bool:
        return any(pid == product_id and words in reason for pid, reason in skipped)

    assert reported("MISSING", "file not found")
    assert reported("MISSING", "no usable image; product left out")
    assert reported("TEXT", "not a picture")
    assert reported("HALF", "file not found") and not reported("HALF", "left out")
    assert reported(rows[2]["product_id"], "duplicate product_id")
    assert reported("NOURL", "url is not an http(s) shop link")
    assert len(skipped) == 7  # MISSING and TEXT: their image, then the product


async def test_incremental_rebuild_embeds_only_what_changed(tiny_model_files, embedder, tmp_path):
    rows = demo_rows(20)
    index_dir = tmp_path / "idx"
    settings = make_settings(tiny_model_files, index_dir)
    first = await build(settings, write_catalog(tmp_path / "c.csv", rows), index_dir, embedder)
    assert (first.embedded, first.reused) == (20, 0)

    edited = Image.open(rows[5]["image"]).rotate(90, expand=True)
    changed = tmp_path / "changed.jpg"
    edited.save(changed)
    rows[5] = {**rows[5], "image": str(changed)}  # changed photo
    removed = rows.pop(7)  # product dropped from the feed
    rows.append(
        {
            **rows[0],
            "product_id": "NEW-1",
            "image": str(DEMO_CATALOG.parent / "images/t-shirt-6.jpg"),
        }
    )
    rows[0] = {**rows[0], "title": "Renamed"}  # metadata change only
    second = await build(settings, write_catalog(tmp_path / "c.csv", rows), index_dir, embedder)
    assert (second.embedded, second.reused, second.products) == (2, 18, 20)

    index = open_index(index_dir, model_identity(embedder))
    products = index.catalog.products([r["product_id"] for r in rows] + [removed["product_id"]])
    assert removed["product_id"] not in products
    assert products[rows[0]["product_id"]].title == "Renamed"
    assert "NEW-1" in products
    # the changed product's stored vector is the new photo's
    key = next(r.key for r in index.catalog.iter_images() if r.product_id == rows[5]["product_id"])
    assert (
        abs(
            float(index.vectors_for([key])[0] @ embedder.embed_images([edited.convert("RGB")])[0])
            - 1
        )
        < 1e-2
    )


async def test_another_model_re_embeds_everything(tiny_model_files, embedder, tmp_path):
    from engine.devmodel import write_tiny_model

    index_dir = tmp_path / "idx"
    catalog = write_catalog(tmp_path / "c.csv", demo_rows(5))
    await build(make_settings(tiny_model_files, index_dir), catalog, index_dir, embedder)
    other_files = write_tiny_model(tmp_path / "other-model", seed=1)
    other_settings = make_settings(other_files, index_dir)
    other = load_embedder(other_settings.model)
    assert other.fingerprint != embedder.fingerprint
    report = await build(other_settings, catalog, index_dir, other)
    assert (report.embedded, report.reused) == (5, 0)
    open_index(index_dir, model_identity(other))


@pytest.mark.parametrize("crash_in", ["embed", "write_build_files", "finish_build", "publish"])
async def test_a_crashed_build_leaves_the_served_index_intact(
    tiny_model_files, embedder, tmp_path, monkeypatch, crash_in
):
    index_dir = tmp_path / "idx"
    settings = make_settings(tiny_model_files, index_dir)
    rows = demo_rows(8)
    first = await build(settings, write_catalog(tmp_path / "c.csv", rows), index_dir, embedder)

    class Killed(BaseException):
        pass

    def crash(*args, **kwargs):
        raise Killed

    if crash_in == "embed":
        monkeypatch.setattr(embedder, "embed_image_tensors", crash)
    elif crash_in == "publish":
        # killed after the build dir is in place but before CURRENT moves
        monkeypatch.setattr(pipeline, "publish", crash)
    else:
        monkeypatch.setattr(pipeline, crash_in, crash)
    rows[0] = {**rows[0], "image": str(DEMO_CATALOG.parent / "images/shoes-6.jpg")}
    catalog = write_catalog(tmp_path / "c.csv", rows)
    with pytest.raises((Killed, BuildError)):
        await build(settings, catalog, index_dir, embedder)
    monkeypatch.undo()
    served = open_index(index_dir, model_identity(embedder), verify=True)
    assert served.manifest.build_id == first.build_id

    rerun = await build(settings, catalog, index_dir, embedder)
    assert rerun.embedded == 1 and rerun.reused == 7
    assert not list((index_dir / "builds").glob(".tmp-*"))


async def test_only_one_build_at_a_time(tiny_model_files, embedder, tmp_path):
    import fcntl

    index_dir = tmp_path / "idx"
    index_dir.mkdir()
    with (index_dir / ".build.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BuildError, match="already running"):
            await build(
                make_settings(tiny_model_files, index_dir), DEMO_CATALOG, index_dir, embedder
            )


def _images_embedded(progress_log: Path) -> int:
    """The last count the builder's progress bar wrote ("Embedding:  40%|...| 19/48 [...")."""
    counts = re.findall(r"(\d+)/\d+ \[", progress_log.read_text(errors="replace"))
    return int(counts[-1]) if counts else 0


def _temp_builds(index_dir: Path) -> set[Path]:
    return set((index_dir / "builds").glob(".tmp-*"))


def _new_temp_build(index_dir: Path, earlier: set[Path], finished: bool) -> bool:
    """A build folder not in `earlier` is being written (`finished`: its manifest is
    written, so it is being published)."""
    temps = _temp_builds(index_dir) - earlier
    return any((t / MANIFEST_FILE).exists() for t in temps) if finished else bool(temps)


@pytest.mark.slow
async def test_killing_the_builder_process_never_breaks_the_served_index(
    tiny_model_files, embedder, tmp_path
):
    """SIGKILL a real `index_builder.py build` at moments read from what it writes: mid
    embedding (its progress bar), while it writes the build files, while it publishes.
    The builds before and after the kills run in this process (no model to load)."""
    index_dir = tmp_path / "idx"
    images = tmp_path / "imgs"
    images.mkdir()
    rows = []
    total = 48
    for n, row in enumerate(demo_rows(48)):  # distinct sizes: distinct images to embed
        source = Image.open(row["image"]).convert("RGB").resize((300 + n, 300))
        out = io.BytesIO()
        source.save(out, format="JPEG")
        (images / f"{n}.jpg").write_bytes(out.getvalue())
        rows.append({**row, "product_id": f"K{n}", "image": str(images / f"{n}.jpg")})
    catalog = write_catalog(tmp_path / "c.csv", rows)
    env = {
        **os.environ,
        **tiny_model_environ(tiny_model_files, BUILD__BATCH_SIZE="4"),
        "HF_HUB_OFFLINE": "1",
        "TQDM_MININTERVAL": "0",  # every batch on the progress bar: the kill moment is seen
    }
    command = [
        sys.executable,
        str(REPO_ROOT / "index_builder.py"),
        "build",
        str(catalog),
        "--out",
        str(index_dir),
    ]
    settings = make_settings(
        tiny_model_files, index_dir, build={"image_roots": [], "batch_size": 4}
    )
    await build(settings, write_catalog(tmp_path / "small.csv", rows[:10]), index_dir, embedder)
    served_id = (index_dir / CURRENT_FILE).read_text().strip()
    progress_log = tmp_path / "progress.log"

    earlier: set[Path] = set()  # a killed build's leftovers, until the next build removes them
    moments = {
        "mid embedding": lambda: total // 4 <= _images_embedded(progress_log) < total,
        "writing the build": lambda: _new_temp_build(index_dir, earlier, finished=False),
        "publishing": lambda: _new_temp_build(index_dir, earlier, finished=True),
    }
    for moment, reached in moments.items():
        earlier = _temp_builds(index_dir)
        with progress_log.open("w") as log:
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
            try:
                await eventually(
                    lambda done=reached, builder=process: done() or builder.poll() is not None,
                    timeout_s=120,
                    every_s=0.002,
                )
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(30)
        if moment != "publishing":  # (a publish can end the process before the kill lands)
            assert process.returncode == -signal.SIGKILL, (moment, log.name)
        current = (index_dir / CURRENT_FILE).read_text().strip()
        index = open_index(index_dir, verify=True)  # whatever is served is complete and intact
        assert index.manifest.build_id == current, moment
        if moment == "mid embedding":  # nothing of this build is written yet
            assert current == served_id
        assert current == served_id or index.manifest.products == total, moment
        served_id = current
        index.close()

    await build(settings, catalog, index_dir, embedder)  # over whatever the kills left
    final = open_index(index_dir, verify=True)
    assert final.manifest.products == total
    assert current_build_dir(index_dir) is not None
