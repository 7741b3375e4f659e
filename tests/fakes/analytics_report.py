"""The shop owner's report of the last hour, after the analytics writer has written what
it queued: what click tests read back."""

from __future__ import annotations

import time

from bot.analytics import Analytics
from engine.state.report import AnalyticsReport, build_report


async def last_hour_report(analytics: Analytics) -> AnalyticsReport:
    assert analytics.writer is not None and analytics.store is not None
    await analytics.writer.flush()
    now = int(time.time())
    return await build_report(analytics.store, now - 3600, now + 60)
