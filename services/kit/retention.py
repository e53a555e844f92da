"""Retention for the embedded broker, which stores `retention.ms` but never applies it.

Tansu's memory storage frees records only when their topic is deleted: it has no
retention and no DeleteRecords. So the keeper works per topic: once every record of a
topic is older than its retention.ms (what Kafka would have deleted anyway), it deletes
the topic and creates it again with the same partitions and configs. Offsets must not
restart at 0, or a reader positioned at the old end would silently skip the first new
records; so each partition gets one control batch spanning the old offsets (clients skip
control batches), and new records continue at the old end offset. Committed group
offsets of the topic are dropped with it; a member then resets to the earliest offset,
which is that control batch, and continues at the same place.

What this does not bound: a topic written to more often than its retention.ms keeps
every record. Nor is it atomic: a record produced to the topic in the milliseconds
between delete and re-create may be lost (logged when detected).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBase, DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from services.kit.kafka import create_topics, high_watermarks

log = logging.getLogger(__name__)

#: Kafka's default log.retention.hours (168), for topics created without retention.ms.
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
_COMMIT_MARKER_KEY = struct.pack(">hh", 0, 1)  # control record: version 0, type COMMIT
_COMMIT_MARKER_VALUE = struct.pack(">hi", 0, 0)  # version 0, coordinator epoch 0


def control_batch(span: int, timestamp_ms: int) -> bytes:
    """A record batch occupying `span` offsets that consumers skip (control flag set).

    Tansu assigns a batch `last_offset_delta + 1` offsets whatever it holds; one control
    record at the last offset keeps the batch well-formed for clients.
    """
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1024,
    )
    builder.append(
        span - 1,
        timestamp=timestamp_ms,
        key=_COMMIT_MARKER_KEY,
        value=_COMMIT_MARKER_VALUE,
        headers=[],
    )
    buf = builder.build()
    at = DefaultRecordBase.ATTRIBUTES_OFFSET
    (attributes,) = struct.unpack_from(">h", buf, at)
    struct.pack_into(">h", buf, at, attributes | DefaultRecordBase.CONTROL_MASK)
    struct.pack_into(">I", buf, DefaultRecordBase.CRC_OFFSET, calc_crc32c(buf[at:]))
    return bytes(buf)


class RetentionKeeper:
    """Empties expired topics of one broker, by sweep() or every `interval_s` in a thread."""

    def __init__(
        self,
        bootstrap: str,
        interval_s: float = 30.0,
        default_retention_ms: int = DEFAULT_RETENTION_MS,
    ) -> None:
        self.bootstrap = bootstrap
        self.interval_s = interval_s
        self.default_retention_ms = default_retention_ms
        self.emptied_total = 0
        # topic -> end offsets it was left with: nothing new since, nothing to do.
        self._left: dict[str, dict[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- background thread -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="retention-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                asyncio.run(self.sweep())
            except Exception as exc:  # noqa: BLE001 - next sweep retries; never kill the owner
                log.warning("retention sweep failed: %s: %s", type(exc).__name__, exc)

    # -- one sweep -------------------------------------------------------------------
    async def sweep(self, now_ms: int | None = None) -> list[str]:
        """Empty every topic whose newest record is older than its retention; return them."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        emptied: list[str] = []
        try:
            await admin.start()
            await consumer.start()
            configs = await self._retained_topics(admin)
            partitions = await _partitions(admin, list(configs))
            for topic, topic_configs in configs.items():
                retention_ms = int(topic_configs.get("retention.ms", self.default_retention_ms))
                tps = [TopicPartition(topic, p) for p in partitions.get(topic, [])]
                ends = await self._expired_ends(consumer, tps, now_ms - retention_ms)
                if ends is None:
                    continue
                await self._empty(admin, topic, topic_configs, ends)
                emptied.append(topic)
        finally:
            await consumer.stop()
            await admin.close()
        return emptied

    async def _retained_topics(self, admin: AIOKafkaAdminClient) -> dict[str, dict[str, str]]:
        """Topic -> its configs, for topics with a finite time retention and delete policy."""
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        if not names:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in names]
        out: dict[str, dict[str, str]] = {}
        for response in await admin.describe_configs(resources):
            for _code, _msg, _type, name, entries in response.resources:
                configs = {e[0]: e[1] for e in entries if e[1] is not None}
                retention = int(configs.get("retention.ms", self.default_retention_ms))
                if retention >= 0 and "compact" not in configs.get("cleanup.policy", "delete"):
                    out[name] = configs
        return out

    async def _expired_ends(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], cutoff_ms: int
    ) -> dict[int, int] | None:
        """The topic's end offsets if it has records and none is newer than `cutoff_ms`."""
        if not tps:
            return None
        newer = await consumer.offsets_for_times(dict.fromkeys(tps, max(cutoff_ms, 0)))
        # Kafka answers None where no record is newer; Tansu answers timestamp -1.
        if any(found is not None and found.timestamp >= 0 for found in newer.values()):
            return None
        listed = await consumer.end_offsets(tps)
        ends = {
            tp.partition: hw for tp, hw in (await high_watermarks(consumer._client, listed)).items()
        }
        if not any(ends.values()) or self._left.get(tps[0].topic) == ends:
            return None
        return ends

    async def _empty(
        self,
        admin: AIOKafkaAdminClient,
        topic: str,
        configs: Mapping[str, str],
        ends: Mapping[int, int],
    ) -> None:
        """Delete and re-create `topic`, then pad each partition up to its old end offset."""
        await admin.delete_topics([topic])
        await create_topics(self.bootstrap, {topic: len(ends)}, configs={topic: configs})
        await _pad(self.bootstrap, topic, ends)
        self._left[topic] = dict(ends)
        self.emptied_total += 1
        log.info("retention: emptied topic %s (end offsets %s kept)", topic, dict(ends))


async def _partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, list[int]]:
    if not topics:
        return {}
    described = await admin.describe_topics(topics)
    return {
        t["topic"]: sorted(p["partition"] for p in t["partitions"])
        for t in described
        if not t["error_code"]
    }


async def _pad(bootstrap: str, topic: str, ends: Mapping[int, int]) -> None:
    """Produce one control batch per partition so its offsets continue at `ends`."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        client.add_topic(topic)
        await client.force_metadata_update()
        now_ms = int(time.time() * 1000)
        for partition, end in ends.items():
            if end <= 0:
                continue
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            request = ProduceRequest(
                None, -1, 30_000, [(topic, [(partition, control_batch(end, now_ms))])]
            )
            response = await client.send(leader, request)
            for _topic, parts in response.topics:
                for part in parts:
                    if part[1]:
                        log.warning("retention: padding %s[%d] failed: %s", topic, partition, part)
                    elif part[2] != 0:
                        log.warning(
                            "retention: %s[%d] got %d records before its padding; "
                            "readers at the old end may skip them",
                            topic,
                            partition,
                            part[2],
                        )
    finally:
        await client.close()
