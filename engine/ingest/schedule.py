"""`index_builder.py build FEED --every 6h`: build now, then again every interval. A
failed build is logged and tried again at the next time; it never publishes (the build
itself guarantees that), so the served index stays the last good one."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_interval(text: str) -> float:
    """'6h', '30m', '1d', '90s', '1h30m' -> seconds; ValueError for anything else."""
    compact = text.strip().lower()
    parts = _INTERVAL.findall(compact)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != compact.replace(" ", ""):
        raise ValueError(f"{text!r} is not an interval such as 6h, 30m, 1d or 90s")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive interval")
    return seconds


def run_every(
    interval_s: float,
    build: Callable[[], object],
    expected: tuple[type[Exception], ...] = (),
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Runs `build` now and then every `interval_s` seconds from the start of the last
    run (at once when a run took longer), forever; only KeyboardInterrupt (or another
    BaseException) ends it. An `expected` failure is one log line; any other is logged
    with its traceback; either way the next run comes."""
    while True:
        started = clock()
        try:
            build()
        except expected as exc:
            log.error("scheduled build failed: %s; trying again in %s", exc, _human(interval_s))
        except Exception:
            log.exception("scheduled build failed; trying again in %s", _human(interval_s))
        sleep(max(0.0, started + interval_s - clock()))


def _human(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"
