"""Replies for one bridge instance: its own reply topic, read without a consumer group.

Each bridge names `testdata.replies.<instance>` in the `reply-to` header of the requests
it publishes; generators write that request's chunks there. So each instance reads only
its own replies, however many run, and no consumer group can split them between members.
Chunks are delivered per request in chunk_index order: duplicates (a redelivered request
regenerates identical chunks), chunks of an earlier attempt with the same request id (each
attempt has its own `correlation-id` header) and chunks for requests this instance no
longer waits for are dropped; a gap means the broker lost data and fails that request
loudly. Chunks of a path whose reruns differ carry a `run-id`: once a run's chunks were
handed on, another run's are never spliced in; a stream fails (GenerationRestarted), a
unary call (`restartable`) starts over with the newest run. Those rules are
`kit.wire.assembler`'s, shared with every other reader of result streams. The reader never
stops: a bad record is counted and skipped, a fetch error retried.

The shared reader never waits for a caller. A caller whose queue is full is served from
the log instead: the reader notes where its next chunk is (partition, offset) and passes
its later chunks by; once the caller has drained its queue, a reader of its own reads the
reply topic from there at the caller's pace (the log is the buffer, not bridge memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.bridge.errors import BrokerGone, ChunkGap, GenerationRestarted, Restarted
from services.bridge.janitor import sweep_forever
from services.kit.ops import metrics
from services.kit.runtime.control import LEASE_RENEW_SECONDS, ControlListener, publish_lease
from services.kit.runtime.kafka import (
    MAX_MESSAGE_BYTES,
    assign_all,
    broker_reachable,
    delete_topics,
    ensure_topics_exist,
    stop_quietly,
)
from services.kit.runtime.stream import Runtime
from services.kit.wire.assembler import DROPPED, Assembler, Step, Verdict
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import correlation_of, run_of
from services.kit.wire.messages import ResultChunk
from services.kit.wire.signing import genuine
from services.kit.wire.tenancy import LOCAL

log = logging.getLogger("testdata.bridge.inbox")
QUEUE_CHUNKS = 16  # per request, in memory; a slower caller reads the rest from the log


@dataclass
class Pending:
    """One caller's request: chunks in memory, then (if it fell behind) from the log.
    Which chunk comes next is the assembler's to say (kit/assembler.py): the reply topic
    keeps a run's order, so it is given no reorder window (a chunk ahead is a gap)."""

    request_id: str
    correlation: str = field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str = LOCAL
    queue: asyncio.Queue[ResultChunk | Exception] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS)
    )
    error: Exception | None = None
    spill: tuple[int, int] | None = None  # (partition, offset) of the first chunk not queued
    log: LogReader | None = None
    restartable: bool = False  # may start over with a newer run (unary: nothing sent yet)
    asm: Assembler = field(init=False)

    def __post_init__(self) -> None:
        self.asm = Assembler(self.request_id, self.correlation, restartable=self.restartable)

    @property
    def next_index(self) -> int:
        return self.asm.next_index

    @property
    def run(self) -> str | None:
        """The run whose chunks were handed on ("" for a path without run ids)."""
        return self.asm.run

    @property
    def old_runs(self) -> set[str]:
        return self.asm.old_runs

    @property
    def done(self) -> bool:
        """Nothing more is delivered: the final chunk came, or the stream broke."""
        return self.asm.done

    @staticmethod
    def failure(step: Step) -> Exception:
        if step.verdict is Verdict.GAP:
            return ChunkGap(step.problem)
        return GenerationRestarted(step.problem)

    async def get(self) -> ResultChunk:
        if self.error is not None and self.queue.empty():
            raise self.error
        if not self.queue.empty() or self.spill is None:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            return item
        if self.log is None:
            raise RuntimeError("spilled request without a log reader")
        return await self.log.next(self)


class LogReader:
    """One slow caller's chunks, read from its reply topic partition from a known offset."""

    def __init__(self, runtime: Runtime, topic: str, partition: int, offset: int):
        self.rt = runtime
        self.tp = TopicPartition(topic, partition)
        self.offset = offset
        self.consumer: AIOKafkaConsumer | None = None
        self.buffered: list[tuple[ResultChunk, str | None, str]] = []
        self.held: list[ResultChunk] = []  # delivered, not yet handed to the caller

    async def next(self, p: Pending) -> ResultChunk:
        """The chunk after the last one the caller got, waiting for it if need be."""
        if self.held:
            return self.held.pop(0)
        if self.consumer is None:
            await self._start()
        while True:
            if p.error is not None:  # the broker went while this caller read the log
                raise p.error
            while self.buffered:
                step = p.asm.offer(*self.buffered.pop(0))
                if step.problem is not None:
                    raise p.failure(step)
                if not step.chunks:
                    continue  # dropped: another request's or attempt's, or a duplicate
                self.held = list(step.chunks)
                if step.restarted:
                    raise Restarted()
                return self.held.pop(0)
            await self._fetch()

    async def _start(self) -> None:
        self.consumer = await self.rt.reader(
            "bridge-log",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=MAX_MESSAGE_BYTES,
        )
        self.consumer.assign([self.tp])
        self.consumer.seek(self.tp, self.offset)

    async def _fetch(self) -> None:
        assert self.consumer is not None
        batch = await self.consumer.getmany(self.tp, timeout_ms=500, max_records=32)
        for r in batch.get(self.tp, []):
            headers = r.headers or ()
            if not genuine(self.rt.signing_key, r.value or b"", headers):
                continue  # counted by the shared reader, which saw it first
            try:
                chunk = self.rt.codec.decode_chunk(r.value or b"")
            except Exception:  # noqa: BLE001 - anyone may write here; the shared reader logs it
                continue
            self.buffered.append((chunk, correlation_of(headers), run_of(headers)))

    async def close(self) -> None:
        if self.consumer is not None:
            await stop_quietly(self.consumer, "reply log reader")
            self.consumer = None


class Inbox:
    def __init__(self, runtime: Runtime, instance: str, control: ControlListener | None = None):
        """`control`: the process's control reader; given, this bridge also deletes the
        reply topics of bridges that are gone (janitor.py)."""
        self.rt = runtime
        self.control = control
        self.topic = runtime.topics.replies(instance)
        #: requests in flight, by attempt (correlation id): replies are routed by it, so two
        #: tenants may use one request id at once
        self.pending: dict[str, Pending] = {}
        self._running: dict[tuple[str, str], Pending] = {}  # (tenant, request id)
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._stopping = False
        self.dropped = 0
        self.watch: asyncio.Task[None] | None = None
        self.leasing: asyncio.Task[None] | None = None
        self.sweeping: asyncio.Task[None] | None = None
        self.started_ms = 0
        #: the broker accepted no connection at the last BROKER_GONE_CHECKS checks
        self.broker_gone = False

    async def start(self) -> None:
        # The lease first: a janitor that sees the new topic has seen it renewed.
        self.started_ms = int(time.time() * 1000)
        await publish_lease(self.rt, self.topic, self.started_ms)
        spec = self.rt.topics.specs["replies"]
        await ensure_topics_exist(
            self.rt.bootstrap,
            {self.topic: spec.partitions},
            replication_factor=spec.replication,
            configs={self.topic: spec.configs()},
        )
        self.consumer = await self.rt.reader("bridge")
        await assign_all(self.consumer, self.topic, at_end=True)
        self.task = asyncio.create_task(self._run())
        self.watch = asyncio.create_task(self._watch_broker())
        self.leasing = asyncio.create_task(self._renew_lease())
        if self.control is not None:
            self.sweeping = asyncio.create_task(sweep_forever(self.rt, self.topic, self.control))

    async def stop(self) -> None:
        self._stopping = True  # ends the reader even if a cancel is lost (3.11 wait_for)
        for task in (self.task, self.watch, self.leasing, self.sweeping):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.consumer:
            await stop_quietly(self.consumer, "reply reader")
        for p in list(self.pending.values()):
            self.close(p)  # their log readers too
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if not self.broker_gone:  # generators stop what they still make for it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publish_lease(self.rt, self.topic, self.started_ms, 0), 5)
        await self._delete_topic()

    async def _delete_topic(self) -> None:
        """A stopped instance's reply topic has no reader left: remove it, so restarts do
        not pile topics up (best effort)."""
        if problem := await delete_topics(self.rt.bootstrap, [self.topic]):
            log.info("reply topic %s not deleted: %s", self.topic, problem)

    @property
    def healthy(self) -> bool:
        return self.task is not None and not self.task.done()

    def open(self, request_id: str, restartable: bool = False, tenant: str = LOCAL) -> Pending:
        """A request in flight; KeyError if this tenant has one with this id already."""
        if (tenant, request_id) in self._running:
            raise KeyError(request_id)
        p = Pending(request_id, restartable=restartable, tenant=tenant)
        self._running[tenant, request_id] = self.pending[p.correlation] = p
        return p

    def in_progress(self, request_id: str, tenant: str | None = None) -> bool:
        """Whether a request with this id is in flight (of `tenant`; None: anyone's)."""
        if tenant is not None:
            return (tenant, request_id) in self._running
        return any(p.request_id == request_id for p in self.pending.values())

    def close(self, p: Pending) -> None:
        if self.pending.pop(p.correlation, None) is None:
            return
        self._running.pop((p.tenant, p.request_id), None)
        if p.log is not None:
            task = asyncio.ensure_future(p.log.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _renew_lease(self) -> None:
        """Tell the generators this instance still reads its reply topic (kit/control.py):
        when it dies, what they make for it stops within LEASE_SECONDS."""
        while not self._stopping:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            try:
                await publish_lease(self.rt, self.topic, self.started_ms)
            except Exception as exc:  # noqa: BLE001 - the next renewal tries again
                log.warning("lease on %s not renewed: %s", self.topic, exc)

    async def _watch_broker(self) -> None:
        """While requests are out, check every BROKER_CHECK_SECONDS that the broker accepts
        connections. After BROKER_GONE_CHECKS refusals in a row every pending request
        fails with BrokerGone (UNAVAILABLE, with a retry hint): seen, calls in flight
        when the broker was killed hung until their deadline, and forever without one.
        A broker that is only slow (a loaded machine) still accepts connections."""
        s = self.rt.settings
        misses = 0
        while not self._stopping:
            await asyncio.sleep(s.broker_check_seconds)
            if not self.pending and not self.broker_gone:
                misses = 0
                continue
            if await broker_reachable(self.rt.bootstrap, s.broker_check_seconds):
                if self.broker_gone:
                    log.info("the broker accepts connections again")
                misses, self.broker_gone = 0, False
                continue
            misses += 1
            if misses < s.broker_gone_checks:
                continue
            if not self.broker_gone:
                log.error(
                    "the broker at %s accepts no connection: failing %d call(s) in flight",
                    self.rt.bootstrap,
                    len(self.pending),
                )
            self.broker_gone = True
            for p in self.pending.values():
                if not p.done and p.error is None:
                    self._offer(p, BrokerGone("the Kafka broker is unreachable"))

    async def _run(self) -> None:
        assert self.consumer is not None
        while not self._stopping:
            try:
                batch = await self.consumer.getmany(timeout_ms=200, max_records=200)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading %s failed; retrying", self.topic)
                await asyncio.sleep(1)
                continue
            for records in batch.values():
                for r in records:
                    try:
                        self._dispatch(r.value or b"", r.headers or (), r.partition, r.offset)
                    except Exception:
                        self.dropped += 1
                        log.exception("unusable reply on %s@%d", self.topic, r.offset)

    def _dispatch(
        self, value: bytes, headers: Sequence[tuple[str, bytes]], partition: int, offset: int
    ) -> None:
        """Route one reply record to its caller; never waits (see the module docstring)."""
        if not genuine(self.rt.signing_key, value, headers):
            self.dropped += 1
            metrics.FORGED_RECORDS.labels("chunk").inc()
            log.warning(
                "a reply on %s@%d is not signed by the services: dropped", self.topic, offset
            )
            return
        try:
            chunk = self.rt.codec.decode_chunk(value)
        except DecodeError as exc:
            log.warning("unreadable reply on %s: %s", self.topic, exc)
            self.dropped += 1
            return
        p = self.pending.get(correlation_of(headers) or "")
        if p is not None and p.request_id != chunk.request_id:
            p = None  # another request's id under this attempt's correlation
        if p is None or p.done or p.spill is not None:
            if p is None or p.done:
                self.dropped += 1  # late, or given up on; a spilled caller reads the log
            return
        correlation, run = correlation_of(headers), run_of(headers)
        if p.asm.judge(chunk, correlation, run) in DROPPED:
            self.dropped += 1  # a duplicate, an abandoned run's, or an earlier attempt's
            return
        if p.queue.full():  # the log reader judges this chunk again, at the caller's pace
            p.spill = (partition, offset)
            p.log = LogReader(self.rt, self.topic, partition, offset)
            log.info("%s: caller behind; serving it from the log at %d", p.request_id, offset)
            return
        step = p.asm.offer(chunk, correlation, run)
        if step.problem is not None:
            self._offer(p, p.failure(step))
            return
        if step.restarted:  # what is queued is of the abandoned run: make room for the new
            while not p.queue.empty():
                p.queue.get_nowait()
            p.queue.put_nowait(Restarted())
        for c in step.chunks:
            p.queue.put_nowait(c)

    @staticmethod
    def _offer(p: Pending, exc: Exception) -> None:
        """Fail the request: at once if its queue has room, else once the caller drains it."""
        p.error = exc
        with contextlib.suppress(asyncio.QueueFull):
            p.queue.put_nowait(exc)
