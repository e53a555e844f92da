"""The pattern store's contract: what the RAG and hybrid paths retrieve and the learner writes.

One interface, two backends (embedded: SQLite + a local embedding model; Weaviate when
`WEAVIATE_URL` is set), one contract test suite run over both. A store that cannot be
reached answers `StoreUnavailable`, never a crash: routing and health read it.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Collection(StrEnum):
    """The spec's three collections, by what a request asks for."""

    PATTERNS = "patterns"  # TestDataPattern: successful datasets (seeded and learned)
    DEFECTS = "defects"  # DefectPattern: records that triggered a defect
    PRODUCTION = "production"  # ProductionSample: anonymised production-like samples


class Pattern(BaseModel):
    """One stored example set: a few records plus the words that say what they are."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""  # content id (see `content_id`); filled by `with_id()`
    collection: Collection = Collection.PATTERNS
    domain: str
    entity: str
    scenario: str = ""
    # What the records are about (context, scenario descriptions, occasion...): the text
    # that keyword and vector search rank on.
    description: str
    records: list[dict[str, Any]] = Field(min_length=1)
    quality: float = Field(default=1.0, ge=0.0, le=1.0)
    usage_count: int = 0
    source: str = "seed"  # "seed", or "learned:<path>"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Defects only: the class of defect the records trigger and how bad it was.
    defect_type: str = ""
    severity: str = ""
    # Whose pattern it is: learned from this tenant's datasets and retrieved for its
    # requests only (kit/tenancy.py); "" is everyone's (seeds, and what an operator shares
    # with PATTERNS_SHARED_TENANTS).
    tenant: str = ""

    def content_id(self) -> str:
        """Same content, same id: learning a dataset twice stores one pattern (per tenant:
        two tenants' identical datasets are two patterns, each its own)."""
        owner = [self.tenant] if self.tenant else []  # shared: ids as before tenants
        body = json.dumps(
            [self.collection, self.domain, self.entity, self.scenario, self.records, *owner],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return hashlib.sha256(body.encode()).hexdigest()[:32]

    def with_id(self) -> Pattern:
        return self if self.id else self.model_copy(update={"id": self.content_id()})

    def search_text(self) -> str:
        return " ".join(
            s
            for s in (self.domain, self.entity, self.scenario, self.defect_type, self.description)
            if s
        )


class Hit(BaseModel):
    pattern: Pattern
    score: float  # fused relevance in [0, 1], higher is better


class StoreStats(BaseModel):
    backend: str
    counts: dict[str, int]  # "collection/domain/entity" -> patterns
    semantic: bool  # False: keyword ranking only (no embedding model)


class PatternStore(ABC):
    """Async, because the Weaviate backend is network I/O; the embedded one runs its
    SQLite and model work in a thread so the event loop never waits on it."""

    backend: str

    @abstractmethod
    async def start(self) -> None:
        """Connect and create the collections if missing (idempotent)."""

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def upsert(self, patterns: Sequence[Pattern]) -> int:
        """Store patterns by content id; returns how many were new. A pattern already
        stored takes the new description, quality and other properties but keeps its
        usage_count and created_at (learning a dataset again must not reset its use)."""

    @abstractmethod
    async def search(
        self,
        collection: Collection,
        query: str,
        *,
        domain: str | None = None,
        entity: str | None = None,
        top_k: int = 5,
        alpha: float = 0.5,
        tenant: str | None = None,
    ) -> list[Hit]:
        """Hybrid ranking: `alpha` 1.0 is vector only, 0.0 keywords only. Filters exact;
        `tenant`: only that tenant's patterns and shared ones (None: all, for operators)."""

    @abstractmethod
    async def get(self, collection: Collection, ids: Sequence[str]) -> list[Pattern]: ...

    @abstractmethod
    async def list_patterns(
        self,
        collection: Collection,
        *,
        domain: str | None = None,
        entity: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Pattern]: ...

    @abstractmethod
    async def count(
        self, collection: Collection, *, domain: str | None = None, entity: str | None = None
    ) -> int: ...

    @abstractmethod
    async def delete(self, collection: Collection, ids: Sequence[str]) -> int: ...

    @abstractmethod
    async def mark_used(self, collection: Collection, ids: Sequence[str]) -> None:
        """Raise usage_count of patterns a request retrieved."""

    @abstractmethod
    async def prune(
        self, collection: Collection, domain: str, entity: str, keep: int, tenant: str = ""
    ) -> int:
        """Keep at most `keep` of `tenant`'s patterns for (domain, entity): lowest quality,
        then least used, then oldest go first (one tenant's learning never evicts
        another's). Returns how many were removed."""

    @abstractmethod
    async def stats(self) -> StoreStats: ...

    @abstractmethod
    async def health(self) -> str:
        """ "healthy: ...", "degraded: keywords only (...)" or "unavailable: <reason>"."""
