"""The traditional path: coherent records from curated catalogues and pinned Faker pools.

A pure function of (plan, index) underneath (services/core/generate.py), so chunks can be
generated in any order and a redelivered request regenerates identical bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from services.core.coherence import score_records
from services.core.generate import generate_records
from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.report import TRADITIONAL_BACKEND, Batch
from services.kit.generation import (
    SIZING_SAMPLE,
    SLICE,
    PathService,
    batch_bounds,
    records_per_chunk,
)

COHERENCE_SAMPLE = 50  # records scored per batch: scoring everything would cost as much as
# generating it; a fixed per-batch sample keeps the score deterministic.


class TraditionalService(PathService):
    path = GenerationPath.TRADITIONAL

    async def generate(self, plan: Plan) -> AsyncIterator[Batch]:
        head = generate_records(plan, 0, min(plan.count, SIZING_SAMPLE))
        size = records_per_chunk(head, self.chunk_size)
        for start, stop in batch_bounds(plan.count, size):
            records: list[dict[str, Any]] = []
            for lo in range(start, stop, SLICE):
                hi = min(lo + SLICE, stop)
                # the sizing sample is the output's start: not generated twice
                records += head[lo:hi] + generate_records(plan, max(lo, len(head)), hi)
                if hi < stop:
                    await asyncio.sleep(0)  # a small request's turn comes within a slice
            sample = records[:COHERENCE_SAMPLE]
            score = score_records(plan.schema.name, sample)
            yield Batch(
                records=records,
                backend=TRADITIONAL_BACKEND,
                coherence=score,
                scored=len(sample) if score is not None else 0,
            )
