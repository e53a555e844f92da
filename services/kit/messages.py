"""Typed mirrors of the Avro message contracts in schemas/avro (a test checks they agree)."""

from __future__ import annotations

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
    request_id: str
    action: Literal["cancel"] = "cancel"
    correlation_id: str = ""
    reason: str = ""
    at_ms: int


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

    def sample(self) -> list[dict[str, Any]]:
        """The sample's records; objects only (anything else is not a record)."""
        data = orjson.loads(self.sample_json)
        return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


class Header(_Msg):
    key: str
    value: bytes | None = None


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
