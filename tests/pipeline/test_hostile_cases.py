"""The issue's measured hostile inputs, one by one, plus a bounded seeded fuzz: over a real
gRPC channel and through the requests topic. Every answer is OK or INVALID_ARGUMENT with
details, within its deadline, and the service stays healthy for the next caller."""

from __future__ import annotations

import asyncio
import json
import random

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit.wire.codec import JSON
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid
from .test_agents import chunks_for, final_for, publish

pytestmark = pytest.mark.usefixtures("stack")

GENERATE = "/testdata.v1.TestDataService/GenerateData"
STREAM = "/testdata.v1.TestDataService/GenerateDataStream"
#: Only a hang guard: an answer that is merely slow on a loaded machine is still an answer.
DEADLINE = HANG_GUARD_S
DEFAULT_METADATA_LIMIT = 8 * 1024


def details(exc: grpc.aio.AioRpcError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = rpc_status.from_call(exc)
    assert status is not None, "INVALID_ARGUMENT without a google.rpc.Status"
    out = []
    for d in status.details:
        br = error_details_pb2.BadRequest()
        if d.Unpack(br):
            out.extend(br.field_violations)
    return out


def fld(name: str, t: int = pb.STRING, nested=None, required=True) -> pb.Field:
    return pb.Field(name=name, type=t, required=required, nested_fields=nested or [])


def nested_arrays(depth: int) -> pb.Field:
    f = fld("leaf", pb.STRING)
    for i in range(depth):
        f = fld(f"a{i}", pb.ARRAY, [f])
    return f


async def both(stub, req: pb.GenerateRequest) -> list[grpc.StatusCode]:
    """The status of the request over unary and over streaming (OK when it succeeds)."""
    codes = []
    try:
        resp = await stub.GenerateData(req, timeout=DEADLINE)
        assert resp.success, resp.error
        codes.append(grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as exc:
        codes.append(exc.code())
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert details(exc), exc.details()
    try:
        async for _ in stub.GenerateDataStream(req, timeout=DEADLINE):
            pass
        codes.append(grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as exc:
        codes.append(exc.code())
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert details(exc), exc.details()
    return codes


async def still_serving(stub) -> None:
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity="cart", count=3, seed=1), timeout=HANG_GUARD_S
    )
    assert resp.success and resp.record_count == 3
    health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    assert health.status


def custom(fields: list[pb.Field], count: int = 5, **kw) -> pb.GenerateRequest:
    return pb.GenerateRequest(entity="thing", schema=pb.Schema(fields=fields), count=count, **kw)


def constrained(path: str, count: int = 5, entity: str = "cart", **c) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        entity=entity,
        count=count,
        constraints=pb.Constraints(field_constraints={path: pb.FieldConstraint(**c)}),
    )


def override(path: str, value: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        entity="cart",
        count=3,
        scenarios=[pb.Scenario(name="x", count=3, overrides={path: value})],
    )


HOSTILE = {
    "arrays nested 50 deep": custom([nested_arrays(50)]),
    "regex with a huge longest match": custom(
        [fld("s")],
        constraints=pb.Constraints(
            field_constraints={"s": pb.FieldConstraint(regex="(a{0,1000}){0,1000}")}
        ),
    ),
    "10,000 fields x 1,000 records": custom([fld(f"f{i}") for i in range(10_000)], count=1000),
    "200 duplicate field names": custom([fld("dup") for _ in range(200)]),
    "override path of 3,000 characters": override("x" * 3000, "1"),
    "price override 1e308": override("items.price", "1e308"),
    "price override inf": override("items.price", "inf"),
    "price override nan": override("items.price", "nan"),
    "anchor year 1": pb.GenerateRequest(entity="cart", count=3, anchor="0001-01-01T00:00:00Z"),
    "integer min 1e308": custom(
        [fld("n", pb.INTEGER)],
        constraints=pb.Constraints(field_constraints={"n": pb.FieldConstraint(min=1e308)}),
    ),
    "integer max infinity": custom(
        [fld("n", pb.INTEGER)],
        constraints=pb.Constraints(
            field_constraints={"n": pb.FieldConstraint(min=0, max=float("inf"))}
        ),
    ),
    "integer min nan": custom(
        [fld("n", pb.INTEGER)],
        constraints=pb.Constraints(field_constraints={"n": pb.FieldConstraint(min=float("nan"))}),
    ),
    "array bounds negative": custom(
        [fld("a", pb.ARRAY)],
        constraints=pb.Constraints(field_constraints={"a": pb.FieldConstraint(min=-5, max=-1)}),
    ),
    "array of 1,001 items": custom(
        [fld("a", pb.ARRAY)],
        constraints=pb.Constraints(field_constraints={"a": pb.FieldConstraint(min=1001)}),
    ),
    "catastrophic regex with a matching-ish override": pb.GenerateRequest(
        entity="thing",
        schema=pb.Schema(fields=[fld("s")]),
        constraints=pb.Constraints(field_constraints={"s": pb.FieldConstraint(regex="(a+)+$")}),
        scenarios=[pb.Scenario(name="x", count=2, overrides={"s": "a" * 28 + "!"})],
        count=2,
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_request_refused_with_details_then_service_goes_on(stub, name):
    codes = await both(stub, HOSTILE[name])
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2, name
    await still_serving(stub)


@pytest.mark.parametrize("max_length", [3, 5, 6, 7])
async def test_email_length_constraint_met_or_refused(stub, max_length):
    """Below the shortest valid address (a@b.io, 6) it is refused; from there it is met."""
    req = constrained("email", entity="user", max_length=max_length)
    codes = await both(stub, req)
    if max_length < 6:
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2
        return
    assert codes == [grpc.StatusCode.OK] * 2
    resp = await stub.GenerateData(req, timeout=DEADLINE)
    assert all(len(r["email"]) <= max_length for r in json.loads(resp.data))


async def test_ten_thousand_scenarios_answered_in_time(stub):
    req = pb.GenerateRequest(
        entity="cart",
        count=10_000,
        scenarios=[pb.Scenario(name=f"s{i}") for i in range(10_000)],
    )
    codes = await both(stub, req)
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2  # above MAX_SCENARIOS (1,000)


async def test_catastrophic_regex_does_not_block_health(stub):
    req = HOSTILE["catastrophic regex with a matching-ish override"]
    call = asyncio.ensure_future(both(stub, req))
    for _ in range(5):  # an unbounded regex would block the loop for good: the guard fails it
        await stub.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    await call


async def test_huge_violation_lists_fit_a_default_client(stub, channel):
    """10,000 bad fields with 3,000-character names: the trailer stays under 8 KiB."""
    req = custom([fld("x" * 3000 + str(i), pb.OBJECT) for i in range(2000)], count=1)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GenerateData(req, timeout=DEADLINE)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    size = sum(len(k) + len(v) for k, v in exc.value.trailing_metadata())
    assert size < DEFAULT_METADATA_LIMIT
    assert details(exc.value)


async def test_fuzzed_bytes_and_requests(channel, stub):
    """A bounded, seeded fuzz: raw bytes and mutated requests, to both RPCs."""
    rng = random.Random(9)
    unary = channel.unary_unary(GENERATE)
    stream = channel.unary_stream(STREAM)
    good = pb.GenerateRequest(
        entity="cart", count=2, seed=3, scenarios=[pb.Scenario(name="a", count=2)]
    ).SerializeToString()
    payloads = [rng.randbytes(rng.randint(0, 200)) for _ in range(40)]
    for _ in range(40):  # bit flips of a valid request: mostly decodable, mostly odd
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        payloads.append(bytes(b))
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    for p in payloads:
        for call in (unary, stream):
            try:
                if call is unary:
                    await call(p, timeout=DEADLINE)
                else:
                    async for _ in call(p, timeout=DEADLINE):
                        pass
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in allowed, (p, exc.code(), exc.details())
    await still_serving(stub)


def deep_json(depth: int) -> dict:
    f: dict = {"name": "leaf", "type": "STRING"}
    for i in range(depth):
        f = {"name": f"a{i}", "type": "ARRAY", "nested_fields": [f]}
    return f


@pytest.mark.parametrize(
    "body",
    [
        {"entity": "thing", "schema": {"fields": [deep_json(50)]}, "count": 5},
        {"entity": "thing", "schema": {"fields": [deep_json(300)]}, "count": 5},
        {
            "entity": "thing",
            "schema": {"fields": [{"name": "s", "type": "STRING"}]},
            "constraints": {"field_constraints": {"s": {"regex": "(a+)+$"}}},
            "scenarios": [{"name": "x", "count": 1, "overrides": {"s": "a" * 30 + "!"}}],
            "count": 1,
        },
        {"entity": "cart", "count": 3, "anchor": "0001-01-01T00:00:00Z"},
        {
            "entity": "cart",
            "count": 3,
            "scenarios": [{"name": "x", "overrides": {"items.price": "nan"}}],
        },
    ],
    ids=["deep-arrays", "nested-300", "catastrophic-regex", "anchor-year-1", "nan-override"],
)
async def test_hostile_request_on_the_topic_dead_lettered_and_answered(
    stack, agent_producer, tail, codec, body
):
    topics = stack.rt.topics
    request_id, good_id = rid("hostile"), rid("after-hostile")
    good = json.dumps({"request_id": good_id, "entity": "cart", "count": 3}).encode()
    value = json.dumps({"request_id": request_id, **body}).encode()
    async with tail(topics.deadletter) as dlq, tail(topics.results) as results:
        await publish(agent_producer, topics.requests, value, request_id, JSON)
        await publish(agent_producer, topics.requests, good, good_id, JSON)
        dead = await dlq.until(lambda rs: any(r.key == request_id.encode() for r in rs))
        recs = await results.until(
            lambda rs: final_for(codec, request_id)(rs) and final_for(codec, good_id)(rs)
        )
    letter = codec.decode_dead_letter(next(r for r in dead if r.key == request_id.encode()).value)
    assert letter.error_type in ("invalid_request", "decode") and letter.reason
    failed = chunks_for(recs, codec, request_id)
    assert len(failed) == 1 and not failed[0].success and failed[0].is_final
    served = chunks_for(recs, codec, good_id)
    assert served[-1].success
