"""Cancellation through Kafka: the control topic, and what one process has heard on it.

The bridge publishes a cancel record when its caller cancels or its deadline passes; an
agent may publish one for its own request. Every generator instance reads the whole
(compacted, short-retention) topic without a consumer group, so whichever instance holds
the request stops it within one chunk, and one that picks the request up later skips it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer

from services.kit.codec import DecodeError
from services.kit.headers import AVRO, CONTENT_TYPE, DEADLINE
from services.kit.kafka import InOrder, assign_all, stop_quietly
from services.kit.messages import Control
from services.kit.stream import Message, Runtime

log = logging.getLogger("testdata.control")


class Cancellations:
    """Cancelled requests this process knows of: pure state, bounded in size and age."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0):
        self.max_entries = max_entries
        self.ttl_ms = int(ttl_s * 1000)
        self._by_id: OrderedDict[str, Control] = OrderedDict()

    def add(self, control: Control) -> None:
        self._by_id.pop(control.request_id, None)
        self._by_id[control.request_id] = control
        while len(self._by_id) > self.max_entries:
            self._by_id.popitem(last=False)

    def reason(
        self, request_id: str, correlation: str | None, now_ms: int | None = None
    ) -> str | None:
        """Why this attempt of the request is cancelled, or None if it is not."""
        c = self._by_id.get(request_id)
        if c is None:
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if now_ms - c.at_ms > self.ttl_ms:
            return None
        if c.correlation_id and c.correlation_id != (correlation or ""):
            return None
        return c.reason or "cancelled"


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


class ControlListener:
    """Reads the control topic into a `Cancellations` for this process's path services."""

    def __init__(self, runtime: Runtime, cancellations: Cancellations | None = None):
        self.rt = runtime
        self.cancellations = cancellations if cancellations is not None else Cancellations()
        self._consumer: AIOKafkaConsumer | None = None
        self._fetch: InOrder | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = await self.rt.reader("control")
        # From the oldest retained record: a request redelivered after a restart must
        # still see a cancellation issued before it.
        await assign_all(self._consumer, self.rt.topics.control, at_end=False)
        self._fetch = InOrder(self._consumer, self.rt.embedded)
        self._task = asyncio.create_task(self._run(), name="control-listener")

    async def _run(self) -> None:
        assert self._fetch is not None
        while True:
            try:
                batch = await self._fetch.getmany(timeout_ms=200)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading the control topic failed; retrying", exc_info=True)
                await asyncio.sleep(1)
                continue
            for records in batch.values():
                for r in records:
                    try:
                        self.cancellations.add(self.rt.codec.decode_control(r.value or b""))
                    except (DecodeError, ValueError) as exc:
                        log.warning("unusable control record at offset %d: %s", r.offset, exc)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await stop_quietly(self._consumer, "control consumer")
