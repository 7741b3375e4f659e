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
        time.sleep(0.01)
        return [2 * x for x in items]

    batcher = MicroBatcher(double, max_batch=8, max_wait_ms=20, max_queue=100)
    try:
        results = await asyncio.gather(*(batcher.submit_async(i) for i in range(32)))
    finally:
        batcher.close()
    assert results == [2 * i for i in range(32)]
    assert max(sizes) == 8 and len(sizes) <= 8


async def test_a_failing_batch_fails_only_its_requests() -> None:
    release = threading.Event()

    def run(items):
        release.wait(5)
        if "bad" in items:
            raise RuntimeError("model exploded")
        return [x.upper() for x in items]

    batcher = MicroBatcher(run, max_batch=2, max_wait_ms=50, max_queue=10)
    try:
        first = [batcher.submit("bad"), batcher.submit("a")]
        time.sleep(0.1)  # the first batch is collected and waits on the event
        later = [batcher.submit("b"), batcher.submit("c")]
        release.set()
        for future in first:
            with pytest.raises(RuntimeError, match="exploded"):
                future.result(5)
        assert [f.result(5) for f in later] == ["B", "C"]
    finally:
        batcher.close()


def test_full_queue_answers_busy_at_once() -> None:
    release = threading.Event()
    batcher = MicroBatcher(lambda items: (release.wait(5), items)[1], max_batch=1, max_queue=2)
    try:
        batcher.submit(1)
        time.sleep(0.05)  # taken by the worker, which now blocks
        batcher.submit(2)
        batcher.submit(3)
        with pytest.raises(EngineBusy) as busy:
            batcher.submit(4)
        assert busy.value.retry_after_s >= 1
    finally:
        release.set()
        batcher.close()


def test_a_batch_waits_for_photos_on_their_way_and_only_for_those() -> None:
    """A lone request starts at once; one whose companions are being decoded waits for
    them (up to companion_wait_ms) and shares their forward pass."""
    for being_decoded, expected_batches in ((1, [2]), (0, [1, 1])):
        sizes: list[int] = []
        on_their_way = [being_decoded]

        def run(items, sizes=sizes):
            sizes.append(len(items))
            return items

        batcher = MicroBatcher(
            run,
            max_batch=8,
            max_wait_ms=0,
            on_their_way=lambda on_their_way=on_their_way: on_their_way[0],
            companion_wait_ms=5_000,
        )
        try:
            first = batcher.submit("first")
            time.sleep(0.3)  # the companion's photo is still decoding
            second = batcher.submit("second")
            on_their_way[0] = 0
            assert (first.result(10), second.result(10)) == ("first", "second")
        finally:
            batcher.close()
        assert sizes == expected_batches
