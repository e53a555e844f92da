"""Where a request's result chunks go, and the failed final chunk for rejected requests."""

from __future__ import annotations

from services.core.models import FieldError, OutputFormat
from services.kit.messages import ErrorDetail, ResultChunk
from services.kit.stream import CONTENT_TYPE, REPLY_TO, Message, Runtime


def reply_topic(runtime: Runtime, msg: Message) -> str:
    """The `reply-to` header when it names a topic of the results family, else results."""
    wanted = msg.header(REPLY_TO)
    if wanted and runtime.topics.is_reply_topic(wanted):
        return wanted
    return runtime.topics.results


FORWARDED = (REPLY_TO, "correlation-id")  # travel with a request to its result chunks


def reply_headers(msg: Message) -> list[tuple[str, bytes]]:
    headers = [(CONTENT_TYPE, b"application/avro")]
    for name in FORWARDED:
        value = msg.header(name)
        if value:
            headers.append((name, value.encode()))
    return headers


async def send_failure(
    runtime: Runtime,
    msg: Message,
    request_id: str,
    error: str,
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
        output_format=fmt,
        error_details=[ErrorDetail.of(e) for e in errors or []],
    )
    await runtime.publish(
        reply_topic(runtime, msg), runtime.codec.encode_chunk(chunk), request_id, reply_headers(msg)
    )
