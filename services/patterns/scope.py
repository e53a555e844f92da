"""Where a request's patterns live: collection by what it asks for, domain and entity.

The router (does the store hold patterns for it?) and the RAG and hybrid paths (retrieve
them) must agree on this, so it is decided here once.
"""

from __future__ import annotations

from typing import NamedTuple

from services.core.models import EntitySchema, GenerateRequest
from services.patterns.store import Collection

WHAT = {
    Collection.PATTERNS: "patterns",
    Collection.DEFECTS: "defect patterns",
    Collection.PRODUCTION: "production samples",
}


class Scope(NamedTuple):
    collection: Collection
    domain: str
    entity: str

    def key(self) -> str:
        """As `StoreStats.counts` names it."""
        return f"{self.collection.value}/{self.domain}/{self.entity}"

    def missing(self) -> str:
        """Why a request of this scope cannot be served from the store."""
        return f"no {WHAT[self.collection]} for {self.domain}/{self.entity} in the pattern store"


def collection_for(request: GenerateRequest) -> Collection:
    """defect_triggering -> defects, production_like -> production samples, else patterns."""
    if request.defect_triggering:
        return Collection.DEFECTS
    if request.production_like:
        return Collection.PRODUCTION
    return Collection.PATTERNS


def scope_of(request: GenerateRequest, schema: EntitySchema) -> Scope:
    """The request's domain (else its entity's) and the plan's entity name."""
    domain = (request.domain or schema.domain or "custom").strip().lower()
    return Scope(collection_for(request), domain, schema.name)
