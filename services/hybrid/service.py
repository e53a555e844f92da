"""Hybrid path service: retrieval as on the RAG path, then the LLM engine writes the
records with the retrieved examples in its prompt (the RAG template), or the retrieved
defect patterns for a defect request (the edge-case template).

It needs both the pattern store and an LLM backend; the router sends hybrid requests
elsewhere when either is missing. If retrieval fails or finds nothing once a request is
here, the LLM writes without examples and the run's fallbacks say so; the engine's own
fallbacks (other backend, traditional records) are reported as on the LLM path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from functools import cached_property
from typing import Any

from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.report import Batch, Fallback
from services.kit.ops import metrics
from services.kit.path.generation import Availability, Budget, PathService
from services.kit.settings import Settings
from services.llm import LLMAvailability, LLMEngine
from services.patterns.availability import StoreAvailability
from services.patterns.store import Collection
from services.rag import UsageMarker, retrieve


class HybridAvailability:
    """Serves while both the pattern store and an LLM backend answer."""

    def __init__(self, store: StoreAvailability, llm: LLMAvailability):
        self.store = store
        self.llm = llm

    @property
    def reason(self) -> str | None:
        return self.llm.reason or self.store.reason

    async def refresh(self) -> None:
        await self.store.refresh()
        await self.llm.refresh()

    async def components(self) -> Mapping[str, str]:
        return {**(await self.store.components()), **(await self.llm.components())}

    async def aclose(self) -> None:
        await self.store.aclose()
        await self.llm.aclose()


class HybridService(PathService):
    path = GenerationPath.HYBRID

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        return HybridAvailability(
            StoreAvailability.shared(settings.store), LLMAvailability(settings.llm)
        )

    @cached_property
    def parts(self) -> HybridAvailability:
        assert isinstance(self.availability, HybridAvailability)
        return self.availability

    @cached_property
    def engine(self) -> LLMEngine:
        """Built on first use, on the clients of this path's probe (one set of clients)."""
        return LLMEngine.from_settings(self.rt.settings, clients=self.parts.llm.clients)

    @cached_property
    def usage(self) -> UsageMarker:
        return UsageMarker(self.parts.store)

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        got = await retrieve(self.parts.store, plan, self.rt.settings.store)
        first: dict[str, Any]
        if got.failure is not None:
            metrics.FALLBACKS.labels("hybrid", "llm", "retrieval").inc()
            first = {"fallbacks": [Fallback(source="hybrid", target="llm", reason=got.failure)]}
            run = self.engine.run(plan)
        else:
            self.usage.mark(got)
            first = {"pattern_ids": got.pattern_ids, "rag_examples": len(got.examples)}
            records = got.records()
            defects = got.scope.collection == Collection.DEFECTS
            run = self.engine.run(
                plan,
                rag_examples=None if defects else records,
                defect_patterns=records if defects else None,
            )
        async with run:
            async for batch in run:
                if first:  # what retrieval did goes with the first batch
                    notes = [*first.pop("fallbacks", []), *batch.fallbacks]
                    batch = batch.model_copy(update={**first, "fallbacks": notes})
                    first = {}
                yield batch
