"""The base of every generation path: a path topic in, ordered result chunks out.

A path implements one async generator, `generate(plan, budget)`, yielding `Batch`es of
records in index order. Everything else is here, the same for every path: decoding and
planning the routed request, chunking by records and bytes, the final chunk and its
metadata (from one `RunReport`), metrics, and failure handling. A path that stops before
producing every planned record, or produces more, fails the request and the caller is
told why; nobody waits for a final chunk that will never come.

Every request gets a time `Budget` (GENERATION_BUDGET_SECONDS, or less if the caller's
deadline comes first): whatever a path awaits is cancelled when it runs out, so a request
that costs far more than its validation foresaw cannot keep a generator busy for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, ClassVar, Protocol

import orjson

from services.core.admission import Planner
from services.core.coherence import SCORERS
from services.core.errors import ConstraintUnsatisfiable, GenerationStopped, RequestInvalid
from services.core.models import GenerationPath
from services.core.plan import Plan
from services.core.pools import GENERATOR_VERSION
from services.core.registry import SchemaRegistry
from services.core.report import INTERNAL_ERROR, Batch, ErrorKind, RunReport
from services.kit.ops import metrics
from services.kit.path.attempt import AttemptLease
from services.kit.path.errors import Abandoned, OverBudget, PathIncomplete
from services.kit.path.outcomes import (
    Sample,
    build_outcome,
    learn_rules,
    opts_out,
    path_learnable,
    publish_outcome,
    request_fingerprint,
    shaped,
)
from services.kit.path.resultcache import ResultCache, answered_from_cache
from services.kit.redis.keystore import KeyStore
from services.kit.runtime.control import Cancellations, deadline_of, deadline_passed
from services.kit.runtime.emit import ChunkEmitter
from services.kit.runtime.replies import answer_failure, resolve_reply_topic, send_failure
from services.kit.runtime.stream import Message, Runtime, Subscriber
from services.kit.settings import Settings
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import CORRELATION, REPLY_TO, RUN
from services.kit.wire.messages import GenerationMetadata, Interpretation, RoutedRequest
from services.kit.wire.tenancy import CURRENT, origin

log = logging.getLogger("testdata.generation")
MAX_CHUNK_BYTES = 2 * 1024 * 1024  # well under the 8 MiB record limit, in any format
SIZING_SAMPLE = 20  # records whose encoded size decides how many fit in a chunk


class Availability(Protocol):
    """Whether a path can serve now: `reason` is None when it can, else why not.
    The router asks it before choosing the path; HealthCheck shows `components()`."""

    @property
    def reason(self) -> str | None: ...

    async def refresh(self) -> None: ...

    async def components(self) -> Mapping[str, str]: ...

    async def aclose(self) -> None: ...


class AlwaysAvailable:
    """A path that needs nothing outside its process."""

    reason: str | None = None

    async def refresh(self) -> None:
        return None

    async def components(self) -> Mapping[str, str]:
        return {}

    async def aclose(self) -> None:
        return None


def records_per_chunk(head: list[dict[str, Any]], limit: int) -> int:
    """At most `limit` records, and few enough that a chunk stays near MAX_CHUNK_BYTES,
    judged by a run's first records (so deterministic for a given request)."""
    head = head[:SIZING_SAMPLE]
    per_record = max(1, len(orjson.dumps(head)) // max(1, len(head)))
    return max(1, min(limit, MAX_CHUNK_BYTES // per_record))


FIRST_BATCH = 128  # a stream's first chunk leaves after ~2 ms of work, whatever its size
SLICE = 256  # records generated between turns of other requests (multiples of the RNG block)


def batch_bounds(count: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch: a small first one, then `size` records each."""
    first = min(count, size, FIRST_BATCH)
    bounds = [(0, first)] if first else []
    bounds += [(lo, min(lo + size, count)) for lo in range(first, count, size)]
    return bounds


def chunk_bounds(count: int, chunks: int, last: int) -> list[tuple[int, int]] | None:
    """The [start, stop) of each chunk of a dataset `batch_bounds` cut into `chunks`
    chunks, the last holding `last` records (what its final chunk on the log says); None
    if no chunk size gives that. SQL's INSERT statements end at chunk ends, so a rebuilt
    SQL dataset has its delivered bytes only when cut where the delivery was."""
    if chunks <= 1:
        return [(0, count)] if chunks == 1 and last == count else None
    if chunks == 2:  # the first is FIRST_BATCH, or the size itself and not below `last`
        first = count - last
        ok = last > 0 and (first == FIRST_BATCH or (0 < first < FIRST_BATCH and last <= first))
        return [(0, first), (first, count)] if ok else None
    sizes = []  # the first chunk is FIRST_BATCH (size above it) or the size (below it)
    if (count - FIRST_BATCH - last) % (chunks - 2) == 0:
        sizes.append((count - FIRST_BATCH - last) // (chunks - 2))
    if (count - last) % (chunks - 1) == 0:
        sizes.append((count - last) // (chunks - 1))
    for size in sizes:
        if size > 0:
            bounds = batch_bounds(count, size)
            if len(bounds) == chunks and bounds[-1][1] - bounds[-1][0] == last:
                return bounds
    return None


@dataclass(frozen=True)
class Budget:
    """Until when one request may keep its path busy (monotonic clock): the generation
    budget, or the caller's deadline when that comes first (nobody waits after it).

    The base enforces it around every batch a path produces, cancelling whatever the path
    awaits when it runs out, and between chunks. Code that runs without awaiting cannot be
    cancelled, so a path doing long synchronous work also checks `spent` inside it (the
    traditional path hands it to core as `should_stop`).
    """

    seconds: float
    started: float
    caller_ends: float | None = None

    @classmethod
    def start(cls, seconds: float, deadline_ms: int | None = None) -> Budget:
        """From now; `deadline_ms` is the caller's deadline in epoch ms, if it sent one."""
        now = time.monotonic()
        caller = None if deadline_ms is None else now + deadline_ms / 1000 - time.time()
        return cls(seconds, now, caller)

    @property
    def ends(self) -> float:
        own = self.started + self.seconds
        return own if self.caller_ends is None else min(own, self.caller_ends)

    def spent(self) -> bool:
        return time.monotonic() >= self.ends

    def stop(self, done: int, count: int) -> Abandoned | OverBudget:
        """What ended the request: its caller's deadline (EXPIRED: nobody waits, so it is
        not dead-lettered) or the budget (dead-lettered, its caller told)."""
        if self.caller_ends is not None and self.caller_ends < self.started + self.seconds:
            return Abandoned(ErrorKind.EXPIRED, f"deadline passed after {done} of {count} records")
        return OverBudget(
            f"generation budget of {self.seconds:g} s spent after {done} of {count} records "
            "(GENERATION_BUDGET_SECONDS); ask for fewer or simpler records"
        )


class RunEnd(StrEnum):
    """How a run on a path ended; `status` is its `testdata_requests_total` label."""

    SUCCESS = "success"
    ABANDONED = "abandoned"  # cancelled, past its deadline, or nobody waits any more
    OVER_BUDGET = "over_budget"
    FAILED = "failed"
    #: delivered in full, then failed (an outcome or a cache entry would be unsure)
    FAILED_AFTER_FINAL = "failed_after_final"

    @property
    def status(self) -> str:
        return "success" if self is RunEnd.FAILED_AFTER_FINAL else self.value


@dataclass
class Run:
    """One request's run on a path: what the steps of `PathService._run` share. Made when
    its emitter is; `end` is SUCCESS until a failure sets it (once). Only a SUCCESS run
    feeds the learner and the result cache."""

    msg: Message
    routed: RoutedRequest
    plan: Plan
    budget: Budget
    emitter: ChunkEmitter
    sample: Sample
    describe: Callable[[RunReport, float], GenerationMetadata]
    report: RunReport = field(default_factory=RunReport)
    t0: float = field(default_factory=time.perf_counter)
    end: RunEnd = RunEnd.SUCCESS

    def final(self) -> GenerationMetadata:
        """The final chunk's metadata, as of now (timing and the report so far)."""
        return self.describe(self.report, self.t0)


class PathService(ABC):
    """One generation path as a consumer of its path topic."""

    path: ClassVar[GenerationPath]
    #: Whether a rerun of a request yields the same chunks (then runs carry no run id).

    def __init__(
        self,
        runtime: Runtime,
        registry: SchemaRegistry,
        availability: Availability | None = None,
        cancellations: Cancellations | None = None,
    ):
        self.rt = runtime
        self.registry = registry
        self.availability = availability or self.probe(runtime.settings)
        self.cancellations = cancellations if cancellations is not None else Cancellations()
        s = runtime.settings
        self.planner = Planner(registry, s.limits)
        self.chunk_size = s.chunk_size
        self.budget_seconds = s.generation_budget_seconds
        self.learn_rules = learn_rules(s.learn_paths)
        # Redis (set by the process): leases so a redelivered request is not run twice.
        self.keystore = KeyStore(None)

    @classmethod
    def probe(cls, settings: Settings) -> Availability:
        """The path's availability probe; a path with outside dependencies overrides it."""
        return AlwaysAvailable()

    @property
    def name(self) -> str:
        return f"generator-{self.path.value}"

    @abstractmethod
    def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        """Every record of the plan, in index order, in batches (each batch becomes one
        or more chunks at once, so yield early for a fast first chunk). Awaits are
        cancelled when `budget` runs out; long synchronous work must check `budget.spent`
        itself, and must yield to the event loop often (other requests share it)."""

    def subscriber(self) -> Subscriber:
        topic = self.rt.topics.path(self.path)
        return Subscriber(
            self.rt,
            self.name,
            [topic],
            f"{topic}.{self.name}",
            self.handle,
            answer=partial(answer_failure, self.rt),
        )

    async def handle(self, msg: Message) -> None:
        try:
            routed = self.rt.codec.decode_routed(msg.value)
        except DecodeError as exc:
            rid = msg.key_text
            await self.rt.dead_letter(msg, self.name, exc.kind, exc.reason, request_id=rid)
            if rid:
                await send_failure(self.rt, msg, rid, exc.reason, exc.kind)
            return
        req = routed.request
        whose = origin(self.rt.signing_key, req.request_id, msg.headers)
        if not whose.vouched and self.cancellations.lease(msg.header(REPLY_TO) or "") is not None:
            # Seen possible: an agent's request naming a bridge's reply topic, answered
            # there with genuinely signed chunks. Only a bridge's own requests go there.
            metrics.FORGED_RECORDS.labels("request").inc()
            why = "no bridge vouched for this request, and its reply-to is a bridge's topic"
            await self.rt.dead_letter(
                msg, self.name, ErrorKind.INVALID_REQUEST, why, request_id=req.request_id
            )
            return
        CURRENT.set(whose.tenant)  # this handler's task: retrieval scopes by it
        try:
            plan = self.planner.plan(req)
        except RequestInvalid as exc:
            await self.rt.dead_letter(
                msg, self.name, ErrorKind.INVALID_REQUEST, str(exc), exc.errors, req.request_id
            )
            await send_failure(
                self.rt,
                msg,
                req.request_id,
                f"invalid request: {exc}",
                ErrorKind.INVALID_REQUEST,
                exc.errors,
                fmt=req.output_format,
            )
            return
        if (abandoned := self._abandoned(msg, req.request_id)) is not None:
            metrics.ABANDONED.labels(self.name, abandoned.kind.value).inc()
            await send_failure(
                self.rt, msg, req.request_id, str(abandoned), abandoned.kind, fmt=req.output_format
            )
            return
        if req.use_cache and await self._from_cache(msg, routed, plan, whose.tenant):
            return
        lease = AttemptLease(
            self.keystore, self.path.value, self.budget_seconds, msg, req.request_id
        )
        if not await lease.claim():
            return
        refresher = asyncio.create_task(lease.hold())
        ran = False
        try:
            await self._run(msg, routed, plan, whose.tenant)
            ran = True
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            if ran:  # interrupted (shutdown): the lease expires and a redelivery runs
                await lease.release()

    # ---- result cache (with Redis) ------------------------------------------------------
    @property
    def cache(self) -> ResultCache:
        return ResultCache(self.keystore, self.rt.codec, self.rt.settings, "generator")

    async def _from_cache(
        self, msg: Message, routed: RoutedRequest, plan: Plan, tenant: str
    ) -> bool:
        """Answer a use_cache request from the cache, if it holds one (agents publishing
        directly benefit too; the bridge already answers its callers' hits itself)."""
        if not self.keystore.configured:
            return False
        req = routed.request
        chunks = await self.cache.lookup(req, tenant)
        if chunks is None:
            return False
        emitter = ChunkEmitter(
            self.rt,
            msg,
            req.request_id,
            plan.schema,
            req.output_format,
            self.path.value,
            await resolve_reply_topic(self.rt, msg),
            tenant,
        )
        for chunk in answered_from_cache(chunks, req.request_id):
            await emitter.resend(chunk)
        await emitter.close()
        return True

    def _abandoned(self, msg: Message, request_id: str) -> Abandoned | None:
        """Why nobody waits for this request any more, if so."""
        if (deadline := deadline_passed(msg)) is not None:
            return Abandoned(ErrorKind.EXPIRED, f"deadline passed ({deadline} ms since epoch)")
        if (why := self.cancellations.reason(request_id, msg.header(CORRELATION))) is not None:
            return Abandoned(ErrorKind.CANCELLED, f"cancelled: {why}")
        if (why := self.cancellations.orphaned(msg.header(REPLY_TO), msg.timestamp_ms)) is not None:
            return Abandoned(ErrorKind.CANCELLED, f"nobody waits: {why}")
        return None

    async def _run(self, msg: Message, routed: RoutedRequest, plan: Plan, tenant: str) -> None:
        t0 = time.perf_counter()
        run = Run(
            msg,
            routed,
            plan,
            Budget.start(self.budget_seconds, deadline_of(msg)),
            ChunkEmitter(
                self.rt,
                msg,
                plan.request.request_id,
                plan.output_schema,
                plan.request.output_format,
                self.path.value,
                await resolve_reply_topic(self.rt, msg),
                tenant,
            ),
            Sample(self.rt.settings.learn_sample_records, self.rt.settings.learn_sample_max_bytes),
            partial(self.metadata, plan, routed),
            t0=t0,
        )
        req, emitter = plan.request, run.emitter
        if not self.path.traits.reruns_identical:
            emitter.headers.append((RUN, uuid.uuid4().hex.encode()))
        cache = self.cache
        if req.use_cache and self.keystore.configured:
            emitter.keep(cache.max_records, cache.max_bytes)
        try:
            await self._emit_all(run)
        except Abandoned as exc:
            metrics.ABANDONED.labels(self.name, exc.kind.value).inc()
            log.info("%s: stopped after %d records: %s", req.request_id, emitter.records, exc)
            await emitter.fail(str(exc), exc.kind, run.final())
            run.end = RunEnd.ABANDONED
        except OverBudget as exc:
            metrics.OVER_BUDGET.labels(self.path.value).inc()
            log.warning("%s: stopped: %s", req.request_id, exc)
            await self._failed(run, RunEnd.OVER_BUDGET, ErrorKind.OVER_BUDGET, str(exc))
        except ConstraintUnsatisfiable as exc:
            await self._failed(
                run, RunEnd.FAILED, ErrorKind.GENERATION, f"generation failed: {exc}"
            )
        except PathIncomplete as exc:
            log.error("%s: %s", req.request_id, exc)
            await self._failed(run, RunEnd.FAILED, ErrorKind.PROCESSING, str(exc))
        except Exception as exc:
            log.exception("%s: generation failed", req.request_id)
            detail = f"internal error: {type(exc).__name__}: {exc}"
            await self._failed(run, RunEnd.FAILED, ErrorKind.PROCESSING, INTERNAL_ERROR, detail)
        await emitter.close()
        if run.end is RunEnd.SUCCESS and emitter.records:
            await self._outcome(plan, run.report, run.sample, emitter.tenant)
        if run.end is RunEnd.SUCCESS and emitter.kept is not None:
            await cache.store_run(req, emitter.kept, emitter.tenant)
        elapsed = time.perf_counter() - run.t0
        status = run.end.status
        metrics.REQUESTS.labels(self.path.value, req.domain, plan.schema.name, status).inc()
        metrics.GENERATION_SECONDS.labels(self.path.value).observe(elapsed)
        metrics.RECORDS.labels(req.domain, plan.schema.name).inc(emitter.records)
        if run.report.coherence is not None:
            metrics.COHERENCE.labels(req.domain or "none").observe(run.report.coherence)
        log.debug(  # per request: the metrics say it at load
            "%s: %d records in %d chunks, %.1f ms",
            req.request_id,
            emitter.records,
            emitter.index,
            elapsed * 1000,
        )

    async def _emit_all(self, run: Run) -> None:
        """Chunks of every batch the path yields; the last one carries the metadata."""
        plan, budget, emitter = run.plan, run.budget, run.emitter
        if plan.count == 0:
            await emitter.emit([], True, run.final())
            return
        per_chunk: int | None = None
        batches = self.generate(plan, budget)
        try:
            while (batch := await self._next_batch(batches, budget, emitter, plan)) is not None:
                run.report.add(batch)
                if not batch.records:
                    continue
                run.sample.add(batch.records)
                if per_chunk is None:
                    per_chunk = records_per_chunk(batch.records, self.chunk_size)
                for piece in _pieces(batch.records, per_chunk):
                    done = emitter.records + len(piece)
                    if done > plan.count:
                        raise PathIncomplete(
                            f"the {self.path.value} path produced more than the "
                            f"{plan.count} planned records"
                        )
                    last = done == plan.count
                    await emitter.emit(piece, last, run.final() if last else None)
                    if not last:
                        abandoned = self._abandoned(run.msg, plan.request.request_id)
                        if abandoned is not None:
                            raise abandoned
                        if budget.spent():
                            raise budget.stop(emitter.records, plan.count)
                        await asyncio.sleep(0)  # other requests' turn: no one waits on a big one
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
        if emitter.records != plan.count:
            raise PathIncomplete(
                f"the {self.path.value} path ended after {emitter.records} of {plan.count} records"
            )

    @staticmethod
    async def _next_batch(
        batches: AsyncIterator[Batch], budget: Budget, emitter: ChunkEmitter, plan: Plan
    ) -> Batch | None:
        """The path's next batch (None after its last), within the budget: what the path
        awaits is cancelled when the budget runs out. Only the path's own work is under
        the timeout, never a chunk being published (its index must stay certain)."""
        timeout = asyncio.timeout(max(0.0, budget.ends - time.monotonic()))
        try:
            async with timeout:
                return await anext(batches)
        except StopAsyncIteration:
            return None
        except GenerationStopped:
            raise budget.stop(emitter.records, plan.count) from None
        except TimeoutError:
            if timeout.expired():
                raise budget.stop(emitter.records, plan.count) from None
            raise  # the path's own timeout, not the budget

    async def _outcome(self, plan: Plan, report: RunReport, sample: Sample, tenant: str) -> None:
        """The delivered dataset, for the learner (unless the request opts out). After
        every chunk is acknowledged, so no outcome exists for an undelivered dataset."""
        req = plan.request
        if opts_out(req.hints):
            metrics.OUTCOMES.labels(self.path.value, "opted_out").inc()
            return
        learnable = path_learnable(
            self.learn_rules,
            self.path.value,
            shaped(req.context, (s.description for s in req.scenarios)),
        )
        outcome = build_outcome(
            plan, self.path.value, report.coherence, sample, check=learnable, tenant=tenant
        )
        ok = await publish_outcome(self.rt, outcome)
        metrics.OUTCOMES.labels(self.path.value, "published" if ok else "failed").inc()

    async def _failed(
        self, run: Run, end: RunEnd, kind: ErrorKind, error: str, detail: str | None = None
    ) -> None:
        """Park the request (with `detail`, the operator's account, if given) and end its
        stream with a failed final chunk saying `error`; unless it was delivered in full
        already (a second final chunk would contradict it)."""
        req = run.plan.request
        if run.emitter.finished:
            log.error("%s: failed after its final chunk: %s", req.request_id, error)
            run.end = RunEnd.FAILED_AFTER_FINAL
            return
        run.end = end
        await self.rt.dead_letter(
            run.msg, self.name, kind, detail or error, request_id=run.emitter.request_id
        )
        await run.emitter.fail(error, kind, run.final())

    def metadata(
        self, plan: Plan, routed: RoutedRequest, report: RunReport, t0: float
    ) -> GenerationMetadata:
        r = routed.routing
        return GenerationMetadata(
            generation_path=self.path.value,
            routing_reason=r.reason,
            routing_confidence=r.confidence,
            requested_path=r.requested_path.value,
            fallback_steps=[*r.fallbacks, *report.fallbacks],
            llm_tokens_used=report.tokens,
            generation_time_ms=(time.perf_counter() - t0) * 1000,
            coherence_score=report.coherence,
            scenario_counts=plan.scenario_counts(),
            generator_version=GENERATOR_VERSION,
            seed=plan.seed,
            anchor=plan.anchor.isoformat().replace("+00:00", "Z"),
            record_count=plan.count,
            backend=report.backend,
            retries=report.retries,
            rag_examples_used=report.rag_examples,
            pattern_ids=report.pattern_ids,
            coherence_status=(
                "scored"
                if report.coherence is not None
                else f"not_applicable: {_unscored(plan, report)}"
            ),
            fingerprint=request_fingerprint(plan.request),
            replay_of=plan.request.replay_of,
            understood=[
                Interpretation(phrase=u.phrase, meaning=u.meaning, scope=u.scope)
                for u in plan.intent.understood
            ],
            not_understood=list(plan.intent.not_understood),
            contradictions=list(plan.intent.contradictions),
            themes=list(plan.intent.themes),
            edge_case_counts=report.edge_cases,
        )


def _unscored(plan: Plan, report: RunReport) -> str:
    """Why a run has no coherence score (so that no one reads 0.0 as a verdict)."""
    if plan.composer is None or plan.schema.name not in SCORERS:
        return f"no coherence rules for a custom schema ({plan.schema.name!r})"
    if report.records and sum(report.edge_cases.values()) == report.records:
        return "every record is an edge case, incoherent on purpose"
    return "no record was scored"


def _pieces(records: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    if len(records) <= size:
        yield records
        return
    for lo in range(0, len(records), size):
        yield records[lo : lo + size]
