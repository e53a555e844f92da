"""The learner service: outcomes in, patterns out, one store write at a time.

Each outcome is judged by the pure gate (gate.py); a learnable one is stored by content id
(a redelivered outcome, or the same dataset twice, is one pattern) and its (domain, entity)
pruned to `patterns_per_entity_max`. An outcome's offset is committed only once it is
stored or skipped, so while the store is unavailable outcomes wait in their topic: the
handler holding the write lock retries with backoff, the others queue behind it, and the
subscriber pauses its partitions once its buffer is full. No dataset ever waits for this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping

from services.core.registry import SchemaRegistry
from services.kit.ops import metrics
from services.kit.runtime.stream import Message, Runtime, Subscriber
from services.kit.wire.errors import DecodeError
from services.learner.gate import Policy, judge
from services.patterns import Collection, Pattern, PatternStore, StoreUnavailable, open_store

log = logging.getLogger("testdata.learner")
RETRY_FIRST_S = 0.2
COMPONENT = "learner_store"  # in health: the store as the learner last found it


class LearnerService:
    name = "learner"

    def __init__(
        self, runtime: Runtime, registry: SchemaRegistry, store: PatternStore | None = None
    ):
        self.rt = runtime
        self.registry = registry
        s = runtime.settings
        self.policy = Policy.from_settings(s)
        self.keep = s.patterns_per_entity_max
        self.retry_max_s = s.learner_retry_max_seconds
        self.store = store if store is not None else open_store(s.store)
        self.unavailable: str | None = "not started"  # None while the store answers
        self.stored = 0
        self.skipped: Counter[str] = Counter()
        self._started = False
        self._lock = asyncio.Lock()  # one store write at a time; retries hold it
        self._reconnect: asyncio.Task[None] | None = None

    def subscriber(self) -> Subscriber:
        topic = self.rt.topics.outcomes
        return Subscriber(self.rt, self.name, [topic], f"{topic}.{self.name}", self.handle)

    # ---- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store; if it is unavailable, keep trying in the background (the
        service runs meanwhile: outcomes wait)."""
        async with self._lock:
            with contextlib.suppress(StoreUnavailable):
                await self._ensure_started()
        if not self._started:
            self._reconnect = asyncio.create_task(self._reconnect_loop(), name="learner-store")

    async def aclose(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        with contextlib.suppress(Exception):
            await self.store.aclose()

    async def components(self) -> Mapping[str, str]:
        done = f"{self.stored} stored, {sum(self.skipped.values())} skipped"
        if self.unavailable is not None:
            return {
                COMPONENT: f"unavailable: {self.unavailable}; outcomes wait in "
                f"{self.rt.topics.outcomes} ({done})"
            }
        try:
            state = await asyncio.wait_for(
                self.store.health(), self.rt.settings.pattern_store_timeout_seconds
            )
        except Exception as exc:  # noqa: BLE001 - a failed probe is a health answer
            state = f"unavailable: {type(exc).__name__}: {exc}"
        return {COMPONENT: f"{state} ({done})"}

    # ---- outcomes ------------------------------------------------------------------------
    async def handle(self, msg: Message) -> None:
        try:
            outcome = self.rt.codec.decode_outcome(msg.value)
        except DecodeError as exc:
            rid = msg.key_text
            await self.rt.dead_letter(msg, self.name, exc.kind, exc.reason, request_id=rid)
            self._skip("undecodable", rid, exc.reason)
            return
        verdict = judge(outcome, self.registry, self.policy)
        if verdict.pattern is None:
            assert verdict.skip is not None
            self._skip(verdict.skip.value, outcome.request_id, verdict.detail)
            return
        if await self.learn(verdict.pattern):
            self.stored += 1
            metrics.LEARNER_OUTCOMES.labels("stored", "learned").inc()
            log.info(
                "%s: learned a %s/%s pattern from the %s path",
                outcome.request_id,
                outcome.domain,
                outcome.entity,
                outcome.path,
            )
        else:
            self._skip("duplicate", outcome.request_id, verdict.pattern.id)

    async def learn(self, pattern: Pattern) -> bool:
        """Store the pattern and keep its (domain, entity) within bounds, retrying while
        the store is unavailable; True when it was new."""
        delay = RETRY_FIRST_S
        new: int | None = None
        async with self._lock:
            while True:
                try:
                    await self._ensure_started()
                    if new is None:
                        new = await self.store.upsert([pattern])
                    if new:
                        await self.store.prune(
                            pattern.collection,
                            pattern.domain,
                            pattern.entity,
                            self.keep,
                            pattern.tenant,
                        )
                    self._available()
                    return bool(new)
                except StoreUnavailable as exc:
                    self._unavailable(str(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)

    async def count(self, domain: str, entity: str) -> int:
        return await self.store.count(Collection.PATTERNS, domain=domain, entity=entity)

    # ---- store state ---------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        """Start the store once; any failure to start is the store being unavailable."""
        if self._started:
            return
        try:
            await self.store.start()
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("pattern store failed to start")
            raise StoreUnavailable(f"cannot start: {type(exc).__name__}: {exc}") from exc
        self._started = True
        self._available()

    async def _reconnect_loop(self) -> None:
        delay = RETRY_FIRST_S
        while not self._started:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)
            async with self._lock:
                try:
                    await self._ensure_started()
                except StoreUnavailable as exc:
                    self._unavailable(str(exc), delay)

    def _available(self) -> None:
        if self.unavailable is not None and self._started:
            log.info("pattern store available (%s)", self.store.backend)
        self.unavailable = None
        metrics.LEARNER_STORE_UP.set(1)

    def _unavailable(self, reason: str, retry_in: float) -> None:
        if self.unavailable != reason:
            log.warning(
                "pattern store unavailable: %s; outcomes wait in %s, retrying (next in %.1f s)",
                reason,
                self.rt.topics.outcomes,
                retry_in,
            )
        self.unavailable = reason
        metrics.LEARNER_STORE_UP.set(0)
        metrics.LEARNER_STORE_RETRIES.inc()

    def _skip(self, reason: str, request_id: str | None, detail: str) -> None:
        self.skipped[reason] += 1
        metrics.LEARNER_OUTCOMES.labels("skipped", reason).inc()
        log.info("%s: not learned (%s%s)", request_id, reason, f": {detail}" if detail else "")
