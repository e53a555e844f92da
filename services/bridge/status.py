"""The gRPC status of every failed call, and a bound on what it echoes back.

One failure, one status, the same for GenerateData and GenerateDataStream. A status
carries a `google.rpc.ErrorInfo` whose `reason` names the failure (an ErrorKind in upper
case, or one of the bridge's own `Reason`s) so a client can act on it without parsing
text, and for a request at fault a `google.rpc.BadRequest` listing the fields.

Everything here ends up in the call's trailers, which a default client refuses past
8 KiB (it then reports RESOURCE_EXHAUSTED instead of our status). Messages and field
violations echo caller input (paths, values), so each part is clipped and the whole kept
within a byte budget: the first violations that fit, then one "and N more" violation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.core.models import FieldError, GenerateRequest
from services.core.report import ErrorKind
from services.kit.wire.messages import ResultChunk

DOMAIN = "testdata.v1"
#: At most this many field violations are listed, however many were found.
MAX_VIOLATIONS = 50
#: A violation's field path and description are clipped to this many characters.
MAX_FIELD_CHARS = 200
MAX_DESCRIPTION_CHARS = 200
#: The status message, in UTF-8 bytes. grpc-message percent-encodes non-ASCII bytes
#: (x3) and the status proto repeats it, so it is kept short.
MAX_MESSAGE_BYTES = 400
#: Serialized size of all listed violations together.
VIOLATIONS_BUDGET = 3000
MAX_METADATA_VALUE_BYTES = 200
MORE = "..."


class Reason(StrEnum):
    """Failures the bridge itself detects (ErrorInfo.reason), beside the ErrorKinds."""

    SYNC_LIMIT = "SYNC_LIMIT"  # count above MAX_SYNC_RECORDS for GenerateData
    IN_PROGRESS = "IN_PROGRESS"  # another call with this request_id is running
    BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"  # the request could not be published
    CHUNK_GAP = "CHUNK_GAP"  # result chunks were lost between generator and bridge
    STREAM_IDLE = "STREAM_IDLE"  # the streaming caller stopped reading
    RATE_LIMITED = "RATE_LIMITED"  # the client's token bucket is empty: retry after a delay
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"  # same key, different request
    NOT_RESUMABLE = "NOT_RESUMABLE"  # resume-from-chunk for a request this bridge never saw
    GENERATION_RESTARTED = "GENERATION_RESTARTED"  # a redelivery reran a non-deterministic path
    OVERLOADED = "OVERLOADED"  # the bridge runs its limit of such calls, its queue full
    PAST_THE_END = "PAST_THE_END"  # resume-from-chunk at or after the stream's last chunk


#: The gRPC status of a failed request, by what failed.
STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.DECODE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNKNOWN_SCHEMA: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.GENERATION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PROCESSING: grpc.StatusCode.INTERNAL,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.EXPIRED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.OVER_BUDGET: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.POISON: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(kind: ErrorKind | str) -> grpc.StatusCode:
    """INTERNAL for a failure that names no kind (an older generator's chunk)."""
    return STATUS_BY_KIND[ErrorKind(kind)] if kind else grpc.StatusCode.INTERNAL


def reason_of(kind: ErrorKind | str) -> str:
    return ErrorKind(kind).name if kind else ErrorKind.PROCESSING.name


def clip(text: str, chars: int) -> str:
    """At most `chars` characters; a cut shows as a trailing ellipsis."""
    return text if len(text) <= chars else text[: chars - 1] + "…"


def clip_bytes(text: str, limit: int) -> str:
    """At most `limit` UTF-8 bytes, cut on a character boundary."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


def summary(prefix: str, errors: Sequence[FieldError]) -> str:
    """`prefix: first problem; second...`, as many as fit, then how many were left out."""
    shown: list[str] = []
    used = len(prefix.encode()) + 2
    for e in errors:
        part = f"{clip(e.path, MAX_FIELD_CHARS)}: {clip(e.message, MAX_DESCRIPTION_CHARS)}"
        if shown and used + len(part.encode()) + 40 > MAX_MESSAGE_BYTES:
            break
        shown.append(part)
        used += len(part.encode()) + 2
    text = "; ".join(shown)
    if len(shown) < len(errors):
        text += f" (and {len(errors) - len(shown)} more)"
    return clip_bytes(f"{prefix}: {text}" if text else prefix, MAX_MESSAGE_BYTES)


def bad_request(errors: Sequence[FieldError]) -> error_details_pb2.BadRequest:
    """The first violations within the count and byte budgets, then "and N more"."""
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    used = 0
    for e in errors[:MAX_VIOLATIONS]:
        v = error_details_pb2.BadRequest.FieldViolation(
            field=clip(e.path, MAX_FIELD_CHARS),
            description=clip(e.message, MAX_DESCRIPTION_CHARS),
        )
        size = v.ByteSize() + 3  # its tag and length
        if used + size > VIOLATIONS_BUDGET:
            break
        violations.append(v)
        used += size
    if hidden := len(errors) - len(violations):
        violations.append(
            error_details_pb2.BadRequest.FieldViolation(
                field=MORE, description=f"and {hidden} more violation(s) not listed"
            )
        )
    return error_details_pb2.BadRequest(field_violations=violations)


def _packed(detail: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(detail)
    return out


def failure(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    errors: Sequence[FieldError] = (),
    request_id: str = "",
    retry_after: float | None = None,
) -> grpc.Status:
    """The status to abort a call with: bounded message, ErrorInfo, capped BadRequest,
    and a RetryInfo when `retry_after` (seconds) says when a retry may succeed."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    if request_id:
        info.metadata["request_id"] = clip_bytes(request_id, MAX_METADATA_VALUE_BYTES)
    details = [_packed(info)]
    if errors:
        details.append(_packed(bad_request(errors)))
    if retry_after is not None:
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromMilliseconds(max(1, round(retry_after * 1000)))
        details.append(_packed(delay))
    return rpc_status.to_status(
        status_pb2.Status(
            code=getattr(code_pb2, code.name),
            message=clip_bytes(message, MAX_MESSAGE_BYTES),
            details=details,
        )
    )


def rate_limited(
    message: str, wait_seconds: float, reason: Reason = Reason.RATE_LIMITED
) -> grpc.Status:
    """RESOURCE_EXHAUSTED with a google.rpc.RetryInfo and a `retry-after` trailer (whole
    seconds, rounded up) saying when the client's next call will be accepted."""
    delay = error_details_pb2.RetryInfo()
    delay.retry_delay.FromMilliseconds(max(1, round(wait_seconds * 1000)))
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    status = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.RESOURCE_EXHAUSTED,
            message=clip_bytes(message, MAX_MESSAGE_BYTES),
            details=[_packed(info), _packed(delay)],
        )
    )
    after = str(max(1, math.ceil(wait_seconds)))
    return status._replace(trailing_metadata=(*status.trailing_metadata, ("retry-after", after)))


def retry_delay(exc: grpc.RpcError) -> float | None:
    """The RetryInfo delay (seconds) of a failed call, if its status carries one: what a
    client waits before retrying (RESOURCE_EXHAUSTED: OVERLOADED, RATE_LIMITED; UNAVAILABLE
    when the broker is gone)."""
    status = rpc_status.from_call(exc)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToMilliseconds() / 1000
    return None


async def abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> NoReturn:
    """End the call with `status` (one typed way, so the checker knows nothing follows)."""
    await context.abort_with_status(status)
    raise AssertionError("grpc's abort_with_status returned")  # it raises AbortError


#: Why a stream of a non-deterministic path cannot be resumed.
NONDETERMINISTIC = (
    "cannot resume: this request's generation path is not deterministic, a rerun "
    "differs; retry the whole request"
)


def past_the_end(req: GenerateRequest, skip: int, final: ResultChunk | None = None) -> grpc.Status:
    """OUT_OF_RANGE for a resume after a stream's last chunk (seen: it generated
    everything again and answered OK with nothing)."""
    last = f"its last chunk is {final.chunk_index}" if final else f"it has {req.count} records"
    return failure(
        grpc.StatusCode.OUT_OF_RANGE,
        f"resume-from-chunk {skip} is past the end of request {req.request_id} ({last})",
        Reason.PAST_THE_END,
        [FieldError(path="resume-from-chunk", message=f"past the end ({last})", value=skip)],
        req.request_id,
    )
