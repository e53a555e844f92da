"""Kafka client plumbing shared by every service (aiokafka; FastStream takes the same options).

Defaults are chosen for two targets at once: a real Kafka cluster and the embedded
librdkafka mock broker (services/kit/broker.py). Measured numbers behind them are in
/tmp/notes-broker.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.codec import has_zstd

from services.kit.broker import EmbeddedBroker

log = logging.getLogger(__name__)

#: Largest record we produce. Chunk messages are ~4 MB; aiokafka's default (1 MiB) is too
#: small. The mock broker has no limit; a real broker needs `message.max.bytes` /
#: topic `max.message.bytes` >= this.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Partition count used when we must create a topic and nobody said otherwise; equal to
#: what the mock broker auto-creates, so both paths agree.
DEFAULT_PARTITIONS = 4
#: Upper bound of the extra latency a consumer adds per hop. The mock broker does not
#: wake a waiting fetch when data arrives: it answers after exactly this long, so a
#: consumer sees a new record after up to fetch_max_wait_ms (not ~1 ms as on real Kafka).
DEFAULT_FETCH_MAX_WAIT_MS = 25

_TOPIC_ALREADY_EXISTS = 36


def default_compression() -> str | None:
    """zstd when aiokafka can do it (needs `cramjam`, aiokafka's [zstd] extra), else none.

    Why zstd: ~2.9x on JSON test data at ~200-470 MB/s, and the mock broker's 5 MiB
    per-partition retention counts compressed bytes, so it triples the headroom.
    gzip is ~10x slower (25 MB/s); lz4 via aiokafka is slower than zstd here.
    """
    return "zstd" if has_zstd() else None


def producer_options(**overrides: Any) -> dict[str, Any]:
    """Producer settings, usable as AIOKafkaProducer(**...) or faststream KafkaBroker(**...)."""
    options: dict[str, Any] = {
        "acks": "all",  # with idempotence: no loss, no duplicates on retry
        "enable_idempotence": True,
        # linger 0: measured no throughput gain from 2-20 ms (aiokafka batches whatever
        # accumulates while a request is in flight), but each ms is added to every hop.
        "linger_ms": 0,
        "max_batch_size": 1024 * 1024,  # +10-20% msg/s for small records vs 16 KiB
        "max_request_size": MAX_MESSAGE_BYTES,
        "compression_type": default_compression(),
    }
    options.update(overrides)
    return options


def consumer_options(**overrides: Any) -> dict[str, Any]:
    """Fetch settings, usable as AIOKafkaConsumer(**...) or broker.subscriber(**...).

    No `enable_auto_commit` here: FastStream derives it from the AckPolicy.
    """
    options: dict[str, Any] = {
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": DEFAULT_FETCH_MAX_WAIT_MS,
        "max_partition_fetch_bytes": MAX_MESSAGE_BYTES,  # whole chunks per fetch
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    options.update(overrides)
    return options


def make_producer(
    bootstrap: str, *, client_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """Idempotent acks=all producer sized for ~4 MB chunk records. Call `await p.start()`.

    Don't use transactional_id on the mock broker: its commit markers fail aiokafka's CRC
    check (consumers then need check_crcs=False) and send_offsets_to_transaction is ignored.
    """
    kwargs = producer_options(**overrides)
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
    Mock broker caveats: only ONE member per group works, and a restarted member waits
    `session_timeout_ms - 1 s` before it is assigned (pass session_timeout_ms=3000 in tests).
    """
    kwargs = consumer_options(enable_auto_commit=False, **overrides)
    if client_id:
        kwargs["client_id"] = client_id
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group_id, **kwargs)


async def assign_all(
    consumer: AIOKafkaConsumer, *topics: str, at_end: bool = True, timeout_s: float = 10.0
) -> list[TopicPartition]:
    """Assign every partition of `topics` to a started, group-less consumer.

    With `at_end`, positions are resolved to the current end offsets *before* returning
    (not lazily like seek_to_end()), so anything produced afterwards - e.g. the reply to a
    request sent next - is guaranteed to be seen.
    """
    deadline = time.monotonic() + timeout_s
    tps: list[TopicPartition] = []
    for topic in topics:
        while not (parts := consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no partitions visible for topic {topic!r}")
            # topics() would fetch into a throw-away ClusterMetadata; refresh the real one.
            await consumer._client.force_metadata_update()
            if not consumer.partitions_for_topic(topic):
                await asyncio.sleep(0.1)
        tps.extend(TopicPartition(topic, p) for p in sorted(parts))
    consumer.assign(tps)
    if at_end:
        for tp, offset in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, offset)
    return tps


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
    topics are left as they are. Strategy, first that applies:
      1. embedded broker in this process: create with the exact partition count;
      2. CreateTopics via the admin client (real clusters; TopicAlreadyExists is fine);
      3. the mock broker refuses CreateTopics, so fall back to a metadata request, which
         auto-creates the topic there (always 4 partitions; pre-create with
         `python -m services.kit.broker --topic name:N` if you need another count).
    """
    wanted = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names, partitions)
    if not wanted:
        return {}
    create_errors: dict[str, str] = {}

    embedded = EmbeddedBroker.for_bootstrap(bootstrap)
    if embedded is not None:
        for name, n in wanted.items():
            embedded.create_topic(name, n, replication_factor)
    else:
        create_errors = await _create_via_admin(
            bootstrap, wanted, replication_factor, configs or {}
        )

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        for name in wanted:
            client.add_topic(name)  # metadata requests for it now auto-create on the mock
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
                break
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(found))
                raise TimeoutError(
                    f"topics not available: {missing}; create errors: {create_errors}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()

    for name, n in found.items():
        if n != wanted[name]:
            log.info("topic %s has %d partitions (wanted %d)", name, n, wanted[name])
    return found


async def _create_via_admin(
    bootstrap: str,
    wanted: Mapping[str, int],
    replication_factor: int,
    configs: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """CreateTopics with each topic's configs and the replication the cluster can hold;
    returns per-topic errors other than 'already exists' (never raises)."""
    errors: dict[str, str] = {}
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
        for topic, code, *msg in resp.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                errors[topic] = f"error {code}: {msg[0] if msg else ''}"
    except Exception as exc:  # noqa: BLE001 - mock broker: CreateTopics not supported
        log.debug(
            "CreateTopics unavailable (%s: %s); relying on auto-create", type(exc).__name__, exc
        )
        errors = dict.fromkeys(wanted, f"{type(exc).__name__}: {exc}")
    finally:
        await admin.close()
    return errors
