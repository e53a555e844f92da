"""A disk journal of the logs that datasets come from, for the in-memory embedded broker.

The embedded broker keeps everything in memory, so a restart of `make run` would lose the
requests topic (what a replay reads) and the results log (what an export reads). The
journal appends every record of those topics to one file per partition as it arrives, and
the next start produces them back, in order, with their keys, headers and timestamps,
before any service starts. Records past their topic's retention are dropped on the way
back (the files are rewritten with what was kept), and each partition's file is bounded.
Against a real cluster (KAFKA_BOOTSTRAP_SERVERS) there is no journal: Kafka keeps its logs.

File format, per record: u32 length, then i64 timestamp ms, i32 key length (-1: none),
key, i32 value length, value, u16 header count, then per header u16 name length, name,
i32 value length, value. A torn last record (a crash mid-write) is ignored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiokafka import TopicPartition

from services.kit.kafka import (
    end_positions,
    make_consumer,
    make_producer,
    partitions_of,
    stop_quietly,
)

log = logging.getLogger("testdata.journal")
_LEN = struct.Struct("<I")
_HEAD = struct.Struct("<qi")


@dataclass(frozen=True)
class Entry:
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def encode(e: Entry) -> bytes:
    parts = [_HEAD.pack(e.timestamp_ms, -1 if e.key is None else len(e.key)), e.key or b""]
    parts += [struct.pack("<i", len(e.value)), e.value, struct.pack("<H", len(e.headers))]
    for name, value in e.headers:
        n = name.encode()
        parts += [struct.pack("<H", len(n)), n, struct.pack("<i", len(value)), value]
    body = b"".join(parts)
    return _LEN.pack(len(body)) + body


def decode_all(data: bytes) -> Iterator[Entry]:
    pos = 0
    while pos + 4 <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if pos + 4 + n > len(data):
            return  # a torn last record
        body, pos = memoryview(data)[pos + 4 : pos + 4 + n], pos + 4 + n
        ts, klen = _HEAD.unpack_from(body, 0)
        p = _HEAD.size
        key = None if klen < 0 else bytes(body[p : p + klen])
        p += max(klen, 0)
        (vlen,) = struct.unpack_from("<i", body, p)
        value = bytes(body[p + 4 : p + 4 + vlen])
        p += 4 + vlen
        (count,) = struct.unpack_from("<H", body, p)
        p += 2
        headers = []
        for _ in range(count):
            (nlen,) = struct.unpack_from("<H", body, p)
            name = bytes(body[p + 2 : p + 2 + nlen]).decode()
            p += 2 + nlen
            (hlen,) = struct.unpack_from("<i", body, p)
            headers.append((name, bytes(body[p + 4 : p + 4 + hlen])))
            p += 4 + hlen
        yield Entry(ts, key, value, tuple(headers))


class Journal:
    """Journals `topics` (name -> retention ms, -1 for none) of one broker under `directory`."""

    def __init__(
        self,
        directory: Path,
        bootstrap: str,
        topics: Mapping[str, int],
        max_bytes_per_partition: int = 256 * 1024 * 1024,
        flush_interval_s: float = 0.5,
        served: Mapping[str, str] | None = None,
    ):
        self.directory = directory
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.max_bytes = max_bytes_per_partition
        self.flush_interval_s = flush_interval_s
        # topic -> the consumer group that serves it: restored records are history, not
        # work, so the group's offsets are committed past them (nothing is served twice).
        self.served = dict(served or {})
        self.restored = 0
        self.written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def _file(self, topic: str, partition: int) -> Path:
        return self.directory / f"{topic}.{partition}.journal"

    # ---- restore -------------------------------------------------------------------------
    def restore(self) -> int:
        """Produce what the journal holds back into the (fresh) broker; returns how many."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable inside a loop too
            self.restored = pool.submit(asyncio.run, self._restore()).result()
        return self.restored

    async def _restore(self) -> int:
        producer = make_producer(self.bootstrap, idempotence=False, linger_ms=5)
        await producer.start()
        n = 0
        now = int(time.time() * 1000)
        try:
            for topic, retention_ms in self.topics.items():
                for path in sorted(self.directory.glob(f"{topic}.*.journal")):
                    partition = int(path.name[len(topic) + 1 :].split(".")[0])
                    kept = [
                        e
                        for e in decode_all(path.read_bytes())
                        if retention_ms < 0 or e.timestamp_ms >= now - retention_ms
                    ]
                    kept = _bounded(kept, self.max_bytes)
                    for e in kept:
                        await producer.send(
                            topic,
                            e.value,
                            key=e.key,
                            partition=partition,
                            timestamp_ms=e.timestamp_ms,
                            headers=list(e.headers),
                        )
                    await producer.flush()
                    tmp = path.with_suffix(".rewrite")
                    tmp.write_bytes(b"".join(encode(e) for e in kept))
                    tmp.replace(path)
                    n += len(kept)
        finally:
            await producer.stop()
        for topic, group in self.served.items():
            await self._commit_ends(topic, group)
        return n

    async def _commit_ends(self, topic: str, group: str) -> None:
        consumer = make_consumer(self.bootstrap, group)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
            consumer.assign(tps)
            ends = await end_positions(consumer, tps)
            if any(ends.values()):
                await consumer.commit({tp: o for tp, o in ends.items() if o})
        finally:
            await stop_quietly(consumer, "journal offsets")

    # ---- follow -----------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the topics from their current end in a thread of its own."""
        self._thread = threading.Thread(target=self._main, name="journal", daemon=True)
        self._thread.start()
        self._started.wait(30)

    def stop(self, drain_s: float = 3.0) -> None:
        """Take in what reached the broker in the next `drain_s` seconds, then stop."""
        if self._thread is None:
            return
        time.sleep(min(drain_s, 2 * self.flush_interval_s))
        self._stop.set()
        self._thread.join(timeout=drain_s + 10)
        self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as exc:  # noqa: BLE001 - reported; the broker runs on
            self._error = exc
            log.error("journal stopped: %s", exc)
        finally:
            self._started.set()

    async def _follow(self) -> None:
        consumer = make_consumer(self.bootstrap, None, max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        files: dict[TopicPartition, BinaryIO] = {}
        try:
            tps = []
            for topic in self.topics:
                tps += [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
            consumer.assign(tps)
            for tp, offset in (await end_positions(consumer, tps)).items():
                consumer.seek(tp, offset)
            for tp in tps:
                files[tp] = self._file(tp.topic, tp.partition).open("ab")
            self._started.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=int(self.flush_interval_s * 1000))
                for tp, records in batch.items():
                    f = files[tp]
                    for r in records:
                        headers = tuple((k, v or b"") for k, v in (r.headers or ()))
                        f.write(encode(Entry(r.timestamp, r.key, r.value or b"", headers)))
                        self.written += 1
                    f.flush()
        finally:
            for f in files.values():
                with contextlib.suppress(OSError):
                    f.close()
            await stop_quietly(consumer, "journal")


def _bounded(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The newest entries that fit in `max_bytes` (the oldest go first)."""
    total, keep = 0, 0
    for e in reversed(entries):
        total += len(e.value) + len(e.key or b"") + 32
        if total > max_bytes:
            break
        keep += 1
    return entries[len(entries) - keep :]
