"""The `--every` loop on a fake clock: runs are an interval apart from start to start,
a run that overran starts the next at once, and no failure ends the loop."""

from __future__ import annotations

import logging

import pytest

from engine.ingest.schedule import parse_interval, run_every


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        if len(self.waits) == 4:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600.0), ("30m", 1800.0), ("1d", 86400.0), ("90s", 90.0), ("1h30m", 5400.0)],
)
def test_intervals(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "6", "soon", "0h", "6h and more", "-1h"])
def test_bad_intervals(text: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        parse_interval(text)


def test_runs_start_an_interval_apart_and_failures_do_not_stop_them(caplog) -> None:
    clock = FakeClock()
    starts: list[float] = []

    def build() -> None:
        starts.append(clock.now)
        run = len(starts)
        clock.now += {1: 10.0, 2: 150.0, 3: 5.0, 4: 1.0}[run]  # run 2 overruns
        if run == 2:
            raise ValueError("feed unreachable")
        if run == 3:
            raise RuntimeError("a bug")

    with pytest.raises(KeyboardInterrupt), caplog.at_level(logging.INFO):
        run_every(100.0, build, expected=(ValueError,), sleep=clock.sleep, clock=clock)
    assert starts == [1000.0, 1100.0, 1250.0, 1350.0]
    assert clock.waits == [90.0, 0.0, 95.0, 99.0]
    failures = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert failures == [
        ("scheduled build failed: feed unreachable; trying again in 100s", False),
        ("scheduled build failed; trying again in 100s", True),  # a bug keeps its traceback
    ]
