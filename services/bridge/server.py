"""gRPC bridge: TestDataService RPCs as round-trips through the Kafka topics.

It is the ingress for request/response callers: it checks the request (field-level
INVALID_ARGUMENT), fixes request_id, seed and anchor so the requests log reproduces the
data, publishes to the requests topic with `reply-to` naming this instance's reply topic,
and answers from that topic (see inbox.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.core.formats import join_chunks
from services.core.models import FieldError, GenerateRequest, RequestInvalid
from services.core.plan import Limits, build_plan
from services.core.registry import SchemaRegistry
from services.core.report import ErrorKind
from services.kit import metrics
from services.kit.control import publish_cancel
from services.kit.headers import AVRO, CONTENT_TYPE, CORRELATION, DEADLINE, REPLY_TO
from services.kit.messages import ResultChunk
from services.kit.procstate import StartupError
from services.kit.stream import Runtime
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

from .convert import chunk_to_proto, metadata_to_proto, request_from_proto
from .inbox import ChunkGap, Inbox, Pending

log = logging.getLogger("testdata.bridge")
SERVICE = "testdata.v1.TestDataService"
# Extra health components (LLM backends, pattern store...) registered by the process.
HealthProbe = Callable[[], Awaitable[Mapping[str, str]]]


def _status(
    code: grpc.StatusCode, message: str, errors: list[FieldError] | None = None
) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=e.path, description=e.message)
                for e in errors or []
            ]
        )
    )
    return rpc_status.to_status(
        status_pb2.Status(
            code=getattr(code_pb2, code.name), message=message, details=[detail] if errors else []
        )
    )


#: After the idle timeout, how many more idle periods the caller has to read again and
#: receive the status saying why its stream ended.
IDLE_GRACE_FACTOR = 10

#: The gRPC status of a failed request, by what failed (the same for unary and stream).
STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.DECODE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNKNOWN_SCHEMA: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.GENERATION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.PROCESSING: grpc.StatusCode.INTERNAL,
    ErrorKind.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorKind.EXPIRED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(kind: ErrorKind | str) -> grpc.StatusCode:
    """INTERNAL for a failure that names no kind (an older generator's chunk)."""
    return STATUS_BY_KIND[ErrorKind(kind)] if kind else grpc.StatusCode.INTERNAL


class TestDataServicer(pb_grpc.TestDataServiceServicer):
    def __init__(
        self,
        runtime: Runtime,
        registry: SchemaRegistry,
        inbox: Inbox,
        probes: list[HealthProbe] | None = None,
    ):
        self.rt = runtime
        self.registry = registry
        self.inbox = inbox
        self.probes = probes or []
        s = runtime.settings
        self.limits = Limits(max_records=s.max_records, default_count=s.default_count)
        self.max_sync = s.max_sync_records
        self.idle_timeout = s.stream_idle_timeout_seconds
        self._background: set[asyncio.Future[None]] = set()

    # ---- ingress ---------------------------------------------------------------------
    async def _accept(
        self, message: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> tuple[GenerateRequest, int]:
        try:
            req = request_from_proto(message)
            req = req.model_copy(
                update={
                    "request_id": req.request_id or f"req-{uuid.uuid4().hex}",
                    "seed": req.seed if req.seed is not None else secrets.randbits(63),
                    "anchor": req.anchor or datetime.now(UTC).replace(microsecond=0),
                }
            )
            plan = build_plan(req, self.registry, self.limits)
        except RequestInvalid as exc:
            metrics.VALIDATION_ERRORS.labels(message.domain, message.entity).inc()
            await context.abort_with_status(
                _status(grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {exc}", exc.errors)
            )
            raise AssertionError("unreachable") from exc
        return req, plan.count

    async def _submit(self, req: GenerateRequest, context: grpc.aio.ServicerContext) -> Pending:
        try:
            pending = self.inbox.open(req.request_id)
        except KeyError:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS, f"request {req.request_id} is already in progress"
            )
        try:
            await self.rt.publish(
                self.rt.topics.requests,
                self.rt.codec.encode_request(req),
                req.request_id,
                self._headers(pending, context),
            )
        except BaseException:
            # Not acknowledged: it may still reach the broker, so stop it there too.
            self._finished(req, pending, got_final=False)
            raise
        return pending

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
        return headers

    def _finished(self, req: GenerateRequest, pending: Pending, got_final: bool) -> None:
        """The RPC ended: forget the request, and if the caller left before the final
        chunk, tell the generators to stop (through the control topic)."""
        self.inbox.close(req.request_id)
        if got_final or pending.done:  # the final chunk came (a failed one included)
            return
        task = asyncio.ensure_future(
            publish_cancel(
                self.rt, req.request_id, pending.correlation, "the caller cancelled or timed out"
            )
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _next(self, pending: Pending, context: grpc.aio.ServicerContext) -> ResultChunk:
        try:
            chunk = await pending.get()
        except ChunkGap as exc:
            await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        if not chunk.success and chunk.error_details:
            await context.abort_with_status(
                _status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    chunk.error,
                    [FieldError(path=e.path, message=e.message) for e in chunk.error_details],
                )
            )
        return chunk

    # ---- RPCs ------------------------------------------------------------------------
    async def GenerateData(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        req, count = await self._accept(request, context)
        if count > self.max_sync:
            await context.abort_with_status(
                _status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"count {count} is above MAX_SYNC_RECORDS ({self.max_sync}); use "
                    "GenerateDataStream for large requests",
                    [
                        FieldError(
                            path="count",
                            message=f"above {self.max_sync} for GenerateData; "
                            "use GenerateDataStream",
                        )
                    ],
                )
            )
        pending = await self._submit(req, context)
        got_final = False
        try:
            parts: list[str] = []
            records = 0
            while not got_final:
                chunk = await self._next(pending, context)
                parts.append(chunk.data)
                records += chunk.record_count
                got_final = chunk.is_final
        finally:
            self._finished(req, pending, got_final)  # also on cancellation / deadline
        return pb.GenerateResponse(
            request_id=req.request_id,
            success=chunk.success,
            data=join_chunks(req.output_format, parts),
            record_count=records,
            metadata=metadata_to_proto(chunk.metadata),
            error=chunk.error,
        )

    async def GenerateDataStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Written with `context.write`, so a caller that reads nothing for
        STREAM_IDLE_TIMEOUT_SECONDS is told so; a slower one is served at its pace."""
        req, _ = await self._accept(request, context)
        pending = await self._submit(req, context)
        got_final = released = False
        try:
            while not got_final:
                chunk = await self._next(pending, context)
                if not chunk.success:
                    got_final = True
                    await context.abort(status_for(chunk.error_kind), chunk.error)
                write = asyncio.ensure_future(context.write(chunk_to_proto(chunk)))
                done, _ = await asyncio.wait({write}, timeout=self.idle_timeout)
                if not done:
                    # Idle: stop generating and reading for it now. The write stays queued
                    # (a gRPC write cannot be withdrawn); the status follows it, so the
                    # caller learns why as soon as it reads again.
                    self._finished(req, pending, got_final=False)
                    released = True
                    try:  # bounded: a connected caller that never reads is let go
                        await asyncio.wait_for(write, IDLE_GRACE_FACTOR * self.idle_timeout)
                    except TimeoutError:
                        return  # still not reading: end the call, its status cannot go out
                    await context.abort(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"stream idle: the caller read nothing for {self.idle_timeout:g} s "
                        "(STREAM_IDLE_TIMEOUT_SECONDS); generation stopped",
                    )
                got_final = chunk.is_final
        finally:
            if not released:
                self._finished(req, pending, got_final)

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


def overall(components: Mapping[str, str]) -> str:
    """unhealthy if Kafka or the schemas are down; degraded if an optional part is."""
    bad = [k for k, v in components.items() if v.startswith(("unhealthy", "unavailable"))]
    if any(k in ("kafka", "schema_registry", "reply_inbox") for k in bad):
        return "unhealthy"
    return "degraded" if bad else "healthy"


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
    host: str = "0.0.0.0",
) -> tuple[grpc.aio.Server, TestDataServicer, int]:
    """Start the bridge: inbox first (so no reply can be missed), then the server."""
    inbox = Inbox(runtime, instance)
    await inbox.start()
    servicer = TestDataServicer(runtime, registry, inbox, probes)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            # grpc binds with SO_REUSEPORT by default: a second instance would then share
            # the port silently instead of failing to start.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_TestDataServiceServicer_to_server(servicer, server)
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
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        await inbox.stop()
        reason = _bind_problem(host, port)
        raise StartupError(f"gRPC port {port} on {host} is unavailable: {reason}") from exc
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC bridge %s on :%d, replies on %s", instance, bound, inbox.topic)
    return server, servicer, bound
