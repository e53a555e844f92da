"""Whether the pattern store can serve, and for which (collection, domain, entity).

One per process and store location: the RAG and hybrid paths retrieve through it and the
router asks it whether a request's patterns exist. Those answers come from counts cached
for `pattern_store_refresh_seconds` and re-read in the background, so routing never waits
on the store; every store call is bounded by `pattern_store_timeout_seconds`, and a store
that fails or answers too slowly is "unavailable: <reason>" until a later read succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import ClassVar, TypeVar

from services.kit.settings import StoreSettings
from services.patterns import open_store
from services.patterns.errors import StoreUnavailable
from services.patterns.scope import Scope
from services.patterns.store import PatternStore

log = logging.getLogger("testdata.patterns")
T = TypeVar("T")
UNAVAILABLE = "pattern store unavailable"


def describe(exc: BaseException) -> str:
    """A short reason: "timed out after 5s", "StoreUnavailable: ...", "OSError: ..."."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, StoreUnavailable):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 200 else text[:197] + "..."


def location(settings: StoreSettings) -> str:
    return settings.weaviate_url or settings.pattern_store_path


class StoreAvailability:
    """The pattern store of this process and what it is known to hold (an Availability:
    `reason` is None while the store answers)."""

    _shared: ClassVar[dict[str, tuple[StoreAvailability, int]]] = {}

    def __init__(self, settings: StoreSettings, store: PatternStore | None = None):
        self.settings = settings
        self.timeout = settings.pattern_store_timeout_seconds
        self.interval = settings.pattern_store_refresh_seconds
        self.reason: str | None = f"{UNAVAILABLE}: not probed yet"
        self.counts: dict[str, int] = {}
        self.status = "unavailable: not probed yet"
        self._store = store
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._checked: float | None = None
        self._background: asyncio.Task[None] | None = None
        self._key: str | None = None

    @classmethod
    def shared(cls, settings: StoreSettings) -> StoreAvailability:
        """The one instance for this store location in this process (closed by its last
        user's `aclose`): the RAG and hybrid paths share a store and its counts."""
        key = location(settings)
        inst, users = cls._shared.get(key, (None, 0))
        if inst is None:
            inst = cls(settings)
            inst._key = key
        cls._shared[key] = (inst, users + 1)
        return inst

    async def bounded(self, call: Awaitable[T]) -> T:
        """A store call that gives up after the store timeout (TimeoutError)."""
        return await asyncio.wait_for(call, self.timeout)

    async def store(self) -> PatternStore:
        """The started store; StoreUnavailable (or the store's own error) if it cannot be."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._store is None:
                self._store = open_store(self.settings)
            if not self._started:
                await self.bounded(self._store.start())
                self._started = True
        return self._store

    def failed(self, exc: BaseException) -> str:
        """Note that a call failed (the router stops routing here); returns the reason."""
        self.reason = f"{UNAVAILABLE}: {describe(exc)}"
        self.status = f"unavailable: {describe(exc)}"
        self._checked = time.monotonic()
        log.warning("%s", self.reason)
        return self.reason

    async def refresh(self, force: bool = False) -> None:
        """Re-read the store's counts and health, at most every refresh interval."""
        now = time.monotonic()
        if not force and self._checked is not None and now - self._checked < self.interval:
            return
        self._checked = now
        try:
            store = await self.store()
            stats = await self.bounded(store.stats())
            status = await self.bounded(store.health())
        except Exception as exc:  # noqa: BLE001 - a store failure is an availability answer
            self.failed(exc)
            return
        self.counts = dict(stats.counts)
        self.status = status
        unavailable = status.startswith("unavailable")
        self.reason = f"{UNAVAILABLE}: {status.split(':', 1)[-1].strip()}" if unavailable else None

    def gap(self, scope: Scope) -> str | None:
        """Why this store cannot serve `scope` now (None when it holds patterns for it).
        From the cache, never waiting; a stale cache is re-read in the background."""
        stale = self._checked is None or time.monotonic() - self._checked >= self.interval
        if stale and (self._background is None or self._background.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to refresh on
                self._background = asyncio.get_running_loop().create_task(self.refresh())
        if self.reason is not None:
            return self.reason
        return None if self.counts.get(scope.key(), 0) > 0 else scope.missing()

    async def components(self) -> Mapping[str, str]:
        await self.refresh()
        return {"pattern_store": self.status}

    async def aclose(self) -> None:
        if self._key is not None:
            inst, users = self._shared.get(self._key, (None, 0))
            if inst is self and users > 1:
                self._shared[self._key] = (self, users - 1)
                return
            self._shared.pop(self._key, None)
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(BaseException):
                await self._background
        if self._store is not None and self._started:
            with contextlib.suppress(Exception):
                await self.bounded(self._store.aclose())
        self._started = False
