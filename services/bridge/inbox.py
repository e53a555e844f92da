"""Replies for one bridge instance: its own reply topic, read without a consumer group.

Each bridge names `testdata.replies.<instance>` in the `reply-to` header of the requests
it publishes; generators write that request's chunks there. So each instance reads only
its own replies, however many run, and no consumer group can split them between members.
Chunks are delivered per request in chunk_index order: duplicates (a redelivered request
regenerates identical chunks) and chunks for requests this instance no longer waits for
are dropped; a gap means the broker lost data and fails that request loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from services.kit.codec import DecodeError
from services.kit.kafka import assign_all, ensure_topics_exist, make_consumer
from services.kit.messages import ResultChunk
from services.kit.stream import Runtime

log = logging.getLogger("testdata.bridge.inbox")
QUEUE_CHUNKS = 16  # per request: bounds the bridge's memory whatever the stream's size
SLOW_CLIENT_S = 30.0


class ChunkGap(Exception):
    """Chunks went missing between generator and bridge."""


@dataclass
class Pending:
    request_id: str
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
        await ensure_topics_exist(self.rt.bootstrap, {self.topic: spec.partitions})
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

    @property
    def healthy(self) -> bool:
        return self.task is not None and not self.task.done()

    def open(self, request_id: str) -> Pending:
        if request_id in self.pending:
            raise KeyError(request_id)
        p = self.pending[request_id] = Pending(request_id)
        return p

    def close(self, request_id: str) -> None:
        self.pending.pop(request_id, None)

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=200)
            for records in batch.values():
                for r in records:
                    await self._dispatch(r.value or b"")

    async def _dispatch(self, value: bytes) -> None:
        try:
            chunk = self.rt.codec.decode_chunk(value)
        except DecodeError as exc:
            log.warning("unreadable reply on %s: %s", self.topic, exc)
            return
        p = self.pending.get(chunk.request_id)
        if p is None or p.done or chunk.chunk_index < p.next_index:
            self.dropped += 1  # late, duplicate, or for a request given up on
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
        try:
            await asyncio.wait_for(p.queue.put(chunk), SLOW_CLIENT_S)
        except TimeoutError:
            p.done = True
            log.warning("%s: caller stopped reading; dropping its stream", p.request_id)
            self._offer(p, TimeoutError("caller did not read its stream"))

    @staticmethod
    def _offer(p: Pending, exc: Exception) -> None:
        """Fail the request: at once if its queue has room, else once the caller drains it."""
        p.error = exc
        with contextlib.suppress(asyncio.QueueFull):
            p.queue.put_nowait(exc)
