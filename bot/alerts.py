"""Sending price-drop and back-in-stock alerts: one task per bot process watches which build
is served; for a new one it has the state store compare prices and queue alerts in its
outbox (engine/state/alerts.py), then sends what is queued through each platform's
front-end, paced (`alerts.messages_per_second` in all, `alerts.per_chat_interval_s`
per chat), never twice: each row is claimed, sent, and marked sent, and a delivery in
flight is finished even when the sender is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

from bot.settings import AlertSettings
from engine.catalog import ImageRecord
from engine.search import Engine
from engine.state.alerts import (
    Outbox,
    PendingAlert,
    build_prices,
    find_alerts,
    saved_product_ids,
)
from engine.state.store import StateStore
from engine.types import Product

log = logging.getLogger(__name__)

BATCH = 200
MAX_IN_FLIGHT = 16
# A claim older than this was left by a process that died while sending it.
INTERRUPTED_AFTER_S = 300.0
IN_FLIGHT_POLL_S = 0.05  # how often a batch whose chats all have a send in flight looks again


class Delivery(enum.Enum):
    SENT = "sent"
    BLOCKED = "blocked"  # the shopper blocked the bot (Telegram's 403)
    FAILED = "failed"  # refused for good (a bad request)
    RETRY = "retry"  # not delivered this time (the network)


# How a front-end sends one alert: the alert, the product as the served catalog has it
# now, and its first photo.
Deliver = Callable[[PendingAlert, Product, ImageRecord | None], Awaitable[Delivery]]


class Pacer:
    """At most `per_second` sends in all, evenly spaced, and one per chat every
    `per_chat_interval_s`, counted from the end of the chat's previous send (a chat with
    a send in flight waits for it)."""

    def __init__(
        self,
        per_second: float,
        per_chat_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = 1.0 / per_second
        self.per_chat = per_chat_interval_s
        self.clock = clock
        self._next_any = 0.0
        self._next_chat: dict[str, float] = {}

    def chat_wait(self, chat: str) -> float:
        return max(0.0, self._next_chat.get(chat, 0.0) - self.clock())

    async def take(self, chat: str) -> None:
        """Wait for the next overall slot, then count a send to `chat`."""
        now = self.clock()
        slot = max(now, self._next_any)
        self._next_any = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        self._next_chat[chat] = math.inf  # until `done`

    def done(self, chat: str) -> None:
        """The send to `chat` is over (delivered or not)."""
        now = self.clock()
        self._next_chat[chat] = now + self.per_chat
        if len(self._next_chat) > 50_000:  # forget chats whose wait is over
            self._next_chat = {c: t for c, t in self._next_chat.items() if t > now}


class AlertService:
    def __init__(
        self,
        engine: Engine,
        store: StateStore,
        settings: AlertSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.store = store
        self.settings = settings
        self.outbox = Outbox(store)
        self.pacer = Pacer(settings.messages_per_second, settings.per_chat_interval_s, clock)
        self.senders: dict[str, Deliver] = {}
        self._compared_build = ""
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._wake = asyncio.Event()
        self.delivered = 0
        self._settled = 0  # alerts of the current batch sent, or refused for good

    def register(self, platform: str, deliver: Deliver) -> None:
        self.senders[platform] = deliver

    async def start(self) -> None:
        given_up = await self.outbox.give_up_interrupted(INTERRUPTED_AFTER_S)
        if given_up:
            log.warning("alerts: %d interrupted while being sent are not sent again", given_up)
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """Check for a new build and queued alerts now rather than at the next interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop sending; deliveries in flight finish and are marked first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _run(self) -> None:
        while True:
            try:
                await self.compare_if_new_build()
                sent_some = await self.send_pending()
            except asyncio.CancelledError:
                raise
            except Exception:  # the sender outlives a database hiccup
                log.exception("alerts: sending failed; trying again")
                sent_some = False
            if not sent_some:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.check_interval_s)
                self._wake.clear()

    async def compare_if_new_build(self) -> int | None:
        """Queue the alerts of the served build, once per build."""
        index = self.engine.index
        build = index.manifest.build_id
        if build == self._compared_build:
            return None
        ids = await saved_product_ids(self.store)
        prices = build_prices(ids, await asyncio.to_thread(index.catalog.prices, ids))
        queued = await find_alerts(self.store, build, prices, self.settings.min_drop_percent)
        self._compared_build = build
        if queued:
            log.info("alerts: build %s: %d alerts queued", build, queued)
        return queued

    async def send_pending(self) -> bool:
        """Send one batch of queued alerts; False when there was nothing to send, or
        nothing got through (the network is down: wait before retrying)."""
        pending = deque(await self.outbox.pending(self.senders, BATCH))
        if not pending:
            return False
        self._settled = 0
        while pending:
            alert = _first_ready(pending, self.pacer)
            if alert is None:  # every chat in the batch waits: sleep for the first
                soonest = min(self.pacer.chat_wait(_chat(a)) for a in pending)
                await asyncio.sleep(min(soonest, IN_FLIGHT_POLL_S))
                continue
            pending.remove(alert)
            await self._slots.acquire()
            await self.pacer.take(_chat(alert))
            task = asyncio.create_task(self._deliver(alert))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        if self._in_flight:  # asyncio.wait: a cancelled sender leaves the deliveries running
            await asyncio.wait(set(self._in_flight))
        return self._settled > 0

    async def _deliver(self, alert: PendingAlert) -> None:
        """Claim, send, mark: runs as its own task, so cancelling the sender never cuts
        a delivery between its send and its mark."""
        try:
            if not await self.outbox.claim(alert.id):
                return  # another replica has it
            catalog = self.engine.index.catalog
            product = catalog.products([alert.product_id]).get(alert.product_id)
            if product is None:
                await self.outbox.failed(alert.id)
                return
            image = catalog.first_images([alert.product_id]).get(alert.product_id)
            try:
                result = await self.senders[alert.platform](alert, product, image)
            except Exception:
                log.exception("alerts: unexpected error sending alert %d", alert.id)
                result = Delivery.RETRY
            if result is Delivery.SENT:
                await self.outbox.sent(alert.id)
                self.delivered += 1
            elif result is Delivery.BLOCKED:
                log.info("alerts: shopper %d blocked the bot; no more alerts", alert.shopper_id)
                await self.outbox.blocked(alert.shopper_id)
            elif result is Delivery.FAILED:
                await self.outbox.failed(alert.id)
            else:
                await self.outbox.retry_later(alert.id, self.settings.max_attempts)
            if result is not Delivery.RETRY:
                self._settled += 1
        finally:
            self.pacer.done(_chat(alert))
            self._slots.release()


def _first_ready(pending: deque[PendingAlert], pacer: Pacer) -> PendingAlert | None:
    return next((a for a in pending if pacer.chat_wait(_chat(a)) <= 0.0), None)


def _chat(alert: PendingAlert) -> str:
    return f"{alert.platform}:{alert.user_id}"
