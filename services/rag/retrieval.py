"""Retrieval for the RAG and hybrid paths: a request's best-matching stored patterns.

The collection follows the request (defects, production samples or patterns), the filter
is its domain and entity, and the query its own words (context, scenario names and
descriptions, hints); a request with none ranks its scope by meaning alone. Whatever goes
wrong is an answer, not an exception: `failure` says why nothing was retrieved, and the
path falls back with that reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core.plan import Plan
from services.core.validate import EDGE_CASE_KEY
from services.core.variation import DEFAULT_EDGE_CASE, Example
from services.kit.settings import StoreSettings
from services.kit.wire.tenancy import CURRENT
from services.patterns.availability import StoreAvailability
from services.patterns.scope import Scope, scope_of
from services.patterns.store import Collection, Hit

log = logging.getLogger("testdata.rag")
MAX_QUERY_CHARS = 1000
MAX_EXAMPLES = 100  # example records taken from the hits, best first
TRIGGERS = ("similar", "pattern", "patterns", "historical", "history")
_WORD = re.compile(r"[\w'-]+")


@dataclass
class Retrieval:
    scope: Scope
    hits: list[Hit] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    failure: str | None = None  # why there is nothing to use

    @property
    def pattern_ids(self) -> list[str]:
        return [h.pattern.id for h in self.hits]

    def records(self) -> list[dict[str, Any]]:
        """The examples as plain records (a defect's type in `_edge_case_type`)."""
        out = []
        for ex in self.examples:
            rec = {k: v for k, v in ex.record.items() if k not in ("_index", "_scenario")}
            if ex.edge_case is not None:
                rec[EDGE_CASE_KEY] = ex.edge_case
            out.append(rec)
        return out


def query_text(plan: Plan) -> str:
    """What the request asks for in words: context, scenario names and descriptions, hints.
    Words the filter already pins (domain, entity) and the words that only asked for
    retrieval ("similar", "pattern", "historical") are left out: every pattern in scope
    matches them, so they would only make the keyword leg rank the whole scope."""
    req = plan.request
    scope = scope_of(req, plan.schema)
    words = [req.context]
    for s in req.scenarios:
        words += [s.name.replace("_", " "), s.description]
    words += req.hints
    filler = {scope.domain, scope.entity, f"{scope.entity}s", *TRIGGERS}
    text = " ".join(w.strip() for w in words if w and w.strip())[:MAX_QUERY_CHARS]
    return " ".join(t for t in _WORD.findall(text) if t.lower() not in filler)


def search_terms(plan: Plan, settings: StoreSettings) -> tuple[str, float]:
    """(query, alpha): the request's own words with the configured ranking weight; with
    none, the scope's name ranked by meaning alone (every pattern in scope would match
    its words as keywords)."""
    if text := query_text(plan):
        return text, settings.rag_alpha
    scope = scope_of(plan.request, plan.schema)
    return f"{scope.domain} {scope.entity}", 1.0


def examples_of(hits: Sequence[Hit], collection: Collection) -> list[Example]:
    out: list[Example] = []
    for h in hits:
        kind = (
            (h.pattern.defect_type or DEFAULT_EDGE_CASE)
            if collection == Collection.DEFECTS
            else None
        )
        out += [
            Example(r, edge_case=kind, key=f"{h.pattern.id}:{j}" if h.pattern.id else "")
            for j, r in enumerate(h.pattern.records)
            if isinstance(r, dict)
        ]
    return out[:MAX_EXAMPLES]


async def retrieve(store: StoreAvailability, plan: Plan, settings: StoreSettings) -> Retrieval:
    """The request's top patterns; a failed or empty retrieval says why in `failure`."""
    scope = scope_of(plan.request, plan.schema)
    got = Retrieval(scope=scope)
    try:
        s = await store.store()
        query, alpha = search_terms(plan, settings)
        got.hits = await store.bounded(
            s.search(
                scope.collection,
                query,
                domain=scope.domain,
                entity=scope.entity,
                top_k=settings.rag_top_k,
                alpha=alpha,
                tenant=CURRENT.get(),  # the tenant's learned patterns and shared ones
            )
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the path falls back and says why
        got.failure = store.failed(exc)
        return got
    got.examples = examples_of(got.hits, scope.collection)
    if not got.examples:
        got.failure = scope.missing()
    return got


class UsageMarker:
    """Raises usage counts of retrieved patterns in the background, best effort: a
    request never waits for it nor fails because of it."""

    def __init__(self, store: StoreAvailability):
        self.store = store
        self.pending: set[asyncio.Task[None]] = set()

    def mark(self, got: Retrieval) -> None:
        if not got.hits:
            return
        task = asyncio.create_task(self._mark(got.scope.collection, got.pattern_ids))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _mark(self, collection: Collection, ids: list[str]) -> None:
        try:
            s = await self.store.store()
            await self.store.bounded(s.mark_used(collection, ids))
        except Exception as exc:  # noqa: BLE001 - usage counts are a hint, not a duty
            log.warning("could not mark %d patterns used: %s", len(ids), exc)

    async def drain(self) -> None:
        for task in list(self.pending):
            with contextlib.suppress(BaseException):
                await task
