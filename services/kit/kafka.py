"""Kafka client plumbing shared by every service (aiokafka; FastStream takes the same options).

Tuning values (linger, fetch wait, idempotence, group timeouts) come from the callers,
normally from `Settings`; the defaults below are Settings' own defaults, so there is one
source. Two targets at once: a real Kafka cluster and the embedded Tansu broker
(services/kit/broker.py), which differs in ways the helpers here absorb.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.codec import has_zstd
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.fetch import FetchRequest

from services.kit.settings import Settings

log = logging.getLogger(__name__)

#: Largest record we produce. Chunk messages are up to a few MB; aiokafka's default
#: (1 MiB) is too small. A real broker needs `message.max.bytes` / topic
#: `max.message.bytes` >= this; the embedded broker has no limit.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Partition count used when we must create a topic and nobody said otherwise; equal to
#: what the embedded broker auto-creates on a metadata request, so both paths agree.
DEFAULT_PARTITIONS = 4
#: Cluster id the embedded broker is started with (services/kit/broker.py).
EMBEDDED_CLUSTER_ID = "testdata-embedded"
#: Cluster ids that mean "Tansu": ours, and a standalone Tansu's default.
_TANSU_CLUSTER_IDS = frozenset({EMBEDDED_CLUSTER_ID, "tansu_cluster"})
#: Group timeouts for the embedded broker. It holds every JoinGroup for half the session
#: timeout and evicts a silent member after the session timeout: with these a member's
#: first join takes ~2 s, a SIGKILLed member's partitions move in ~5.5 s, and a member
#: whose event loop stalls for 2 s is not evicted. (Real Kafka refuses < 6 s by default.)
#: A produce the embedded broker leaves unanswered (seen, rarely, under concurrent load) is
#: retried after this long instead of the client's 40 s; duplicates it may cause are dropped
#: downstream by (request_id, chunk_index).
EMBEDDED_REQUEST_TIMEOUT_MS = 3000
EMBEDDED_SESSION_TIMEOUT_MS = 3000
EMBEDDED_HEARTBEAT_INTERVAL_MS = 500

_DEFAULTS = Settings.model_fields
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def default_compression() -> str | None:
    """zstd when aiokafka can do it (needs `cramjam`, aiokafka's [zstd] extra), else none.

    Why zstd: ~2.9x on JSON test data at ~200-470 MB/s, and broker memory (the embedded
    broker keeps everything in RAM) counts compressed bytes. gzip is ~10x slower.
    """
    return "zstd" if has_zstd() else None


def producer_options(
    *,
    idempotence: bool = True,
    linger_ms: int = _DEFAULTS["kafka_linger_ms"].default,
    **overrides: Any,
) -> dict[str, Any]:
    """Producer settings, usable as AIOKafkaProducer(**...) or faststream KafkaBroker(**...).

    acks=all always; idempotence (no duplicates on retry) where the broker supports it:
    the embedded broker has no InitProducerId, so callers pass `idempotence=False` there.
    """
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": idempotence,
        "linger_ms": linger_ms,
        "max_batch_size": 1024 * 1024,  # +10-20% msg/s for small records vs 16 KiB
        "max_request_size": MAX_MESSAGE_BYTES,
        "compression_type": default_compression(),
    }
    options.update(overrides)
    return options


def consumer_options(
    *, fetch_max_wait_ms: int = _DEFAULTS["kafka_fetch_max_wait_ms"].default, **overrides: Any
) -> dict[str, Any]:
    """Fetch settings, usable as AIOKafkaConsumer(**...) or broker.subscriber(**...).

    No `enable_auto_commit` here: FastStream derives it from the AckPolicy.
    """
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,  # whole chunks per fetch
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(overrides)
    return options


def make_producer(
    bootstrap: str,
    *,
    idempotence: bool | None = None,
    client_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaProducer:
    """acks=all producer sized for multi-MB chunk records. Call `await p.start()`.

    `idempotence=None`: off for an embedded broker running in this process, else on;
    processes that may talk to a broker started elsewhere resolve it first with
    `resolve_idempotence`. Don't use transactional_id: the embedded broker has none.
    """
    if idempotence is None:
        idempotence = not _in_process_embedded(bootstrap)
    kwargs = producer_options(idempotence=idempotence, **overrides)
    if client_id:
        kwargs["client_id"] = client_id
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)


def make_consumer(
    bootstrap: str,
    group_id: str | None,
    *topics: str,
    client_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """Consumer that never auto-commits (commit after the downstream publish succeeded).

    With `group_id` and topics: subscribes through the group (offsets committed and
    resumed). With `group_id=None`: no group; pass no topics and use `assign_all()`.
    On the embedded broker pass `group_timeouts(True)` or every join waits ~5 s.
    """
    kwargs = consumer_options(enable_auto_commit=False, **overrides)
    if client_id:
        kwargs["client_id"] = client_id
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group_id, **kwargs)


def group_timeouts(
    embedded: bool, session_timeout_ms: int | None = None, heartbeat_interval_ms: int | None = None
) -> dict[str, int]:
    """Consumer group timeouts: explicit values win, else the embedded broker's, else
    the client's defaults (nothing passed)."""
    session = session_timeout_ms or (EMBEDDED_SESSION_TIMEOUT_MS if embedded else None)
    heartbeat = heartbeat_interval_ms or (EMBEDDED_HEARTBEAT_INTERVAL_MS if embedded else None)
    out: dict[str, int] = {}
    if session:
        out["session_timeout_ms"] = session
    if heartbeat:
        out["heartbeat_interval_ms"] = heartbeat
    return out


def _in_process_embedded(bootstrap: str) -> bool:
    from services.kit.broker import EmbeddedBroker  # broker imports this module

    return EmbeddedBroker.for_bootstrap(bootstrap) is not None


async def is_embedded_broker(bootstrap: str, timeout_s: float = 10.0) -> bool:
    """Whether `bootstrap` is a Tansu broker (ours, in any process, or a standalone one),
    judged by its cluster id; clients then turn idempotence off and shorten group timeouts."""
    if _in_process_embedded(bootstrap):
        return True
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    finally:
        await admin.close()
    return cluster.get("cluster_id") in _TANSU_CLUSTER_IDS


async def resolve_idempotence(bootstrap: str, setting: bool | None) -> bool:
    """The `kafka_idempotence` setting, with None (auto) meaning: on unless embedded."""
    if setting is not None:
        return setting
    return not await is_embedded_broker(bootstrap)


async def high_watermarks(
    client: AIOKafkaClient, positions: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Each partition's high watermark, read from a Fetch at `positions` that returns at once.

    Why not ListOffsets(latest): Tansu answers it with one past the *base* offset of the
    last batch, which is short when that batch holds several records; Fetch reports the
    true high watermark (and on Kafka both agree).
    """
    by_leader: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp, offset in positions.items():
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            raise KafkaError(f"no leader for {tp}")
        by_leader[leader][tp.topic].append((tp.partition, offset, 1))
    out: dict[TopicPartition, int] = {}
    for leader, topics in by_leader.items():
        # min_bytes 0: answer at once; max_wait > 0: Tansu skips a fetch whose wait is 0.
        request = FetchRequest(
            max_wait_time=5,
            min_bytes=0,
            max_bytes=1,
            isolation_level=0,
            topics=list(topics.items()),
        )
        response = await client.send(leader, request)
        for topic, partitions in response.topics:
            for part in partitions:
                partition, error_code, high_watermark = part[0], part[1], part[2]
                if error_code:
                    raise for_code(error_code)(f"fetch {topic}[{partition}]")
                out[TopicPartition(topic, partition)] = high_watermark
    return out


async def assign_all(
    consumer: AIOKafkaConsumer, *topics: str, at_end: bool = True, timeout_s: float = 10.0
) -> list[TopicPartition]:
    """Assign every partition of `topics` to a started, group-less consumer.

    With `at_end`, positions are resolved to the current end offsets *before* returning
    (not lazily like seek_to_end()), so anything produced afterwards - e.g. the reply to a
    request sent next - is guaranteed to be seen, and nothing older is.
    """
    tps: list[TopicPartition] = []
    for topic in topics:
        parts = await partitions_of(consumer, topic, timeout_s)
        tps.extend(TopicPartition(topic, p) for p in parts)
    consumer.assign(tps)
    if at_end:
        for tp, offset in (await end_positions(consumer, tps)).items():
            consumer.seek(tp, offset)
    return tps


async def partitions_of(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float = 10.0
) -> list[int]:
    """The partition numbers of `topic`, sorted, once the consumer's metadata has them."""
    deadline = time.monotonic() + timeout_s
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no partitions visible for topic {topic!r}")
        # topics() would fetch into a throw-away ClusterMetadata; refresh the real one.
        await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.1)
    return sorted(parts)


async def end_positions(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's true end now (its high watermark; see `high_watermarks`)."""
    listed = await consumer.end_offsets(list(tps))
    return await high_watermarks(consumer._client, listed)


async def positions_at(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], time_ms: int
) -> dict[TopicPartition, int]:
    """Per partition, the offset of the first record at or after `time_ms`, or the end
    when there is none (Kafka answers None there, Tansu offset 0 with timestamp -1)."""
    tps = list(tps)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, time_ms))
    out = {tp: f.offset for tp, f in found.items() if f is not None and f.timestamp >= 0}
    if missing := [tp for tp in tps if tp not in out]:
        out.update(await end_positions(consumer, missing))
    return out


async def ensure_topics_exist(
    bootstrap: str,
    names: Iterable[str] | Mapping[str, int],
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, int]:
    """Make sure topics exist and their partitions have leaders; return name -> partitions.

    `names` may map names to partition counts (else `partitions` is used). Existing
    topics are left as they are. CreateTopics (with each topic's configs) works on real
    clusters and the embedded broker alike; a refusal (e.g. no permission) is reported
    only if the topic then does not show up.
    """
    wanted = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names, partitions)
    if not wanted:
        return {}
    create_errors: dict[str, str] = {}
    try:
        await create_topics(
            bootstrap, wanted, replication_factor=replication_factor, configs=configs
        )
    except KafkaError as exc:
        create_errors = dict.fromkeys(wanted, f"{type(exc).__name__}: {exc}")

    found = await _wait_for_leaders(bootstrap, wanted, timeout_s, create_errors)
    for name, n in found.items():
        if n != wanted[name]:
            log.info("topic %s has %d partitions (wanted %d)", name, n, wanted[name])
    return found


async def _wait_for_leaders(
    bootstrap: str, wanted: Mapping[str, int], timeout_s: float, create_errors: Mapping[str, str]
) -> dict[str, int]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        for name in wanted:
            client.add_topic(name)
        deadline = time.monotonic() + timeout_s
        while True:
            await client.force_metadata_update()
            found: dict[str, int] = {}
            for name in wanted:
                parts = client.cluster.partitions_for_topic(name)
                available = client.cluster.available_partitions_for_topic(name)
                if parts and available is not None and len(available) == len(parts):
                    found[name] = len(parts)
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(found))
                raise TimeoutError(
                    f"topics not available: {missing}; create errors: {dict(create_errors)}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def create_topics(
    bootstrap: str,
    wanted: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, bool]:
    """CreateTopics with each topic's configs and the replication the cluster can hold.

    Returns name -> True if created, False if it already existed (then unchanged).
    Any other per-topic error raises (aiokafka's error class for its code).
    """
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        brokers = len(admin._client.cluster.brokers()) or 1
        rf = max(1, min(replication_factor, brokers))
        resp = await admin.create_topics(
            [
                NewTopic(name, n, rf, topic_configs=dict(configs.get(name, {})))
                for name, n in wanted.items()
            ]
        )
    finally:
        await admin.close()
    created: dict[str, bool] = {}
    for topic, code, *msg in resp.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise for_code(code)(f"create topic {topic}: {msg[0] if msg else ''}")
        created[topic] = code == 0
    return created


async def stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer, what: str) -> None:
    """Stop a client during shutdown: a broker that no longer answers must not turn a
    clean stop into a crash (the error is logged)."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: pass it on
        # aiokafka re-raises its own cancelled fetch task from stop(); not ours
        log.warning("stopping %s: its fetch task ended cancelled", what)
    except Exception:
        log.warning("stopping %s failed", what, exc_info=True)


class InOrder:
    """`getmany` that never skips an offset on the embedded broker.

    Tansu can make a later batch of a partition visible before an earlier one that two
    producers appended at the same moment; a fetch then jumps the hole and the record in
    it would never be read (measured: 1 record in a few thousand under concurrent
    producers). Held to contiguous offsets, a fetch that jumps ahead is cut at the hole
    and the partition fetched again from there; a hole still open after `patience_s`
    (a recreated topic, a real gap) is accepted with a warning. Real Kafka has legitimate
    gaps (compaction, transaction markers), so the guard is only on for the embedded broker.
    """

    def __init__(self, consumer: AIOKafkaConsumer, enabled: bool, patience_s: float = 2.0):
        self.consumer = consumer
        self.enabled = enabled
        self.patience_s = patience_s
        self._next: dict[TopicPartition, int] = {}
        self._hole_since: dict[TopicPartition, tuple[int, float]] = {}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """After a rebalance or a seek: the next record of these starts a new sequence."""
        for tp in partitions:
            self._next.pop(tp, None)
            self._hole_since.pop(tp, None)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]:
        if self.enabled:
            await self._anchor(partitions or tuple(self.consumer.assignment()))
        batch = await self.consumer.getmany(
            *partitions, timeout_ms=timeout_ms, max_records=max_records
        )
        if not self.enabled:
            return batch
        out: dict[TopicPartition, list[Any]] = {}
        for tp, records in batch.items():
            kept = self._contiguous(tp, records)
            if kept:
                out[tp] = kept
        return out

    async def _anchor(self, partitions: Iterable[TopicPartition]) -> None:
        """A new sequence starts at the consumer's position, so a first fetch that jumps
        a hole is caught too (after start, a rebalance or `forget`)."""
        for tp in partitions:
            if tp not in self._next:
                try:
                    # not wait_for: on 3.11 it drops a cancel that arrives as position()
                    # completes, and the reader calling us would then never stop
                    async with asyncio.timeout(5):
                        self._next[tp] = await self.consumer.position(tp)
                except Exception:  # noqa: BLE001 - unassigned or unknown yet: next time
                    continue

    def _contiguous(self, tp: TopicPartition, records: list[Any]) -> list[Any]:
        expected = self._next.get(tp)
        kept: list[Any] = []
        for r in records:
            if expected is not None and r.offset > expected and not self._give_up(tp, expected):
                self.consumer.seek(tp, expected)  # fetch the hole again
                break
            if expected is None or r.offset >= expected:
                kept.append(r)
                expected = r.offset + 1
        if expected is not None:
            self._next[tp] = expected
        return kept

    def _give_up(self, tp: TopicPartition, hole: int) -> bool:
        now = time.monotonic()
        since = self._hole_since.get(tp)
        if since is None or since[0] != hole:
            self._hole_since[tp] = (hole, now)
            return False
        if now - since[1] < self.patience_s:
            return False
        log.warning(
            "%s[%d]: offset %d never appeared; reading on past it", tp.topic, tp.partition, hole
        )
        del self._hole_since[tp]
        return True
