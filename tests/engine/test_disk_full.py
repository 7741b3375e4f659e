"""A disk that fills up during `index_builder.py build` (issue 15, item 16): one line naming
the folder, what is free and about what the build needs; the served index untouched.
The index lives on a small tmpfs of its own (mounting needs root: skipped without)."""

from __future__ import annotations

import gc
import shutil
import subprocess
from pathlib import Path

import pytest

import index_builder
from engine.store import BUILDS_DIR, CURRENT_FILE
from tests.conftest import DEMO_IMAGES
from tests.fakes.cli_env import use_tiny_model
from tests.fakes.demo import demo_rows, write_catalog


@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount_point
    gc.collect()  # a failed build's objects (a memory-mapped file) may wait for the collector
    if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
        # still busy (seen once under pytest-xdist, never alone): detach it now, the kernel
        # frees it when the last user lets go
        subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


@pytest.fixture
def tiny_env(tiny_model_files, monkeypatch) -> None:
    use_tiny_model(
        monkeypatch,
        tiny_model_files,
        BUILD__CATEGORY_PROBE="false",
        BUILD__IMAGE_ROOTS=f'["{DEMO_IMAGES}"]',
    )


def fill(disk: Path, leave: int) -> None:
    """Writes a file that leaves `leave` bytes free."""
    free = shutil.disk_usage(disk).free
    with (disk / "filler").open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("leave", [2_048, 24_576], ids=["before-writing", "while-writing"])
def test_a_full_disk_is_one_line_and_the_served_index_stays(
    tiny_env, small_disk: Path, tmp_path: Path, leave: int, capsys
) -> None:
    index_dir = small_disk / "index"
    catalog = write_catalog(tmp_path / "feed.csv", demo_rows(4))
    argv = ["build", str(catalog), "--out", str(index_dir), "--quiet"]
    assert index_builder.main(argv) == 0
    served = (index_dir / CURRENT_FILE).read_text()
    capsys.readouterr()

    write_catalog(catalog, demo_rows(12))
    fill(small_disk, leave)
    assert index_builder.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: not enough disk space in {index_dir}: "), error
    assert error.endswith("needed") and "\n" not in error and "KB free, about" in error
    assert (index_dir / CURRENT_FILE).read_text() == served
    assert [p.name for p in (index_dir / BUILDS_DIR).iterdir()] == [served.strip()]

    (small_disk / "filler").unlink()
    assert index_builder.main(argv) == 0  # room again: the build goes through
