"""The LLM path's generation engine: a plan in, valid records out, batch by batch, in order.

Free of Kafka and gRPC; a service wrapper feeds it plans and publishes what it yields.

    engine = LLMEngine(clients, batch_size=25, concurrency=8, coherence_threshold=0.85)
    run = engine.run(plan, rag_examples=..., defect_patterns=...)
    async for batch in run:          # LLMBatch, strictly in index order
        publish(batch)
    run.summary                      # RunReport (also engine.summary: the last run's)

Per batch of `batch_size` indexes: one model call with the batch's prompt; the answer is
parsed, cut to the wanted count (a short or cut-off answer gets a follow-up call for the
missing records), `_index`/`_scenario` and the scenario overrides are set by us, and every
record is validated. Invalid or missing records are asked for again with the errors quoted,
at most `max_fix_retries` times; whatever is still missing then comes from the traditional
generator for exactly those indexes, so every yielded record is valid. Cart/order/review
batches scoring below `coherence_threshold` get one more call for their low-scoring records
with the problems spelled out; per record the better-scoring valid answer is kept.

Backends are tried in the order given. A permanent error or an exhausted retry budget on
one switches the whole request (this and every later batch) to the next; calls still in
flight on the abandoned backend are cancelled and redone on the new one. With no backend
left, the remaining records come from the traditional generator. Every switch, retry and
fallback is logged (logger "testdata.llm"), counted in Prometheus and reported in the
batch's and the run's `fallbacks`.

Batches run concurrently (at most `concurrency` at once, each holding its slot for all of
its calls, so earlier batches finish first) and at most `2 * concurrency` batches are
started but not yet yielded; each is yielded as soon as it and all earlier ones are done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from services.core.coherence import SCORERS, score_records
from services.core.generate import META_KEYS, finalize, generate_records
from services.core.models import FieldError
from services.core.plan import Plan
from services.core.report import TRADITIONAL_BACKEND, Batch, Fallback, RunReport
from services.core.validate import validate_record
from services.kit.ops.metrics import FALLBACKS, LLM_CALL_SECONDS, LLM_RETRIES, LLM_TOKENS
from services.kit.settings import Settings
from services.llm.clients import Completion, LLMClient, build_clients
from services.llm.errors import LLMError, LLMOutputError, LLMPermanentError, LLMUnavailable
from services.llm.feedback import coherence_notes, quote_errors, salvage_records
from services.llm.jsonparse import parse_records
from services.llm.prompts import COHERENT_ENTITIES, Template, build_prompt

log = logging.getLogger("testdata.llm")

TRADITIONAL = TRADITIONAL_BACKEND

# LLM_RETRIES reasons
INVALID = "invalid_records"
PARSE = "parse_error"
TOO_FEW = "too_few_records"
LOW_COHERENCE = "low_coherence"


class LLMBatch(Batch):
    """One finished batch: `records[k]["_index"] == start + k`, every record valid.
    `backend`/`model`: of the batch's last successful model call; "traditional" if none."""

    start: int
    traditional_records: int = 0  # records that came from the traditional generator

    @property
    def stop(self) -> int:
        return self.start + len(self.records)


class _Abandoned(Exception):
    """The backend a call was running on was given up by the run; redo on the next."""


def _describe(exc: BaseException) -> str:
    """Short reason for a fallback note: "401 authentication", "timeout after 4 attempts"."""
    if isinstance(exc, LLMError):
        status = getattr(exc, "status_code", None)
        text = f"{status} {exc.reason}" if status else (exc.reason or type(exc).__name__)
        attempts = getattr(exc, "attempts", 0)
        return f"{text} after {attempts} attempts" if attempts > 1 else text
    return f"unexpected {type(exc).__name__}: {str(exc)[:120]}"


def _reason(exc: BaseException) -> str:
    return (exc.reason if isinstance(exc, LLMError) else "") or "unexpected_error"


class _Work:
    """One batch in progress."""

    def __init__(self, start: int, stop: int) -> None:
        self.start = start
        self.stop = stop
        self.accepted: dict[int, dict[str, Any]] = {}
        self.traditional: set[int] = set()
        self.tokens = 0
        self.retries = 0
        self.fallbacks: list[Fallback] = []
        self.backend = TRADITIONAL
        self.model = ""
        self.backends: list[str] = []

    def missing(self) -> list[int]:
        return [i for i in range(self.start, self.stop) if i not in self.accepted]


class LLMRun:
    """One request's generation: an async iterator of `LLMBatch` with a running `summary`.

    Iterate it once. Leaving early: `await run.aclose()` (or `async with run:`) cancels
    the batches still running; otherwise they are cancelled when the run is collected.
    """

    def __init__(
        self,
        engine: LLMEngine,
        plan: Plan,
        rag_examples: Sequence[dict[str, Any]] | None,
        defect_patterns: Sequence[dict[str, Any]] | None,
    ) -> None:
        self.engine = engine
        self.plan = plan
        self.summary = RunReport()
        self.traditional_records = 0
        self._rag = list(rag_examples) if rag_examples else None
        self._defects = list(defect_patterns) if defect_patterns else None
        self._clients = [c for c in engine.clients if c.is_configured]
        self._current = 0  # index into _clients of the backend in use
        self._abandoned = [asyncio.Event() for _ in self._clients]
        self._exhausted: str | None = None if self._clients else "no LLM backend configured"
        self._slots = engine.slots  # shared: the cap is per process, not per request
        entity = plan.schema.name
        self._entity = entity
        # Only predefined schemas: a custom schema merely named "cart" has other fields.
        self._scored = plan.composer is not None and entity in SCORERS
        self._coherence_template = (
            Template.COHERENT
            if entity in COHERENT_ENTITIES and not plan.request.defect_triggering
            else None
        )
        self._coherence_sum = 0.0
        self._coherence_n = 0
        self._agen: AsyncGenerator[LLMBatch, None] = self._iterate()

    # -------------------------------------------------------------- iterator protocol

    def __aiter__(self) -> LLMRun:
        return self

    async def __anext__(self) -> LLMBatch:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        await self._agen.aclose()

    async def __aenter__(self) -> LLMRun:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------- scheduling

    async def _iterate(self) -> AsyncGenerator[LLMBatch, None]:
        plan, size = self.plan, self.engine.batch_size
        starts = iter(range(0, plan.count, size))
        window = 2 * self.engine.concurrency
        running: deque[asyncio.Task[LLMBatch]] = deque()
        log.info(
            "llm run started",
            extra={
                "request_id": plan.request.request_id,
                "entity": plan.schema.name,
                "count": plan.count,
                "batch_size": size,
                "backends": [c.backend for c in self._clients],
            },
        )
        try:
            while True:
                while len(running) < window and (s := next(starts, None)) is not None:
                    stop = min(s + size, plan.count)
                    running.append(asyncio.create_task(self._batch(s, stop)))
                if not running:
                    break
                batch = await running.popleft()
                self._account(batch)
                yield batch
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        log.info(
            "llm run finished",
            extra={"request_id": plan.request.request_id, **self.summary.model_dump()},
        )

    def _account(self, batch: LLMBatch) -> None:
        self.summary.add(batch)
        self.traditional_records += batch.traditional_records

    # ---------------------------------------------------------------------- a batch

    async def _batch(self, start: int, stop: int) -> LLMBatch:
        work = _Work(start, stop)
        if not self._clients and start == 0:
            self._note(work, "llm", TRADITIONAL, str(self._exhausted), "not_configured")
        if self._exhausted is None:
            try:
                async with self._slots:
                    await self._generate(work)
                    if self._scored and self._exhausted is None:
                        await self._improve_coherence(work)
            except Exception as exc:  # our bug or an unforeseen input: keep the request alive
                log.exception("llm batch failed; using the traditional generator")
                why = f"{type(exc).__name__}: {exc}"
                why = why if len(why) <= 160 else why[:157] + "..."
                self._note(work, "llm", TRADITIONAL, f"internal error ({why})", "internal_error")
        if missing := work.missing():
            self._fill_traditional(work, missing)
        records = [work.accepted[i] for i in range(start, stop)]
        batch = LLMBatch(
            start=start,
            records=records,
            backend=work.backend,
            model=work.model,
            tokens=work.tokens,
            retries=work.retries,
            fallbacks=work.fallbacks,
            coherence=score_records(self._entity, records) if self._scored else None,
            scored=len(records) if self._scored else 0,
            traditional_records=len(work.traditional),
        )
        log.debug(
            "llm batch done",
            extra={
                "start": start,
                "stop": stop,
                "backend": batch.backend,
                "tokens": batch.tokens,
                "retries": batch.retries,
                "traditional": batch.traditional_records,
                "coherence": batch.coherence,
            },
        )
        return batch

    async def _generate(self, work: _Work) -> None:
        """Model calls until every index of the batch holds a valid record, the fix
        budget is spent or no backend is left."""
        budget = self.engine.max_fix_retries
        answers = 0  # model answers received for this batch
        errors: list[str] = []
        reason = ""
        while (wanted := work.missing()) and answers <= budget:
            if self._exhausted is not None:
                return
            k = self._current
            client = self._clients[k]
            system, user = self._prompt(wanted, errors)
            try:
                completion = await self._complete(k, system, user)
            except _Abandoned:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - batch falls back, request goes on
                self._switch(k, exc, work)
                continue
            answers += 1
            if answers > 1:
                self._count_retry(work, client, reason)
            self._took(work, client, completion)
            try:
                records = parse_records(completion.text)
            except LLMOutputError as exc:
                records = salvage_records(completion.text) if completion.truncated else []
                if not records:
                    reason = PARSE
                    errors = [f"the answer could not be read as a JSON array of objects: {exc}"]
                    log.info(
                        "llm answer unreadable",
                        extra={"backend": client.backend, "start": work.start, "error": str(exc)},
                    )
                    continue
                log.info(
                    "llm answer cut off; kept its complete records",
                    extra={"backend": client.backend, "start": work.start, "kept": len(records)},
                )
            invalid: dict[int, list[FieldError]] = {}
            for i, raw in self._assign(wanted, records):
                rec = self._finalize(i, raw)
                if errs := validate_record(self.plan.schema, rec):
                    invalid[i] = errs
                else:
                    work.accepted[i] = rec
            still = work.missing()
            if not still:
                return
            # Quote errors by the index the next prompt will give each record.
            renumber = dict(zip(still, range(still[0], still[0] + len(still)), strict=True))
            errors = quote_errors({renumber[i]: errs for i, errs in invalid.items()})
            returned = len(wanted) - (len(still) - len(invalid))
            if len(still) > len(invalid):
                cut = " (the answer was cut off)" if completion.truncated else ""
                errors.append(
                    f"only {returned} of the {len(wanted)} requested records came back{cut}; "
                    f"this time send {len(still)}"
                )
            reason = INVALID if invalid else TOO_FEW
            log.info(
                "llm batch needs a follow-up",
                extra={
                    "backend": client.backend,
                    "start": work.start,
                    "invalid": len(invalid),
                    "missing": len(still) - len(invalid),
                    "reason": reason,
                },
            )
        if (still := work.missing()) and self._exhausted is None:
            what = {
                INVALID: "still invalid",
                TOO_FEW: "still missing",
                PARSE: "unreadable (parse errors)",
            }.get(reason, "still invalid")
            n = len(still)
            note = f"{n} record{'s' if n != 1 else ''} {what} after {budget} retries"
            self._note(work, "llm", TRADITIONAL, note, reason or INVALID)

    async def _improve_coherence(self, work: _Work) -> None:
        """One extra call for the LLM records scoring below the threshold, if the batch
        as a whole does; keep each new record only when it is valid and scores higher."""
        threshold = self.engine.coherence_threshold
        records = [work.accepted[i] for i in sorted(work.accepted)]
        score = score_records(self._entity, records)
        if score is None or score >= threshold:
            return
        scorer = SCORERS[self._entity]
        scores = {i: scorer(work.accepted[i]) for i in work.accepted if i not in work.traditional}
        low = sorted(i for i, s in scores.items() if s < threshold)
        if not low:
            return
        renumber = dict(zip(low, range(low[0], low[0] + len(low)), strict=True))
        notes = []
        for i in low:
            why = "; ".join(coherence_notes(self._entity, work.accepted[i])) or (
                "does not hang together"
            )
            notes.append(f"_index {renumber[i]}: coherence {scores[i]:.2f} - {why}")
        notes.append(
            f"every record must score at least {threshold:.2f} on the coherence rules above"
        )
        k = self._current
        client = self._clients[k]
        system, user = self._prompt(low, notes, template=self._coherence_template)
        log.info(
            "llm batch below coherence threshold; retrying",
            extra={
                "backend": client.backend,
                "start": work.start,
                "score": round(score, 3),
                "low": len(low),
            },
        )
        try:
            completion = await self._complete(k, system, user)
        except _Abandoned:
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the valid result we have
            self._switch(k, exc, work)
            return
        self._count_retry(work, client, LOW_COHERENCE)
        self._took(work, client, completion)
        try:
            answer = parse_records(completion.text)
        except LLMOutputError:
            answer = salvage_records(completion.text)
        better = 0
        for i, raw in self._assign(low, answer):
            rec = self._finalize(i, raw)
            if not validate_record(self.plan.schema, rec) and scorer(rec) > scores[i]:
                work.accepted[i] = rec
                better += 1
        log.info(
            "llm coherence retry done",
            extra={"start": work.start, "improved": better, "low": len(low)},
        )

    # ------------------------------------------------------------------- helpers

    def _prompt(
        self, indices: list[int], errors: list[str], *, template: Template | None = None
    ) -> tuple[str, str]:
        """The prompt asking for records at `indices`. build_prompt only knows contiguous
        ranges, so a gappy set is asked for as `indices[0]`.. onward (we renumber)."""
        plan: list[tuple[str, int]] = []
        for i in indices:
            name = self.plan.slot_for(i).name
            if plan and plan[-1][0] == name:
                plan[-1] = (name, plan[-1][1] + 1)
            else:
                plan.append((name, 1))
        return build_prompt(
            self.plan.request,
            self.plan.schema,
            batch_count=len(indices),
            scenario_plan=plan,
            start_index=indices[0],
            rag_examples=self._rag,
            defect_patterns=self._defects,
            validation_errors=errors or None,
            template=template,
        )

    @staticmethod
    def _assign(
        indices: list[int], records: list[dict[str, Any]]
    ) -> list[tuple[int, dict[str, Any]]]:
        """Pair answer records with the wanted indices. By the model's `_index` when that
        is a consistent labelling of the (renumbered) request, else by position; extras
        are dropped."""
        virtual = dict(zip(range(indices[0], indices[0] + len(indices)), indices, strict=True))
        by_index: dict[int, dict[str, Any]] = {}
        for rec in records:
            v = rec.get("_index")
            if isinstance(v, int) and not isinstance(v, bool) and v in virtual:
                by_index.setdefault(v, rec)
        if by_index and len(by_index) in (len(records), len(indices)):
            return [(virtual[v], rec) for v, rec in sorted(by_index.items())]
        return list(zip(indices, records, strict=False))

    def _finalize(self, index: int, raw: dict[str, Any]) -> dict[str, Any]:
        """The model's record through the one finalisation step every path uses."""
        body = {k: v for k, v in raw.items() if k not in META_KEYS}
        return finalize(self.plan, index, body)

    async def _complete(self, k: int, system: str, user: str) -> Completion:
        """One `complete()` on backend `k`, cancelled if the run abandons that backend."""
        client = self._clients[k]
        abandoned = self._abandoned[k]
        if abandoned.is_set():
            raise _Abandoned
        call = asyncio.ensure_future(
            client.complete(system, user, max_tokens=self.engine.max_tokens)
        )
        waiter = asyncio.ensure_future(abandoned.wait())
        started = time.perf_counter()
        try:
            await asyncio.wait({call, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # we were cancelled: take the call down with us
            waiter.cancel()
            call.cancel()
            raise
        waiter.cancel()
        if not call.done():  # the backend was abandoned while this call ran
            call.cancel()
            raise _Abandoned
        LLM_CALL_SECONDS.labels(client.backend, client.model).observe(time.perf_counter() - started)
        return call.result()

    def _took(self, work: _Work, client: LLMClient, completion: Completion) -> None:
        tokens = completion.total_tokens
        work.tokens += tokens
        work.backend = client.backend
        work.model = completion.model or client.model
        LLM_TOKENS.labels(client.model).inc(tokens)
        if completion.truncated:
            log.warning(
                "llm answer hit the output token limit",
                extra={"backend": client.backend, "start": work.start, "tokens": tokens},
            )

    @staticmethod
    def _count_retry(work: _Work, client: LLMClient, reason: str) -> None:
        work.retries += 1
        LLM_RETRIES.labels(client.backend, reason).inc()

    def _note(self, work: _Work, source: str, target: str, why: str, reason: str) -> None:
        """Record a fallback step; `reason` is the metric label, `why` the caller's text."""
        note = Fallback(source=source, target=target, reason=why)
        work.fallbacks.append(note)
        FALLBACKS.labels(source, target, reason).inc()
        log.warning(
            "llm fallback",
            extra={
                "request_id": self.plan.request.request_id,
                "start": work.start,
                "fallback": str(note),
                "source": source,
                "target": target,
                "reason": reason,
            },
        )

    def _switch(self, k: int, exc: BaseException, work: _Work) -> None:
        """Backend `k` failed for good: move this run to the next one (once)."""
        if not isinstance(exc, LLMPermanentError | LLMUnavailable):
            log.error(
                "llm backend raised an unexpected error",
                exc_info=exc,
                extra={"backend": self._clients[k].backend},
            )
        if self._current != k:  # another batch already moved on
            return
        self._current = k + 1
        self._abandoned[k].set()
        source = self._clients[k].backend
        why = _describe(exc)
        if k + 1 < len(self._clients):
            target = self._clients[k + 1].backend
            self._note(work, source, target, why, _reason(exc))
        else:
            self._exhausted = f"no LLM backend left ({source}: {why})"
            self._note(work, "llm", TRADITIONAL, self._exhausted, _reason(exc))

    def _fill_traditional(self, work: _Work, indices: list[int]) -> None:
        for i in indices:
            (rec,) = generate_records(self.plan, i, i + 1)
            work.accepted[i] = rec
            work.traditional.add(i)


class LLMEngine:
    """Runs plans through LLM backends (in fallback order), see the module docstring."""

    def __init__(
        self,
        clients: Sequence[LLMClient],
        *,
        batch_size: int = 25,
        concurrency: int = 8,
        coherence_threshold: float = 0.85,
        max_fix_retries: int = 2,
        max_tokens: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_fix_retries < 0:
            raise ValueError(f"max_fix_retries must be >= 0, got {max_fix_retries}")
        self.clients = list(clients)
        self.batch_size = batch_size
        self.concurrency = concurrency
        # Model calls in flight across every request this engine serves: concurrent
        # requests (one per partition) share the backend's rate limit.
        self.slots = asyncio.Semaphore(concurrency)
        self.coherence_threshold = coherence_threshold
        self.max_fix_retries = max_fix_retries
        self.max_tokens = max_tokens  # None: each client's own limit
        self._last: LLMRun | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, clients: Sequence[LLMClient] | None = None, **overrides: Any
    ) -> LLMEngine:
        kwargs: dict[str, Any] = {
            "batch_size": settings.llm_batch_size,
            "concurrency": settings.llm_concurrency,
            "coherence_threshold": settings.coherence_threshold,
        }
        kwargs.update(overrides)
        return cls(build_clients(settings.llm) if clients is None else clients, **kwargs)

    def run(
        self,
        plan: Plan,
        *,
        rag_examples: Sequence[dict[str, Any]] | None = None,
        defect_patterns: Sequence[dict[str, Any]] | None = None,
    ) -> LLMRun:
        """Generate `plan`: `async for batch in engine.run(plan)`. Nothing starts until
        the first batch is asked for."""
        run = LLMRun(self, plan, rag_examples, defect_patterns)
        self._last = run
        return run

    @property
    def summary(self) -> RunReport | None:
        """The most recently started run's summary. With concurrent runs on one engine,
        use each run's own `summary` instead."""
        return self._last.summary if self._last is not None else None

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
