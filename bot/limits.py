"""Rate limits: searches per user, and replies of any kind per chat, each a sliding window."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import Enum


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


class Admission(Enum):
    REPLY = "reply"
    SLOW_DOWN = "slow_down"  # over budget: say so, this once
    DROP = "drop"  # over budget and already told: no reply at all


class ReplyBudget:
    """Replies one chat may get per window, whatever they answer (a search, /start, a
    sticker, an error): a chat that floods the bot cannot use up the platform's send rate
    that other chats' answers share. Past the budget a chat is told to slow down once,
    then ignored until the window has room again."""

    _MAX_WARNED = 10_000  # chats told to slow down and not heard from since; memory bound

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, window_s: float = 60.0
    ) -> None:
        self._window = RateLimiter(per_minute, clock, window_s)
        self._warned: set[int] = set()

    def admit(self, chat_id: int) -> Admission:
        if not self._window.retry_after(chat_id):
            self._warned.discard(chat_id)
            return Admission.REPLY
        if chat_id in self._warned:
            return Admission.DROP
        if len(self._warned) >= self._MAX_WARNED:
            self._warned.clear()  # at worst a chat is told twice
        self._warned.add(chat_id)
        return Admission.SLOW_DOWN
