"""Per-user rate limits: a sliding window of recent searches."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0
    ) -> None:
        self._limit = per_minute
        self._window = window_s
        self._clock = clock
        self._recent: dict[int, deque[float]] = {}

    def retry_after(self, user_id: int) -> float:
        """0 when the user may search now (and the search is counted), else seconds to wait."""
        now = self._clock()
        recent = self._recent.setdefault(user_id, deque())
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        if len(recent) >= self._limit:
            return max(1.0, recent[0] + self._window - now)
        recent.append(now)
        if len(self._recent) > 10_000:  # forget idle users so memory stays bounded
            self._forget_idle(now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        for user in [u for u, r in self._recent.items() if not r or r[-1] <= now - self._window]:
            del self._recent[user]
