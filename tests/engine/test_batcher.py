"""The micro-batcher: coalescing, failure isolation, a bounded queue, waiting for photos
on their way. Tests hold the worker on events, not on sleeps: what they arrange has
happened when they go on, however slow the machine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.batcher import EngineBusy, MicroBatcher


async def test_concurrent_requests_are_coalesced() -> None:
    sizes: list[int] = []

    def double(items):
        sizes.append(len(items))
        time.sleep(0.01)  # the model's time, during which later requests queue up
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=8, max_wait_ms=20, max_queue=100)
    try:
        results = await asyncio.gather(*(batcher.submit_async(i) for i in range(32)))
    finally:
        batcher.close()
    assert results == [2 * i for i in range(32)]
    assert max(sizes) == 8 and len(sizes) <= 8


async def test_a_failing_batch_fails_only_its_requests() -> None:
    running, release = threading.Event(), threading.Event()

    def run(items):
        running.set()
        release.wait(5)
        if "bad" in items:
            raise RuntimeError("model exploded")
        return [x.upper() for x in items]

    batcher = MicroBatcher(run, max_batch=2, max_wait_ms=50, max_queue=10)
    try:
        first = [batcher.submit("bad"), batcher.submit("a")]
        assert running.wait(5)  # the first batch is collected and held
        later = [batcher.submit("b"), batcher.submit("c")]
        release.set()
        for future in first:
            with pytest.raises(RuntimeError, match="exploded"):
                future.result(5)
        assert [f.result(5) for f in later] == ["B", "C"]
    finally:
        batcher.close()


def test_full_queue_answers_busy_at_once() -> None:
    running, release = threading.Event(), threading.Event()

    def run(items):
        running.set()
        release.wait(5)
        return items

    batcher = MicroBatcher(run, max_batch=1, max_queue=2)
    try:
        batcher.submit(1)
        assert running.wait(5)  # taken by the worker, which now blocks
        batcher.submit(2)
        batcher.submit(3)
        with pytest.raises(EngineBusy) as busy:
            batcher.submit(4)
        assert busy.value.retry_after_s >= 1
    finally:
        release.set()
        batcher.close()


def test_a_lone_request_does_not_wait_for_companions() -> None:
    """Nothing on its way: the request starts at once, however long a batch may wait."""
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        return items

    batcher = MicroBatcher(
        run, max_batch=8, max_wait_ms=0, on_their_way=lambda: 0, companion_wait_ms=60_000
    )
    try:
        assert batcher.submit("lone").result(10) == "lone"  # waiting would time out here
    finally:
        batcher.close()
    assert sizes == [1]


def test_a_batch_waits_for_photos_on_their_way() -> None:
    """A request whose companion's photo is still decoding waits for it (up to
    companion_wait_ms) and shares its forward pass."""
    sizes: list[int] = []
    on_their_way = 1
    asked = threading.Event()

    def run(items):
        sizes.append(len(items))
        return items

    def photos_on_their_way() -> int:
        asked.set()  # the worker holds the first request and asks who is coming
        return on_their_way

    batcher = MicroBatcher(
        run,
        max_batch=8,
        max_wait_ms=0,
        on_their_way=photos_on_their_way,
        companion_wait_ms=60_000,
    )
    try:
        first = batcher.submit("first")
        assert asked.wait(10)
        second = batcher.submit("second")
        on_their_way = 0
        assert (first.result(10), second.result(10)) == ("first", "second")
    finally:
        batcher.close()
    assert sizes == [2]
