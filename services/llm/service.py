"""LLM path service: the llm topic in, one chunk per finished batch out.

The engine yields batches in index order as soon as each is done, so a stream's first
chunk leaves after one model call. Which backend served, tokens, retries and every
fallback step reach the final chunk's metadata through the run report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cached_property

from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.report import Batch
from services.kit.path.generation import Availability, Budget, PathService
from services.kit.settings import Settings
from services.llm.availability import LLMAvailability
from services.llm.engine import LLMEngine


class LLMService(PathService):
    path = GenerationPath.LLM

    @cached_property
    def engine(self) -> LLMEngine:
        """Built on first use, on the clients of this path's probe (one set of clients)."""
        assert isinstance(self.availability, LLMAvailability)
        return LLMEngine.from_settings(self.rt.settings, clients=self.availability.clients)

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        return LLMAvailability(settings.llm)

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        # The base cancels the run (its model calls too) when `budget` runs out.
        async with self.engine.run(plan) as run:
            async for batch in run:
                yield batch
