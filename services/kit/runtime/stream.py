"""A small stream-processing vocabulary over aiokafka: Runtime, Message, Subscriber.

Why not FastStream's subscriber: we need partitions processed concurrently but each in
order, offsets committed only after everything a handler published is acknowledged, and
the lag exported; that is ~150 lines on aiokafka and easy to reason about. Handlers are
typed `async def handle(msg: Message) -> None`, as FastStream's decorated subscribers are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.structs import TopicPartition

from services.core.models import FieldError
from services.core.report import INTERNAL_ERROR, ErrorKind
from services.kit.ops import metrics
from services.kit.runtime.deliveries import Delivery
from services.kit.runtime.kafka import (
    broker_reachable,
    group_timeouts,
    make_consumer,
    make_producer,
    stop_quietly,
    use_security,
)
from services.kit.runtime.offsets import Assignment, PartitionState, Progress
from services.kit.settings import Settings
from services.kit.wire.codec import Codec, get_codec
from services.kit.wire.headers import AVRO, CONTENT_TYPE, key_text
from services.kit.wire.messages import DeadLetter, ErrorDetail
from services.kit.wire.topics import Topics

log = logging.getLogger("testdata.stream")
#: How long a topic seen in the cluster's metadata is taken to exist without asking again.
TOPIC_SEEN_SECONDS = 30.0


@dataclass(frozen=True)
class Message:
    """One consumed record, transport details included for dead-lettering."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int

    @property
    def key_text(self) -> str | None:
        """The record's key (a request id) as text; None without one. Never raises."""
        return key_text(self.key) or None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v.decode("utf-8", "replace") if v is not None else None
        return None


class Runtime:
    """Per-process shared state: settings, topic names, codec and one idempotent producer."""

    def __init__(
        self, settings: Settings, bootstrap: str, codec: Codec | None = None, compress: bool = True
    ):
        """`compress`: zstd for processes that publish result chunks (3x less broker
        memory and network); processes sending only small records skip its cost."""
        self.compress = compress
        self.settings = settings
        self.bootstrap = use_security(bootstrap, settings.kafka)  # its every client joins so
        self.topics = Topics(settings.topic_prefix)
        self.codec = codec or get_codec()
        self.producer: AIOKafkaProducer | None = None
        #: result chunks are signed with this (kit/signing.py); None: unsigned
        self.signing_key = settings.signing_key()
        self._seen_topics: dict[str, float] = {}  # topic -> when metadata last listed it

    async def topic_exists(self, topic: str) -> bool:
        """Whether the cluster has `topic` (listed within TOPIC_SEEN_SECONDS, else asked
        now). A broker too slow to say counts as yes: the send then waits for it."""
        now = time.monotonic()
        if now - self._seen_topics.get(topic, -TOPIC_SEEN_SECONDS) < TOPIC_SEEN_SECONDS:
            return True
        listed = await self.list_topics()
        return listed is None or topic in listed

    async def list_topics(self) -> set[str] | None:
        """Every topic the cluster has now; None when the broker does not say in time."""
        assert self.producer is not None, "Runtime.start() first"
        try:
            cluster = await asyncio.wait_for(
                self.producer.client.fetch_all_metadata(),
                self.settings.kafka_request_timeout_ms / 1000,
            )
        except (TimeoutError, KafkaError):
            return None
        if not cluster.brokers():  # an empty answer says nothing
            return None
        listed = cluster.topics()
        self._seen_topics = dict.fromkeys(listed, time.monotonic())
        return set(listed)

    async def start(self) -> None:
        if self.producer is None:
            self.producer = self._make_producer(
                self.settings.kafka_client_id,
                **({} if self.compress else {"compression_type": None}),
            )
            await self.producer.start()

    def extra_producer(self, role: str, **overrides: Any) -> AIOKafkaProducer:
        """A producer of its own (not started; call after `start()`), tuned as the shared
        one unless `overrides` say otherwise: for records that must not wait on its
        batching."""
        return self._make_producer(f"{self.settings.kafka_client_id}-{role}", **overrides)

    def _make_producer(self, client_id: str, **overrides: Any) -> AIOKafkaProducer:
        options: dict[str, Any] = {
            "linger_ms": self.settings.kafka_linger_ms,
            "request_timeout_ms": self.settings.kafka_request_timeout_ms,
            **overrides,
        }
        return make_producer(self.bootstrap, client_id=client_id, **options)

    async def reader(self, role: str, **overrides: Any) -> AIOKafkaConsumer:
        """A started consumer with no group (for topics read whole or from an offset),
        tuned by the settings; the caller assigns its partitions."""
        s = self.settings
        options: dict[str, Any] = {"fetch_max_wait_ms": s.kafka_fetch_max_wait_ms, **overrides}
        consumer = make_consumer(
            self.bootstrap, None, client_id=f"{s.kafka_client_id}-{role}", **options
        )
        await consumer.start()
        return consumer

    async def stop(self) -> None:
        if self.producer is not None:
            await stop_quietly(self.producer, "producer")
            self.producer = None

    async def send(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        """Queue a record; the returned future resolves when the broker acknowledged it.

        Backpressure, not failure: when the producer's buffer stays full (or the topic's
        metadata does not come) for `kafka_request_timeout_ms`, aiokafka gives up; while
        the broker still accepts connections (slow, loaded) and the topic exists, this
        waits again, for at most GENERATION_BUDGET_SECONDS in all. A record that was not
        queued was not sent, so trying again neither duplicates nor reorders it."""
        producer = self.producer
        assert producer is not None, "Runtime.start() first"
        k = key.encode() if isinstance(key, str) else key
        give_up = time.monotonic() + self.settings.generation_budget_seconds
        while True:
            try:
                return await producer.send(topic, value, key=k, headers=headers or [])
            except (KafkaTimeoutError, UnknownTopicOrPartitionError) as exc:
                if time.monotonic() > give_up or not await self._still_there(topic):
                    raise
                metrics.PRODUCER_WAITS.inc()
                log.warning(
                    "sending to %s: %s; the broker is slow, waiting",
                    topic,
                    "no room in the producer's buffer"
                    if isinstance(exc, KafkaTimeoutError)
                    else "its metadata did not come",
                )

    async def _still_there(self, topic: str) -> bool:
        """The broker accepts connections and `topic` is not known to be gone."""
        return await broker_reachable(self.bootstrap) and await self.topic_exists(topic)

    async def publish(
        self,
        topic: str,
        value: bytes,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await (await self.send(topic, value, key, headers))

    async def dead_letter(
        self,
        msg: Message,
        consumer: str,
        kind: ErrorKind,
        reason: str,
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Park an unprocessable message with its reason and original bytes; lose nothing."""
        dl = DeadLetter.bounded(
            key=msg.key,
            value=msg.value,
            headers=msg.headers,
            reason=reason,
            errors=[ErrorDetail.of(e) for e in errors or []],
            error_type=kind,
            request_id=request_id,
            consumer=consumer,
            original_topic=msg.topic,
            original_partition=msg.partition,
            original_offset=msg.offset,
            original_timestamp_ms=msg.timestamp_ms,
            failed_at_ms=int(time.time() * 1000),
        )
        key = request_id.encode() if request_id else msg.key
        await self.publish(
            self.topics.deadletter,
            self.codec.encode_dead_letter(dl),
            key,
            [(CONTENT_TYPE, AVRO.encode())],
        )
        metrics.DEAD_LETTERS.labels(consumer, kind).inc()
        log.warning(
            "dead-lettered %s[%d]@%d from %s: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            consumer,
            reason,
        )


Handler = Callable[[Message], Awaitable[None]]
#: Tells the waiting caller a message failed: (message, reason, kind, since_ms), where
#: since_ms (epoch) is when earlier deliveries may have begun sending it chunks, if any.
Answer = Callable[[Message, str, ErrorKind, int | None], Awaitable[None]]


class DeliveryCounter(Protocol):
    """Numbers deliveries across process deaths (control.DeliveryGuard)."""

    async def begin(self, group: str, consumer: str, msg: Message) -> Delivery: ...

    async def finish(self, consumer: str, msg: Message, delivery: Delivery) -> None: ...


@dataclass
class Subscriber:
    """A consumer group member driving the pure bookkeeping in `offsets.Assignment`.

    Within a partition, messages of one key are handled in order and messages of
    different keys concurrently (up to `max_in_flight`); partitions run concurrently.
    An offset is committed only once every message below it was handled, i.e. after the
    records its handler published were acknowledged (at-least-once). A handler that
    raises is dead-lettered, never retried forever, and the partition moves on. With
    `deliveries`, every attempt is recorded before the handler starts, and a message
    whose attempts all died with their process is dead-lettered after MAX_DELIVERIES.
    """

    runtime: Runtime
    name: str
    topics: list[str]
    group: str
    handler: Handler
    max_in_flight: int | None = None  # default: settings.partition_concurrency
    # Tells the waiting caller when a handler failed (after the message is parked).
    answer: Answer | None = None
    deliveries: DeliveryCounter | None = None
    queue_size: int = 64
    commit_interval_s: float = 0.05
    _consumer: AIOKafkaConsumer | None = None
    _asg: Assignment[TopicPartition, Message] = field(init=False)
    _tasks: dict[TopicPartition, set[asyncio.Task[None]]] = field(default_factory=dict)
    _stopping: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: set[tuple[str, int]] = field(default_factory=set)
    _progress: dict[TopicPartition, Progress] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_in_flight is None:
            self.max_in_flight = self.runtime.settings.partition_concurrency
        self._asg = Assignment(max_in_flight=self.max_in_flight, max_buffered=self.queue_size)

    async def run(self) -> None:
        s = self.runtime.settings
        self._consumer = make_consumer(
            self.runtime.bootstrap,
            self.group,
            client_id=f"{s.kafka_client_id}-{self.name}",
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            **group_timeouts(s.kafka_session_timeout_ms, s.kafka_heartbeat_interval_ms),
        )
        self._consumer.subscribe(self.topics, listener=_Listener(self))
        await self._consumer.start()
        committer = asyncio.create_task(self._commit_loop())
        try:
            while not self._stopping:
                batch = await self._consumer.getmany(timeout_ms=100, max_records=500)
                self._ready.set()
                for tp, records in batch.items():
                    state = self._asg.state(tp)
                    for r in records:
                        self._add(state, r)
                    self._start(tp, state)
                self._apply_pauses()
                self.update_lag()
        finally:
            committer.cancel()
            for tasks in self._tasks.values():
                for t in tasks:
                    t.cancel()
            try:
                await self._commit()
            except Exception:
                log.warning("%s: final offset commit failed", self.name, exc_info=True)
            finally:
                await stop_quietly(self._consumer, f"{self.name} consumer")

    async def wait_ready(self) -> None:
        """Returns once the member has joined its group and fetched at least once (as long
        as that takes: `App.start` also watches the member's task, so one that fails is
        reported instead of waited for)."""
        await self._ready.wait()

    def stop(self) -> None:
        self._stopping = True

    def _add(self, state: PartitionState[Message], record: Any) -> None:
        """A fetched record; one delivered again (the position was reset below what this
        member already holds) is already queued, running or done here, so it is skipped."""
        try:
            state.add(record.offset, record.key, _message(record))
        except ValueError:
            log.warning(
                "%s: %s[%d]@%d delivered again; already held",
                self.name,
                record.topic,
                record.partition,
                record.offset,
            )

    def _start(self, tp: TopicPartition, state: PartitionState[Message]) -> None:
        tasks = self._tasks.setdefault(tp, set())
        for _, msg in state.take_ready():
            task = asyncio.create_task(self._work(tp, state, msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _apply_pauses(self) -> None:
        """Pause partitions with a full buffer, resume those drained to half."""
        if self._consumer is None:
            return
        want, have = self._asg.paused(), self._consumer.paused()
        if want - have:
            self._consumer.pause(*(want - have))
        if have - want:
            self._consumer.resume(*(have - want))

    async def _work(self, tp: TopicPartition, state: PartitionState[Message], msg: Message) -> None:
        log.debug("%s: start %s[%d]@%d", self.name, msg.topic, msg.partition, msg.offset)
        delivery: Delivery | None = None
        try:
            delivery = await self._begin(msg) if self.deliveries is not None else None
            if delivery is not None and delivery.finished:
                log.info(
                    "%s: %s[%d]@%d finished before (its commit was held back); skipped",
                    self.name,
                    msg.topic,
                    msg.partition,
                    msg.offset,
                )
            elif delivery is not None and delivery.exhausted:
                await self._give_up(msg, delivery)
            else:
                await self.handler(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s failed on %s[%d]@%d", self.name, msg.topic, msg.partition, msg.offset)
            await self._park(msg, f"{type(exc).__name__}: {exc}")
            await self._answer(msg, INTERNAL_ERROR)
        if delivery is not None and not delivery.finished and state.held_back(msg.offset):
            await self._finished(msg, delivery)
        state.finish(msg.offset)
        self._start(tp, state)
        self._apply_pauses()

    async def _begin(self, msg: Message) -> Delivery:
        """Number this delivery (its marker acknowledged), retrying until the broker takes
        the marker: nothing may start unrecorded, or a poison message would go uncounted."""
        assert self.deliveries is not None
        delay = 0.2
        while True:
            try:
                delivery = await self.deliveries.begin(self.group, self.name, msg)
                self.stalled.discard((msg.topic, msg.partition))
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stalled.add((msg.topic, msg.partition))
                log.exception("%s: cannot record a delivery; retrying in %.1fs", self.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if delivery.number > 1 and not delivery.exhausted and not delivery.finished:
            metrics.REDELIVERIES.labels(self.name).inc()
            log.warning(
                "%s: %s[%d]@%d (key %s) delivered again: attempt %d of %d",
                self.name,
                msg.topic,
                msg.partition,
                msg.offset,
                msg.key,
                delivery.number,
                delivery.limit,
            )
        return delivery

    async def _finished(self, msg: Message, delivery: Delivery) -> None:
        """Record that `msg` is done although its offset cannot be committed yet. Best
        effort: without the marker, a crash only means it is done once more."""
        assert self.deliveries is not None
        try:
            await self.deliveries.finish(self.name, msg, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "%s: could not record %s[%d]@%d as finished (%s)",
                self.name,
                msg.topic,
                msg.partition,
                msg.offset,
                exc,
                exc_info=True,
            )

    async def _give_up(self, msg: Message, delivery: Delivery) -> None:
        """One delivery too many: parked and its caller answered, never started again."""
        reason = delivery.reason()
        metrics.DELIVERY_LIMIT.labels(self.name).inc()
        await self._park(msg, reason, ErrorKind.POISON)
        await self._answer(msg, reason, ErrorKind.POISON, delivery.first_ms)

    async def _answer(
        self,
        msg: Message,
        reason: str,
        kind: ErrorKind = ErrorKind.PROCESSING,
        since_ms: int | None = None,
    ) -> None:
        if self.answer is None:
            return
        try:
            await self.answer(msg, reason, kind, since_ms)
        except Exception:
            log.warning("%s: could not answer %s", self.name, msg.key, exc_info=True)

    async def _park(
        self, msg: Message, reason: str, kind: ErrorKind = ErrorKind.PROCESSING
    ) -> None:
        """Dead-letter a failed message, retrying while the broker refuses it: its offset
        should not move past a message that is neither processed nor parked. But not
        forever: after DEAD_LETTER_ATTEMPTS refusals the message is skipped, loudly (an
        ERROR line naming its position, `testdata_dead_letters_lost_total`), so one message
        can never stop its partition."""
        request_id = msg.key_text
        attempts = self.runtime.settings.dead_letter_attempts
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                await self.runtime.dead_letter(msg, self.name, kind, reason, request_id=request_id)
                self.stalled.discard((msg.topic, msg.partition))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt == attempts:
                    self.stalled.discard((msg.topic, msg.partition))
                    metrics.DEAD_LETTERS_LOST.labels(self.name).inc()
                    log.error(
                        "%s: %s[%d]@%d skipped, neither processed nor parked: dead-lettering "
                        "it failed %d times (last: %s); it stays in %s while retained. It "
                        "failed because: %s",
                        self.name,
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        attempts,
                        exc,
                        msg.topic,
                        reason,
                        exc_info=True,
                    )
                    return
                self.stalled.add((msg.topic, msg.partition))
                log.warning(
                    "%s: cannot dead-letter %s[%d]@%d (%s); try %d of %d in %.1fs",
                    self.name,
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    exc,
                    attempt + 1,
                    attempts,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def update_lag(self) -> None:
        """Records behind the partition end, from what is processed (not committed), so a
        stalled partition shows as growing lag."""
        if self._consumer is None:
            return
        now = time.monotonic()
        owned = set()
        for tp, state in self._asg.items():
            owned.add(tp)
            hw = self._consumer.highwater(tp)
            lag = state.lag(hw) if hw is not None else None
            if lag is not None:
                metrics.CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
                self._progress.setdefault(tp, Progress()).observe(state.position, lag, now)
        for tp in set(self._progress) - owned:  # revoked: another member's to judge
            del self._progress[tp]

    def stuck(self, after: float) -> list[str]:
        """Partitions whose position has not moved for `after` seconds while records
        waited behind it, described for health (empty: none)."""
        now = time.monotonic()
        return [
            f"{tp.topic}[{tp.partition}] lag {p.lag}, no progress for {p.stalled_for(now):.0f} s"
            for tp, p in sorted(self._progress.items())
            if p.stalled_for(now) > after
        ]

    @property
    def healthy(self) -> bool:
        return not self.stalled

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            try:
                await self._commit()
            except Exception:
                log.warning("%s: offset commit failed; will retry", self.name, exc_info=True)

    async def _commit(self) -> None:
        assert self._consumer is not None
        offsets = self._asg.committable()
        if offsets:
            await self._consumer.commit(offsets)
            self._asg.committed(offsets)

    async def revoke(self, tps: set[TopicPartition]) -> None:
        """Commit what is finished of the revoked partitions, then stop their work: the
        next owner resumes from there."""
        positions = self._asg.revoke(tps)
        if positions and self._consumer is not None:
            try:
                await self._consumer.commit(positions)
            except Exception:
                log.warning("%s: commit on revoke failed", self.name, exc_info=True)
        for tp in tps:
            for t in self._tasks.pop(tp, set()):
                t.cancel()


def _message(r: Any) -> Message:
    return Message(
        r.topic,
        r.partition,
        r.offset,
        r.key,
        r.value or b"",
        tuple(r.headers or ()),
        r.timestamp,
    )


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sub: Subscriber):
        self.sub = sub

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sub.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None
