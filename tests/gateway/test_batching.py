"""`ready_batches`: what is ready goes out together, nothing waits, order and errors kept."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from gateway_service.batching import ready_batches


async def _paced(items: list[int], pause: float) -> AsyncIterator[int]:
    for item in items:
        await asyncio.sleep(pause)
        yield item


async def test_items_that_arrive_apart_go_alone_and_at_once() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen: list[tuple[list[int], float]] = []
    async for batch in ready_batches(_paced([1, 2, 3], 0.05)):
        seen.append((batch, loop.time() - started))
    assert [batch for batch, _ in seen] == [[1], [2], [3]]
    # Each arrives when it was read, not held for a companion.
    for (_, at), expected in zip(seen, (0.05, 0.10, 0.15), strict=True):
        assert expected - 0.01 <= at < expected + 0.04


async def test_items_read_together_go_together() -> None:
    gate = asyncio.Event()

    async def burst() -> AsyncIterator[int]:
        yield 1
        await gate.wait()  # the consumer has taken [1]
        for item in (2, 3, 4):  # one network read's worth, no await in between
            yield item
        await asyncio.sleep(0.01)
        yield 5

    batches: list[list[int]] = []
    async for batch in ready_batches(burst()):
        batches.append(batch)
        gate.set()
    assert batches == [[1], [2, 3, 4], [5]]


async def test_a_slow_consumer_gets_what_piled_up_in_order() -> None:
    batches: list[list[int]] = []
    async for batch in ready_batches(_paced(list(range(20)), 0.001)):
        batches.append(batch)
        await asyncio.sleep(0.02)
    assert [item for batch in batches for item in batch] == list(range(20))
    assert len(batches) < 10
    assert all(batches)


async def test_an_error_comes_after_the_items_read_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("upstream broke")

    got: list[int] = []

    async def consume() -> None:
        async for batch in ready_batches(failing()):
            got.extend(batch)

    with pytest.raises(ValueError, match="upstream broke"):
        await consume()
    assert got == [1, 2]


async def test_closing_the_consumer_stops_the_source_at_once() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            while True:
                await asyncio.sleep(0.01)
                yield 0
        finally:
            closed.set()

    batches = ready_batches(endless())
    assert await anext(batches) == [0]
    await batches.aclose()
    assert closed.is_set()


async def test_a_consumer_that_stops_asking_pauses_the_source() -> None:
    read = 0

    async def counting() -> AsyncIterator[int]:
        nonlocal read
        while True:
            read += 1
            yield read
            await asyncio.sleep(0)

    batches = ready_batches(counting(), limit=4)
    first = await anext(batches)
    await asyncio.sleep(0.05)  # the reader runs on, up to the limit
    assert read <= len(first) + 4
    rest = await anext(batches)
    assert rest == list(range(len(first) + 1, len(first) + 1 + len(rest)))
    await batches.aclose()


async def test_a_cancelled_consumer_stays_cancelled() -> None:
    async def slow() -> AsyncIterator[int]:
        await asyncio.sleep(10)
        yield 1

    async def consume() -> None:
        async for _ in ready_batches(slow()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seed", range(20))
async def test_random_pacing_keeps_every_item_in_order(seed: int) -> None:
    rng = random.Random(seed)
    pauses = [rng.choice((0.0, 0.0, 0.0005, 0.002)) for _ in range(60)]

    async def source() -> AsyncIterator[int]:
        for index, pause in enumerate(pauses):
            if pause:
                await asyncio.sleep(pause)
            yield index

    batches: list[list[int]] = []
    async for batch in ready_batches(source(), limit=rng.choice((2, 8, 64))):
        batches.append(batch)
        if rng.random() < 0.3:
            await asyncio.sleep(0.001)
    assert all(batches)
    assert [item for batch in batches for item in batch] == list(range(60))
