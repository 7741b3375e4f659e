"""Coalesce concurrent single-item requests into batches run by one worker thread.

The worker lives in its own thread, so it works the same from any event loop (or none):
callers get a `concurrent.futures.Future`; async callers await `submit_async`. A batch
that raises fails only the requests in that batch. The queue is bounded so that a
saturated engine answers "busy" at once instead of letting requests pile up.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class EngineBusy(RuntimeError):
    """Too many requests are waiting; `retry_after_s` is an honest estimate."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"busy, try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    ewma_item_seconds: float = 0.05  # smoothed model time per item, for busy estimates


class MicroBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out]],
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        name: str = "model-worker",
        on_their_way: Callable[[], int] | None = None,
        companion_wait_ms: float = 0.0,
    ) -> None:
        """`on_their_way` counts items the caller is still preparing (decoding photos): a
        batch waits up to `companion_wait_ms` for those, never for items that may not come,
        so a lone request starts at once and a burst still rides one forward pass."""
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000.0
        self._on_their_way = on_their_way or (lambda: 0)
        self._companion_wait_s = companion_wait_ms / 1000.0
        self._queue: queue.Queue[tuple[In, Future[Out]] | None] = queue.Queue(max_queue)
        self.stats = BatchStats()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, item: In) -> Future[Out]:
        if self._closed:
            raise RuntimeError("the model worker has been shut down")
        future: Future[Out] = Future()
        try:
            self._queue.put_nowait((item, future))
        except queue.Full:
            raise EngineBusy(self.estimated_wait_s()) from None
        return future

    async def submit_async(self, item: In) -> Out:
        return await asyncio.wrap_future(self.submit(item))

    def estimated_wait_s(self) -> float:
        return max(1.0, self._queue.qsize() * self.stats.ewma_item_seconds)

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _collect(self) -> tuple[list[tuple[In, Future[Out]]], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        started = time.monotonic()
        deadline = started + self._max_wait_s
        companion_deadline = started + self._companion_wait_s
        while len(batch) < self._max_batch:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0 and now < companion_deadline and self._on_their_way() > 0:
                remaining = min(0.002, companion_deadline - now)  # re-check who is coming
            try:
                if remaining > 0:
                    entry = self._queue.get(timeout=remaining)
                else:  # past the deadline, still take whatever is already waiting
                    entry = self._queue.get_nowait()
            except queue.Empty:
                if time.monotonic() < companion_deadline and self._on_their_way() > 0:
                    continue
                break
            if entry is None:
                return batch, True
            batch.append(entry)
        return batch, False

    def _work(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = self._run_batch([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch returned {len(results)} results for {len(live)}")
            except BaseException as exc:
                log.warning("a model batch of %d failed: %r", len(live), exc)
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self.stats.batches += 1
            self.stats.items += len(live)
            per_item = elapsed / len(live)
            self.stats.ewma_item_seconds = 0.8 * self.stats.ewma_item_seconds + 0.2 * per_item
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
