"""Typed mirrors of the Avro message contracts in schemas/avro (a test checks they agree)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from services.core.models import FieldError, GenerateRequest, OutputFormat
from services.core.report import ErrorKind, Fallback
from services.core.routing import RoutingDecision


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RoutedRequest(_Msg):
    request: GenerateRequest
    routing: RoutingDecision
    received_at_ms: int


class ErrorDetail(_Msg):
    path: str
    message: str

    @classmethod
    def of(cls, e: FieldError) -> ErrorDetail:
        return cls(path=e.path, message=e.message)


class Interpretation(_Msg):
    """One phrase of a request's words and the constraint it became."""

    phrase: str
    meaning: str
    scope: str  # "context", "hints" or "scenario:<name>"


class GenerationMetadata(_Msg):
    generation_path: str = ""
    routing_reason: str = ""
    routing_confidence: float = 0.0
    requested_path: str = ""
    fallbacks: list[Fallback] = Field(default_factory=list, alias="fallback_steps")
    llm_tokens_used: int = 0
    generation_time_ms: float = 0.0
    coherence_score: float | None = None
    scenario_counts: dict[str, int] = Field(default_factory=dict)
    generator_version: str = ""
    seed: int = 0
    anchor: str = ""
    record_count: int = 0
    backend: str = ""
    retries: int = 0
    rag_examples_used: int = 0
    pattern_ids: list[str] = Field(default_factory=list)
    understood: list[Interpretation] = Field(default_factory=list)
    not_understood: list[str] = Field(default_factory=list)
    contradictions: list[str] = Field(default_factory=list)
    themes: list[str] = Field(default_factory=list)
    coherence_status: str = ""  # "scored" or "not_applicable: <why>"
    edge_case_counts: dict[str, int] = Field(default_factory=dict)
    cache_hit: bool = False
    replay_of: str = ""
    fingerprint: str = ""
    data_sha256: str = ""


class ResultChunk(_Msg):
    request_id: str
    chunk_index: int
    is_final: bool
    success: bool = True
    error: str = ""
    error_kind: ErrorKind | Literal[""] = ""
    error_details: list[ErrorDetail] = Field(default_factory=list)
    data: str = ""
    record_count: int = 0
    output_format: OutputFormat = OutputFormat.JSON
    metadata: GenerationMetadata | None = None


class Control(_Msg):
    """`cancel` a request; or `lease`: the bridge reading `reply_to` (started at
    `since_ms`) is alive until `until_ms` (kit/control.py)."""

    request_id: str
    action: Literal["cancel", "lease"] = "cancel"
    correlation_id: str = ""
    reason: str = ""
    at_ms: int
    reply_to: str = ""
    since_ms: int = 0
    until_ms: int = 0


class DeliveryMarker(_Msg):
    """An attempt at a consumed message, recorded before it starts (kit/deliveries.py)."""

    group: str
    topic: str
    partition: int
    offset: int
    attempt: int
    request_id: str = ""
    correlation_id: str = ""
    instance: str = ""
    at_ms: int
    finished: bool = False


class OutcomeScenario(_Msg):
    name: str
    description: str = ""
    count: int = 0


class Outcome(_Msg):
    """A dataset delivered in full, as the learner sees it (schemas/avro/outcome.avsc)."""

    request_id: str
    fingerprint: str
    path: str
    domain: str
    entity: str
    custom_schema: bool = False
    scenarios: list[OutcomeScenario] = Field(default_factory=list)
    context: str = ""
    hints: list[str] = Field(default_factory=list)
    seed: int = 0
    record_count: int
    invalid_count: int | None = None
    coherence_score: float | None = None
    sample_json: str
    generator_version: str = ""
    completed_at_ms: int
    tenant: str = "local"

    def sample(self) -> list[dict[str, Any]]:
        """The sample's records; objects only (anything else is not a record)."""
        data = orjson.loads(self.sample_json)
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


class Header(_Msg):
    key: str
    value: bytes | None = None


#: A dead letter keeps its original whole up to this many bytes (key, value, headers),
#: else an excerpt: it stays far below any record limit, however large the original.
DEAD_LETTER_KEEP_BYTES = 1024 * 1024
#: The excerpt of a larger original: this much of its value, and of each header value ...
EXCERPT_BYTES = 64 * 1024
HEADER_EXCERPT_BYTES = 1024
#: ... for at most this many headers; reasons and field errors are bounded as well.
MAX_KEPT_HEADERS = 64
MAX_REASON_CHARS = 4096
MAX_KEPT_ERRORS = 100


def record_size(
    key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes | None]]
) -> int:
    """What a record weighs against a record limit: key, value, header keys and values."""
    return (
        len(key or b"")
        + len(value)
        + sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in headers)
    )


class DeadLetter(_Msg):
    reason: str
    error_type: ErrorKind
    errors: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = None
    consumer: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_timestamp_ms: int
    original_key: bytes | None = None
    original_value: bytes
    original_headers: list[Header] = Field(default_factory=list)
    failed_at_ms: int
    original_size: int = -1
    original_sha256: str | None = None
    original_truncated: bool = False

    @classmethod
    def bounded(
        cls,
        *,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes | None]],
        reason: str,
        errors: Sequence[ErrorDetail] = (),
        keep_bytes: int = DEAD_LETTER_KEEP_BYTES,
        **fields: Any,
    ) -> DeadLetter:
        """A dead letter of (key, value, headers) that never outgrows a record limit: the
        original whole when it is at most `keep_bytes`, else a reference (topic, partition,
        offset: in `fields`), its size, the SHA-256 of its value and bounded excerpts."""
        size = record_size(key, value, headers)
        digest = hashlib.sha256(value).hexdigest()
        truncated = size > keep_bytes
        if truncated:
            key = key[:HEADER_EXCERPT_BYTES] if key else key
            value = value[:EXCERPT_BYTES]
            headers = [(k[:256], v[:HEADER_EXCERPT_BYTES] if v else v) for k, v in headers]
            headers = headers[:MAX_KEPT_HEADERS]
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS] + f" ... ({len(reason):,} characters)"
        return cls(
            reason=reason,
            errors=list(errors[:MAX_KEPT_ERRORS]),
            original_key=key,
            original_value=value,
            original_headers=[Header(key=k, value=v) for k, v in headers],
            original_size=size,
            original_sha256=digest,
            original_truncated=truncated,
            **fields,
        )
