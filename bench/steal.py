"""CPU time the hypervisor gave to other guests (steal) while a benchmark section ran.

This project's machines are shared virtual machines: on some days a tenth to a half of
each core's time goes elsewhere, and a two-thread pass waits on its slower thread. The
share is recorded beside each section's figures so a reader can tell a quiet run from a
noisy one (Linux's /proc/stat; absent elsewhere)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

PROC_STAT = Path("/proc/stat")
STEAL_FIELD = 7  # user nice system idle iowait irq softirq steal (guest time is in user)


def cpu_ticks(stat: Path = PROC_STAT) -> tuple[int, int] | None:
    """(steal, total) ticks of all CPUs since boot, or None where unknown."""
    try:
        fields = [int(v) for v in stat.read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) <= STEAL_FIELD:
        return None
    return fields[STEAL_FIELD], sum(fields)


@contextlib.contextmanager
def recorded(shares: dict[str, float], section: str, stat: Path = PROC_STAT) -> Iterator[None]:
    """Runs the block, then sets `shares[section]` to the steal share of its CPU time."""
    before = cpu_ticks(stat)
    yield
    after = cpu_ticks(stat)
    if before is not None and after is not None and after[1] > before[1]:
        shares[section] = (after[0] - before[0]) / (after[1] - before[1])
