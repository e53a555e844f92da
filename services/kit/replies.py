"""Where a request's result chunks go, and the failed final chunk for rejected requests."""

from __future__ import annotations

from services.core.models import FieldError, OutputFormat
from services.core.report import ErrorKind
from services.kit.headers import AVRO, CONTENT_TYPE, FORWARDED, REPLY_TO
from services.kit.messages import ErrorDetail, ResultChunk
from services.kit.stream import Message, Runtime


def reply_topic(runtime: Runtime, msg: Message) -> str:
    """The `reply-to` header when it names a topic of the results family, else results."""
    wanted = msg.header(REPLY_TO)
    if wanted and runtime.topics.is_reply_topic(wanted):
        return wanted
    return runtime.topics.results


def reply_headers(msg: Message, names: tuple[str, ...] = FORWARDED) -> list[tuple[str, bytes]]:
    """Avro content type plus the request's headers that travel on (`names`)."""
    headers = [(CONTENT_TYPE, AVRO.encode())]
    for name in names:
        value = msg.header(name)
        if value:
            headers.append((name, value.encode()))
    return headers


async def answer_failure(runtime: Runtime, msg: Message, reason: str) -> None:
    """A failed final chunk for the request a message's key names (handlers that fail
    unexpectedly): the caller learns at once instead of waiting for its deadline."""
    if msg.key:
        request_id = msg.key.decode("utf-8", "replace")
        await send_failure(runtime, msg, request_id, reason, ErrorKind.PROCESSING)


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
    await runtime.publish(
        reply_topic(runtime, msg), runtime.codec.encode_chunk(chunk), request_id, reply_headers(msg)
    )
