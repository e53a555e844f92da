"""Replies for one bridge instance: its own reply topic, read without a consumer group.

Each bridge names `testdata.replies.<instance>` in the `reply-to` header of the requests
it publishes; generators write that request's chunks there. So each instance reads only
its own replies, however many run, and no consumer group can split them between members.
Chunks are delivered per request in chunk_index order: duplicates (a redelivered request
regenerates identical chunks), chunks of an earlier attempt with the same request id (each
attempt has its own `correlation-id` header) and chunks for requests this instance no
longer waits for are dropped; a gap means the broker lost data and fails that request
loudly. The reader never stops: a bad record is counted and skipped, a fetch error retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from services.kit.codec import DecodeError
from services.kit.kafka import assign_all, ensure_topics_exist, make_consumer
from services.kit.messages import ResultChunk
from services.kit.stream import Runtime

log = logging.getLogger("testdata.bridge.inbox")
QUEUE_CHUNKS = 16  # per request: bounds the bridge's memory whatever the stream's size
# A caller whose queue stays full this long is failed: its replies share the reader with
# every other caller's, so it may hold them up only briefly.
SLOW_CLIENT_S = 5.0
CORRELATION = "correlation-id"


class ChunkGap(Exception):
    """Chunks went missing between generator and bridge."""


@dataclass
class Pending:
    request_id: str
    correlation: str = field(default_factory=lambda: uuid.uuid4().hex)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    queue: asyncio.Queue[ResultChunk | Exception] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS)
    )
    next_index: int = 0
    done: bool = False
    error: Exception | None = None

    async def get(self) -> ResultChunk:
        if self.error is not None and self.queue.empty():
            raise self.error
        item = await self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item


class Inbox:
    def __init__(self, runtime: Runtime, instance: str):
        self.rt = runtime
        self.topic = runtime.topics.replies(instance)
        self.pending: dict[str, Pending] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        spec = self.rt.topics.specs["replies"]
        await ensure_topics_exist(
            self.rt.bootstrap,
            {self.topic: spec.partitions},
            replication_factor=spec.replication,
            configs={self.topic: spec.configs()},
        )
        s = self.rt.settings
        self.consumer = make_consumer(
            self.rt.bootstrap,
            None,
            client_id=f"{s.kafka_client_id}-bridge",
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )
        await self.consumer.start()
        await assign_all(self.consumer, self.topic, at_end=True)
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.consumer:
            await self.consumer.stop()
        await self._delete_topic()

    async def _delete_topic(self) -> None:
        """A stopped instance's reply topic has no reader left: remove it, so restarts do
        not pile topics up (on the embedded broker this frees its memory; best effort)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.rt.bootstrap)
        try:
            await asyncio.wait_for(admin.start(), 5)
            await asyncio.wait_for(admin.delete_topics([self.topic]), 5)
        except Exception as exc:  # noqa: BLE001 - cleanup must not fail a shutdown
            log.info("reply topic %s not deleted: %s", self.topic, exc)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    @property
    def healthy(self) -> bool:
        return self.task is not None and not self.task.done()

    def open(self, request_id: str) -> Pending:
        if request_id in self.pending:
            raise KeyError(request_id)
        p = self.pending[request_id] = Pending(request_id)
        return p

    def close(self, request_id: str) -> None:
        p = self.pending.pop(request_id, None)
        if p is not None:
            p.closed.set()  # releases a reader waiting on this caller's full queue

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
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
                        await self._dispatch(r.value or b"", r.headers or ())
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        self.dropped += 1
                        log.exception("unusable reply on %s@%d", self.topic, r.offset)

    async def _dispatch(self, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        try:
            chunk = self.rt.codec.decode_chunk(value)
        except DecodeError as exc:
            log.warning("unreadable reply on %s: %s", self.topic, exc)
            self.dropped += 1
            return
        p = self.pending.get(chunk.request_id)
        corr = next((v.decode() for k, v in headers if k == CORRELATION and v), None)
        if p is None or p.done or corr != p.correlation or chunk.chunk_index < p.next_index:
            self.dropped += 1  # late, duplicate, an earlier attempt's, or given up on
            return
        if chunk.chunk_index > p.next_index:
            p.done = True
            self._offer(
                p,
                ChunkGap(
                    f"expected chunk {p.next_index}, got {chunk.chunk_index}: "
                    "result chunks were lost in the broker"
                ),
            )
            return
        p.next_index += 1
        p.done = chunk.is_final
        if not p.queue.full():
            p.queue.put_nowait(chunk)
            return
        put = asyncio.ensure_future(p.queue.put(chunk))
        closed = asyncio.ensure_future(p.closed.wait())
        done, _ = await asyncio.wait(
            {put, closed}, timeout=SLOW_CLIENT_S, return_when=asyncio.FIRST_COMPLETED
        )
        closed.cancel()
        if put not in done:
            put.cancel()
            p.done = True
            if not p.closed.is_set():
                log.warning("%s: caller stopped reading; failing its stream", p.request_id)
                self._offer(p, TimeoutError("caller did not read its stream"))

    @staticmethod
    def _offer(p: Pending, exc: Exception) -> None:
        """Fail the request: at once if its queue has room, else once the caller drains it."""
        p.error = exc
        with contextlib.suppress(asyncio.QueueFull):
            p.queue.put_nowait(exc)
