"""Kafka client plumbing shared by every service (aiokafka; FastStream takes the same options).

Tuning values (linger, fetch wait, group timeouts) come from the callers, normally from
`KafkaSettings`; the defaults below are its own defaults, so there is one source. The
embedded broker (services/kit/broker/embedded.py) is Apache Kafka itself, so there is one target.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.codec import has_zstd
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.offset import OffsetRequest

from services.kit.settings import KafkaSettings
from services.kit.wire.topics import DEFAULT_PARTITIONS, MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)


_DEFAULTS = KafkaSettings.model_fields
_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def default_compression() -> str | None:
    """zstd when aiokafka can do it (needs `cramjam`, aiokafka's [zstd] extra), else none.

    Why zstd: ~2.9x on JSON test data at ~200-470 MB/s, and the broker's disk and page
    cache count compressed bytes. gzip is ~10x slower.
    """
    return "zstd" if has_zstd() else None


class FileToken(AbstractTokenProvider):
    """OAUTHBEARER: the token in a file, read for every authentication (whatever renews
    the token rewrites the file; nothing here needs restarting)."""

    def __init__(self, path: str):
        self.path = Path(path)

    async def token(self) -> str:
        return self.path.read_text().strip()


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """The aiokafka options that join the cluster as `settings` say (empty: plaintext)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        key_password = settings.kafka_ssl_key_password
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=key_password.get_secret_value() if key_password else None,
        )
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            assert settings.kafka_sasl_oauth_token_file  # the settings' validator says so
            options["sasl_oauth_token_provider"] = FileToken(settings.kafka_sasl_oauth_token_file)
        else:
            password = settings.kafka_sasl_password
            options["sasl_plain_username"] = settings.kafka_sasl_username
            options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


#: How to join each cluster this process talks to, by bootstrap address: registered once
#: (`use_security`) by whatever reads the settings, applied by every client made here.
_SECURITY: dict[str, dict[str, Any]] = {}


def use_security(bootstrap: str, settings: KafkaSettings) -> str:
    """Every client this process makes for `bootstrap` joins it as `settings` say."""
    _SECURITY[bootstrap] = security_options(settings)
    return bootstrap


def security_for(bootstrap: str) -> dict[str, Any]:
    """The options `use_security` registered for `bootstrap` (none: plaintext)."""
    return dict(_SECURITY.get(bootstrap, {}))


def admin_client(bootstrap: str, **overrides: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security_for(bootstrap), **overrides)


def producer_options(
    *, linger_ms: int = _DEFAULTS["kafka_linger_ms"].default, **overrides: Any
) -> dict[str, Any]:
    """Producer settings, usable as AIOKafkaProducer(**...) or faststream KafkaBroker(**...).

    acks=all and idempotence always: a retried send is never written twice.
    """
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
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
    bootstrap: str, *, client_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """Idempotent acks=all producer sized for multi-MB chunk records. Call `await p.start()`."""
    kwargs = {**security_for(bootstrap), **producer_options(**overrides)}
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
    """
    kwargs = {**security_for(bootstrap), **consumer_options(enable_auto_commit=False, **overrides)}
    if client_id:
        kwargs["client_id"] = client_id
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group_id, **kwargs)


def group_timeouts(
    session_timeout_ms: int = _DEFAULTS["kafka_session_timeout_ms"].default,
    heartbeat_interval_ms: int = _DEFAULTS["kafka_heartbeat_interval_ms"].default,
) -> dict[str, int]:
    """Consumer group timeouts: how soon a dead member's partitions move to the others."""
    return {
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": heartbeat_interval_ms,
    }


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
    """Each partition's end now (the offset the next record will get)."""
    return dict(await consumer.end_offsets(list(tps)))


async def positions_at(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], time_ms: int
) -> dict[TopicPartition, int]:
    """Per partition, the offset of the first record at or after `time_ms`, or the end
    when there is none (Kafka answers None there)."""
    tps = list(tps)
    found = await consumer.offsets_for_times(dict.fromkeys(tps, time_ms))
    out = {tp: f.offset for tp, f in found.items() if f is not None}
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
    topics are left as they are. A refusal of CreateTopics (e.g. no permission) is
    reported only if the topic then does not show up.
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

    found = await wait_for_leaders(bootstrap, wanted, timeout_s, create_errors)
    for name, n in found.items():
        if n != wanted[name]:
            log.info("topic %s has %d partitions (wanted %d)", name, n, wanted[name])
    return found


async def wait_for_leaders(
    bootstrap: str,
    wanted: Mapping[str, int],
    timeout_s: float = 30.0,
    create_errors: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Wait until every partition of `wanted` has a leader (a created topic is usable
    only then); return name -> partitions."""
    create_errors = create_errors or {}
    client = AIOKafkaClient(bootstrap_servers=bootstrap, **security_for(bootstrap))
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            # all topics: asking for named ones logs an ERROR for each not there yet
            cluster = await client.fetch_all_metadata()
            found: dict[str, int] = {}
            for name in wanted:
                parts = cluster.partitions_for_topic(name)
                available = cluster.available_partitions_for_topic(name)
                if parts and available is not None and len(available) == len(parts):
                    found[name] = len(parts)
            if len(found) == len(wanted) and await _leaders_serve(client, cluster, found):
                return found
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(found))
                raise TimeoutError(
                    f"topics not available: {missing}; create errors: {dict(create_errors)}"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def _leaders_serve(
    client: AIOKafkaClient, cluster: ClusterMetadata, topics: Mapping[str, int]
) -> bool:
    """Every partition's leader answers for it (ListOffsets without an error). Right after
    a topic is created the metadata can name a leader that does not lead it yet; a consumer
    asking then logs an ERROR ("Failed fetch offsets ... NotLeaderForPartitionError")
    before it retries. Asked here first, quietly."""
    by_node: dict[int, dict[str, list[tuple[int, int]]]] = {}
    for name in topics:
        for p in cluster.partitions_for_topic(name) or ():
            node = cluster.leader_for_partition(TopicPartition(name, p))
            if node is None or node < 0:
                return False
            by_node.setdefault(node, {}).setdefault(name, []).append((p, -1))  # -1: latest
    for node, data in by_node.items():
        try:
            response = await client.send(node, OffsetRequest(-1, 0, list(data.items())))
        except KafkaError:
            return False
        if any(error for _, parts in response.topics for _, error, *_ in parts):
            return False
    return True


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
    admin = admin_client(bootstrap)
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


async def delete_topics(bootstrap: str, names: Iterable[str], timeout_s: float = 5.0) -> str | None:
    """Delete `names` (best effort: cleanup never fails its caller); why not, or None.
    The broker removes a deleted topic shortly after answering."""
    names = list(names)
    if not names:
        return None
    admin = admin_client(bootstrap)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.delete_topics(names), timeout_s)
        return None
    except Exception as exc:  # noqa: BLE001 - cleanup: said, not raised
        return str(exc) or type(exc).__name__
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether anything accepts a TCP connection at one of the bootstrap addresses: what
    tells a broker that is gone (refused, unroutable) from one that is only slow to
    acknowledge (a loaded machine: the kernel still accepts its connections)."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout_s
            )
        except (OSError, ValueError, TimeoutError):
            continue
        writer.close()
        return True
    return False


async def stop_quietly(client: AIOKafkaConsumer | AIOKafkaProducer, what: str) -> None:
    """Stop a client during shutdown: a broker that no longer answers must not turn a
    clean stop into a crash (the error is logged), nor into a hang: an idempotent
    producer's stop waits until every queued record is delivered, which with the broker
    gone is never, so once nothing accepts a connection those records are dropped (and
    logged) and the stop ends."""
    try:
        if isinstance(client, AIOKafkaProducer):
            await _stop_producer(client, what)
        else:
            await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: pass it on
        # aiokafka re-raises its own cancelled fetch task from stop(); not ours
        log.warning("stopping %s: its fetch task ended cancelled", what)
    except Exception:
        log.warning("stopping %s failed", what, exc_info=True)


#: How often a producer's stop checks that the broker is still there.
STOP_CHECK_SECONDS = 1.0


async def _stop_producer(producer: AIOKafkaProducer, what: str) -> None:
    stopping = asyncio.ensure_future(producer.stop())
    # aiokafka keeps these private; the client's bootstrap is what it was made with
    bootstrap = producer.client._bootstrap_servers
    bootstrap = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
    while not (await asyncio.wait({stopping}, timeout=STOP_CHECK_SECONDS))[0]:
        if await broker_reachable(bootstrap):
            continue  # slow: its records are still being delivered
        log.warning("stopping %s: the broker is gone; its undelivered records are dropped", what)
        sender = producer._sender.sender_task
        if sender is not None:
            sender.cancel()  # aiokafka then fails every queued batch, and stop() returns
    await stopping
