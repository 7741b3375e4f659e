"""Peak memory of this process, as tests measure what decoding a photo costs."""

from __future__ import annotations

import unittest
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")


class PeakMemory:
    """Growth of this process's peak resident memory (Linux: VmHWM, reset by clear_refs),
    which sees what Pillow allocates outside Python's allocator, unlike tracemalloc."""

    def __enter__(self) -> PeakMemory:
        try:
            CLEAR_REFS.write_text("5")
        except OSError:
            raise unittest.SkipTest("peak memory cannot be reset on this system") from None
        self._base = _status_mb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mb = _status_mb("VmHWM") - self._base


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")
