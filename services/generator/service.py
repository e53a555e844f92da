"""Path generator services: a path topic in, ordered result chunks out.

`PathService` holds what every path shares (decode, plan, metadata, failure handling,
metrics); a path supplies `produce()`, which emits the records. The traditional path is
here; the LLM path (services/llm/service.py) subclasses the same base.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import orjson

from services.core.coherence import score_records
from services.core.entities import ConstraintUnsatisfiable
from services.core.generate import generate_records
from services.core.models import GenerationPath, RequestInvalid
from services.core.plan import Limits, Plan, build_plan
from services.core.pools import GENERATOR_VERSION
from services.core.registry import SchemaRegistry
from services.kit import metrics
from services.kit.codec import DecodeError
from services.kit.emit import ChunkEmitter
from services.kit.messages import GenerationMetadata, RoutedRequest
from services.kit.replies import send_failure
from services.kit.stream import Message, Runtime, Subscriber

log = logging.getLogger("testdata.generator")
Metadata = Callable[[], GenerationMetadata]
MAX_CHUNK_BYTES = 2 * 1024 * 1024  # well under the 8 MiB record limit, in any format
COHERENCE_SAMPLE = 50  # records scored per chunk: scoring everything would cost as much as
# generating it; a fixed per-chunk sample keeps the score deterministic.


class Outcome:
    """What a path reports back for the final chunk's metadata."""

    def __init__(self) -> None:
        self.coherence_sum = 0.0
        self.coherence_n = 0
        self.tokens = 0
        self.retries = 0
        self.fallbacks: list[str] = []
        self.backend = ""

    def add_coherence(self, score: float | None, n: int) -> None:
        if score is not None:
            self.coherence_sum += score * n
            self.coherence_n += n

    @property
    def coherence(self) -> float | None:
        return self.coherence_sum / self.coherence_n if self.coherence_n else None


class PathService(ABC):
    path: GenerationPath

    def __init__(self, runtime: Runtime, registry: SchemaRegistry):
        self.rt = runtime
        self.registry = registry
        s = runtime.settings
        self.limits = Limits(max_records=s.max_records, default_count=s.default_count)
        self.chunk_size = s.chunk_size

    @property
    def name(self) -> str:
        return f"generator-{self.path.value}"

    def subscriber(self) -> Subscriber:
        topic = self.rt.topics.path(self.path)
        return Subscriber(self.rt, self.name, [topic], f"{topic}.{self.name}", self.handle)

    async def handle(self, msg: Message) -> None:
        try:
            routed = self.rt.codec.decode_routed(msg.value)
        except DecodeError as exc:
            await self.rt.dead_letter(msg, self.name, exc.kind, exc.reason)
            return
        req = routed.request
        try:
            plan = build_plan(req, self.registry, self.limits)
        except RequestInvalid as exc:
            await self.rt.dead_letter(
                msg, self.name, "invalid_request", str(exc), exc.errors, req.request_id
            )
            await send_failure(
                self.rt,
                msg,
                req.request_id,
                f"invalid request: {exc}",
                exc.errors,
                fmt=req.output_format,
            )
            return
        t0 = time.perf_counter()
        emitter = ChunkEmitter(
            self.rt, msg, req.request_id, plan.schema, req.output_format, self.path.value
        )
        outcome = Outcome()
        status = "success"
        try:
            await self.produce(
                plan,
                emitter,
                outcome,
                lambda: self.metadata(plan, routed, outcome, t0, emitter),
            )
        except ConstraintUnsatisfiable as exc:
            status = "failed"
            await self._failed(
                msg,
                emitter,
                "generation",
                f"generation failed: {exc}",
                self.metadata(plan, routed, outcome, t0, emitter),
            )
        except Exception as exc:
            status = "failed"
            log.exception("%s: generation failed", req.request_id)
            await self._failed(
                msg,
                emitter,
                "processing",
                f"internal error: {type(exc).__name__}: {exc}",
                self.metadata(plan, routed, outcome, t0, emitter),
            )
        await emitter.close()
        elapsed = time.perf_counter() - t0
        metrics.REQUESTS.labels(self.path.value, req.domain, plan.schema.name, status).inc()
        metrics.GENERATION_SECONDS.labels(self.path.value).observe(elapsed)
        metrics.RECORDS.labels(req.domain, plan.schema.name).inc(emitter.records)
        if outcome.coherence is not None:
            metrics.COHERENCE.labels(req.domain or "none").observe(outcome.coherence)
        log.info(
            "%s: %d records in %d chunks, %.1f ms",
            req.request_id,
            emitter.records,
            emitter.index,
            elapsed * 1000,
        )

    async def _failed(
        self,
        msg: Message,
        emitter: ChunkEmitter,
        kind: str,
        error: str,
        metadata: GenerationMetadata,
    ) -> None:
        """Park the request and end its stream with a failed final chunk."""
        await self.rt.dead_letter(msg, self.name, kind, error, request_id=emitter.request_id)
        await emitter.fail(error, metadata)

    def metadata(
        self, plan: Plan, routed: RoutedRequest, outcome: Outcome, t0: float, emitter: ChunkEmitter
    ) -> GenerationMetadata:
        r = routed.routing
        return GenerationMetadata(
            generation_path=self.path.value,
            routing_reason=r.reason,
            routing_confidence=r.confidence,
            requested_path=r.requested_path.value,
            fallbacks=[*r.fallbacks, *outcome.fallbacks],
            llm_tokens_used=outcome.tokens,
            generation_time_ms=(time.perf_counter() - t0) * 1000,
            coherence_score=outcome.coherence,
            scenario_counts=plan.scenario_counts(),
            generator_version=GENERATOR_VERSION,
            seed=plan.seed,
            anchor=plan.anchor.isoformat().replace("+00:00", "Z"),
            record_count=plan.count,
            backend=outcome.backend,
            retries=outcome.retries,
        )

    @abstractmethod
    async def produce(
        self,
        plan: Plan,
        emitter: ChunkEmitter,
        outcome: Outcome,
        final_metadata: Metadata,
    ) -> None:
        """Emit every record of the plan, in index order, the last chunk with metadata."""


SIZING_SAMPLE = 20


def records_per_chunk(head: list[dict[str, Any]], limit: int) -> int:
    """At most `limit` records, and few enough that a chunk stays near MAX_CHUNK_BYTES,
    judged by the plan's first records (deterministic for a given request)."""
    per_record = max(1, len(orjson.dumps(head)) // max(1, len(head)))
    return max(1, min(limit, MAX_CHUNK_BYTES // per_record))


class TraditionalService(PathService):
    path = GenerationPath.TRADITIONAL

    async def produce(
        self,
        plan: Plan,
        emitter: ChunkEmitter,
        outcome: Outcome,
        final_metadata: Metadata,
    ) -> None:
        head = generate_records(plan, 0, min(plan.count, SIZING_SAMPLE))
        size = records_per_chunk(head, self.chunk_size)
        for start in range(0, plan.count, size):
            stop = min(start + size, plan.count)
            # the sizing sample is the output's start: not generated twice
            records = head[start:stop] + generate_records(plan, max(start, len(head)), stop)
            sample = records[:COHERENCE_SAMPLE]
            outcome.add_coherence(score_records(plan.schema.name, sample), len(sample))
            last = stop == plan.count
            await emitter.emit(records, last, final_metadata() if last else None)
