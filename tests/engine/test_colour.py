"""The colour descriptor (engine/colour.py), its file beside the index, and its way
through the engine (plumbing, with the tiny model; what it means: test_colour_real_model)."""

from __future__ import annotations

import io
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import colour
from engine.colour import COLOUR_FILE, ColourTable
from engine.embedder import model_identity
from engine.index import IndexLoadError, open_index
from engine.ingest.pipeline import build_index
from engine.query_store import QueryStore
from engine.search import Engine
from engine.store import current_build_dir
from tests.conftest import DEMO_CATALOG, DEMO_IMAGES, REPO_ROOT, make_settings


def garment(colour_rgb: tuple[int, int, int], background=(255, 255, 255), size=(300, 400)):
    """A plain garment-shaped block in the middle of a plain background."""
    image = Image.new("RGB", size, background)
    width, height = size
    image.paste(Image.new("RGB", (width // 2, height // 2), colour_rgb), (width // 4, height // 4))
    return image


RED, BLUE = (200, 30, 35), (30, 45, 190)


def test_a_red_and_a_blue_garment_differ_and_two_reds_agree() -> None:
    red, blue = colour.describe(garment(RED)), colour.describe(garment(BLUE))
    darker_red = colour.describe(garment((150, 25, 30)))
    assert red.shape == (colour.SIZE,) and red.dtype == np.float32
    assert np.linalg.norm(red) == pytest.approx(1.0, abs=1e-5)
    assert float(red @ blue) < 0.1
    assert float(red @ darker_red) > 0.6


def test_a_plain_background_is_left_out_whatever_its_colour() -> None:
    on_white = colour.describe(garment(RED))
    on_grey = colour.describe(garment(RED, background=(128, 128, 128)))
    on_green = colour.describe(garment(RED, background=(40, 160, 60)))
    green_garment = colour.describe(garment((40, 160, 60)))
    assert float(on_white @ on_grey) > 0.95
    assert float(on_white @ on_green) > 0.95
    assert float(on_green @ green_garment) < 0.2  # the green is background, not garment


def test_a_busy_background_is_kept_and_a_garment_of_the_backgrounds_colour_still_described() -> (
    None
):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (400, 300, 3), dtype=np.uint8))
    noise.paste(Image.new("RGB", (150, 200), RED), (75, 100))
    busy = colour.describe(noise)
    assert float(busy @ colour.describe(garment(RED))) > 0.5  # centre-weighted
    white_on_white = colour.describe(garment((250, 250, 250)))
    assert np.linalg.norm(white_on_white) == pytest.approx(1.0, abs=1e-5)


def test_an_album_combines_its_photos_colours() -> None:
    red, blue = colour.describe(garment(RED)), colour.describe(garment(BLUE))
    both = colour.combine([red, blue])
    assert both is not None and colour.combine([]) is None
    assert 0.5 < float(both @ red) < 0.9 and 0.5 < float(both @ blue) < 0.9


def test_the_table_round_trips_and_unknown_images_score_zero(tmp_path: Path) -> None:
    red, blue = colour.describe(garment(RED)), colour.describe(garment(BLUE))
    table = ColourTable(np.stack([red, blue, red]).astype(np.float16), np.array([1, 1, 0], bool))
    table.save(tmp_path / COLOUR_FILE)
    loaded = ColourTable.load(tmp_path / COLOUR_FILE)
    assert loaded is not None
    similarity = loaded.similarities(red, [0, 1, 2, 7])
    assert similarity[0] > 0.99 and similarity[1] < 0.1
    assert similarity[2] == 0.0 and similarity[3] == 0.0  # unknown, and past the table


def test_a_table_of_another_descriptor_version_is_ignored(tmp_path: Path, monkeypatch) -> None:
    ColourTable(np.zeros((1, colour.SIZE), np.float16), np.ones(1, bool)).save(tmp_path / "c.npz")
    monkeypatch.setattr(colour, "DESCRIPTOR_VERSION", colour.DESCRIPTOR_VERSION + 1)
    assert ColourTable.load(tmp_path / "c.npz") is None


def test_the_build_stores_checksummed_descriptors(demo_index_dir: Path, embedder) -> None:
    build_dir = current_build_dir(demo_index_dir)
    assert build_dir is not None
    index = open_index(demo_index_dir, model_identity(embedder))
    try:
        assert COLOUR_FILE in index.manifest.files
        assert index.colours is not None and index.colours.known.all()
        assert len(index.colours.known) == index.size
    finally:
        index.close()


async def test_the_build_describes_each_photo_as_it_decodes_it(
    tiny_model_files, embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decode stage describes each photo from the bytes it already holds, beside the
    model, instead of every file being read again once the model is done: the same
    descriptors as a file's, and no file read for them."""
    from engine.images import decode_image

    files_read: list[str] = []
    describe_file = colour._describe_file
    monkeypatch.setattr(
        colour,
        "_describe_file",
        lambda record, limits: files_read.append(record.source) or describe_file(record, limits),
    )
    index_dir = tmp_path / "index"
    settings = make_settings(tiny_model_files, index_dir)
    await build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False)
    assert files_read == []
    index = open_index(index_dir, model_identity(embedder))
    try:
        table, records = index.colours, list(index.catalog.iter_images())
    finally:
        index.close()
    assert table is not None and table.known.all() and len(records) == len(table.known)
    for record in records:
        data = Path(record.local_path).read_bytes()
        from_file = colour.describe(decode_image(data, settings.images, draft_size=colour.SIDE))
        assert np.array_equal(table.descriptors[record.key], from_file.astype(np.float16))


def test_a_corrupted_colour_file_is_refused(demo_index_dir, embedder, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(demo_index_dir, index_dir)  # the session's index, not a build of its own
    path = current_build_dir(index_dir) / COLOUR_FILE
    path.chmod(0o644)  # published builds are read-only
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexLoadError, match=r"colour\.npz is corrupted"):
        open_index(index_dir, model_identity(embedder))


async def test_an_index_without_descriptors_searches_without_the_rescore(
    tiny_model_files, embedder, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    settings = make_settings(
        tiny_model_files,
        index_dir,
        build={"colour_descriptors": False},
        search={"colour_weight": 0.5},
    )
    await build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False)
    assert not (current_build_dir(index_dir) / COLOUR_FILE).exists()
    off = settings.with_overrides(search={"colour_weight": 0.0})
    with_weight = Engine(settings, embedder, open_index(index_dir, model_identity(embedder)))
    without = Engine(off, embedder, open_index(index_dir, model_identity(embedder)))
    try:
        assert with_weight.index.colours is None
        photo = (DEMO_IMAGES / "dress-2.jpg").read_bytes()
        first, second = await with_weight.search(image=photo), await without.search(image=photo)
        assert [h.key for h in first.hits] == [h.key for h in second.hits]
    finally:
        with_weight.close()
        without.close()


async def test_the_rescore_reorders_and_later_pages_keep_it(
    tiny_model_files, embedder, demo_index_dir, tmp_path: Path
) -> None:
    """A random model ranks nearly at random, so a strong colour weight must reorder; the
    query key carries the photo's colour, so page 2 continues page 1 (after a restart)."""
    store = str(tmp_path / "queries.sqlite")
    strong = make_settings(
        tiny_model_files, demo_index_dir, search={"colour_weight": 1.0, "query_store": store}
    )
    off = strong.with_overrides(search={"colour_weight": 0.0, "query_store": ""})
    photo = (DEMO_IMAGES / "outwear-3.jpg").read_bytes()
    engine = Engine(strong, embedder, open_index(demo_index_dir, model_identity(embedder)))
    plain = Engine(off, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        whole = await engine.search(image=photo, k=10)
        unscored = await plain.search(image=photo, k=10)
        assert [h.key for h in whole.hits] != [h.key for h in unscored.hits]
        first = await engine.search(image=photo, k=5)
    finally:
        engine.close()
        plain.close()
    restarted = Engine(strong, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        second = await restarted.search(query_key=first.query_key, k=5, offset=5)
        assert [h.key for h in first.hits + second.hits] == [h.key for h in whole.hits]
    finally:
        restarted.close()


def test_the_query_store_keeps_a_colour_and_upgrades_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "queries.sqlite"
    old = sqlite3.connect(path)  # the table as stores before colour descriptors made it
    old.execute("CREATE TABLE queries (key TEXT PRIMARY KEY, vector BLOB NOT NULL, used REAL)")
    old.commit()
    old.close()
    store = QueryStore(path)
    vector = np.array([0.6, 0.8], dtype=np.float32)
    descriptor = colour.describe(garment(RED))
    plain_key = store.put(np.array([1.0, 0.0], dtype=np.float32))
    key = store.put(vector, descriptor)
    stored_vector, stored_colour = store.get_with_colour(key)
    assert np.allclose(stored_vector, vector, atol=1e-3)
    assert stored_colour is not None and np.array_equal(stored_colour, descriptor)
    assert store.get_with_colour(plain_key)[1] is None
    assert store.put(vector) == key  # the same search again keeps its colour
    assert store.get_with_colour(key)[1] is not None
    store.close()


async def test_a_query_photo_is_described_only_when_the_rescore_is_on(
    tiny_model_files, embedder, demo_index_dir
) -> None:
    out = io.BytesIO()
    garment(BLUE).save(out, format="JPEG", quality=80)
    on = make_settings(tiny_model_files, demo_index_dir, search={"colour_weight": 0.15})
    engines = [
        Engine(settings, embedder, open_index(demo_index_dir, model_identity(embedder)))
        for settings in (on, make_settings(tiny_model_files, demo_index_dir))
    ]
    try:
        described = await engines[0].encoder.encode([out.getvalue()], None, 0.5)
        assert described.colour is not None
        assert float(described.colour @ colour.describe(garment(BLUE))) > 0.95
        assert (await engines[1].encoder.encode([out.getvalue()], None, 0.5)).colour is None
    finally:
        for engine in engines:
            engine.close()


async def test_each_garment_of_a_street_photo_carries_its_own_colour(
    tiny_model_files, embedder, demo_index_dir
) -> None:
    street = (REPO_ROOT / "tests" / "fixtures" / "street" / "0016.jpg").read_bytes()
    product = (DEMO_IMAGES / "pants-1.jpg").read_bytes()
    on = make_settings(tiny_model_files, demo_index_dir, search={"colour_weight": 0.15})
    engine = Engine(on, embedder, open_index(demo_index_dir, model_identity(embedder)))
    try:
        results = await engine.search_garments(street, k=3)
        colours = [engine.queries.get_with_colour(page.query_key)[1] for _, page in results]
        assert len(colours) >= 3 and all(c is not None for c in colours)
        assert len({c.tobytes() for c in colours if c is not None}) == len(colours)
        # a product photo is one whole-photo garment: the same colour as a plain search's
        plain = await engine.search(image=product, k=4)
        whole = await engine.search(image=product, garment=0, k=4)
        plain_colour = engine.queries.get_with_colour(plain.query_key)[1]
        whole_colour = engine.queries.get_with_colour(whole.query_key)[1]
        assert plain_colour is not None and whole_colour is not None
        assert np.array_equal(plain_colour, whole_colour)
        assert [h.key for h in plain.hits] == [h.key for h in whole.hits]
    finally:
        engine.close()


async def test_a_rebuild_reuses_the_descriptors_of_unchanged_images(
    tiny_model_files, embedder, tmp_path: Path, monkeypatch
) -> None:
    index_dir = tmp_path / "index"
    settings = make_settings(tiny_model_files, index_dir)
    await build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False)
    first = ColourTable.load(current_build_dir(index_dir) / COLOUR_FILE)
    described: list[str] = []
    real = colour._describe_file

    def counting(record, limits):
        described.append(record.sha256)
        return real(record, limits)

    monkeypatch.setattr(colour, "_describe_file", counting)
    await build_index(settings, DEMO_CATALOG, index_dir, embedder, show_progress=False)
    second = ColourTable.load(current_build_dir(index_dir) / COLOUR_FILE)
    assert described == []
    assert first is not None and second is not None
    assert np.array_equal(first.descriptors, second.descriptors)
    assert second.known.all()
