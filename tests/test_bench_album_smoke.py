"""The album benchmark (bench/album_latency.py) runs through the real bot at a tiny size and
its stamps relate as the requests happen; no timing is checked."""

from __future__ import annotations

import pytest

from tests.fakes.demo import DEMO_IMAGES


@pytest.mark.slow
def test_album_latency_runs_through_the_bot_and_orders_its_stamps(tiny_model_files) -> None:
    from bench import album_latency

    # No category probe: its training is the build's longest step and not what is measured.
    (row,) = album_latency.measure(["tiny-random"], 2, build={"category_probe": False})
    assert row["architecture"] == "tiny-random" and row["rounds"] == 2
    # The bot asks for the file, then downloads it, then sends the album: in that order.
    assert 0 < row["get_file_ms"] < row["download_ms"] < row["album_ms"]
    assert row["album_ms"] == pytest.approx(row["download_ms"] + row["after_download_ms"])
    assert row["ratio"] == pytest.approx(row["album_ms"] / row["bare_ms"])
    assert (
        row["fastest_ratio"] > 0
        and f"{row['fastest_ratio']:.2f}x |" in album_latency.report([row])[2]
    )
    assert all(row[key] > 0 for key in ("bare_ms", "engine_ms", "flow_ms", "first_album_ms"))
    (table_row,) = album_latency.report([row])[2:]
    assert table_row.startswith("| tiny-random (") and f"{row['ratio']:.2f}x" in table_row
    assert album_latency.PHOTO.is_file() and DEMO_IMAGES.is_dir()
