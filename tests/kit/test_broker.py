"""Embedded broker (librdkafka mock cluster) + kit.kafka client plumbing, end to end."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.kit.broker import EmbeddedBroker
from services.kit.kafka import (
    assign_all,
    ensure_topics_exist,
    make_consumer,
    make_producer,
)

ROOT = Path(__file__).resolve().parents[2]


# `embedded_broker` is the session's one broker (tests/conftest.py).


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _consume(
    consumer: AIOKafkaConsumer, n: int, timeout: float = 10.0
) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(timeout):
        while len(records) < n:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    return records


def test_broker_starts_and_is_reachable(embedded_broker: EmbeddedBroker) -> None:
    assert embedded_broker.running
    host, _, port = embedded_broker.bootstrap_servers.partition(":")
    assert host == "127.0.0.1" and int(port) > 0
    with socket.create_connection((host, int(port)), timeout=2):
        pass
    assert EmbeddedBroker.for_bootstrap(embedded_broker.bootstrap_servers) is embedded_broker


def test_start_stop_context_manager() -> None:
    with EmbeddedBroker() as broker:
        host, _, port = broker.bootstrap_servers.partition(":")
        assert broker.create_topic("t", 3) is True
        assert broker.create_topic("t", 5) is False  # exists: unchanged
    assert not broker.running
    with pytest.raises(RuntimeError):
        _ = broker.bootstrap_servers
    with pytest.raises(OSError):  # listener is gone
        socket.create_connection((host, int(port)), timeout=1).close()


@pytest.mark.asyncio
async def test_ensure_topics_exist_exact_partitions(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    a, b = _topic("ens-a"), _topic("ens-b")
    assert await ensure_topics_exist(bs, {a: 2, b: 7}) == {a: 2, b: 7}
    # idempotent; an existing topic keeps its partition count
    assert await ensure_topics_exist(bs, [a], partitions=5) == {a: 2}


@pytest.mark.asyncio
async def test_produce_consume_roundtrip_headers_key(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("rt")
    await ensure_topics_exist(bs, {topic: 4})
    producer = make_producer(bs)  # idempotent, acks=all
    consumer = make_consumer(bs, None)
    await producer.start()
    await consumer.start()
    try:
        await assign_all(consumer, topic, at_end=False)
        sent = {}
        for i in range(10):
            key = f"key-{i}".encode()
            md = await producer.send_and_wait(
                topic, f"value-{i}".encode(), key=key, headers=[("trace-id", b"t%d" % i)]
            )
            sent[key] = md.partition
        records = await _consume(consumer, 10)
    finally:
        await consumer.stop()
        await producer.stop()
    assert sorted(r.key for r in records) == sorted(sent)
    for r in records:
        i = int(r.key.decode().split("-")[1])
        assert r.value == f"value-{i}".encode()
        assert dict(r.headers) == {"trace-id": b"t%d" % i}
        assert r.partition == sent[r.key]  # same key -> same partition


@pytest.mark.asyncio
async def test_idempotent_producer_offsets_contiguous(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("idem")
    await ensure_topics_exist(bs, {topic: 1})
    producer = make_producer(bs, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, b"%d" % i) for i in range(500)]
        offsets = [md.offset for md in await asyncio.gather(*futures)]
    finally:
        await producer.stop()
    assert offsets == list(range(500))


@pytest.mark.asyncio
async def test_reply_reader_assigned_at_end_sees_only_new(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("reply")
    await ensure_topics_exist(bs, {topic: 4})
    producer = make_producer(bs)
    await producer.start()
    consumer = make_consumer(bs, None, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"old", key=b"x")
        tps = await assign_all(consumer, topic)  # at end: "old" must not be seen
        assert len(tps) == 4
        await producer.send_and_wait(topic, b"new", key=b"x")
        records = await _consume(consumer, 1, timeout=5)
    finally:
        await consumer.stop()
        await producer.stop()
    assert [r.value for r in records] == [b"new"]


@pytest.mark.asyncio
async def test_group_commit_then_restart_resumes(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic, group = _topic("grp"), _topic("g")
    await ensure_topics_exist(bs, {topic: 2})
    # The mock keeps a departed member's slot for session_timeout - 1 s before a new
    # member is admitted; a short session timeout keeps the restart quick.
    group_kw = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}
    producer = make_producer(bs)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, b"a%d" % i, partition=i % 2)
        first = make_consumer(bs, group, topic, **group_kw)
        await first.start()
        try:
            records = await _consume(first, 6)
            await first.commit()
        finally:
            await first.stop()
        assert sorted(r.value for r in records) == [b"a%d" % i for i in range(6)]

        for i in range(2):
            await producer.send_and_wait(topic, b"b%d" % i, partition=i % 2)
        second = make_consumer(bs, group, topic, **group_kw)
        await second.start()
        try:
            resumed = await _consume(second, 2, timeout=15)
            await asyncio.sleep(0.3)  # nothing else (e.g. a replay of a0..a5) may follow
            resumed += [r for b in (await second.getmany(timeout_ms=100)).values() for r in b]
            committed = {p: await second.committed(TopicPartition(topic, p)) for p in (0, 1)}
        finally:
            await second.stop()
    finally:
        await producer.stop()
    assert sorted(r.value for r in resumed) == [b"b0", b"b1"]
    assert committed == {0: 3, 1: 3}


@pytest.mark.asyncio
async def test_large_messages_1mb_and_4mb(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("big")
    # One partition each: together they would exceed the mock's 5 MiB partition retention.
    await ensure_topics_exist(bs, {topic: 2})
    payloads = [os.urandom(1024 * 1024), os.urandom(4 * 1024 * 1024)]  # 1 MiB and a 4 MiB chunk
    producer = make_producer(bs)
    consumer = make_consumer(bs, None)
    await producer.start()
    await consumer.start()
    try:
        for partition, value in enumerate(payloads):
            await producer.send_and_wait(topic, value, partition=partition)
        await assign_all(consumer, topic, at_end=False)
        records = await _consume(consumer, 2)
    finally:
        await consumer.stop()
        await producer.stop()
    assert sorted((r.value for r in records), key=len) == payloads


@pytest.mark.asyncio
async def test_mock_partition_retention_is_5mib(embedded_broker: EmbeddedBroker) -> None:
    """Documents the mock's limit: older batches beyond ~5 MiB per partition are dropped."""
    bs = embedded_broker.bootstrap_servers
    topic = _topic("retention")
    await ensure_topics_exist(bs, {topic: 1})
    producer = make_producer(bs, compression_type=None)
    consumer = make_consumer(bs, None)
    await producer.start()
    await consumer.start()
    try:
        for _ in range(8):
            await producer.send_and_wait(topic, os.urandom(1024 * 1024), partition=0)
        tp = TopicPartition(topic, 0)
        start = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
        await producer.stop()
    assert end == 8
    assert start == 4  # only the newest 4 x 1 MiB (+ overhead) fit in 5 MiB


def test_standalone_broker_process_serves_other_clients(tmp_path: Path) -> None:
    """main(): another process runs the broker; clients here pre-created topics and data."""
    bootstrap_file = tmp_path / "bootstrap"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "services.kit.broker"),
            *("--topic", "pre:3", "--bootstrap-file", str(bootstrap_file)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        bs = proc.stdout.readline().strip()
        assert bootstrap_file.read_text().strip() == bs

        async def roundtrip() -> dict[str, int]:
            found = await ensure_topics_exist(bs, {"pre": 3, "auto": 2})
            producer = make_producer(bs)
            consumer = make_consumer(bs, None)
            await producer.start()
            await consumer.start()
            try:
                await producer.send_and_wait("auto", b"hello", key=b"k")
                await assign_all(consumer, "auto", at_end=False)
                records = await _consume(consumer, 1)
            finally:
                await consumer.stop()
                await producer.stop()
            assert [r.value for r in records] == [b"hello"]
            return found

        # "auto" is auto-created by the out-of-process mock: always 4 partitions.
        assert asyncio.run(roundtrip()) == {"pre": 3, "auto": 4}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not bootstrap_file.exists()
