"""Many shoppers at once through the fake Bot API: who got what, and how fast.
Used by the reliability tests (small) and `bench/reliability.py` (200 users)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tests.fakes.telegram_api import FakeBotApi


@dataclass
class LoadResult:
    users: int
    outcomes: Counter[str] = field(default_factory=Counter)  # per user: album / busy / ...
    answers_per_user: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exactly_once(self) -> bool:
        return len(self.answers_per_user) == self.users and set(self.answers_per_user.values()) == {
            1
        }

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0.0


def classify(text: str) -> str:
    if "went wrong" in text:
        return "apology"
    if "busy" in text:
        return "busy"
    if "try again in" in text:
        return "rate_limited"
    return "message"


async def run_load(
    api: FakeBotApi,
    photos: list[bytes],
    users: int,
    settle_s: float = 2.0,
    timeout_s: float = 300.0,
) -> LoadResult:
    """`users` shoppers each send one photo at the same moment; wait until each has an
    answer (an album, or a message that is not a results keyboard), then a moment more
    to catch duplicates."""
    first_user = 500_000
    chats = [first_user + n for n in range(users)]
    sent_at: dict[int, float] = {}
    started = time.perf_counter()
    for n, chat in enumerate(chats):
        sent_at[chat] = time.perf_counter()
        await api.send_message(chat_id=chat, user_id=chat, photo=photos[n % len(photos)])

    def answers() -> dict[int, list[tuple[str, float]]]:
        found: dict[int, list[tuple[str, float]]] = {}
        for call in api.calls:
            if not call.ok or "chat_id" not in call.params:
                continue
            chat = int(call.params["chat_id"])
            if chat not in sent_at:
                continue
            if call.method in ("sendMediaGroup", "sendPhoto"):
                kind = "album"
            elif call.method == "sendMessage" and "reply_markup" not in call.params:
                kind = classify(str(call.params.get("text", "")))
            else:
                continue
            found.setdefault(chat, []).append((kind, call.at))
        return found

    deadline = time.perf_counter() + timeout_s
    while len(answers()) < users and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    await asyncio.sleep(settle_s)
    result = LoadResult(users=users, seconds=seconds)
    for chat, got in answers().items():
        result.answers_per_user[chat] = len(got)
        kind, at = got[0]
        result.outcomes[kind] += 1
        result.latencies_ms.append((at - sent_at[chat]) * 1000)
    return result
