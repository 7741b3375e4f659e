"""Many shoppers at once through the fake Bot API: who got what, and how fast.
Used by the reliability tests (small) and `bench/reliability.py` (200 users)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from tests.fakes.telegram_api import Call, FakeBotApi


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


def answer_kind(call: Call) -> str | None:
    """What a shopper got from this call: an album, or a message that is not the results
    keyboard sent after an album; None for anything else."""
    if not call.ok or "chat_id" not in call.params:
        return None
    if call.method in ("sendMediaGroup", "sendPhoto"):
        return "album"
    if call.method == "sendMessage" and "reply_markup" not in call.params:
        return classify(str(call.params.get("text", "")))
    return None


async def run_load(
    api: FakeBotApi,
    photos: list[bytes],
    users: int,
    until_quiet: Callable[[], Awaitable[object]],
    timeout_s: float = 300.0,
) -> LoadResult:
    """`users` shoppers each send one photo at the same moment; wait until each has an
    answer (an album, or a message that is not a results keyboard), then for
    `until_quiet()` before counting, so that duplicates are counted too. Stopping the bot
    is the usual `until_quiet`: it finishes every update it took and then sends nothing."""
    first_user = 500_000
    chats = [first_user + n for n in range(users)]
    sent_at: dict[int, float] = {}
    started = time.perf_counter()
    for n, chat in enumerate(chats):
        sent_at[chat] = time.perf_counter()
        await api.send_message(chat_id=chat, user_id=chat, photo=photos[n % len(photos)])

    def answers(calls: list[Call]) -> dict[int, list[tuple[str, float]]]:
        found: dict[int, list[tuple[str, float]]] = {}
        for call in calls:
            kind = answer_kind(call)
            if kind is None:
                continue
            chat = int(call.params["chat_id"])
            if chat in sent_at:
                found.setdefault(chat, []).append((kind, call.at))
        return found

    answered: set[int] = set()
    calls_read = 0

    def everyone_answered() -> bool:
        # re-checked on every call the fake records: read only the new ones
        nonlocal calls_read
        answered.update(answers(api.calls[calls_read:]))
        calls_read = len(api.calls)
        return len(answered) >= users

    # a shopper left unanswered is a finding (exactly_once is False), not an error
    with contextlib.suppress(TimeoutError):
        await api.wait_until(everyone_answered, timeout_s)
    seconds = time.perf_counter() - started
    await until_quiet()
    result = LoadResult(users=users, seconds=seconds)
    for chat, got in answers(api.calls).items():
        result.answers_per_user[chat] = len(got)
        kind, at = got[0]
        result.outcomes[kind] += 1
        result.latencies_ms.append((at - sent_at[chat]) * 1000)
    return result
