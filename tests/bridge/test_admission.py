"""The bridge's admission state: slots, a FIFO queue, refusals with a retry hint."""

from __future__ import annotations

import asyncio

import pytest

from services.bridge.admission import MAX_RETRY, MIN_RETRY, Admission
from services.bridge.errors import Full


async def test_calls_within_the_limit_run_at_once():
    a = Admission("unary", limit=2, queue=1)
    await a.enter()
    await a.enter()
    assert (a.running, a.waiting) == (2, 0)


async def test_beyond_the_limit_calls_queue_then_run_in_arrival_order():
    a = Admission("unary", limit=1, queue=2)
    await a.enter()
    order: list[str] = []

    async def call(name: str) -> None:
        await a.enter()
        order.append(name)

    first, second = asyncio.ensure_future(call("first")), asyncio.ensure_future(call("second"))
    await asyncio.sleep(0)
    assert a.waiting == 2 and order == []
    a.leave(0.5)
    await first
    assert order == ["first"] and a.running == 1 and a.waiting == 1
    a.leave(0.5)
    await second
    assert order == ["first", "second"]
    a.leave(0.5)
    assert (a.running, a.waiting) == (0, 0)


async def test_beyond_the_queue_a_call_is_refused_with_a_retry_hint():
    a = Admission("stream", limit=1, queue=1)
    await a.enter()
    queued = asyncio.ensure_future(a.enter())
    await asyncio.sleep(0)
    with pytest.raises(Full) as refused:
        await a.enter()
    assert "limit of 1 stream calls" in str(refused.value)
    assert MIN_RETRY <= refused.value.retry_after <= MAX_RETRY
    queued.cancel()


async def test_the_retry_hint_follows_how_long_calls_take():
    a = Admission("unary", limit=2, queue=0)
    for _ in range(50):
        await a.enter()
        a.leave(4.0)
    assert a.retry_after() == pytest.approx(4.0 / 2, rel=0.01)  # nobody queued: one slot's turn
    for _ in range(50):
        await a.enter()
        a.leave(0.0)
    assert a.retry_after() == MIN_RETRY


async def test_a_call_cancelled_while_queued_leaves_the_queue():
    a = Admission("unary", limit=1, queue=1)
    await a.enter()
    queued = asyncio.ensure_future(a.enter())
    await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert a.waiting == 0
    a.leave(0.1)
    assert a.running == 0  # nobody inherited the slot


async def test_a_slot_handed_to_a_call_cancelled_at_that_moment_passes_on():
    a = Admission("unary", limit=1, queue=2)
    await a.enter()
    doomed = asyncio.ensure_future(a.enter())
    next_ = asyncio.ensure_future(a.enter())
    await asyncio.sleep(0)
    a.leave(0.1)  # the slot goes to `doomed`...
    doomed.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await next_  # the slot was passed on, not lost
    assert (a.running, a.waiting) == (1, 0)


async def test_slot_releases_on_failure():
    a = Admission("unary", limit=1, queue=0)
    with pytest.raises(RuntimeError):
        async with a.slot():
            raise RuntimeError("the call failed")
    assert a.running == 0
