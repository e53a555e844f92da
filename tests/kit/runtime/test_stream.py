"""The Subscriber's delivery guarantees, on the session's embedded broker."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid

from aiokafka.structs import TopicPartition

from services.core.report import ErrorKind
from services.kit.ops import metrics
from services.kit.runtime.control import ControlListener, DeliveryGuard
from services.kit.runtime.deliveries import Attempts, Position, window_for
from services.kit.runtime.kafka import (
    assign_all,
    ensure_topics_exist,
    make_consumer,
    make_producer,
)
from services.kit.runtime.stream import Runtime, Subscriber
from services.kit.wire.topics import BROKER_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES
from tests.support import HANG_GUARD_S, eventually, make_settings, wait_until


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
    await asyncio.wait_for(stuck.wait(), HANG_GUARD_S)
    tp = TopicPartition(topic, 0)

    async def m0_committed() -> bool:
        return (await _committed(bootstrap, group, tp) or 0) >= 1

    await eventually(m0_committed, "m0 committed")
    await asyncio.sleep(0.3)  # several more commit rounds pass: m1 must not be committed
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await _committed(bootstrap, group, TopicPartition(topic, 0)) == 1

    again: list[bytes] = []

    async def second_handler(msg):
        again.append(msg.value)

    sub2 = Subscriber(rt, "t", [topic], group, second_handler)
    task2 = asyncio.create_task(sub2.run())
    await wait_until(lambda: len(again) >= 2, "m1 and m2 delivered again")
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
    await wait_until(lambda: bool(handled), "the good message handled")
    sub.stop()
    await asyncio.gather(task, return_exceptions=True)
    await rt.stop()
    assert handled == [b"good"]  # the partition went on after the bad message was parked
    assert len(attempts) == 3 and not sub.stalled


# ---- one oversized or unparkable message never stops its partition -------------------------
MiB = 1024 * 1024


async def _until(done, give_up) -> None:
    """Until `done()` or `give_up()` holds: each is a cause, never a clock (a hang guard
    of HANG_GUARD_S aside)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not done() and not give_up():
        assert time.monotonic() < deadline, "neither happened (hung?)"
        await asyncio.sleep(0.05)


async def _bad_then_good(rt: Runtime, topic: str, bad: bytes, headers=()) -> tuple:
    """A subscriber whose handler fails on `bad` and keeps the rest; both published."""
    handled: list[bytes] = []

    async def handler(msg):
        if msg.value == bad:
            raise ValueError("cannot handle this one")
        handled.append(msg.value)

    sub = Subscriber(rt, "t", [topic], f"g-{uuid.uuid4().hex[:8]}", handler)
    task = asyncio.create_task(sub.run())
    await sub.wait_ready()
    big = make_producer(rt.bootstrap, max_request_size=BROKER_MAX_MESSAGE_BYTES)
    await big.start()
    try:
        await big.send_and_wait(topic, bad, key=b"k", headers=list(headers))
        await big.send_and_wait(topic, b"good", key=b"k")
    finally:
        await big.stop()
    return sub, task, handled


async def test_a_message_too_large_to_dead_letter_whole_is_parked_as_an_excerpt(embedded_broker):
    """Reproduces the issue: a 7.2 MiB value with a 0.85 MiB header fits the broker, but its
    dead letter (all of it, plus the reason) did not: refused forever, the partition never
    moved on. Now the dead letter keeps a bounded excerpt, the size and the SHA-256."""
    bootstrap = embedded_broker.bootstrap_servers
    prefix = f"big-{uuid.uuid4().hex[:6]}."
    rt = Runtime(make_settings(bootstrap, topic_prefix=prefix), bootstrap)
    topic = f"{prefix}in"
    await ensure_topics_exist(
        bootstrap,
        {topic: 1, rt.topics.deadletter: 1},
        configs={topic: {"max.message.bytes": str(BROKER_MAX_MESSAGE_BYTES)}},
    )
    await rt.start()
    bad = os.urandom(7 * MiB + MiB // 4)
    header = ("x-blob", os.urandom(MiB - MiB // 4 + MiB // 32))  # 8.03 MiB in all
    assert len(bad) + len(header[1]) > MAX_MESSAGE_BYTES  # its whole copy cannot be sent
    sub, task, handled = await _bad_then_good(rt, topic, bad, [header])
    try:
        await _until(lambda: handled, lambda: bool(sub.stalled))
        assert handled == [b"good"] and not sub.stalled  # never refused, moved on
    finally:
        sub.stop()
        await asyncio.gather(task, return_exceptions=True)
    reader = await rt.reader("dl")
    try:
        await assign_all(reader, rt.topics.deadletter, at_end=False)
        (record,) = (await reader.getmany(timeout_ms=HANG_GUARD_S * 1000))[
            TopicPartition(rt.topics.deadletter, 0)
        ]
    finally:
        await reader.stop()
        await rt.stop()
    dl = rt.codec.decode_dead_letter(record.value)
    assert dl.original_truncated and len(record.value) < 2 * MiB
    assert dl.original_size == len(bad) + len(header[1]) + len("x-blob") + 1
    assert dl.original_sha256 == hashlib.sha256(bad).hexdigest()
    assert bad.startswith(dl.original_value) and dl.original_value
    assert (dl.original_topic, dl.original_offset) == (topic, 0)
    assert dl.reason.endswith("cannot handle this one")


async def test_a_message_the_dead_letter_topic_refuses_is_skipped_loudly_after_its_tries(
    embedded_broker, caplog
):
    """A dead-letter topic that refuses every dead letter (here: a 1 KiB record limit) used
    to stall the partition forever; now, after DEAD_LETTER_ATTEMPTS tries, the message is
    skipped with an ERROR line naming it and a metric, and the partition moves on."""
    bootstrap = embedded_broker.bootstrap_servers
    prefix = f"dlq-{uuid.uuid4().hex[:6]}."
    rt = Runtime(make_settings(bootstrap, topic_prefix=prefix, dead_letter_attempts=2), bootstrap)
    topic = f"{prefix}in"
    await ensure_topics_exist(
        bootstrap,
        {topic: 1, rt.topics.deadletter: 1},
        configs={rt.topics.deadletter: {"max.message.bytes": "1024"}},
    )
    await rt.start()
    lost = metrics.DEAD_LETTERS_LOST.labels("t")._value.get()
    bad = os.urandom(4096)  # not compressible below the limit
    sub, task, handled = await _bad_then_good(rt, topic, bad)
    refusals = lambda: [r for r in caplog.records if "cannot dead-letter" in r.getMessage()]  # noqa: E731
    try:
        await _until(lambda: handled, lambda: len(refusals()) > 2)
        assert handled == [b"good"] and not sub.stalled
    finally:
        sub.stop()
        await asyncio.gather(task, return_exceptions=True)
        await rt.stop()
    assert len(refusals()) == 1  # the first try; the second was the last
    (error,) = [r for r in caplog.records if r.levelname == "ERROR" and "skipped" in r.getMessage()]
    assert f"{topic}[0]@0 skipped" in error.getMessage()
    assert "cannot handle this one" in error.getMessage()
    assert metrics.DEAD_LETTERS_LOST.labels("t")._value.get() == lost + 1


async def test_a_message_finished_behind_a_stuck_one_is_never_done_again_nor_called_poison(
    embedded_broker, caplog
):
    """Reproduces the issue: m1 finishes while m0 (before it, another key) never does, so
    the partition's offset stays at m0. Each death of the process delivered m1 again: it
    was generated again every time, and after MAX_DELIVERIES deaths dead-lettered as
    poison, "none finished", although it had. Now m1's finish is recorded (a finished
    marker): later lives skip it, and only m0, which never finished, is given up."""
    caplog.set_level(logging.INFO, logger="testdata.stream")  # "finished before ...; skipped"
    bootstrap = embedded_broker.bootstrap_servers
    prefix = f"fin-{uuid.uuid4().hex[:6]}."
    settings = make_settings(bootstrap, topic_prefix=prefix, max_deliveries=2)
    rt = Runtime(settings, bootstrap)
    topic, group = f"{prefix}in", f"g-{uuid.uuid4().hex[:8]}"
    topics = (topic, rt.topics.deliveries, rt.topics.control, rt.topics.deadletter)
    await ensure_topics_exist(bootstrap, dict.fromkeys(topics, 1))
    await rt.start()
    await rt.publish(topic, b"m0", b"a")
    await rt.publish(topic, b"m1", b"b")
    handled: list[bytes] = []
    given_up: list[tuple[bytes, ErrorKind]] = []
    m1_at = Position(group, topic, 0, 1)

    async def answer(msg, reason, kind, since_ms):
        given_up.append((msg.value, kind))

    async def handler(msg):
        handled.append(msg.value)
        if msg.value == b"m0":
            await asyncio.Event().wait()  # work that never finishes

    def m1_settled(guard: DeliveryGuard, life: int) -> bool:
        """m1 done in this life: recorded as finished, or handled or skipped again."""
        if life == 1:
            known = guard.attempts.get(m1_at, int(time.time() * 1000))
            return known is not None and known.finished
        skipped = [r for r in caplog.records if "finished before" in r.getMessage()]
        return len(skipped) >= life - 1 or handled.count(b"m1") >= life

    for life in (1, 2, 3):  # lives 1 and 2 start m0; life 3 finds it exhausted
        attempts = Attempts(window_for(60))
        attempts.track(group)
        listener = ControlListener(rt, attempts=attempts)
        await listener.start()
        guard = DeliveryGuard(rt, listener, settings.max_deliveries)
        await guard.start()
        sub = Subscriber(rt, "t", [topic], group, handler, answer=answer, deliveries=guard)
        task = asyncio.create_task(sub.run())
        try:
            await _until(
                lambda guard=guard, life=life: (
                    m1_settled(guard, life)
                    # m0 started in this life (or, exhausted, given up)
                    and (handled.count(b"m0") >= life or len(given_up) > 0)
                ),
                task.done,
            )
        finally:
            task.cancel()  # the process dies: nothing from m0 on is committed
            await asyncio.gather(task, return_exceptions=True)
            await guard.stop()
            await listener.stop()
    await rt.stop()
    assert handled.count(b"m1") == 1, handled  # done once, skipped after
    assert handled.count(b"m0") == 2, handled
    assert given_up == [(b"m0", ErrorKind.POISON)]


async def test_a_consumer_holding_lag_without_progress_reports_itself_stuck(embedded_broker):
    """Seen: a router stuck on one partition showed healthy and ready. A handler that
    never returns holds the partition's position while records wait behind it: after
    STUCK_AFTER_SECONDS the subscriber names the partition, its lag and for how long."""
    bootstrap = embedded_broker.bootstrap_servers
    topic, group = f"stuck-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await ensure_topics_exist(bootstrap, {topic: 1})
    producer = make_producer(bootstrap)
    await producer.start()
    for i in range(3):
        await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k")  # one key: in order
    await producer.stop()
    rt = Runtime(make_settings(bootstrap), bootstrap)
    await rt.start()
    hung = asyncio.Event()

    async def handler(msg):
        hung.set()
        await asyncio.Event().wait()  # never finishes

    sub = Subscriber(rt, "t", [topic], group, handler)
    task = asyncio.create_task(sub.run())
    try:
        await asyncio.wait_for(hung.wait(), HANG_GUARD_S)
        assert sub.stuck(after=3600) == []  # not yet that long
        deadline = time.monotonic() + HANG_GUARD_S
        while not (found := sub.stuck(after=0.5)):
            assert time.monotonic() < deadline, "never reported stuck"
            await asyncio.sleep(0.1)
        assert found[0].startswith(f"{topic}[0] lag 3, no progress for ")
    finally:
        sub.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.stop()
