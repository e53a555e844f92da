"""How many calls of one kind a bridge runs at once, and what the rest are told.

Without a limit every call is taken and all of them slow down together: 200 concurrent
unary callers saw a p99 of 14.5x the idle one, and each running unary call may buffer its
whole answer. So a bridge runs at most `limit` calls of a kind; up to `queue` more wait
for a slot in arrival order; a call beyond those is refused at once (RESOURCE_EXHAUSTED,
with a RetryInfo from `retry_after`), which a client's retry policy spreads out or sends
to another instance.

Life cycle of one call: `enter()` returns when it runs (at once, or after queueing; a
call cancelled while queued leaves the queue), or raises `Full`; `leave(seconds)` when it
ends hands its slot to the longest-waiting call. No I/O: unit-tested without a server.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import monotonic

from services.bridge.errors import Full

#: Weight of the newest call in the running mean of call durations (the retry hint).
SMOOTHING = 0.2
#: Bounds of the retry hint, seconds.
MIN_RETRY, MAX_RETRY = 0.05, 60.0


class Admission:
    """Slots for one kind of call (`limit` running, `queue` waiting)."""

    def __init__(self, kind: str, limit: int, queue: int):
        self.kind, self.limit, self.queue = kind, limit, queue
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._mean = 1.0  # seconds per call, until calls say otherwise

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> float:
        """When a slot is likely to be free for one more call: the queue ahead of it
        drained at `limit` calls per mean call duration."""
        wait = self._mean * (self.waiting + 1) / self.limit
        return min(MAX_RETRY, max(MIN_RETRY, wait))

    async def enter(self) -> None:
        if self.running < self.limit and not self._waiting:
            self.running += 1
            return
        if self.waiting >= self.queue:
            raise Full(self.kind, self.limit, self.queue, self.retry_after())
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn in self._waiting:
                self._waiting.remove(turn)
            elif turn.done() and not turn.cancelled():
                self._hand_over()  # given a slot as it was cancelled: pass it on
            raise

    def leave(self, seconds: float) -> None:
        """A running call ended after `seconds`."""
        self._mean += SMOOTHING * (max(0.0, seconds) - self._mean)
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on: `running` stays
                return
        self.running -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.enter()
        started = monotonic()
        try:
            yield
        finally:
            self.leave(monotonic() - started)
