"""Embedded broker (Apache Kafka child process) + kit.runtime.kafka client plumbing, end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord

from services.kit.broker import embedded as broker_module
from services.kit.broker.embedded import EmbeddedBroker
from services.kit.broker.errors import DirInUse
from services.kit.runtime.kafka import (
    assign_all,
    ensure_topics_exist,
    group_timeouts,
    make_consumer,
    make_producer,
)
from tests.support import HANG_GUARD_S, eventually

ROOT = Path(__file__).resolve().parents[3]
#: Short group timeouts keep these tests quick (the embedded broker allows 1 s and up).
GROUP = group_timeouts(session_timeout_ms=2000, heartbeat_interval_ms=500)


# `embedded_broker` is the session's one broker (tests/conftest.py).


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _consume(
    consumer: AIOKafkaConsumer, n: int, timeout: float = HANG_GUARD_S
) -> list[ConsumerRecord]:
    """`n` records; `timeout` only guards against a hang."""
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(timeout):
        while len(records) < n:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    return records


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_broker_starts_and_is_reachable(embedded_broker: EmbeddedBroker) -> None:
    assert embedded_broker.running
    host, _, port = embedded_broker.bootstrap_servers.partition(":")
    assert host == "127.0.0.1" and int(port) > 0
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD_S):
        pass


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_start_stop_context_manager() -> None:
    with EmbeddedBroker() as broker:
        host, _, port = broker.bootstrap_servers.partition(":")
        data_dir = broker.data_dir
        assert data_dir is not None and (data_dir / "kraft" / "meta.properties").is_file()
        pid = broker.pid
        assert pid is not None and _alive(pid)
        assert broker.create_topic("t", 3) is True
        assert broker.create_topic("t", 5) is False  # exists: unchanged
    assert not broker.running
    assert not _alive(pid)
    assert not data_dir.exists()  # a temporary directory goes with its broker
    with pytest.raises(RuntimeError):
        _ = broker.bootstrap_servers
    with pytest.raises(OSError):  # listener is gone
        socket.create_connection((host, int(port)), timeout=1).close()


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_broker_dies_with_its_owner_process(tmp_path: Path) -> None:
    """A SIGKILLed owner leaves no broker behind (PR_SET_DEATHSIG: it gets SIGTERM)."""
    script = (
        "from services.kit.broker.embedded import EmbeddedBroker; import sys, time\n"
        "b = EmbeddedBroker(data_dir=sys.argv[1]).start()\n"
        "print(b.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "kafka")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        broker_pid = int(owner.stdout.readline())
        assert _alive(broker_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait(HANG_GUARD_S)
        deadline = time.monotonic() + HANG_GUARD_S  # a controlled shutdown: a hang guard only
        while _alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(broker_pid)
    finally:
        owner.kill()
        owner.wait()


async def test_ensure_topics_exist_exact_partitions(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    a, b = _topic("ens-a"), _topic("ens-b")
    assert await ensure_topics_exist(bs, {a: 2, b: 7}) == {a: 2, b: 7}
    # idempotent; an existing topic keeps its partition count
    assert await ensure_topics_exist(bs, [a], partitions=5) == {a: 2}


async def test_create_topics_with_configs_then_delete(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("cfg")
    configs = {"retention.ms": "3600000", "cleanup.policy": "delete"}
    await ensure_topics_exist(bs, {topic: 2}, configs={topic: configs})
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(_code, _msg, _type, _name, entries)] = resp.resources
        assert configs.items() <= {e[0]: e[1] for e in entries}.items()
        await admin.delete_topics([topic])

        async def gone() -> bool:  # the controller removes a deleted topic after answering
            return topic not in await admin.list_topics()

        await eventually(gone, f"{topic} deleted")
    finally:
        await admin.close()


async def test_produce_consume_roundtrip_headers_key(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("rt")
    await ensure_topics_exist(bs, {topic: 4})
    producer = make_producer(bs)  # acks=all, zstd
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


async def test_idempotent_producer_and_offsets_contiguous(
    embedded_broker: EmbeddedBroker,
) -> None:
    """Idempotence is on everywhere (the old broker had no InitProducerId)."""
    bs = embedded_broker.bootstrap_servers
    topic = _topic("seq")
    await ensure_topics_exist(bs, {topic: 1})
    producer = make_producer(bs)
    await producer.start()
    try:
        assert producer._txn_manager is not None  # InitProducerId answered
        futures = [await producer.send(topic, b"%d" % i) for i in range(500)]
        offsets = [md.offset for md in await asyncio.gather(*futures)]
    finally:
        await producer.stop()
    assert offsets == list(range(500))


async def test_transactions_are_isolated(embedded_broker: EmbeddedBroker) -> None:
    """A read_committed consumer sees a committed transaction and never an aborted one
    (the old broker answered OK without isolation)."""
    bs = embedded_broker.bootstrap_servers
    topic = _topic("txn")
    await ensure_topics_exist(bs, {topic: 1})
    producer = make_producer(bs, transactional_id=_topic("tx"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"after")
    finally:
        await producer.stop()
    consumer = make_consumer(bs, None, isolation_level="read_committed")
    await consumer.start()
    try:
        await assign_all(consumer, topic, at_end=False)
        records = await _consume(consumer, 2)
        await asyncio.sleep(0.2)
        records += [r for b in (await consumer.getmany(timeout_ms=200)).values() for r in b]
    finally:
        await consumer.stop()
    assert [r.value for r in records] == [b"committed", b"after"]


async def test_retention_applies(embedded_broker: EmbeddedBroker) -> None:
    """retention.ms is applied by the broker: expired records go, offsets continue, a
    topic kept forever is untouched (the old broker ignored retention; a keeper of our
    own recreated topics)."""
    bs = embedded_broker.bootstrap_servers
    short, forever = _topic("short"), _topic("forever")
    await ensure_topics_exist(
        bs,
        {short: 1, forever: 1},
        configs={short: {"retention.ms": "1000"}, forever: {"retention.ms": "-1"}},
    )
    producer = make_producer(bs)
    reader = make_consumer(bs, None)
    await producer.start()
    await reader.start()
    tp = TopicPartition(short, 0)
    try:
        for i in range(3):
            await producer.send_and_wait(short, b"old%d" % i, partition=0)
            await producer.send_and_wait(forever, b"kept%d" % i, partition=0)
        await assign_all(reader, short, at_end=False)
        async with asyncio.timeout(HANG_GUARD_S):  # checked every second (tests/conftest.py)
            while (await reader.beginning_offsets([tp]))[tp] < 3:
                await asyncio.sleep(0.5)
        md = await producer.send_and_wait(short, b"new", partition=0)
        assert md.offset == 3  # offsets continue after the deleted ones
        fresh = await _from_start(bs, short, 1)  # a new reader sees only "new"
        untouched = await _from_start(bs, forever, 3)
    finally:
        await reader.stop()
        await producer.stop()
    assert [(r.offset, r.value) for r in fresh] == [(3, b"new")]
    assert [r.value for r in untouched] == [b"kept0", b"kept1", b"kept2"]


async def test_reply_reader_assigned_at_end_sees_only_new(embedded_broker: EmbeddedBroker) -> None:
    """Old records sent as one multi-record batch: the broker's ListOffsets(latest) would
    point inside it; assign_all must still start after all of them."""
    bs = embedded_broker.bootstrap_servers
    topic = _topic("reply")
    await ensure_topics_exist(bs, {topic: 4})
    producer = make_producer(bs, linger_ms=50)
    await producer.start()
    consumer = make_consumer(bs, None)
    await consumer.start()
    try:
        old = [await producer.send(topic, b"old%d" % i, partition=0) for i in range(5)]
        await asyncio.gather(*old)
        tps = await assign_all(consumer, topic)  # at end: "old" must not be seen
        assert len(tps) == 4
        assert await consumer.position(TopicPartition(topic, 0)) == 5
        await producer.send_and_wait(topic, b"new", partition=0)
        records = await _consume(consumer, 1)
        await asyncio.sleep(0.2)
        records += [r for b in (await consumer.getmany(timeout_ms=100)).values() for r in b]
    finally:
        await consumer.stop()
        await producer.stop()
    assert [r.value for r in records] == [b"new"]


async def test_group_commit_then_restart_resumes(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic, group = _topic("grp"), _topic("g")
    await ensure_topics_exist(bs, {topic: 2})
    producer = make_producer(bs)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, b"a%d" % i, partition=i % 2)
        first = make_consumer(bs, group, topic, **GROUP)
        await first.start()
        try:
            records = await _consume(first, 6)
            await first.commit()
        finally:
            await first.stop()
        assert sorted(r.value for r in records) == [b"a%d" % i for i in range(6)]

        for i in range(2):
            await producer.send_and_wait(topic, b"b%d" % i, partition=i % 2)
        second = make_consumer(bs, group, topic, **GROUP)
        await second.start()
        try:
            resumed = await _consume(second, 2)
            await asyncio.sleep(0.3)  # nothing else (e.g. a replay of a0..a5) may follow
            resumed += [r for b in (await second.getmany(timeout_ms=100)).values() for r in b]
            committed = {p: await second.committed(TopicPartition(topic, p)) for p in (0, 1)}
        finally:
            await second.stop()
    finally:
        await producer.stop()
    assert sorted(r.value for r in resumed) == [b"b0", b"b1"]
    assert committed == {0: 3, 1: 3}


class _Assignments(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.current: set[int] = set()

    async def on_partitions_revoked(self, revoked: object) -> None:
        self.current = set()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.current = {tp.partition for tp in assigned}


async def test_two_group_members_split_partitions_and_commit(
    embedded_broker: EmbeddedBroker,
) -> None:
    bs = embedded_broker.bootstrap_servers
    topic, group = _topic("split"), _topic("g")
    await ensure_topics_exist(bs, {topic: 4})
    members = [make_consumer(bs, group, **GROUP) for _ in range(2)]
    listeners = [_Assignments() for _ in members]
    for member, listener in zip(members, listeners, strict=True):
        member.subscribe([topic], listener=listener)
    producer = make_producer(bs)
    await asyncio.gather(producer.start(), *(m.start() for m in members))
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while sorted(len(x.current) for x in listeners) != [2, 2]:
                await asyncio.gather(*(m.getmany(timeout_ms=100) for m in members))
        assert listeners[0].current | listeners[1].current == {0, 1, 2, 3}
        for p in range(4):
            await producer.send_and_wait(topic, b"p%d" % p, partition=p)
        got: dict[int, list[bytes]] = {0: [], 1: []}
        async with asyncio.timeout(HANG_GUARD_S):
            while sum(map(len, got.values())) < 4:
                for i, m in enumerate(members):
                    for recs in (await m.getmany(timeout_ms=50)).values():
                        got[i].extend(r.value for r in recs)
        await asyncio.gather(*(m.commit() for m in members))
        assert sorted(got[0]) == sorted(b"p%d" % p for p in listeners[0].current)
        assert sorted(got[1]) == sorted(b"p%d" % p for p in listeners[1].current)
        committed = [
            await m.committed(TopicPartition(topic, p))
            for m, x in zip(members, listeners, strict=True)
            for p in x.current
        ]
        assert committed == [1, 1, 1, 1]
    finally:
        await asyncio.gather(producer.stop(), *(m.stop() for m in members))


async def test_large_messages_1mb_and_4mb(embedded_broker: EmbeddedBroker) -> None:
    bs = embedded_broker.bootstrap_servers
    topic = _topic("big")
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


async def test_30mb_on_one_partition_read_back_whole(embedded_broker: EmbeddedBroker) -> None:
    """The old mock broker kept only the newest ~5 MiB per partition; this one keeps all."""
    bs = embedded_broker.bootstrap_servers
    topic = _topic("whole")
    await ensure_topics_exist(bs, {topic: 1})
    payloads = [os.urandom(1024 * 1024) for _ in range(30)]
    producer = make_producer(bs, compression_type=None)
    consumer = make_consumer(bs, None)
    await producer.start()
    await consumer.start()
    try:
        for value in payloads:
            await producer.send(topic, value, partition=0)
        await producer.flush()
        await assign_all(consumer, topic, at_end=False)
        tp = TopicPartition(topic, 0)
        assert (await consumer.beginning_offsets([tp]))[tp] == 0
        records = await _consume(consumer, 30)
    finally:
        await consumer.stop()
        await producer.stop()
    assert [r.offset for r in records] == list(range(30))
    assert [r.value for r in records] == payloads


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_standalone_broker_process_serves_other_clients(tmp_path: Path) -> None:
    """main(): another process runs the broker; clients here create topics and use them."""
    bootstrap_file = tmp_path / "bootstrap"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "services.kit.broker.embedded"),
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
            found = await ensure_topics_exist(bs, {"pre": 3, "made": 2})
            producer = make_producer(bs)
            consumer = make_consumer(bs, None)
            await producer.start()
            await consumer.start()
            try:
                await producer.send_and_wait("made", b"hello", key=b"k")
                await assign_all(consumer, "made", at_end=False)
                records = await _consume(consumer, 1)
            finally:
                await consumer.stop()
                await producer.stop()
            assert [r.value for r in records] == [b"hello"]
            return found

        assert asyncio.run(roundtrip()) == {"pre": 3, "made": 2}
    finally:
        proc.terminate()
        assert proc.wait(timeout=HANG_GUARD_S) == 0
    assert not bootstrap_file.exists()


async def _from_start(bootstrap: str, topic: str, n: int) -> list:
    """`n` records of `topic` read by a new group-less consumer from the beginning."""
    consumer = make_consumer(bootstrap, None)
    await consumer.start()
    try:
        await assign_all(consumer, topic, at_end=False)
        return await _consume(consumer, n)
    finally:
        await consumer.stop()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_restart_keeps_every_record_and_one_broker_per_directory(tmp_path: Path) -> None:
    """The logs are on disk: a restarted broker (on other ports) has every record and
    every committed offset. A second broker on the same directory is refused at once,
    naming the holder, and touches nothing."""
    data = tmp_path / "kafka"
    tp = TopicPartition("kept", 0)

    async def commit(bootstrap: str) -> None:
        consumer = make_consumer(bootstrap, "keeper", "kept", **GROUP)
        await consumer.start()
        try:
            await _consume(consumer, 3)
            await consumer.commit({tp: 2})
        finally:
            await consumer.stop()

    async def resumed(bootstrap: str) -> list[bytes]:
        """What a member of the group reads after the restart: from its committed offset
        (as the router does: it joins, then fetches its offsets)."""
        consumer = make_consumer(bootstrap, "keeper", "kept", **GROUP)
        await consumer.start()
        try:
            return [r.value for r in await _consume(consumer, 1)]
        finally:
            await consumer.stop()

    with EmbeddedBroker({"kept": 1}, data_dir=data) as first:
        asyncio.run(_produce(first.bootstrap_servers, "kept", [b"a", b"b", b"c"]))
        asyncio.run(commit(first.bootstrap_servers))
        with pytest.raises(DirInUse, match=rf"{data}.*pid {os.getpid()}"):
            EmbeddedBroker(data_dir=data).start()
        assert first.running
    assert data.is_dir()  # kept: not a temporary directory
    with EmbeddedBroker(data_dir=data) as second:
        records = asyncio.run(_from_start(second.bootstrap_servers, "kept", 3))
        after = asyncio.run(resumed(second.bootstrap_servers))
    assert after == [b"c"]  # resumed at the committed offset 2, nothing read again
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, b"c")]


def test_the_two_listener_ports_are_always_distinct() -> None:
    """Ports picked one after another could repeat (the kernel reuses a just-closed one),
    and two listeners on one port fail the broker's config: 1 start in a few hundred."""
    from services.kit.broker.embedded import _free_ports

    for _ in range(200):
        a, b = _free_ports(2)
        assert a != b
    (c,) = _free_ports(1, avoid=a)
    assert c != a


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_a_port_taken_between_the_check_and_the_bind_is_not_mistaken_for_ours(
    embedded_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two brokers starting at once both found 9092 free; the one that lost the bind took
    the other's answers on 9092 for its own, then failed: "the Kafka broker exited". Now
    it serves only once its own log says it started, so it moves to another port."""
    taken = int(embedded_broker.bootstrap_servers.rsplit(":", 1)[1])
    monkeypatch.setattr(broker_module, "_bindable", lambda port: True)  # the check raced
    with EmbeddedBroker(port=taken, port_fallback=True) as second:
        assert second.bootstrap_servers != embedded_broker.bootstrap_servers
        host, _, port = second.bootstrap_servers.partition(":")
        socket.create_connection((host, int(port)), timeout=HANG_GUARD_S).close()
