"""The Subscriber's delivery guarantees, on the session's embedded broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.structs import TopicPartition

from services.kit.kafka import ensure_topics_exist, make_consumer, make_producer
from services.kit.stream import Runtime, Subscriber
from tests.support import make_settings


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    c = make_consumer(bootstrap, group)
    await c.start()
    try:
        return await c.committed(tp)
    finally:
        await c.stop()


async def test_offset_moves_only_past_finished_work_and_unfinished_work_comes_back(embedded_broker):
    bootstrap = embedded_broker.bootstrap_servers
    topic, group = f"stream-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics_exist(bootstrap, {topic: 1})
    producer = make_producer(bootstrap)
    await producer.start()
    for i in range(3):
        await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k")
    await producer.stop()
    rt = Runtime(make_settings(bootstrap), bootstrap)
    await rt.start()
    seen: list[bytes] = []
    stuck = asyncio.Event()

    async def first_handler(msg):
        seen.append(msg.value)
        if msg.value == b"m1":
            stuck.set()
            await asyncio.Event().wait()  # work that never finishes (a crash mid-way)

    sub = Subscriber(rt, "t", [topic], group, first_handler)
    task = asyncio.create_task(sub.run())
    await asyncio.wait_for(stuck.wait(), 20)
    await asyncio.sleep(0.3)  # several commit rounds pass
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await _committed(bootstrap, group, TopicPartition(topic, 0)) == 1

    again: list[bytes] = []

    async def second_handler(msg):
        again.append(msg.value)

    sub2 = Subscriber(rt, "t", [topic], group, second_handler)
    task2 = asyncio.create_task(sub2.run())
    for _ in range(300):
        if len(again) >= 2:
            break
        await asyncio.sleep(0.05)
    sub2.stop()
    await asyncio.gather(task2, return_exceptions=True)
    await rt.stop()
    assert seen == [b"m0", b"m1"]
    assert again == [b"m1", b"m2"]  # the unfinished message is delivered again


async def test_failing_handler_is_parked_even_when_dead_lettering_fails_at_first(
    embedded_broker, monkeypatch
):
    bootstrap = embedded_broker.bootstrap_servers
    topic, group = f"stream-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics_exist(bootstrap, {topic: 1})
    rt = Runtime(make_settings(bootstrap), bootstrap)
    await rt.start()
    real = rt.dead_letter
    attempts = []

    async def flaky_dead_letter(*args, **kwargs):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("broker hiccup")
        await real(*args, **kwargs)

    monkeypatch.setattr(rt, "dead_letter", flaky_dead_letter)
    handled: list[bytes] = []

    async def handler(msg):
        if msg.value == b"bad":
            raise ValueError("cannot handle")
        handled.append(msg.value)

    sub = Subscriber(rt, "t", [topic], group, handler)
    task = asyncio.create_task(sub.run())
    await sub.wait_ready()
    await rt.publish(topic, b"bad", b"k")
    await rt.publish(topic, b"good", b"k")
    for _ in range(200):
        if handled:
            break
        await asyncio.sleep(0.05)
    sub.stop()
    await asyncio.gather(task, return_exceptions=True)
    await rt.stop()
    assert handled == [b"good"]  # the partition went on after the bad message was parked
    assert len(attempts) == 3 and not sub.stalled
