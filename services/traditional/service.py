"""The traditional path: coherent records from curated catalogues and pinned Faker pools.

A pure function of (plan, index) underneath (services/core/generate.py), so chunks can be
generated in any order and a redelivered request regenerates identical bytes.

Generation is synchronous CPU work on the event loop that every request of the process
(and the consumer's heartbeats) shares, so it runs in slices sized by time, not by count:
a slice takes about SLICE_SECONDS whatever a record costs (13 us for a product, 40 ms for
a 10,000-field custom record), and other requests get their turn between slices. With a
fixed 256-record slice, such a custom record held the loop for 10 s at a time: neighbours
waited that long and the consumer's session expired.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from services.core.coherence import score_records
from services.core.generate import iter_records
from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.report import TRADITIONAL_BACKEND, Batch
from services.kit.path.generation import (
    SIZING_SAMPLE,
    Budget,
    PathService,
    batch_bounds,
    records_per_chunk,
)

COHERENCE_SAMPLE = 50  # records scored per batch: scoring everything would cost as much as
# generating it; a fixed per-batch sample keeps the score deterministic.
# Work between turns of other requests. 5 ms: 256 carts took 6.7 ms before, so neighbours
# wait no longer than they did; the turns cost ~0.3% of a 1,000,000-cart stream.
SLICE_SECONDS = 0.005
MAX_SLICE = 4096  # records per slice at most, however cheap they seem
SLICE_GROWTH = 4  # a slice at most this many times the last one (one fast slice is noise)


@dataclass
class SlicePacer:
    """How many records the next slice may hold for it to take about `target_s`, from the
    time the last slice took. The first slice is one record: a request's first record
    may cost anything, and one record is the least a slice can be."""

    target_s: float = SLICE_SECONDS
    max_records: int = MAX_SLICE
    growth: int = SLICE_GROWTH
    _last: int = 0
    _per_record_s: float | None = None

    def size(self, wanted: int) -> int:
        """Records for the next slice, at most `wanted` (and at least 1 if it is > 0)."""
        if self._per_record_s is None:
            n = 1
        else:
            fit = int(self.target_s / self._per_record_s) if self._per_record_s > 0 else wanted
            n = min(fit, self._last * self.growth, self.max_records)
        return max(1, min(n, wanted))

    def took(self, records: int, seconds: float) -> None:
        """The last slice made `records` records in `seconds`."""
        if records > 0:
            self._last = records
            self._per_record_s = seconds / records


class TraditionalService(PathService):
    path = GenerationPath.TRADITIONAL

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        # One lazy sequence for the whole request: slices of any size, no block replays.
        source = iter_records(plan, 0, plan.count, should_stop=budget.spent)
        pacer = SlicePacer()
        head = await _take(source, min(plan.count, SIZING_SAMPLE), pacer)
        size = records_per_chunk(head, self.chunk_size)
        for start, stop in batch_bounds(plan.count, size):
            records = head[start:stop]  # the sizing sample is the output's start
            if (more := stop - max(start, len(head))) > 0:
                records += await _take(source, more, pacer)
            sample = records[:COHERENCE_SAMPLE]
            score = score_records(plan.schema.name, sample) if plan.composer else None
            yield Batch(
                records=records,
                backend=TRADITIONAL_BACKEND,
                coherence=score,
                scored=len(sample) if score is not None else 0,
            )


async def _take(
    source: Iterator[dict[str, Any]], count: int, pacer: SlicePacer
) -> list[dict[str, Any]]:
    """The next `count` records, in timed slices with other requests' turns between."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        n = pacer.size(count - len(out))
        had = len(out)
        t0 = time.perf_counter()
        out.extend(islice(source, n))
        pacer.took(n, time.perf_counter() - t0)
        if len(out) - had < n:
            break  # the plan's end: the base reports the shortfall
        if len(out) < count:
            await asyncio.sleep(0)  # a small request's turn comes within a slice
    return out
