"""The durability promise (README, "The embedded broker"): SIGKILL of the broker while
producers write loses nothing the broker acknowledged; the restarted broker (same data
directory, Kafka's own log recovery after an unclean shutdown) serves every such record."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from services.kit.broker.embedded import EmbeddedBroker
from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
from tests.support import HANG_GUARD_S

pytestmark = [pytest.mark.process, pytest.mark.slow]  # a broker of its own


async def _write_until_killed(broker: EmbeddedBroker, topic: str) -> set[bytes]:
    """Acknowledged values; the broker is SIGKILLed once 300 are acknowledged."""
    producer = make_producer(broker.bootstrap_servers, request_timeout_ms=3000, linger_ms=1)
    await producer.start()
    acked: set[bytes] = set()
    pending: set[asyncio.Future] = set()
    killed = False
    try:
        for i in range(100_000):
            value = b"v%06d" % i
            try:
                fut = await producer.send(topic, value, partition=i % 3)
            except KafkaError:
                break
            fut.add_done_callback(
                lambda f, v=value: acked.add(v) if not f.cancelled() and not f.exception() else None
            )
            pending.add(fut)
            if len(acked) >= 300 and not killed:
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)  # mid-write: sends are in flight
                killed = True
            if killed and len(pending) > 2000:
                break
            await asyncio.sleep(0)
        await asyncio.wait(pending, timeout=5)  # answers already on their way
    finally:
        # the broker is gone: the producer would retry its unacknowledged sends forever
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(producer.stop(), 5)
    assert killed
    return set(acked)


async def _read(bootstrap: str, topic: str) -> set[bytes]:
    consumer = make_consumer(bootstrap, None)
    await consumer.start()
    try:
        tps = await assign_all(consumer, topic, at_end=False)
        ends = await consumer.end_offsets(tps)
        out: set[bytes] = set()
        async with asyncio.timeout(HANG_GUARD_S):
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out |= {r.value for r in records}
        return out
    finally:
        await consumer.stop()


def test_sigkill_of_the_broker_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    first = EmbeddedBroker({"durable": 3}, data_dir=data).start()
    try:
        acked = asyncio.run(_write_until_killed(first, "durable"))
    finally:
        first.stop()
    assert len(acked) >= 300
    with EmbeddedBroker(data_dir=data) as second:
        kept = asyncio.run(_read(second.bootstrap_servers, "durable"))
    assert acked <= kept, f"{len(acked - kept)} acknowledged records lost"
