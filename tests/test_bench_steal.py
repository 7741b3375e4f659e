"""The hypervisor's share of CPU time recorded beside each benchmark section (bench/steal.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.steal import cpu_ticks, recorded

# user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = "cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 50 0 25 400 0 0 0 25 0 0\n"
AFTER = "cpu  200 0 100 900 0 0 0 100 0 0\ncpu0 100 0 50 450 0 0 0 50 0 0\n"


def test_the_share_is_the_steal_part_of_all_cpu_time_during_the_block(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(BEFORE)
    shares: dict[str, float] = {}
    with recorded(shares, "album", stat):
        stat.write_text(AFTER)
    # +100 user, +50 system, +100 idle, +50 steal: 50 of 300 ticks
    assert shares == {"album": pytest.approx(50 / 300)}


def test_nothing_is_recorded_where_the_kernel_does_not_say(tmp_path: Path) -> None:
    shares: dict[str, float] = {}
    with recorded(shares, "album", tmp_path / "missing"):
        pass
    assert shares == {}
    old_kernel = tmp_path / "stat"
    old_kernel.write_text("cpu  100 0 50 800\n")  # before steal was counted
    assert cpu_ticks(old_kernel) is None
