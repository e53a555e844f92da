"""One GenerateDataStream call as an object: what it sends, what it keeps, when it stops.

Life cycle of a session (`run`):
1. From the result cache, when the request asks for it and a complete run is kept: the
   chunks are written and nothing is generated.
2. Else the request is submitted and each chunk relayed in order:
   - a resumed stream skips the chunks its caller already has; a final chunk at or
     before the one asked for ends the call (OUT_OF_RANGE: nothing follows it);
   - a path that is not deterministic (a generator run id on its chunks) cannot be
     resumed: a fresh stream stops being resumable, a resumed one fails
     (FAILED_PRECONDITION);
   - a complete run is kept for the cache while it stays within the cache's bounds;
   - each chunk is written at the caller's pace; a caller that reads nothing for the idle
     timeout is let go (generation stops now; DEADLINE_EXCEEDED once it reads again).
3. The attempt is released exactly once, whatever ended the call, and a kept run stored.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import grpc

from services.core.models import GenerateRequest
from services.kit.path.resultcache import ResultCache, answered_from_cache
from services.kit.wire.messages import ResultChunk

from .convert import chunk_to_proto
from .identity import TENANT
from .inbox import Pending
from .retries import Pinned
from .status import NONDETERMINISTIC, Reason, abort, failure, past_the_end

#: How long past the idle timeout a caller that stopped reading may still take to read
#: the write already queued for it, before the call ends without its status.
IDLE_GRACE_FACTOR = 10


class Relay(Protocol):
    """What a session needs of its bridge: submitting a request, its next chunk, and
    letting the attempt go."""

    cache: ResultCache
    pinned: Pinned
    idle_timeout: float

    async def submit(
        self, req: GenerateRequest, context: grpc.aio.ServicerContext, *, resumed: bool, keep: bool
    ) -> Pending: ...

    async def next_chunk(
        self, pending: Pending, context: grpc.aio.ServicerContext
    ) -> ResultChunk: ...

    def finished(self, req: GenerateRequest, pending: Pending, got_final: bool) -> None: ...


class StreamSession:
    """One admitted stream: `sent` is the request as its caller sent it (the cache's key;
    None for a resumed stream, which is never answered from the cache), `skip` the last
    chunk a resumed caller already has (-1: none)."""

    def __init__(
        self,
        relay: Relay,
        context: grpc.aio.ServicerContext,
        req: GenerateRequest,
        sent: GenerateRequest | None,
        resume: str | None = None,
        skip: int = -1,
    ):
        self.relay, self.context, self.req = relay, context, req
        self.resume, self.skip = resume, skip
        self.asked = sent if req.use_cache and resume is None else None
        self.tenant = TENANT.get()
        self.kept: list[ResultChunk] | None = [] if self.asked is not None else None
        self.got_final = self.released = self.refused = False

    async def run(self) -> None:
        if await self._from_cache():
            return
        pending = await self.relay.submit(
            self.req, self.context, resumed=self.resume is not None, keep=self.resume is None
        )
        try:
            while not self.got_final:
                chunk = await self.relay.next_chunk(pending, self.context)
                await self._check_resumable(pending)
                self._keep(chunk)
                if chunk.chunk_index <= self.skip:
                    if chunk.is_final:  # nothing after the chunk asked for: say so
                        await abort(self.context, past_the_end(self.req, self.skip, chunk))
                    continue
                if not await self._write(chunk, pending):
                    return
                self.got_final = chunk.is_final
        finally:
            self._release(pending)
        if self.kept is not None and self.asked is not None:
            await self.relay.cache.store_run(self.asked, self.kept, self.tenant)

    async def _from_cache(self) -> bool:
        if self.asked is None:
            return False
        hit = await self.relay.cache.lookup(self.asked, self.tenant)
        if hit is None:
            return False
        for chunk in answered_from_cache(hit, self.req.request_id):
            if chunk.chunk_index > self.skip:
                await self.context.write(chunk_to_proto(chunk))
        return True

    async def _check_resumable(self, pending: Pending) -> None:
        if not pending.run:
            return
        if self.resume is not None:  # a rerun would differ: no resume
            await abort(
                self.context,
                failure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    NONDETERMINISTIC,
                    Reason.NOT_RESUMABLE,
                    request_id=self.req.request_id,
                ),
            )
        if not self.refused:
            self.refused = True  # a non-deterministic path's stream cannot be resumed
            await self.relay.pinned.refuse(self.req.request_id, self.tenant)

    def _keep(self, chunk: ResultChunk) -> None:
        """Kept for the cache while within its bounds."""
        if self.kept is None:
            return
        self.kept.append(chunk)
        size = sum(c.record_count for c in self.kept), sum(len(c.data) for c in self.kept)
        if not self.relay.cache.fits(*size):
            self.kept = None

    async def _write(self, chunk: ResultChunk, pending: Pending) -> bool:
        """Write `chunk` at the caller's pace; False when the caller was let go."""
        timeout = self.relay.idle_timeout
        write = asyncio.ensure_future(self.context.write(chunk_to_proto(chunk)))
        done, _ = await asyncio.wait({write}, timeout=timeout)
        if done:
            return True
        # Idle: stop generating and reading for it now. The write stays queued (a gRPC
        # write cannot be withdrawn); the status follows it, so the caller learns why as
        # soon as it reads again.
        self._release(pending)
        try:  # bounded: a connected caller that never reads is let go
            await asyncio.wait_for(write, IDLE_GRACE_FACTOR * timeout)
        except TimeoutError:
            return False  # still not reading: end the call, its status cannot go out
        await abort(
            self.context,
            failure(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"stream idle: the caller read nothing for {timeout:g} s "
                "(STREAM_IDLE_TIMEOUT_SECONDS); generation stopped",
                Reason.STREAM_IDLE,
                request_id=self.req.request_id,
            ),
        )

    def _release(self, pending: Pending) -> None:
        if not self.released:
            self.released = True
            self.relay.finished(self.req, pending, self.got_final)
