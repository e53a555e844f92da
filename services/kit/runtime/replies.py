"""Where a request's result chunks go, and the failed final chunk for rejected requests."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from services.core.models import FieldError, OutputFormat
from services.core.report import ErrorKind
from services.kit.runtime.kafka import end_positions, partitions_of, positions_at, stop_quietly
from services.kit.runtime.stream import Message, Runtime
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import (
    AVRO,
    CONTENT_TYPE,
    CORRELATION,
    FORWARDED,
    REPLY_TO,
    correlation_of,
)
from services.kit.wire.messages import ErrorDetail, ResultChunk
from services.kit.wire.signing import signed

log = logging.getLogger("testdata.replies")
#: The hosts that wrote a delivery marker and a chunk may disagree on the time this much.
CLOCK_SLACK_MS = 60_000
#: Reading back a request's chunks gives up after this long (then: what was found).
SCAN_TIMEOUT_S = 15.0


def reply_topic(runtime: Runtime, msg: Message) -> str:
    """The `reply-to` header when it names a topic of the results family, else results."""
    wanted = msg.header(REPLY_TO)
    if wanted and runtime.topics.is_reply_topic(wanted):
        return wanted
    return runtime.topics.results


async def resolve_reply_topic(runtime: Runtime, msg: Message) -> str | None:
    """`reply_topic`, checked to exist; None when it names a reply topic that does not
    exist (its bridge stopped and deleted it, or none ever made it): nobody reads there,
    so there is no one to answer, and a send must not create it (seen: 300 such names
    made 300 topics). The results log still gets what it keeps of the request."""
    wanted = reply_topic(runtime, msg)
    if wanted == runtime.topics.results or await runtime.topic_exists(wanted):
        return wanted
    log.info("reply-to %s names no existing topic: nobody to answer there", wanted)
    return None


def reply_headers(msg: Message, names: tuple[str, ...] = FORWARDED) -> list[tuple[str, bytes]]:
    """Avro content type plus the request's headers that travel on (`names`)."""
    headers = [(CONTENT_TYPE, AVRO.encode())]
    for name in names:
        value = msg.header(name)
        if value:
            headers.append((name, value.encode()))
    return headers


async def answer_failure(
    runtime: Runtime,
    msg: Message,
    reason: str,
    kind: ErrorKind = ErrorKind.PROCESSING,
    since_ms: int | None = None,
) -> None:
    """A failed final chunk for the request a message's key names (handlers that fail
    unexpectedly, messages given up after MAX_DELIVERIES): the caller learns at once
    instead of waiting for its deadline. With `since_ms`, earlier deliveries may have
    sent chunks from then on: the failure follows the last of them."""
    if (request_id := msg.key_text) is not None:
        index = 0 if since_ms is None else await chunks_sent(runtime, msg, request_id, since_ms)
        await send_failure(runtime, msg, request_id, reason, kind, chunk_index=index)


async def chunks_sent(
    runtime: Runtime,
    msg: Message,
    request_id: str,
    since_ms: int,
    timeout_s: float = SCAN_TIMEOUT_S,
) -> int:
    """How many chunks (0, 1, ... without a gap) of this attempt of the request are on
    its reply topic: the index its failed final chunk must carry, since a caller drops
    indexes it already has and fails the request on a gap. Read back from the request's
    partition, from `since_ms` to the end; if that takes longer than `timeout_s`, what
    was found by then. Rare (a message given up), so a scan is fine."""
    topic = await resolve_reply_topic(runtime, msg)
    if topic is None:
        return 0
    key = request_id.encode()
    correlation = msg.header(CORRELATION)
    indexes: set[int] = set()
    consumer: AIOKafkaConsumer | None = None
    try:
        async with asyncio.timeout(timeout_s):
            consumer = await runtime.reader("reply-scan")
            parts = await partitions_of(consumer, topic)
            tp = TopicPartition(topic, DefaultPartitioner()(key, parts, parts))
            consumer.assign([tp])
            start = (await positions_at(consumer, [tp], since_ms - CLOCK_SLACK_MS))[tp]
            end = (await end_positions(consumer, [tp]))[tp]
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for r in batch.get(tp, []):
                    if r.key == key and correlation_of(r.headers) == correlation:
                        try:
                            indexes.add(runtime.codec.decode_chunk(r.value or b"").chunk_index)
                        except DecodeError:
                            continue
    except TimeoutError:
        log.warning("%s: chunks not all read back within %.0f s", request_id, timeout_s)
    except Exception:
        log.warning("%s: reading back its chunks failed", request_id, exc_info=True)
    finally:
        if consumer is not None:
            await stop_quietly(consumer, "reply scan")
    sent = 0
    while sent in indexes:
        sent += 1
    return sent


async def send_failure(
    runtime: Runtime,
    msg: Message,
    request_id: str,
    error: str,
    kind: ErrorKind,
    errors: list[FieldError] | None = None,
    chunk_index: int = 0,
    fmt: OutputFormat = OutputFormat.JSON,
) -> None:
    """Answer the waiting caller: a final chunk with success=false and the reason."""
    chunk = ResultChunk(
        request_id=request_id,
        chunk_index=chunk_index,
        is_final=True,
        success=False,
        error=error,
        error_kind=kind,
        output_format=fmt,
        error_details=[ErrorDetail.of(e) for e in errors or []],
    )
    topic = await resolve_reply_topic(runtime, msg)
    if topic is not None:
        value = runtime.codec.encode_chunk(chunk)
        headers = signed(runtime.signing_key, value, reply_headers(msg))
        await runtime.publish(topic, value, request_id, headers)
