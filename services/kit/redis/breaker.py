"""A circuit breaker for an optional dependency (Redis): stop waiting on it once it is
known to be down.

Seen: a hung Redis (SIGSTOP) cut throughput 130x, every call waiting out several 0.5 s
timeouts. With a breaker, `failures` consecutive failures open the circuit: calls skip
the dependency (serving without it, as when it is unset) for `cool_off` seconds; then one
trial call goes through (HALF_OPEN) while the others keep skipping; its success closes
the circuit, its failure opens it for another cool-off.

    CLOSED --failures in a row--> OPEN --cool_off passed, one call--> HALF_OPEN
    HALF_OPEN --success--> CLOSED;  HALF_OPEN --failure--> OPEN

No I/O, and the clock is a parameter: unit-tested without a server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class Circuit(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls skip the dependency until the cool-off ends
    HALF_OPEN = "half_open"  # one trial call is out; the others skip


class Breaker:
    def __init__(self, failures: int, cool_off: float, clock: Callable[[], float] = time.monotonic):
        self.threshold, self.cool_off, self.clock = failures, cool_off, clock
        self.state = Circuit.CLOSED
        self.failed = 0  # consecutive failures while CLOSED
        self.opened_at = 0.0

    def allow(self) -> bool:
        """Whether a call may use the dependency now (False: serve without it)."""
        if self.state == Circuit.CLOSED:
            return True
        if self.state == Circuit.OPEN and self.clock() - self.opened_at >= self.cool_off:
            self.state = Circuit.HALF_OPEN  # this call is the trial
            return True
        return False

    def succeeded(self) -> None:
        self.state, self.failed = Circuit.CLOSED, 0

    def failed_once(self) -> None:
        self.failed += 1
        if self.state == Circuit.HALF_OPEN or self.failed >= self.threshold:
            self.state, self.opened_at = Circuit.OPEN, self.clock()

    def retry_in(self) -> float:
        """Seconds until the next trial call (0 unless OPEN)."""
        if self.state != Circuit.OPEN:
            return 0.0
        return max(0.0, self.opened_at + self.cool_off - self.clock())
