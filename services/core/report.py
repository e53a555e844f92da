"""What a generation run reports, the same way for every path.

A path yields `Batch`es (records plus what producing them cost and how); the run's
`RunReport` adds them up with one set of rules, so tokens, retries, fallbacks, backends
and coherence mean the same thing on the traditional, LLM and any later path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

TRADITIONAL_BACKEND = "traditional"


#: What a caller hears of our own failure (a bug): its dead letter and the service's log
#: keep the exception; a caller's status never names one (nothing to act on, and internals).
INTERNAL_ERROR = (
    "internal error while generating; the request was dead-lettered and the service log "
    "has the details"
)


class ErrorKind(StrEnum):
    """Why a message or a request failed: dead letters and failed chunks carry one, and
    the gRPC bridge maps it to a status code."""

    DECODE = "decode"  # bytes that are not a message
    UNKNOWN_SCHEMA = "unknown_schema"  # Avro framing with a writer schema we do not know
    INVALID_REQUEST = "invalid_request"  # a message, but a request that cannot be served
    GENERATION = "generation"  # constraints that no record can satisfy
    PROCESSING = "processing"  # our failure: a bug or a lost dependency
    CANCELLED = "cancelled"  # the caller (or an agent on the control topic) cancelled it
    EXPIRED = "expired"  # its deadline passed before it was done
    OVER_BUDGET = "over_budget"  # it ran past the per-request generation budget
    POISON = "poison"  # started max_deliveries times, never finished (its consumer died)


class Fallback(BaseModel):
    """One step away from what was asked: `source` could not serve, `target` did."""

    model_config = ConfigDict(frozen=True)

    source: str
    target: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}: {self.reason}"


class Batch(BaseModel):
    """Consecutive records of a run, in index order, and what producing them took.

    `coherence` is the mean score of `scored` of these records (a path may score a
    sample); None when the entity has no coherence rules or nothing was scored.
    """

    records: list[dict[str, Any]]
    backend: str = ""  # who produced them: "traditional", "claude", "openai_compat", ...
    model: str = ""  # the backend's model, where it has one
    tokens: int = 0
    retries: int = 0
    fallbacks: list[Fallback] = Field(default_factory=list)
    coherence: float | None = None
    scored: int = 0
    # Retrieval (RAG and hybrid): the stored patterns the records were made from, and how
    # many example records they gave. A run's first batch carries them.
    pattern_ids: list[str] = Field(default_factory=list)
    rag_examples: int = 0


class RunReport(BaseModel):
    """Totals over a run's batches, final once the run ended."""

    records: int = 0
    batches: int = 0
    tokens: int = 0
    retries: int = 0
    fallbacks: list[Fallback] = Field(default_factory=list)
    backends: list[str] = Field(default_factory=list)  # "backend[:model]", first use first
    coherence_sum: float = 0.0
    coherence_n: int = 0
    pattern_ids: list[str] = Field(default_factory=list)
    rag_examples: int = 0
    edge_cases: dict[str, int] = Field(default_factory=dict)  # records per _edge_case_type

    def add(self, batch: Batch) -> None:
        self.records += len(batch.records)
        for r in batch.records:
            kind = r.get("_edge_case_type")
            if isinstance(kind, str):
                self.edge_cases[kind] = self.edge_cases.get(kind, 0) + 1
        self.batches += 1
        self.tokens += batch.tokens
        self.retries += batch.retries
        self.fallbacks.extend(f for f in batch.fallbacks if f not in self.fallbacks)
        used = f"{batch.backend}:{batch.model}" if batch.model else batch.backend
        if used and used not in self.backends:
            self.backends.append(used)
        self.pattern_ids.extend(p for p in batch.pattern_ids if p not in self.pattern_ids)
        self.rag_examples = max(self.rag_examples, batch.rag_examples)
        if batch.coherence is not None and batch.scored:
            self.coherence_sum += batch.coherence * batch.scored
            self.coherence_n += batch.scored

    def note(self, fallback: Fallback) -> None:
        """A fallback of the run as a whole (not of one batch)."""
        if fallback not in self.fallbacks:
            self.fallbacks.append(fallback)

    @property
    def coherence(self) -> float | None:
        """Mean over every scored record; None when nothing was scored."""
        return self.coherence_sum / self.coherence_n if self.coherence_n else None

    @property
    def backend(self) -> str:
        return ", ".join(self.backends)
