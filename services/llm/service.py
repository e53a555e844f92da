"""LLM path service: the llm topic in, one chunk per finished batch out.

The engine yields batches in index order as soon as each is done, so a stream's first
chunk leaves after one model call. Which backend served, tokens, retries and every
fallback step reach the final chunk's metadata through the run report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.registry import SchemaRegistry
from services.core.report import Batch
from services.kit.control import Cancellations
from services.kit.generation import Availability, PathService
from services.kit.settings import Settings
from services.kit.stream import Runtime
from services.llm.availability import LLMAvailability
from services.llm.engine import LLMEngine


class LLMService(PathService):
    path = GenerationPath.LLM

    def __init__(
        self,
        runtime: Runtime,
        registry: SchemaRegistry,
        availability: Availability | None = None,
        cancellations: Cancellations | None = None,
    ):
        llm = availability if isinstance(availability, LLMAvailability) else None
        llm = llm or LLMAvailability(runtime.settings)
        super().__init__(runtime, registry, llm, cancellations)
        self.engine = LLMEngine.from_settings(runtime.settings, clients=llm.clients)

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        return LLMAvailability(settings)

    async def generate(self, plan: Plan) -> AsyncIterator[Batch]:
        async with self.engine.run(plan) as run:
            async for batch in run:
                yield batch
