"""Running out of disk space during a build: said in one line (where, how much is free,
about how much the build needs) instead of a traceback from numpy, usearch or SQLite."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

# Per product and per image: catalog rows, their indexes and SQLite's pages (about 1 KB
# measured on the demo catalog; less per row on large ones).
_BYTES_PER_ROW = 1000
_NEARLY_FULL = 1 << 20


def build_bytes(images: int, dim: int, products: int) -> int:
    """About what a build writes: f16 vectors, the graph (under twice the vectors on the
    demo catalog) and the catalog."""
    return 3 * images * dim * 2 + _BYTES_PER_ROW * (images + products)


def surely_too_little(folder: Path, images: int, dim: int) -> bool:
    """Whether even the vectors alone cannot fit (checked before writing anything)."""
    return free_bytes(folder) < 2 * images * dim * 2


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """ENOSPC / EDQUOT as such, as numpy's and SQLite's own errors say it, or any write
    error with the disk (nearly) full: usearch says only "Failed to serialize into stream".
    Call before removing what the failed build wrote."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, (OSError, RuntimeError, sqlite3.Error)):
        try:
            if free_bytes(folder) < _NEARLY_FULL:
                return True
        except OSError:
            pass
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in text or "disk i/o error" in text
    # numpy's tofile: "96000 requested and 67520 written"
    return ("requested and" in text and "written" in text) or "no space left" in text


def disk_full_message(folder: Path, needed: int) -> str:
    return (
        f"not enough disk space in {folder}: {_size(free_bytes(folder))} free, "
        f"about {_size(needed)} needed"
    )


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} KB"
