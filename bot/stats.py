"""Counters and latencies shown to admins (/stats)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BotStats:
    searches: int = 0
    errors: int = 0
    rate_limited: int = 0
    busy: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2000))

    def record_search(self, milliseconds: float) -> None:
        self.searches += 1
        self.latencies_ms.append(milliseconds)

    def percentile_ms(self, q: float) -> int:
        return int(np.percentile(self.latencies_ms, q)) if self.latencies_ms else 0
