"""LLM path service: the llm topic in, one chunk per finished batch out.

The engine yields batches in index order as soon as each is done, so a stream's first
chunk leaves after one model call. Which backend served, tokens, retries and every
fallback step go into the final chunk's metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.registry import SchemaRegistry
from services.generator.service import Metadata, Outcome, PathService
from services.kit.emit import ChunkEmitter
from services.kit.stream import Runtime
from services.llm.engine import LLMBatch, LLMEngine

if TYPE_CHECKING:
    from services.app import LLMAvailability


class LLMService(PathService):
    path = GenerationPath.LLM

    def __init__(self, runtime: Runtime, registry: SchemaRegistry, availability: LLMAvailability):
        super().__init__(runtime, registry)
        self.engine = LLMEngine.from_settings(runtime.settings, clients=availability.clients)

    async def produce(
        self,
        plan: Plan,
        emitter: ChunkEmitter,
        outcome: Outcome,
        final_metadata: Metadata,
    ) -> None:
        backends: list[str] = []
        async with self.engine.run(plan) as run:
            async for batch in run:
                self._account(batch, outcome, backends)
                last = batch.stop == plan.count
                await emitter.emit(batch.records, last, final_metadata() if last else None)

    @staticmethod
    def _account(batch: LLMBatch, outcome: Outcome, backends: list[str]) -> None:
        outcome.tokens += batch.tokens
        outcome.retries += batch.retries
        outcome.fallbacks.extend(f for f in batch.fallbacks if f not in outcome.fallbacks)
        used = f"{batch.backend}:{batch.model}" if batch.model else batch.backend
        if used not in backends:
            backends.append(used)
        outcome.backend = ", ".join(backends)
        outcome.add_coherence(batch.coherence, len(batch.records))
