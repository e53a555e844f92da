"""Chunks read back from the results log one at a time, by position.

`read_results(data=False)` notes where each chunk is instead of holding its data; export
then reads a dataset's chunks as it writes them. A dataset's chunks share one partition
(they are keyed by request id) and mostly follow each other, so the reader reads forward
and skips what lies between, seeking only across a wide gap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from aiokafka import TopicPartition

from services.datasets.errors import ChunkGone
from services.datasets.log import position
from services.kit.runtime.kafka import make_consumer, stop_quietly
from services.kit.wire.codec import get_codec
from services.kit.wire.messages import ResultChunk

#: Records skipped by reading on rather than seeking (a seek costs a fetch round trip).
SKIP_AHEAD = 256
FETCH_RECORDS = 4  # at most this many records (chunks of up to 2 MiB) held at once


class LogChunks:
    """Reads chunks of one topic by (partition, offset), holding one fetch at a time."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 30.0):
        self.topic = topic
        self.timeout_s = timeout_s
        self.codec = get_codec()
        self.consumer = make_consumer(
            bootstrap, None, max_partition_fetch_bytes=1024 * 1024, fetch_max_bytes=1024 * 1024
        )
        self._tp: TopicPartition | None = None
        self._held: deque[Any] = deque()
        self._next: int | None = None  # the offset the next fetch starts at

    async def __aenter__(self) -> LogChunks:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_quietly(self.consumer, "chunk reader")

    async def data(self, chunk: ResultChunk) -> str:
        """The chunk's data, read back from the log if the first pass left it there."""
        at = position(chunk.data)
        return chunk.data if at is None else (await self.read(*at)).data

    async def read(self, partition: int, offset: int) -> ResultChunk:
        tp = TopicPartition(self.topic, partition)
        if tp != self._tp:
            self.consumer.assign([tp])
            self._tp, self._next = tp, None
            self._held.clear()
        while self._held and self._held[0].offset < offset:
            self._held.popleft()
        if (
            not self._held
            and (self._next is None or offset < self._next or offset - self._next > SKIP_AHEAD)
        ) or (self._held and self._held[0].offset > offset):
            self._seek(tp, offset)
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self._held:
                r = self._held[0]
                if r.offset == offset:
                    self._held.popleft()
                    return self.codec.decode_chunk(r.value or b"")
                raise ChunkGone(f"the chunk at {self.topic}[{partition}]@{offset} is gone")
            if time.monotonic() > deadline:
                raise ChunkGone(f"the chunk at {self.topic}[{partition}]@{offset} did not come")
            batch = await self.consumer.getmany(tp, timeout_ms=500, max_records=FETCH_RECORDS)
            for r in batch.get(tp, []):
                self._next = r.offset + 1
                if r.offset >= offset:
                    self._held.append(r)
            await asyncio.sleep(0)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)
        self._held.clear()
        self._next = offset
