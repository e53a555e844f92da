"""RAG path service: the rag topic in, records varied from retrieved patterns out.

One retrieval per request (its collection, domain and entity; `rag_top_k` patterns), then
pure variation (services/core/variation.py) batch by batch, so a request's records do not
depend on chunking and the same request over the same store regenerates them. The pattern
ids and the number of examples used reach the final metadata; the retrieved patterns'
usage counts go up in the background.

When retrieval fails or finds nothing (the router only sends requests whose patterns it
saw, but the store may fail or change meanwhile) the request is served by the traditional
generator, and the run's fallbacks say why; so are single records whose example cannot
fit the request's constraints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import cached_property
from typing import Any

from services.core.coherence import score_records
from services.core.generate import generate_records
from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.report import TRADITIONAL_BACKEND, Batch, Fallback
from services.core.variation import Variation
from services.kit.ops import metrics
from services.kit.path.generation import (
    SIZING_SAMPLE,
    SLICE,
    Availability,
    Budget,
    PathService,
    batch_bounds,
    records_per_chunk,
)
from services.kit.settings import Settings
from services.patterns.availability import StoreAvailability
from services.rag.retrieval import Retrieval, UsageMarker, retrieve

# Records scored per batch: a fixed sample (deterministic). Smaller than the traditional
# path's 50: scoring cost ~15% of a 100-record request, and varied records score like
# their examples.
COHERENCE_SAMPLE = 25
STORE_BACKEND = "pattern_store"

# (start, stop) -> (records, indexes among them that came from the traditional generator)
Producer = Callable[[int, int], tuple[list[dict[str, Any]], list[int]]]


def _traditional(plan: Plan) -> Producer:
    return lambda lo, hi: (generate_records(plan, lo, hi), [])


def _varied(variation: Variation) -> Producer:
    def produce(lo: int, hi: int) -> tuple[list[dict[str, Any]], list[int]]:
        got = variation.records(lo, hi)
        return got.records, got.traditional

    return produce


async def produce_batches(
    plan: Plan,
    produce: Producer,
    chunk_size: int,
    *,
    backend: str,
    model: str = "",
    first: dict[str, Any] | None = None,
    last_note: Callable[[int], Fallback | None] | None = None,
) -> AsyncIterator[Batch]:
    """Every record of `plan` in batches sized like the traditional path's (a small
    first one), yielding to other requests between slices. `first` goes into the first
    batch; `last_note(n)`, given how many records came from the traditional generator,
    into the last one."""
    head, head_trad = produce(0, min(plan.count, SIZING_SAMPLE))
    size = records_per_chunk(head, chunk_size)
    bounds = batch_bounds(plan.count, size)
    traditional = 0
    for k, (start, stop) in enumerate(bounds):
        records: list[dict[str, Any]] = []
        for lo in range(start, stop, SLICE):
            hi = min(lo + SLICE, stop)
            from_head = head[lo:hi]
            traditional += sum(1 for i in head_trad if lo <= i < hi)
            records += from_head
            if hi > len(head):
                more, trad = produce(max(lo, len(head)), hi)
                records += more
                traditional += len(trad)
            if hi < stop:
                await asyncio.sleep(0)  # a small request's turn comes within a slice
        sample = records[:COHERENCE_SAMPLE]
        score = score_records(plan.schema.name, sample) if plan.composer else None
        batch = Batch(
            records=records,
            backend=backend,
            model=model,
            coherence=score,
            scored=len(sample) if score is not None else 0,
        )
        if k == 0 and first:
            batch = batch.model_copy(update=first)
        if k == len(bounds) - 1 and last_note is not None and (note := last_note(traditional)):
            batch.fallbacks.append(note)
        yield batch


class RagService(PathService):
    path = GenerationPath.RAG

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        return StoreAvailability.shared(settings.store)

    @cached_property
    def store(self) -> StoreAvailability:
        assert isinstance(self.availability, StoreAvailability)
        return self.availability

    @cached_property
    def usage(self) -> UsageMarker:
        return UsageMarker(self.store)

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        got = await retrieve(self.store, plan, self.rt.settings.store)
        if got.failure is not None:
            metrics.FALLBACKS.labels("rag", TRADITIONAL_BACKEND, "retrieval").inc()
            note = Fallback(source="rag", target=TRADITIONAL_BACKEND, reason=got.failure)
            async for batch in produce_batches(
                plan,
                _traditional(plan),
                self.chunk_size,
                backend=TRADITIONAL_BACKEND,
                first={"fallbacks": [note]},
            ):
                yield batch
            return
        self.usage.mark(got)
        variation = Variation(plan, got.examples)
        async for batch in produce_batches(
            plan,
            _varied(variation),
            self.chunk_size,
            backend=STORE_BACKEND,
            model=self.store_backend(),
            first={"pattern_ids": got.pattern_ids, "rag_examples": len(got.examples)},
            last_note=lambda n: self._unfit(plan, got, variation, n),
        ):
            yield batch

    def store_backend(self) -> str:
        s = self.store._store
        return getattr(s, "backend", "") if s is not None else ""

    @staticmethod
    def _unfit(plan: Plan, got: Retrieval, variation: Variation, n: int) -> Fallback | None:
        if n == 0:
            return None
        metrics.FALLBACKS.labels("rag", TRADITIONAL_BACKEND, "examples_unfit").inc(n)
        why = f"; {variation.unfit[0]}" if variation.unfit else ""
        return Fallback(
            source="rag",
            target=TRADITIONAL_BACKEND,
            reason=f"{n} of {plan.count} records: the retrieved examples do not fit the "
            f"request's constraints{why}",
        )
