"""One run per request attempt across generator instances, with Redis.

An attempt is its correlation id (a bridge's call, and the router's copies of a redelivered
request); without one, the message's position (a Kafka redelivery), so an agent sending a
request id again is a new attempt. While it runs, its holder keeps a lease
(`lease:<path>:<id>:<attempt>`, LEASE_SECONDS, renewed every third); once it completed, a
done marker stays as long as a redelivery may come. A second delivery of the attempt is
acknowledged without work if it completed, or waits while another instance holds it; a
lease whose holder died expires and is taken over. Without Redis every delivery runs (the
bridge still never splices two runs).

Life cycle: `claim()` (False: do not run) -> `hold()` in a task while running ->
`release()` after a complete run (an interrupted one leaves the lease to expire).
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.kit.ops import metrics
from services.kit.redis.keystore import KeyStore
from services.kit.runtime.stream import Message
from services.kit.wire.headers import CORRELATION

log = logging.getLogger("testdata.generation")

#: A running attempt's lease lives this long unless renewed (every third).
LEASE_SECONDS = 15
LEASE_POLL_SECONDS = 0.2


class AttemptLease:
    def __init__(
        self, keystore: KeyStore, path: str, budget_seconds: float, msg: Message, request_id: str
    ):
        self.keystore, self.path, self.budget_seconds = keystore, path, budget_seconds
        self.request_id = request_id
        attempt = msg.header(CORRELATION) or f"@{msg.topic}:{msg.partition}:{msg.offset}"
        self.lease = keystore.key("lease", path, request_id, attempt)
        self.done = keystore.key("done", path, request_id, attempt)

    async def claim(self) -> bool:
        """Whether to run it: False when it completed before (a redelivery), or ran
        elsewhere until it completed while this one waited."""
        waited = False
        give_up = time.monotonic() + self.budget_seconds
        while True:
            if await self.keystore.get(self.done) is not None:
                reason = "in_flight" if waited else "completed"
                metrics.DUPLICATE_RUNS_AVOIDED.labels(self.path, reason).inc()
                log.info("%s: %s already; not generated again", self.request_id, reason)
                return False
            held = await self.keystore.set(self.lease, b"1", LEASE_SECONDS, nx=True)
            if held is not False or time.monotonic() > give_up:
                return True  # ours, or no Redis: run
            waited = True
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def hold(self) -> None:
        """Renew the lease until cancelled."""
        while self.keystore.configured:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await self.keystore.set(self.lease, b"1", LEASE_SECONDS)

    async def release(self) -> None:
        """Completed: mark it done for as long as a redelivery may come, drop the lease."""
        if self.keystore.configured:
            ttl = int(2 * self.budget_seconds + 60)
            await self.keystore.set(self.done, b"1", ttl)
            await self.keystore.delete(self.lease)
