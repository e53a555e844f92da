"""The control plane through Kafka: cancellations, and delivery markers.

Cancellation: the bridge publishes a cancel record when its caller cancels or its
deadline passes; an agent may publish one for its own request. Every generator instance
reads the whole (compacted, short-retention) control topic without a consumer group, so
whichever instance holds the request stops it within one chunk, and one that picks the
request up later skips it.

Delivery markers (kit/deliveries.py): before a router or generator starts a message, its
`DeliveryGuard` writes which attempt this is to the deliveries topic and waits for the
broker's acknowledgement, so the count survives the process dying during the work. The
same listener reads the recent markers of the process's consumer groups. Before its first
decision after a start it reads the markers up to where the topic ended at start (or
waits CATCH_UP_S at most): a restarted process must see the attempts of the one that
died. After that it is at most about a second behind (MARKER_POLL_S plus a fetch), while
a redelivery comes a session timeout (3 s or more) after the attempt before it, so a
marker is missed only if the listener falls further behind; each miss lets one attempt
too many run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from services.kit.ops import metrics
from services.kit.runtime.deliveries import Attempts, Delivery, Position, next_attempt
from services.kit.runtime.kafka import (
    end_positions,
    partitions_of,
    positions_at,
    stop_quietly,
)
from services.kit.runtime.stream import Message, Runtime
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import AVRO, CONTENT_TYPE, CORRELATION, DEADLINE
from services.kit.wire.messages import Control, DeliveryMarker
from services.kit.wire.signing import genuine, signed

log = logging.getLogger("testdata.control")
#: How long a process just started waits, at most, to have read the delivery markers
#: written before it started; then it decides with what it has (and says so).
CATCH_UP_S = 30.0
#: Once caught up, markers are read at most this often (a redelivery comes a session
#: timeout, 3 s or more, after the marker before it)...
MARKER_POLL_S = 0.5
#: ...with this fetch wait (Kafka answers as soon as a marker arrives).
MARKER_WAIT_MS = 500


class Cancellations:
    """Cancelled requests, and the bridges' leases, this process knows of: pure state,
    bounded in size and age.

    Leases: a bridge renews one for its reply topic every LEASE_RENEW_SECONDS, valid
    LEASE_SECONDS. A request whose reply topic's lease ran out, or whose bridge started
    after the request was sent (a restart: the new one does not wait for the old one's
    requests), has nobody waiting: seen, streams orphaned by a bridge crash ran for the
    whole budget (7.6 M records made for nobody). A topic with no lease seen is never
    judged (an agent's own reply topic, or a bridge of an older version)."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0):
        self.max_entries = max_entries
        self.ttl_ms = int(ttl_s * 1000)
        self._by_id: OrderedDict[tuple[str, str], Control] = OrderedDict()
        self._leases: OrderedDict[str, Control] = OrderedDict()

    def add(self, control: Control) -> None:
        if control.action == "lease":
            # The newest wins, not the last read: seen, a replayed genuine release of a
            # bridge's earlier life abandoned the streams of the bridge now on that topic.
            # Newer: a later life (since_ms), else a later word of the same life (at_ms).
            known = self._leases.get(control.reply_to)
            if known is not None and (known.since_ms, known.at_ms) > (
                control.since_ms,
                control.at_ms,
            ):
                return
            self._leases.pop(control.reply_to, None)
            self._leases[control.reply_to] = control
            while len(self._leases) > self.max_entries:
                self._leases.popitem(last=False)
            return
        now_ms = int(time.time() * 1000)
        if control.at_ms > now_ms:  # seen: a future stamp made a cancel last for good
            control = control.model_copy(update={"at_ms": now_ms})
        # by attempt: two tenants' requests may share an id, and one's cancel must not
        # displace the other's
        attempt = (control.request_id, control.correlation_id)
        self._by_id.pop(attempt, None)
        self._by_id[attempt] = control
        while len(self._by_id) > self.max_entries:
            self._by_id.popitem(last=False)

    def reason(
        self, request_id: str, correlation: str | None, now_ms: int | None = None
    ) -> str | None:
        """Why this attempt of the request is cancelled, or None if it is not."""
        # a cancel names the attempt it stops: a request's secret, if any
        c = self._by_id.get((request_id, correlation or ""))
        if c is None:
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if now_ms - c.at_ms > self.ttl_ms:
            return None
        return c.reason or "cancelled"

    def lease(self, reply_to: str) -> Control | None:
        """The newest lease seen on `reply_to` (None: none seen, so never judged)."""
        return self._leases.get(reply_to)

    def orphaned(self, reply_to: str | None, sent_ms: int, now_ms: int | None = None) -> str | None:
        """Why nobody reads `reply_to` for a request sent at `sent_ms`, if so."""
        lease = self._leases.get(reply_to or "")
        if lease is None:
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if lease.until_ms < now_ms:
            ago = now_ms - lease.until_ms
            return f"its bridge is gone (its lease on {reply_to} ran out {ago} ms ago)"
        if sent_ms < lease.since_ms:
            return f"its bridge restarted after the request was sent ({reply_to})"
        return None


def deadline_of(msg: Message) -> int | None:
    """The caller's deadline (epoch ms) from the request's header; None if it has none."""
    raw = msg.header(DEADLINE)
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def deadline_passed(msg: Message, now_ms: int | None = None) -> int | None:
    """The request's deadline (epoch ms) if it has passed, else None."""
    deadline = deadline_of(msg)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return deadline if deadline is not None and deadline <= now_ms else None


async def publish_cancel(
    runtime: Runtime, request_id: str, correlation: str = "", reason: str = "cancelled"
) -> None:
    control = Control(
        request_id=request_id,
        correlation_id=correlation,
        reason=reason,
        at_ms=int(time.time() * 1000),
    )
    await runtime.publish(
        runtime.topics.control,
        runtime.codec.encode_control(control),
        request_id,
        [(CONTENT_TYPE, AVRO.encode())],
    )


#: A bridge renews its lease this often...
LEASE_RENEW_SECONDS = 2.0
#: ...valid this long: five renewals may be late (a loaded machine) before its requests
#: are abandoned.
LEASE_SECONDS = 10.0


async def publish_lease(
    runtime: Runtime, reply_to: str, since_ms: int, seconds: float = LEASE_SECONDS
) -> None:
    """The bridge reading `reply_to` (started at `since_ms`) is alive for `seconds` more
    (0: it stops now)."""
    now = int(time.time() * 1000)
    lease = Control(
        request_id="",
        action="lease",
        reply_to=reply_to,
        since_ms=since_ms,
        until_ms=now + int(seconds * 1000),
        at_ms=now,
    )
    value = runtime.codec.encode_control(lease)
    headers = signed(runtime.signing_key, value, [(CONTENT_TYPE, AVRO.encode())])
    await runtime.publish(runtime.topics.control, value, f"lease:{reply_to}", headers)


class ControlListener:
    """Reads the control topic into `Cancellations` and, given `attempts`, the recent
    delivery markers of the groups it tracks into them.

    Two readers. Cancellations are read as they come. Markers only need to be read
    before the next delivery of their message, a session timeout (3 s or more) later, so
    their reader fetches at most every MARKER_POLL_S with a long fetch wait: a fraction of
    the fetches (two markers a request would otherwise keep it fetching).
    """

    def __init__(
        self,
        runtime: Runtime,
        cancellations: Cancellations | None = None,
        attempts: Attempts | None = None,
    ):
        self.rt = runtime
        self.cancellations = cancellations if cancellations is not None else Cancellations()
        self.attempts = attempts
        self._consumers: list[AIOKafkaConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._targets: dict[TopicPartition, int] = {}  # where the markers ended at start
        self._marks: AIOKafkaConsumer | None = None
        self._control: AIOKafkaConsumer | None = None
        self._caught_up = asyncio.Event()

    async def start(self) -> None:
        topics = self.rt.topics
        self._control = consumer = await self.rt.reader("control")
        self._consumers.append(consumer)
        # From the oldest retained record: a request redelivered after a restart must
        # still see a cancellation issued before it.
        parts = await partitions_of(consumer, topics.control)
        consumer.assign([TopicPartition(topics.control, p) for p in parts])
        self._tasks.append(asyncio.create_task(self._read(consumer, self._cancel), name="control"))
        if self.attempts is None:
            return
        self._marks = marks = await self.rt.reader("deliveries", fetch_max_wait_ms=MARKER_WAIT_MS)
        self._consumers.append(marks)
        parts = await partitions_of(marks, topics.deliveries)
        tps = [TopicPartition(topics.deliveries, p) for p in parts]
        marks.assign(tps)
        since = int(time.time() * 1000) - self.attempts.window_ms
        for tp, offset in (await positions_at(marks, tps, since)).items():
            marks.seek(tp, offset)
        self._targets = await end_positions(marks, tps)
        await self._check_caught_up()
        self._tasks.append(asyncio.create_task(self._read(marks, self._note), name="deliveries"))

    async def _read(
        self, consumer: AIOKafkaConsumer, use: Callable[[ConsumerRecord], None]
    ) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200)
                if consumer is self._marks and not self._caught_up.is_set():
                    await self._check_caught_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading the control topics failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            for records in batch.values():
                for r in records:
                    try:
                        use(r)
                    except (DecodeError, ValueError) as exc:
                        log.warning("unusable %s record at offset %d: %s", r.topic, r.offset, exc)
                    except Exception:  # anyone may write here: one record never ends the reader
                        log.exception("unusable %s record at offset %d", r.topic, r.offset)
            if consumer is self._marks and self._caught_up.is_set():
                assert self.attempts is not None
                metrics.DELIVERIES_TRACKED.set(len(self.attempts))
                await asyncio.sleep(MARKER_POLL_S)

    def _cancel(self, r: ConsumerRecord) -> None:
        control = self.rt.codec.decode_control(r.value or b"")
        if control.action == "lease" and not genuine(
            self.rt.signing_key, r.value or b"", r.headers or ()
        ):
            # Only bridges lease: seen, a forged release of a live bridge's lease made
            # the generators abandon its requests (and would let a janitor delete its
            # reply topic). Leases are signed like chunks (kit/signing.py).
            metrics.FORGED_RECORDS.labels("lease").inc()
            log.warning("unsigned or forged lease on %s: ignored", control.reply_to)
            return
        self.cancellations.add(control)

    def _note(self, r: ConsumerRecord) -> None:
        """A delivery marker; only those of tracked groups are decoded and kept."""
        assert self.attempts is not None
        pos = Position.from_key((r.key or b"").decode())
        if self.attempts.wants(pos.group):
            marker = self.rt.codec.decode_delivery(r.value or b"")
            self.attempts.note(pos, marker.attempt, marker.at_ms, marker.finished)

    async def _check_caught_up(self) -> None:
        assert self._marks is not None
        for tp, end in self._targets.items():
            if await self._marks.position(tp) < end:
                return
        self._caught_up.set()

    async def control_current(self) -> bool:
        """Whether every control record written before now has been read: only then may
        the absence of a newer lease be relied on (kit/janitor.py)."""
        if self._control is None:
            return False
        tps = self._control.assignment()
        ends = await end_positions(self._control, tps)
        for tp, end in ends.items():
            if await self._control.position(tp) < end:
                return False
        return True

    async def caught_up(self, timeout: float) -> bool:
        """Whether the markers written before start were read, waiting `timeout` at most."""
        if not self._caught_up.is_set() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self._caught_up.is_set()

    @property
    def healthy(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for consumer in self._consumers:
            await stop_quietly(consumer, "control consumer")


class DeliveryGuard:
    """Numbers every delivery of a message and records it before the work starts, so a
    message whose attempts never finish is given up after `max_deliveries`, however its
    consumers died. Its own producer (no linger, no compression): the marker's round trip
    is on every request's path (no linger: it is not held ~2 ms for a batch to fill)."""

    def __init__(
        self,
        runtime: Runtime,
        listener: ControlListener,
        max_deliveries: int,
        catch_up_s: float = CATCH_UP_S,
    ):
        if listener.attempts is None:
            raise ValueError("the listener must read delivery markers (attempts=...)")
        self.rt = runtime
        self.listener = listener
        self.attempts: Attempts = listener.attempts
        self.max_deliveries = max_deliveries
        self.catch_up_s = catch_up_s
        self.instance = f"{runtime.settings.kafka_client_id}@{socket.gethostname()}:{os.getpid()}"
        self._producer: AIOKafkaProducer | None = None
        self._wait_until = 0.0
        self._lagging = False

    async def start(self) -> None:
        self._wait_until = time.monotonic() + self.catch_up_s
        self._producer = self.rt.extra_producer("deliveries", linger_ms=0, compression_type=None)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await stop_quietly(self._producer, "delivery marker producer")
            self._producer = None

    async def begin(self, group: str, consumer: str, msg: Message) -> Delivery:
        """This delivery of `msg` to `group`. Unless it is one too many (`exhausted`), its
        marker is acknowledged by the broker when this returns: the work may start."""
        assert self._producer is not None, "start() first"
        caught_up = await self.listener.caught_up(self._wait_until - time.monotonic())
        if not caught_up and not self._lagging:
            self._lagging = True
            log.warning(
                "delivery markers not read up to their end after %.0f s; counting with "
                "what was read (a redelivered message may get extra attempts)",
                self.catch_up_s,
            )
        pos = Position(group, msg.topic, msg.partition, msg.offset)
        now_ms = int(time.time() * 1000)
        known = self.attempts.get(pos, now_ms)
        if known is not None and known.finished:
            return Delivery(pos, known.started, known.first_ms, self.max_deliveries, True)
        number = next_attempt(known)
        delivery = Delivery(pos, number, known.first_ms if known else now_ms, self.max_deliveries)
        if delivery.exhausted:
            return delivery
        await self._mark(consumer, msg, delivery, now_ms)
        return delivery

    async def finish(self, consumer: str, msg: Message, delivery: Delivery) -> None:
        """`delivery` finished while an earlier message of its partition is unfinished, so
        its offset cannot be committed yet: recorded, so that a redelivery (after this
        process dies) skips it instead of doing it again, and never counts it as an attempt
        that died."""
        await self._mark(consumer, msg, delivery, int(time.time() * 1000), finished=True)

    async def _mark(
        self,
        consumer: str,
        msg: Message,
        delivery: Delivery,
        now_ms: int,
        finished: bool = False,
    ) -> None:
        assert self._producer is not None, "start() first"
        pos = delivery.position
        marker = DeliveryMarker(
            group=pos.group,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            attempt=delivery.number,
            request_id=msg.key_text or "",
            correlation_id=msg.header(CORRELATION) or "",
            instance=self.instance,
            at_ms=now_ms,
            finished=finished,
        )
        t0 = time.perf_counter()
        await self._producer.send_and_wait(
            self.rt.topics.deliveries,
            self.rt.codec.encode_delivery(marker),
            key=pos.key.encode(),
            headers=[(CONTENT_TYPE, AVRO.encode())],
        )
        if not finished:
            metrics.DELIVERY_MARKER_SECONDS.labels(consumer).observe(time.perf_counter() - t0)
        self.attempts.note(pos, delivery.number, now_ms, finished)
