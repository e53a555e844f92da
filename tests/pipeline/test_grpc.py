"""The gRPC bridge over a real channel, through router and generator over the broker."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from services.core.formats import ChunkEncoder
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.validate import validate_record
from services.proto.testdata.v1 import test_data_pb2 as pb

from .conftest import rid

ENTITIES = ["cart", "order", "payment", "product", "review", "user"]


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(exc)
    assert status is not None, "no rich status details"
    out = {}
    for d in status.details:
        br = error_details_pb2.BadRequest()
        d.Unpack(br)
        out.update({v.field: v.description for v in br.field_violations})
    return out


@pytest.mark.parametrize("entity", ENTITIES)
async def test_unary_each_entity(stub, stack, entity):
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity=entity, count=25, seed=5, request_id=rid(entity)), timeout=20
    )
    assert resp.success, resp.error
    records = json.loads(resp.data)
    assert resp.record_count == 25 == len(records)
    schema = stack.registry.get(entity)
    assert [e for r in records for e in validate_record(schema, r)] == []
    md = resp.metadata
    assert md.generation_path == "traditional"
    assert md.routing_reason and md.generator_version.startswith("tdcore-")
    assert dict(md.scenario_counts) == {"default": 25}
    assert md.seed == 5 and md.anchor
    if entity in ("cart", "order", "review"):
        assert md.coherence_score >= 0.9


async def test_unary_matches_in_process_generation(stub, stack):
    req = pb.GenerateRequest(
        entity="order", count=40, seed=77, anchor="2026-05-01T00:00:00Z", output_format=pb.SQL
    )
    resp = await stub.GenerateData(req, timeout=20)
    plan = build_plan(
        GenerateRequest(
            entity="order", count=40, seed=77, anchor="2026-05-01T00:00:00Z", output_format="SQL"
        ),
        stack.registry,
    )
    expected = ChunkEncoder(plan.schema, plan.request.output_format).encode(
        generate_records(plan, 0, 40), last=True
    )
    assert resp.data == expected


async def test_omitted_count_and_seed_get_documented_defaults(stub):
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user"), timeout=20)
    assert resp.record_count == 10  # DEFAULT_COUNT
    assert resp.metadata.seed != 0  # the bridge fixed one and reports it
    again = await stub.GenerateData(
        pb.GenerateRequest(entity="user", seed=resp.metadata.seed, anchor=resp.metadata.anchor),
        timeout=20,
    )
    assert again.data == resp.data  # reproducible from what metadata reports


async def test_scenarios_and_csv(stub):
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            entity="cart",
            output_format=pb.CSV,
            seed=3,
            scenarios=[
                pb.Scenario(name="happy_path", count=7),
                pb.Scenario(name="high_value", count=2, overrides={"currency": "CAD"}),
                pb.Scenario(name="single_item", count=1),
            ],
        ),
        timeout=20,
    )
    assert resp.success and resp.record_count == 10
    assert dict(resp.metadata.scenario_counts) == {
        "happy_path": 7,
        "high_value": 2,
        "single_item": 1,
    }
    assert resp.data.startswith("_index,_scenario,_shopping_occasion,cart_id")


async def test_invalid_request_gets_field_level_detail(stub):
    req = pb.GenerateRequest(
        entity="cart",
        count=-3,
        constraints=pb.Constraints(
            field_constraints={
                "items.quantity": pb.FieldConstraint(min=9, max=2),
                "cart_id": pb.FieldConstraint(regex="(["),
            }
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GenerateData(req, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    v = violations(exc.value)
    assert "count" in v
    assert "constraints.field_constraints[items.quantity].min" in v
    assert "constraints.field_constraints[cart_id].regex" in v


async def test_unknown_entity_is_invalid_argument(stub):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GenerateDataStream(pb.GenerateRequest(entity="spaceship", count=3)).read()
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown entity" in violations(exc.value)["entity"]


async def test_count_above_sync_limit_points_to_stream(stub):
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GenerateData(pb.GenerateRequest(entity="cart", count=1001), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GenerateDataStream" in exc.value.details()


async def test_deadline_exceeded_and_request_forgotten(stub, stack):
    request_id = rid("deadline")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GenerateData(
            pb.GenerateRequest(entity="order", count=1000, request_id=request_id), timeout=0.02
        )
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    inbox = stack.servicer.inbox
    dropped = inbox.dropped
    for _ in range(50):
        if request_id not in inbox.pending:
            break
        await asyncio.sleep(0.02)
    assert request_id not in inbox.pending
    # the request was published all the same: its chunks arrive late and are dropped
    for _ in range(200):
        if inbox.dropped > dropped:
            break
        await asyncio.sleep(0.05)
    assert inbox.dropped > dropped
    # the bridge still serves
    assert (await stub.GenerateData(pb.GenerateRequest(entity="cart", count=2))).success


async def test_stream_10000_records_in_order_identical_to_in_process(stub, stack):
    req = pb.GenerateRequest(
        entity="cart", count=10_000, seed=123, anchor="2026-02-01T00:00:00Z", request_id=rid("big")
    )
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=120)]
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert [c.is_final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert len(chunks) > 1 and all(c.request_id == req.request_id for c in chunks)
    records = json.loads("".join(c.data for c in chunks))
    assert [r["_index"] for r in records] == list(range(10_000))
    plan = build_plan(
        GenerateRequest(entity="cart", count=10_000, seed=123, anchor="2026-02-01T00:00:00Z"),
        stack.registry,
    )
    assert records == generate_records(plan, 0, 10_000)
    assert sum(c.record_count for c in chunks) == 10_000
    assert chunks[-1].metadata.record_count == 10_000


async def test_get_schemas(stub):
    resp = await stub.GetSchemas(pb.GetSchemasRequest())
    assert [s.name for s in resp.schemas] == ENTITIES
    cart = resp.schemas[0]
    assert cart.domain == "ecommerce" and cart.description
    assert list(cart.fields[:3]) == ["cart_id", "customer_id", "items"]
    assert (await stub.GetSchemas(pb.GetSchemasRequest(domain="loyalty"))).schemas == []


async def test_health_grpc_and_standard_health(stub, channel):
    resp = await stub.HealthCheck(pb.HealthCheckRequest())
    assert resp.status == "healthy"
    assert resp.components["kafka"].startswith("healthy")
    assert resp.components["schema_registry"] == "healthy: 6 entities"
    assert resp.components["llm"].startswith("not configured")
    h = health_pb2_grpc.HealthStub(channel)
    for service in ("", "testdata.v1.TestDataService"):
        r = await h.Check(health_pb2.HealthCheckRequest(service=service))
        assert r.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    resp = await call.read()
    await call.done_writing()
    names = {s.name for s in resp.list_services_response.service}
    assert "testdata.v1.TestDataService" in names and "grpc.health.v1.Health" in names


async def test_http_health_and_metrics(stack, stub):
    await stub.GenerateData(pb.GenerateRequest(entity="cart", count=3))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GenerateData(pb.GenerateRequest(entity="cart", count=-1))

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.http_port}{path}") as r:
            return r.status, r.read().decode()

    status, body = await asyncio.to_thread(get, "/health")
    assert status == 200 and json.loads(body)["status"] == "healthy"
    assert (await asyncio.to_thread(get, "/health/live"))[0] == 200
    assert (await asyncio.to_thread(get, "/health/ready"))[0] == 200
    _, text = await asyncio.to_thread(get, "/metrics")
    for name in (
        "testdata_requests_total",
        "testdata_generation_duration_seconds_bucket",
        "testdata_records_generated_total",
        "testdata_consumer_lag",
        "testdata_coherence_score_bucket",
    ):
        assert name in text, name
    assert 'path="traditional"' in text


async def test_large_records_are_chunked_under_the_message_limit(stub):
    """Long values shrink the records per chunk instead of overflowing a Kafka record."""
    req = pb.GenerateRequest(
        entity="note",
        count=1000,
        seed=1,
        schema=pb.Schema(fields=[pb.Field(name="body", type=pb.STRING, required=True)]),
        constraints=pb.Constraints(
            field_constraints={"body": pb.FieldConstraint(min_length=9000, max_length=10000)}
        ),
    )
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=120)]
    assert sum(c.record_count for c in chunks) == 1000 and len(chunks) > 4
    assert max(len(c.data) for c in chunks) < 3 * 1024 * 1024
    assert len(json.loads("".join(c.data for c in chunks))) == 1000
