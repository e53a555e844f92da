"""gRPC bridge: TestDataService RPCs as round-trips through the Kafka topics.

It is the ingress for request/response callers: it checks the request (field-level
INVALID_ARGUMENT), fixes request_id, seed and anchor so the requests log reproduces the
data (services.core.reproducible), publishes to the requests topic with `reply-to` naming
this instance's reply topic, and answers from that topic (see inbox.py).

Every failure ends the call with one gRPC status, the same for GenerateData and
GenerateDataStream (status.py): a unary call never answers OK with `success=false`. The
service is registered with request deserializers that cannot raise, so bytes that are not
a request are INVALID_ARGUMENT like any other bad input, and an unexpected exception is
INTERNAL with no Python detail, instead of grpc's UNKNOWN naming the exception class.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.core.admission import Admitted, Planner, admit
from services.core.bounds import estimate_output_bytes
from services.core.errors import RequestInvalid
from services.core.formats import join_chunks
from services.core.models import FieldError, GenerateRequest
from services.core.registry import SchemaRegistry
from services.core.report import ErrorKind
from services.kit.ops import metrics
from services.kit.ops.errors import StartupError
from services.kit.ops.procstate import DISK_FULL, FROZEN, STUCK
from services.kit.redis.keystore import KeyStore
from services.kit.runtime.control import ControlListener, publish_cancel
from services.kit.runtime.kafka import broker_reachable
from services.kit.runtime.stream import Runtime
from services.kit.wire.headers import AVRO, CONTENT_TYPE, CORRELATION, DEADLINE, REPLY_TO
from services.kit.wire.messages import ResultChunk
from services.kit.wire.tenancy import vouch
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

from .admission import Admission, Full
from .convert import metadata_to_proto, request_from_proto
from .identity import (
    LOCAL,
    TENANT,
    Authenticate,
    Authenticator,
    CredentialsInvalid,
    server_credentials,
)
from .inbox import BrokerGone, ChunkGap, GenerationRestarted, Inbox, Pending, Restarted
from .retries import (
    Idempotency,
    KeyReused,
    NotResumable,
    Pinned,
    ResultCache,
    answered_from_cache,
)
from .session import StreamSession
from .status import (
    NONDETERMINISTIC,
    STATUS_BY_KIND,
    Reason,
    abort,
    failure,
    past_the_end,
    rate_limited,
    reason_of,
    status_for,
    summary,
)

__all__ = ["SERVICE", "STATUS_BY_KIND", "TestDataServicer", "overall", "serve", "status_for"]

log = logging.getLogger("testdata.bridge")
SERVICE = "testdata.v1.TestDataService"
# Extra health components (LLM backends, pattern store...) registered by the process.
HealthProbe = Callable[[], Awaitable[Mapping[str, str]]]

#: The retry hint of a call failed because the broker is gone: about what a supervised
#: embedded broker takes to come back.
BROKER_RETRY_SECONDS = 5.0
#: Backoff between publishes of a request the broker refused with a retriable error.
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0
#: Largest message the bridge sends: one GenerateData answer (streams send chunks).
MAX_SEND_BYTES = 64 * 1024 * 1024


class TestDataServicer(pb_grpc.TestDataServiceServicer):
    def __init__(
        self,
        runtime: Runtime,
        registry: SchemaRegistry,
        inbox: Inbox,
        probes: list[HealthProbe] | None = None,
        keystore: KeyStore | None = None,
    ):
        self.rt = runtime
        self.registry = registry
        self.inbox = inbox
        self.probes = probes or []
        s = runtime.settings
        self.planner = Planner(registry, s.limits)
        self.max_sync = s.max_sync_records
        self.idle_timeout = s.stream_idle_timeout_seconds
        self._background: set[asyncio.Future[None]] = set()
        self._entities = set(registry.names())
        self._domains = {e.domain for e in registry.list()}
        self.keystore = keystore or KeyStore(None)
        self.cache = ResultCache(self.keystore, runtime.codec, s, "bridge")
        self.idempotency = Idempotency(self.keystore, s)
        self.pinned = Pinned(self.keystore, runtime.codec, s)
        self.rate, self.burst = s.rate_limit_per_second, s.rate_limit_burst
        self.unary = Admission("unary", s.max_running_unary, s.max_queued_unary)
        self.streams = Admission("stream", s.max_running_streams, s.max_queued_streams)
        self.authenticated = False  # set by serve(): calls carry a proven tenant

    # ---- retries, cache, rate limit ----------------------------------------------------
    @staticmethod
    def _meta(context: grpc.aio.ServicerContext, name: str) -> str | None:
        for key, value in context.invocation_metadata() or ():
            if key == name:
                return value if isinstance(value, str) else value.decode()
        return None

    def _client(self, context: grpc.aio.ServicerContext) -> str:
        """The tenant, and inside it the `x-client-id` label, else the peer's address."""
        named = self._meta(context, "x-client-id")
        label = f"id:{named}" if named else "peer:" + context.peer().rsplit(":", 1)[0]
        return f"{TENANT.get()}/{label}"

    def _bucket(self, context: grpc.aio.ServicerContext) -> str:
        """Whose calls share a rate limit: the tenant's (with authentication), else the
        peer address's; never a label the caller picks (seen: a new `x-client-id` per
        call bypassed the limit 40 of 40 times)."""
        if self.authenticated:
            return f"tenant:{TENANT.get()}"
        return "peer:" + context.peer().rsplit(":", 1)[0]

    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        """The per-client token bucket (Redis); without Redis nothing is limited."""
        if self.rate <= 0:
            return
        bucket = self.keystore.key("rate", self._bucket(context))
        wait = await self.keystore.take(bucket, self.rate, self.burst)
        if wait:
            metrics.RATE_LIMITED.inc()
            await abort(
                context,
                rate_limited(
                    f"rate limit: {self.rate:g} calls/s, burst {self.burst}, per client; "
                    f"retry in {wait:.2f} s",
                    wait,
                ),
            )

    # ---- ingress ---------------------------------------------------------------------
    async def _accept(
        self, message: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> Admitted:
        """The call's request converted (once), pinned and planned; INVALID_ARGUMENT with
        every problem otherwise."""
        try:
            return admit(
                request_from_proto(message),
                self.planner,
                request_id=f"req-{uuid.uuid4().hex}",
                seed=secrets.randbits(63),
                now=datetime.now(UTC).replace(microsecond=0),
            )
        except RequestInvalid as exc:
            metrics.VALIDATION_ERRORS.labels(
                metrics.known(message.domain, self._domains),
                metrics.known(message.entity, self._entities),
            ).inc()
            await abort(
                context,
                failure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    summary("invalid request", exc.errors),
                    ErrorKind.INVALID_REQUEST.name,
                    exc.errors,
                    message.request_id,
                ),
            )

    async def _refuse_oversized(
        self, req: GenerateRequest, estimate: int, context: grpc.aio.ServicerContext
    ) -> None:
        """A unary answer estimated past the gRPC send limit is refused before any work:
        generated, it would be buffered whole (several times its size) and then fail."""
        if estimate <= MAX_SEND_BYTES:
            return
        message = (
            f"the answer is estimated at ~{estimate / (1 << 20):,.0f} MiB, above the "
            f"{MAX_SEND_BYTES >> 20} MiB one GenerateData answer may carry; use "
            "GenerateDataStream"
        )
        await abort(
            context,
            failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
                Reason.SYNC_LIMIT,
                [FieldError(path="count", message=message, value=req.count)],
                req.request_id,
            ),
        )

    @asynccontextmanager
    async def _slot(
        self, gate: Admission, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Run the call within `gate`'s limits, or refuse it with a retry hint."""
        running, waiting = (metrics.ADMITTED.labels(gate.kind, s) for s in ("running", "waiting"))
        waiting.inc()
        try:
            await gate.enter()
        except Full as exc:
            metrics.OVERLOADED.labels(gate.kind).inc()
            await abort(context, rate_limited(str(exc), exc.retry_after, Reason.OVERLOADED))
        finally:
            waiting.dec()
        running.inc()
        started = time.monotonic()
        try:
            yield
        finally:
            running.dec()
            gate.leave(time.monotonic() - started)

    async def submit(
        self,
        req: GenerateRequest,
        context: grpc.aio.ServicerContext,
        restartable: bool = False,
        resumed: bool = False,
        keep: bool = False,
    ) -> Pending:
        """Publish `req`, once no call of this bridge runs its id. `keep`: remember it for
        a later resume, only then (seen: a second call with an id in progress, refused
        ALREADY_EXISTS, still replaced the pinned request, and the first caller's resume
        returned the second one's records)."""
        if self.inbox.broker_gone:  # nothing could be published: fail now, not in 10 s
            await abort(context, broker_gone(req.request_id))
        if not self.inbox.healthy:  # its answer could never be read: fail now, not at the deadline
            await abort(
                context,
                failure(
                    grpc.StatusCode.UNAVAILABLE,
                    "this bridge is not reading its reply topic; retry (another instance)",
                    Reason.BROKER_UNAVAILABLE,
                    request_id=req.request_id,
                ),
            )
        try:
            if resumed:
                await self._predecessor_let_go(req.request_id, context)
            pending = self.inbox.open(req.request_id, restartable, TENANT.get())
        except KeyError:
            await abort(
                context,
                failure(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"request {req.request_id} is already in progress",
                    Reason.IN_PROGRESS,
                    request_id=req.request_id,
                ),
            )
        try:
            if keep:
                await self.pinned.remember(req, TENANT.get())
            await self._publish(
                self.rt.codec.encode_request(req),
                req.request_id,
                self._headers(pending, context),
                context,
            )
        except BaseException as exc:
            # Not acknowledged: it may still reach the broker, so stop it there too.
            self.finished(req, pending, got_final=False)
            if isinstance(exc, MessageSizeTooLargeError):
                await abort(
                    context,
                    failure(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the request is too large to publish (Kafka message size limit)",
                        ErrorKind.INVALID_REQUEST.name,
                        [FieldError(path="request", message="too large to publish")],
                        req.request_id,
                    ),
                )
            if isinstance(exc, BrokerGone):
                await abort(context, broker_gone(req.request_id))
            if isinstance(exc, KafkaError | TimeoutError):
                log.warning("publishing %s failed: %r", req.request_id, exc)
                why = (
                    "no acknowledgement in time"
                    if isinstance(exc, TimeoutError)
                    else "it refused it or the connection failed"
                )
                await abort(
                    context,
                    failure(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the broker did not accept the request ({why}); retry with backoff",
                        Reason.BROKER_UNAVAILABLE,
                        request_id=req.request_id,
                    ),
                )
            raise
        return pending

    async def _predecessor_let_go(self, request_id: str, context: grpc.aio.ServicerContext) -> None:
        """A resumed stream's cut predecessor may still be being let go (its caller's
        cancel reaches this bridge after the resume, on a loaded machine): wait for it, up
        to STREAM_IDLE_TIMEOUT_SECONDS or the caller's deadline; one still running after
        that is IN_PROGRESS."""
        remaining = context.time_remaining()
        wait = self.idle_timeout if remaining is None else min(self.idle_timeout, remaining)
        until = time.monotonic() + wait
        while self.inbox.in_progress(request_id, TENANT.get()) and time.monotonic() < until:
            await asyncio.sleep(0.02)

    async def _publish(
        self,
        value: bytes,
        request_id: str,
        headers: list[tuple[str, bytes]],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Publish a request and wait for its acknowledgement as long as the broker is
        there: a slow one (a loaded machine) is waited for, up to the caller's deadline or
        else the generation budget; one that is gone (nothing accepts a connection at any
        bootstrap address after PUBLISH_TIMEOUT_SECONDS without an acknowledgement) ends
        the wait with TimeoutError, which the caller hears as UNAVAILABLE."""
        s = self.rt.settings
        remaining = context.time_remaining()
        budget = s.generation_budget_seconds if remaining is None else max(0.1, remaining - 0.5)
        backoff = RETRY_FIRST_S
        async with asyncio.timeout(budget):
            while True:
                try:
                    return await self._publish_once(value, request_id, headers)
                except KafkaError as exc:
                    # Seen: NotLeaderForPartition for a moment after a topic change on a
                    # loaded broker failed a call UNAVAILABLE. Retriable errors say the
                    # broker will take it: try again (the same attempt: a duplicate is
                    # one run), within the budget.
                    if not exc.retriable:
                        raise
                    log.info("publishing %s: %r; retrying", request_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, RETRY_MAX_S)

    async def _publish_once(
        self, value: bytes, request_id: str, headers: list[tuple[str, bytes]]
    ) -> None:
        s = self.rt.settings
        sent = asyncio.ensure_future(
            self.rt.publish(self.rt.topics.requests, value, request_id, headers)
        )
        slice_s = min(s.publish_timeout_seconds, s.broker_check_seconds)
        check_at = time.monotonic() + s.publish_timeout_seconds
        try:
            while not (await asyncio.wait({sent}, timeout=slice_s))[0]:
                if self.inbox.broker_gone:  # the inbox's watch saw it go
                    raise BrokerGone("the Kafka broker is unreachable")
                if time.monotonic() < check_at:
                    continue
                check_at = time.monotonic() + s.publish_timeout_seconds
                if not await broker_reachable(self.rt.bootstrap):
                    raise BrokerGone("the Kafka broker is unreachable")
                log.info(
                    "publishing %s: no acknowledgement yet; the broker is slow, waiting",
                    request_id,
                )
        finally:
            if not sent.done():
                sent.cancel()
        sent.result()

    def _headers(
        self, pending: Pending, context: grpc.aio.ServicerContext
    ) -> list[tuple[str, bytes]]:
        headers = [
            (CONTENT_TYPE, AVRO.encode()),
            (REPLY_TO, self.inbox.topic.encode()),
            (CORRELATION, pending.correlation.encode()),
        ]
        remaining = context.time_remaining()
        if remaining is not None and remaining < 10 * 365 * 86400:  # "no deadline" is huge
            deadline_ms = int((time.time() + remaining) * 1000)
            headers.append((DEADLINE, str(deadline_ms).encode()))
        return vouch(self.rt.signing_key, pending.request_id, TENANT.get(), headers)

    def finished(self, req: GenerateRequest, pending: Pending, got_final: bool) -> None:
        """The RPC ended: forget the request, and if the caller left before the final
        chunk, tell the generators to stop (through the control topic)."""
        self.inbox.close(pending)
        if got_final or pending.done:  # the final chunk came (a failed one included)
            return
        if self.inbox.broker_gone:  # it cannot go out; the generators cannot send either
            return
        task = asyncio.ensure_future(self._cancel(req.request_id, pending.correlation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel(self, request_id: str, correlation: str) -> None:
        """Best effort: with the broker gone the cancel cannot go out either (the
        generator then finishes into a reply nobody reads), which is no error of the call."""
        try:
            await publish_cancel(
                self.rt, request_id, correlation, "the caller cancelled or timed out"
            )
        except Exception as exc:  # noqa: BLE001 - logged; nobody awaits this task
            log.warning("cancel of %s not published: %r", request_id, exc)

    async def next_chunk(self, pending: Pending, context: grpc.aio.ServicerContext) -> ResultChunk:
        """The next chunk; a failed one ends the call with its status (both RPCs alike)."""
        try:
            chunk = await pending.get()
        except (ChunkGap, GenerationRestarted) as exc:
            code, reason = (
                (grpc.StatusCode.DATA_LOSS, Reason.CHUNK_GAP)
                if isinstance(exc, ChunkGap)
                else (grpc.StatusCode.ABORTED, Reason.GENERATION_RESTARTED)
            )
            await abort(context, failure(code, str(exc), reason, request_id=pending.request_id))
        except BrokerGone:
            await abort(context, broker_gone(pending.request_id))
        except KafkaError as exc:  # a slow caller's chunks are read back from the log
            log.warning("reading replies of %s failed: %r", pending.request_id, exc)
            await abort(
                context,
                failure(
                    grpc.StatusCode.UNAVAILABLE,
                    "reading the results from the broker failed; retry with backoff",
                    Reason.BROKER_UNAVAILABLE,
                    request_id=pending.request_id,
                ),
            )
        if not chunk.success:
            errors = [FieldError(path=e.path, message=e.message) for e in chunk.error_details]
            code = status_for(chunk.error_kind)
            if errors and code == grpc.StatusCode.INTERNAL:  # field-level: the request's fault
                code = grpc.StatusCode.INVALID_ARGUMENT
            await abort(
                context,
                failure(
                    code,
                    chunk.error or "generation failed",
                    reason_of(chunk.error_kind),
                    errors,
                    chunk.request_id,
                ),
            )
        return chunk

    # ---- RPCs ------------------------------------------------------------------------
    async def GenerateData(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        await self._admit(context)
        admitted = await self._accept(request, context)
        req, plan = admitted.request, admitted.plan
        count = plan.count
        estimate = int(estimate_output_bytes(plan.output_schema.fields, count))
        if count > self.max_sync:
            await abort(
                context,
                failure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"count {count} is above MAX_SYNC_RECORDS ({self.max_sync}); use "
                    "GenerateDataStream for large requests",
                    Reason.SYNC_LIMIT,
                    [
                        FieldError(
                            path="count",
                            message=f"above {self.max_sync} for GenerateData; "
                            "use GenerateDataStream",
                        )
                    ],
                    req.request_id,
                ),
            )
        await self._refuse_oversized(req, estimate, context)
        async with self._slot(self.unary, context):
            return await self._answer(admitted, context)

    async def _answer(
        self, admitted: Admitted, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        """One admitted GenerateData call, once only under an idempotency key."""
        req = admitted.request
        key = self._meta(context, "idempotency-key")
        if not key:
            return await self._unary(admitted, context)

        async def produce() -> bytes:
            return (await self._unary(admitted, context)).SerializeToString()

        try:  # keyed by the request as sent: the bridge's random seed aside
            answer, _ = await self.idempotency.run(
                self._client(context), key, admitted.asked, produce
            )
        except KeyReused as exc:
            await abort(
                context,
                failure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    str(exc),
                    Reason.IDEMPOTENCY_KEY_REUSED,
                    [FieldError(path="idempotency-key", message=str(exc))],
                    req.request_id,
                ),
            )
        return pb.GenerateResponse.FromString(answer)

    async def _unary(
        self, admitted: Admitted, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        """One GenerateData answer: from the cache (use_cache) or generated."""
        req = admitted.request
        asked = admitted.asked if req.use_cache else None
        chunks = await self.cache.lookup(asked, TENANT.get()) if asked is not None else None
        if chunks is not None:
            chunks = answered_from_cache(chunks, req.request_id)
        else:
            chunks = await self._collect(req, context)
            if asked is not None:
                await self.cache.store_run(asked, chunks, TENANT.get())
        return pb.GenerateResponse(  # a failure aborted in _next: this one succeeded
            request_id=req.request_id,
            success=True,
            data=join_chunks(req.output_format, [c.data for c in chunks]),
            record_count=sum(c.record_count for c in chunks),
            metadata=metadata_to_proto(chunks[-1].metadata),
        )

    async def _collect(
        self, req: GenerateRequest, context: grpc.aio.ServicerContext
    ) -> list[ResultChunk]:
        pending = await self.submit(req, context, restartable=True)
        got_final = False
        chunks: list[ResultChunk] = []
        size = 0
        try:
            while not got_final:
                try:
                    chunk = await self.next_chunk(pending, context)
                except Restarted:  # a newer run replaces what came so far: take it whole
                    chunks.clear()
                    size = 0
                    continue
                chunks.append(chunk)
                got_final = chunk.is_final
                size += len(chunk.data)
                if size > MAX_SEND_BYTES:  # the estimate was wrong: stop before buffering more
                    await abort(
                        context,
                        failure(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"the answer grew past the {MAX_SEND_BYTES >> 20} MiB one "
                            "GenerateData answer may carry; generation stopped; use "
                            "GenerateDataStream",
                            Reason.SYNC_LIMIT,
                            request_id=req.request_id,
                        ),
                    )
        finally:
            self.finished(req, pending, got_final)  # also on cancellation / deadline
        return chunks

    async def GenerateDataStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Written with `context.write`, so a caller that reads nothing for
        STREAM_IDLE_TIMEOUT_SECONDS is told so; a slower one is served at its pace.

        `resume-from-chunk: k` with the original request_id generates that request again
        as first published (same seed and anchor) and sends chunks k+1.. only."""
        await self._admit(context)
        resume = self._meta(context, "resume-from-chunk")
        if resume is not None:
            req, skip = await self._resumed(request, resume, context)
            session = StreamSession(self, context, req, None, resume, skip)
        else:
            admitted = await self._accept(request, context)
            session = StreamSession(self, context, admitted.request, admitted.asked)
        async with self._slot(self.streams, context):
            await session.run()

    async def _resumed(
        self, message: pb.GenerateRequest, resume: str, context: grpc.aio.ServicerContext
    ) -> tuple[GenerateRequest, int]:
        """The request to generate again for a resumed stream, and the last chunk sent."""
        problem = None
        try:
            skip = int(resume)
        except ValueError:
            skip, problem = -1, f"resume-from-chunk must be a chunk index, got {resume!r}"
        try:
            wanted, tenant = message.request_id, TENANT.get()
            req = await self.pinned.recall(wanted, tenant) if wanted else None
        except NotResumable:
            req, problem = None, NONDETERMINISTIC
        if problem is None and req is None:  # unknown to this tenant: never another's
            await abort(
                context,
                failure(
                    grpc.StatusCode.NOT_FOUND,
                    f"no stream {wanted!r} to resume: give the original request_id of a "
                    "stream you started within IDEMPOTENCY_TTL_SECONDS",
                    Reason.NOT_RESUMABLE,
                    [FieldError(path="request_id", message="no such stream", value=wanted)],
                    request_id=wanted,
                ),
            )
        if req is not None and skip > req.count:  # a record or more per chunk, and one final
            await abort(context, past_the_end(req, skip))
        if problem is not None or req is None or skip < -1:
            await abort(
                context,
                failure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    problem or "resume-from-chunk must be >= -1",
                    Reason.NOT_RESUMABLE,
                    request_id=message.request_id,
                ),
            )
        return req, skip

    async def GetSchemas(
        self, request: pb.GetSchemasRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSchemasResponse:
        return pb.GetSchemasResponse(
            schemas=[
                pb.SchemaInfo(
                    name=s.name, domain=s.domain, description=s.description, fields=s.field_names()
                )
                for s in self.registry.list(request.domain)
            ]
        )

    async def HealthCheck(
        self, request: pb.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthCheckResponse:
        components = await self.components()
        return pb.HealthCheckResponse(status=overall(components), components=components)

    async def components(self) -> dict[str, str]:
        out = {
            "kafka": await self._kafka(),
            "schema_registry": f"healthy: {len(self.registry.names())} entities",
            "reply_inbox": "healthy" if self.inbox.healthy else "unhealthy: not consuming",
            "redis": await self.keystore.component(),
        }
        for probe in self.probes:
            try:
                out.update(await asyncio.wait_for(probe(), 3))
            except Exception as exc:  # noqa: BLE001 - a probe failure is a health answer
                out[getattr(probe, "__name__", "probe")] = f"unhealthy: {exc}"
        return out

    async def _kafka(self) -> str:
        producer = self.rt.producer
        if producer is None:
            return "unhealthy: producer not started"
        try:
            ok = await asyncio.wait_for(producer.client.fetch_all_metadata(), 2)
            return f"healthy: {len(ok.brokers())} broker(s) at {self.rt.bootstrap}"
        except Exception as exc:  # noqa: BLE001
            return f"unhealthy: {type(exc).__name__}: {exc}"


def broker_gone(request_id: str) -> grpc.Status:
    """A call that cannot complete because the broker accepts no connection."""
    return failure(
        grpc.StatusCode.UNAVAILABLE,
        "the Kafka broker is unreachable, so this request's result cannot come; retry "
        "with backoff (the same request_id is fine)",
        Reason.BROKER_UNAVAILABLE,
        request_id=request_id,
        retry_after=BROKER_RETRY_SECONDS,
    )


def overall(components: Mapping[str, str]) -> str:
    """unhealthy if Kafka or the schemas are down, a process is frozen, a consumer stuck
    (requests would wait forever) or a disk full; degraded if an optional part is down."""
    bad = [
        k for k, v in components.items() if v.startswith(("unhealthy", "unavailable", "degraded"))
    ]
    if any(k in ("kafka", "schema_registry", "reply_inbox") for k in bad):
        return "unhealthy"
    if any(v.startswith((FROZEN, STUCK, DISK_FULL)) for v in components.values()):
        return "unhealthy"
    return "degraded" if bad else "healthy"


# ---- registration: deserializers that cannot raise, handlers that map every failure ----
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Undecodable:
    """What a request deserializer returns for bytes that are not its message: grpc turns
    a deserializer's exception into UNKNOWN, so the handler answers it instead."""

    message_type: str
    reason: str


def _decoder(message_type: type[M]) -> Callable[[bytes], M | Undecodable]:
    name = message_type.DESCRIPTOR.full_name

    def decode(raw: bytes) -> M | Undecodable:
        try:
            return message_type.FromString(raw)
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the caller's input
            return Undecodable(name, _decode_reason(str(exc)))

    return decode


def _decode_reason(text: str) -> str:
    """protobuf's reason without its preamble, in the caller's terms."""
    reason = text.rsplit("': ", 1)[-1].strip() or "not a valid message"
    if "MaxDepth" in reason or "recursion" in reason.lower():
        return "messages nested more than 100 levels deep"
    return reason


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _guarded(behavior: Behavior, method: str) -> Behavior:
    """`behavior` with the failures that would otherwise reach grpc as UNKNOWN answered:
    an undecodable request (INVALID_ARGUMENT), a bug (INTERNAL, logged, no Python detail)."""

    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            metrics.VALIDATION_ERRORS.labels("", "").inc()
            await abort(
                context,
                failure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {request.message_type}: {request.reason}",
                    ErrorKind.DECODE.name,
                    [FieldError(path="request", message=request.reason)],
                ),
            )
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception:  # the caller gets a status, the log the traceback
            log.exception("%s failed", method)
            await abort(
                context,
                failure(
                    grpc.StatusCode.INTERNAL,
                    "internal error in the bridge; its log has the details",
                    ErrorKind.PROCESSING.name,
                    request_id=getattr(request, "request_id", ""),
                ),
            )

    return handler


def add_servicer(servicer: TestDataServicer, server: grpc.aio.Server) -> None:
    """What the generated add_TestDataServiceServicer_to_server does, with `_decoder` and
    `_guarded` around every method."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    methods: list[tuple[str, Any, type[Message], type[Message]]] = [
        ("GenerateData", unary, pb.GenerateRequest, pb.GenerateResponse),
        ("GenerateDataStream", stream, pb.GenerateRequest, pb.DataChunk),
        ("GetSchemas", unary, pb.GetSchemasRequest, pb.GetSchemasResponse),
        ("HealthCheck", unary, pb.HealthCheckRequest, pb.HealthCheckResponse),
    ]
    handlers = {
        name: kind(
            _guarded(getattr(servicer, name), name),
            request_deserializer=_decoder(request),
            response_serializer=response.SerializeToString,
        )
        for name, kind, request, response in methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind_problem(host: str, port: int) -> str:
    """Why a port cannot be bound: grpc's own error only says that it could not."""
    try:
        with socket.create_server((host, port)):
            return "grpc could not bind it"
    except OSError as exc:
        return "already in use" if exc.errno == errno.EADDRINUSE else str(exc)


async def serve(
    runtime: Runtime,
    registry: SchemaRegistry,
    instance: str,
    port: int,
    probes: list[HealthProbe] | None = None,
    host: str = "127.0.0.1",
    keystore: KeyStore | None = None,
    control: ControlListener | None = None,
) -> tuple[grpc.aio.Server, TestDataServicer, int]:
    """Start the bridge: inbox first (so no reply can be missed), then the server.
    `control`: the process's control reader (the inbox's janitor reads leases from it)."""
    s = runtime.settings
    try:
        authenticator = Authenticator.from_settings(s)
        credentials = server_credentials(s)
    except CredentialsInvalid as exc:
        raise StartupError(str(exc)) from exc
    if authenticator is None and not _loopback(host) and not s.allow_unauthenticated:
        raise StartupError(
            f"refusing to serve gRPC on {host} without authentication (anyone who reaches "
            "it could read and resume every caller's data): set AUTH_TOKENS_FILE, "
            "AUTH_JWT_JWKS_FILE, AUTH_JWT_PUBLIC_KEY_FILE or GRPC_TLS_CLIENT_CA_FILE, or "
            "BIND_HOST=127.0.0.1, or ALLOW_UNAUTHENTICATED=true behind a proxy that "
            "authenticates (docs/security.md)"
        )
    if authenticator is None:
        log.warning("gRPC without authentication: one tenant (%s), on %s only", LOCAL, host)
    if credentials is None and not _loopback(host):
        log.warning("gRPC on %s without TLS: credentials and data cross in clear", host)
    inbox = Inbox(runtime, instance, control)
    await inbox.start()
    servicer = TestDataServicer(runtime, registry, inbox, probes, keystore)
    servicer.authenticated = authenticator is not None
    server = grpc.aio.server(
        interceptors=[Authenticate(authenticator)] if authenticator else [],
        # past this many calls at once grpc answers RESOURCE_EXHAUSTED (None: no limit)
        maximum_concurrent_rpcs=runtime.settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # grpc binds with SO_REUSEPORT by default: a second instance would then share
            # the port silently instead of failing to start.
            ("grpc.so_reuseport", 0),
        ],
    )
    add_servicer(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    try:
        address = f"{host}:{port}"
        bound = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError:
        bound = 0  # grpc raises for a failed bind (older versions returned 0)
    if bound == 0:
        await inbox.stop()
        reason = _bind_problem(host, port)
        raise StartupError(f"gRPC port {port} on {host} is unavailable: {reason}")
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "gRPC bridge %s on :%d%s, replies on %s",
        instance,
        bound,
        " (TLS)" if credentials is not None else "",
        inbox.topic,
    )
    return server, servicer, bound
