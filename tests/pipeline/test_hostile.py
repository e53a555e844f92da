"""Hostile input over a real channel: every failure is one actionable gRPC status.

Bytes that are not a request, conversion errors and huge violation lists are
INVALID_ARGUMENT with bounded details (never UNKNOWN, INTERNAL or a trailer too big for a
default client); unary and streaming calls fail alike; the same seed gives the same bytes
whenever it runs; the bridge keeps serving after each such call.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.bridge.server import serve
from services.bridge.status import MAX_FIELD_CHARS, MAX_VIOLATIONS, MORE, failure
from services.core.formats import join_chunks
from services.core.models import DEFAULT_ANCHOR, FieldError, OutputFormat
from services.kit.ops import metrics
from services.kit.runtime.stream import Runtime
from services.kit.wire.codec import JSON
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings

from .conftest import rid
from .test_agents import chunks_for, final_for, publish

UNARY = "/testdata.v1.TestDataService/GenerateData"
STREAM = "/testdata.v1.TestDataService/GenerateDataStream"
SCHEMAS = "/testdata.v1.TestDataService/GetSchemas"
#: A default client's limit on received metadata (grpc.max_metadata_size).
DEFAULT_CLIENT_METADATA = 8 * 1024


# ---- helpers ---------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited protobuf field (tag, length, body), written by hand."""
    return _varint(number << 3 | 2) + _varint(len(body)) + body


def nested_fields(depth: int) -> bytes:
    """A GenerateRequest whose schema field nests `depth` levels (protobuf's own writer
    refuses to build it, so the wire bytes are put together directly)."""
    field = _field(1, b"x")
    for _ in range(depth):
        field = _field(1, b"x") + _field(5, field)  # Field.name, Field.nested_fields
    return _field(4, _field(1, field))  # GenerateRequest.schema.fields


GARBAGE = {
    "not-protobuf": b"\xff\xff\xff\xff\x0f this is not a protobuf message",
    "invalid-utf8": _field(3, b"\xff\xfe cart"),  # entity: bytes that are not UTF-8
    "nested-150": nested_fields(150),
}


async def raw_call(
    channel, method: str, body: bytes, timeout: float = HANG_GUARD_S
) -> grpc.aio.AioRpcError:
    """Send raw bytes (no serializer) and return the error the call ended with."""
    if method == STREAM:
        call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in call(body, timeout=timeout):
                pass
    else:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call(body, timeout=timeout)
    return exc.value


async def call_error(
    stub, method: str, request: pb.GenerateRequest, timeout: float = HANG_GUARD_S
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        if method == STREAM:
            async for _ in stub.GenerateDataStream(request, timeout=timeout):
                pass
        else:
            await stub.GenerateData(request, timeout=timeout)
    return exc.value


def details(exc: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list]:
    """The status's ErrorInfo and its BadRequest violations (as (field, description))."""
    status = rpc_status.from_call(exc)
    assert status is not None, f"no rich status: {exc.code()} {exc.details()}"
    info, violations = error_details_pb2.ErrorInfo(), []
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            d.Unpack(info)
        elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            violations += [(v.field, v.description) for v in br.field_violations]
    return info, violations


def trailer_bytes(exc: grpc.aio.AioRpcError) -> int:
    """Bytes the status takes on the wire: grpc-message percent-encoded, the details
    base64, 32 per entry as HTTP/2 counts them."""
    size = 32 + len("grpc-message") + len(urllib.parse.quote(exc.details() or "", safe=""))
    for key, value in exc.trailing_metadata() or ():
        raw = value if isinstance(value, bytes) else value.encode()
        size += 32 + len(key) + (len(raw) * 4 + 2) // 3
    return size


async def assert_still_serves(stub) -> None:
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity="cart", count=2, seed=1), timeout=HANG_GUARD_S
    )
    assert resp.success and resp.record_count == 2


# ---- undecodable bytes ------------------------------------------------------------------
@pytest.mark.parametrize("method", [UNARY, STREAM])
@pytest.mark.parametrize("payload", sorted(GARBAGE))
async def test_bytes_that_are_no_request_are_invalid_argument(channel, stub, method, payload):
    exc = await raw_call(channel, method, GARBAGE[payload])
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    assert "testdata.v1.GenerateRequest" in exc.details()
    assert "class" not in exc.details() and "Error" not in exc.details()  # no Python names
    info, violations = details(exc)
    assert info.reason == "DECODE" and info.domain == "testdata.v1"
    assert [f for f, _ in violations] == ["request"]
    if payload == "nested-150":
        assert "nested more than 100 levels" in violations[0][1]
    await assert_still_serves(stub)


async def test_get_schemas_with_invalid_utf8_is_invalid_argument(channel, stub):
    exc = await raw_call(channel, SCHEMAS, _field(1, b"\xc3\x28"))  # domain
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(exc)[0].reason == "DECODE"
    assert (await stub.GetSchemas(pb.GetSchemasRequest(), timeout=HANG_GUARD_S)).schemas


# ---- conversion errors ------------------------------------------------------------------
CONVERSION = {
    "nan-min": (
        pb.GenerateRequest(
            entity="cart",
            constraints=pb.Constraints(
                field_constraints={"items.quantity": pb.FieldConstraint(min=float("nan"))}
            ),
        ),
        "constraints.field_constraints[items.quantity].min",
    ),
    "inf-max": (
        pb.GenerateRequest(
            entity="cart",
            constraints=pb.Constraints(
                field_constraints={"items.price": pb.FieldConstraint(max=float("inf"))}
            ),
        ),
        "constraints.field_constraints[items.price].max",
    ),
    "bad-anchor": (pb.GenerateRequest(entity="cart", anchor="next tuesday"), "anchor"),
    "bad-output-format": (pb.GenerateRequest(entity="cart", output_format=7), "output_format"),
    "bad-field-type": (
        pb.GenerateRequest(schema=pb.Schema(fields=[pb.Field(name="a", type=99)])),
        "schema.fields[0].type",
    ),
}


@pytest.mark.parametrize("method", [UNARY, STREAM])
@pytest.mark.parametrize("case", sorted(CONVERSION))
async def test_conversion_errors_name_the_field(stub, method, case):
    request, path = CONVERSION[case]
    exc = await call_error(stub, method, request)
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    info, violations = details(exc)
    assert info.reason == "INVALID_REQUEST"
    assert path in dict(violations)
    await assert_still_serves(stub)


# ---- bounded details --------------------------------------------------------------------
def huge_request() -> pb.GenerateRequest:
    """10,000 unknown constraint paths plus two of 3,000+ characters (one of them
    non-ASCII, which grpc-message percent-encodes to 3x its bytes)."""
    paths = {f"no_such_field_{i}": pb.FieldConstraint(min=1) for i in range(10_000)}
    paths["x" * 3500] = pb.FieldConstraint(min=1)
    paths["é" * 1600] = pb.FieldConstraint(min=1)
    return pb.GenerateRequest(entity="cart", constraints=pb.Constraints(field_constraints=paths))


@pytest.mark.parametrize("method", [UNARY, STREAM])
async def test_huge_violation_lists_fit_a_default_clients_metadata_limit(stack, method):
    # A client that enforces 8 KiB strictly: a bigger trailer would be RESOURCE_EXHAUSTED.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{stack.grpc_port}",
        options=[
            ("grpc.max_metadata_size", DEFAULT_CLIENT_METADATA),
            ("grpc.absolute_max_metadata_size", DEFAULT_CLIENT_METADATA),
        ],
    ) as channel:
        stub = pb_grpc.TestDataServiceStub(channel)
        exc = await call_error(stub, method, huge_request())
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert trailer_bytes(exc) < DEFAULT_CLIENT_METADATA
        _, violations = details(exc)
        assert 0 < len(violations) <= MAX_VIOLATIONS + 1
        assert all(len(f) <= MAX_FIELD_CHARS for f, _ in violations)
        # The planner caps what it reports per kind of problem, and the bridge caps what
        # it sends: either way the caller learns that more was wrong than is listed.
        if violations[-1][0] == MORE:
            assert "more" in exc.details()
        await assert_still_serves(stub)


def test_the_worst_case_status_fits_with_room_to_spare():
    """4-byte characters everywhere: percent-encoding triples them in grpc-message."""
    wide = "\U0001f600" * 5000
    errors = [FieldError(path=wide, message=wide) for _ in range(10_000)]
    status = failure(grpc.StatusCode.INVALID_ARGUMENT, wide, "INVALID_REQUEST", errors, wide)
    size = len(urllib.parse.quote(status.details, safe=""))
    size += sum((len(v) * 4 + 2) // 3 for k, v in status.trailing_metadata)
    assert size < 7 * 1024


async def test_two_hundred_duplicate_fields_are_listed_within_bounds(stub):
    fields = [pb.Field(name="a" * 60, type=pb.INTEGER) for _ in range(200)]
    exc = await call_error(stub, UNARY, pb.GenerateRequest(schema=pb.Schema(fields=fields)))
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailer_bytes(exc) < DEFAULT_CLIENT_METADATA
    _, violations = details(exc)
    assert len(violations) <= MAX_VIOLATIONS + 1
    assert any("199 duplicate" in d for _, d in violations), violations[-3:]
    await assert_still_serves(stub)


async def test_invalid_requests_add_no_metric_series_per_caller_string(stack, stub):
    for i in range(30):
        exc = await call_error(stub, UNARY, pb.GenerateRequest(entity=f"ship-{i}", domain=f"d{i}"))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    await call_error(stub, UNARY, pb.GenerateRequest(entity="Cart", count=-1))
    labels = {
        (s.labels["domain"], s.labels["entity"])
        for metric in metrics.VALIDATION_ERRORS.collect()
        for s in metric.samples
    }
    known = {"", metrics.OTHER, *(e.domain for e in stack.registry.list())}
    assert {d for d, _ in labels} <= known
    assert {e for _, e in labels} <= {"", metrics.OTHER, *stack.registry.names()}
    assert (metrics.OTHER, metrics.OTHER) in labels and ("", "cart") in labels


# ---- one status for both RPCs -----------------------------------------------------------
FAILING = {
    # Fail in generation today (INTERNAL) or up front once core validates them
    # (INVALID_ARGUMENT): either way both RPCs must say the same.
    "override-1e308": pb.GenerateRequest(
        entity="cart",
        scenarios=[pb.Scenario(name="s", count=2, overrides={"items.price": "1e308"})],
    ),
    "override-nan": pb.GenerateRequest(
        entity="cart",
        scenarios=[pb.Scenario(name="s", count=2, overrides={"items.price": "nan"})],
    ),
    "anchor-year-1": pb.GenerateRequest(entity="cart", anchor="0001-01-01T00:00:00Z"),
    "integer-min-1e308": pb.GenerateRequest(
        entity="cart",
        constraints=pb.Constraints(
            field_constraints={"items.quantity": pb.FieldConstraint(min=1e308)}
        ),
    ),
    "unknown-entity": pb.GenerateRequest(entity="spaceship"),
}


@pytest.mark.parametrize("case", sorted(FAILING))
async def test_a_failure_is_the_same_status_for_unary_and_stream(stub, case):
    unary = await call_error(stub, UNARY, FAILING[case])  # never OK with success=false
    stream = await call_error(stub, STREAM, FAILING[case])
    assert unary.code() == stream.code()
    assert unary.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)
    assert unary.details() == stream.details()
    assert details(unary)[0].reason == details(stream)[0].reason != ""
    await assert_still_serves(stub)


async def test_too_many_concurrent_calls_are_resource_exhausted(stack, stub, settings):
    """MAX_CONCURRENT_RPCS: past it a call is refused at once, not queued."""
    bootstrap = settings.kafka_bootstrap_servers
    rt = Runtime(make_settings(bootstrap, max_concurrent_rpcs=1), bootstrap)
    await rt.start()
    server, servicer, port = await serve(rt, stack.registry, "overload", 0, host="127.0.0.1")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            local = pb_grpc.TestDataServiceStub(channel)
            held = local.GenerateDataStream(pb.GenerateRequest(entity="cart", count=50_000))
            await held.read()  # the one call allowed is in progress
            exc = await call_error(local, UNARY, pb.GenerateRequest(entity="cart", count=1))
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            held.cancel()
    finally:
        await server.stop(grace=1)
        await servicer.inbox.stop()
        await rt.stop()
    await assert_still_serves(stub)


async def test_a_broker_that_refuses_the_request_is_unavailable(stack, stub, settings):
    bootstrap = settings.kafka_bootstrap_servers
    rt = Runtime(make_settings(bootstrap), bootstrap)
    await rt.start()
    server, servicer, port = await serve(rt, stack.registry, "nobroker", 0, host="127.0.0.1")
    try:
        assert rt.producer is not None
        await rt.producer.stop()  # publishing now fails as with a broker gone
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            local = pb_grpc.TestDataServiceStub(channel)
            for method in (UNARY, STREAM):
                # The broker is reachable, so the bridge waits for the acknowledgement up to
                # the caller's deadline (less 0.5 s), then answers UNAVAILABLE: the deadline
                # is what ends the wait here, not a hang guard.
                req = pb.GenerateRequest(entity="cart")
                exc = await call_error(local, method, req, timeout=30)
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                assert details(exc)[0].reason == "BROKER_UNAVAILABLE"
    finally:
        await server.stop(grace=1)
        await servicer.inbox.stop()
        await rt.stop()
    await assert_still_serves(stub)


# ---- reproducible by seed ---------------------------------------------------------------
async def test_the_same_seed_gives_identical_bytes_at_different_times(stub):
    req = pb.GenerateRequest(entity="cart", count=20, seed=42, output_format=pb.SQL)
    first = await stub.GenerateData(req, timeout=HANG_GUARD_S)
    await asyncio.sleep(1.1)  # "now" has moved on: it must not matter
    second = await stub.GenerateData(req, timeout=HANG_GUARD_S)
    streamed = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    assert first.data == second.data == "".join(c.data for c in streamed)
    assert first.metadata.anchor == second.metadata.anchor == "2025-01-01T00:00:00Z"
    assert first.request_id != second.request_id  # different calls, the same data


async def test_one_instant_written_two_ways_anchors_the_same_data(stub):
    utc = pb.GenerateRequest(entity="order", count=5, seed=3, anchor="2026-03-01T00:00:00Z")
    offset = pb.GenerateRequest(entity="order", count=5, seed=3, anchor="2026-03-01T02:00:00+02:00")
    a, b = [await stub.GenerateData(r, timeout=HANG_GUARD_S) for r in (utc, offset)]
    assert a.data == b.data and b.metadata.anchor == "2026-03-01T00:00:00Z"


async def test_without_seed_or_anchor_the_anchor_is_now(stub):
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user", count=1), timeout=HANG_GUARD_S)
    assert resp.metadata.anchor and resp.metadata.anchor != "2025-01-01T00:00:00Z"


async def test_an_agent_with_a_seed_gets_the_bridges_bytes(
    stack, stub, agent_producer, tail, codec
):
    """The router applies the same anchor rule to requests published straight to Kafka."""
    request_id = rid("seeded-agent")
    body = {"request_id": request_id, "entity": "cart", "count": 20, "seed": 42}
    async with tail(stack.rt.topics.results) as results:
        await publish(
            agent_producer, stack.rt.topics.requests, json.dumps(body).encode(), request_id, JSON
        )
        chunks = chunks_for(await results.until(final_for(codec, request_id)), codec, request_id)
    via_bridge = await stub.GenerateData(
        pb.GenerateRequest(entity="cart", count=20, seed=42), timeout=HANG_GUARD_S
    )
    assert chunks[-1].metadata.anchor == DEFAULT_ANCHOR.isoformat().replace("+00:00", "Z")
    assert join_chunks(OutputFormat.JSON, [c.data for c in chunks]) == via_bridge.data
