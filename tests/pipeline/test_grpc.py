"""The gRPC bridge over a real channel, through router and generator over the broker."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from services.cli import _Output
from services.cli import main as cli_main
from services.core.formats import encode_all, join_chunks
from services.core.generate import generate_records
from services.core.models import GenerateRequest, OutputFormat
from services.core.plan import build_plan
from services.core.validate import validate_record
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

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
        pb.GenerateRequest(entity=entity, count=25, seed=5, request_id=rid(entity)),
        timeout=HANG_GUARD_S,
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
    resp = await stub.GenerateData(req, timeout=HANG_GUARD_S)
    plan = build_plan(
        GenerateRequest(
            entity="order", count=40, seed=77, anchor="2026-05-01T00:00:00Z", output_format="SQL"
        ),
        stack.registry,
    )
    expected = encode_all(plan.schema, plan.request.output_format, generate_records(plan, 0, 40))
    assert resp.data == expected


async def test_omitted_count_and_seed_get_documented_defaults(stub):
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user"), timeout=HANG_GUARD_S)
    assert resp.record_count == 10  # DEFAULT_COUNT
    assert resp.metadata.seed != 0  # the bridge fixed one and reports it
    again = await stub.GenerateData(
        pb.GenerateRequest(entity="user", seed=resp.metadata.seed, anchor=resp.metadata.anchor),
        timeout=HANG_GUARD_S,
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
        timeout=HANG_GUARD_S,
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
        await stub.GenerateData(req, timeout=HANG_GUARD_S)
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
        await stub.GenerateData(pb.GenerateRequest(entity="cart", count=1001), timeout=HANG_GUARD_S)
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
    deadline = time.monotonic() + HANG_GUARD_S  # forgotten once the call ends
    while inbox.in_progress(request_id):
        assert time.monotonic() < deadline, "still pending"
        await asyncio.sleep(0.02)
    # the bridge still serves
    assert (await stub.GenerateData(pb.GenerateRequest(entity="cart", count=2))).success


async def test_a_call_that_ends_after_its_request_was_published_drops_the_late_chunks(
    stub, stack, tail
):
    """Its chunks (or its cancelled final chunk) arrive for a request the bridge no longer
    waits for: they are dropped, never delivered to another call. The call ends once its
    request is on the requests topic (a deadline could end it before: a loaded machine)."""
    request_id = rid("late")
    inbox = stack.servicer.inbox
    dropped = inbox.dropped
    req = pb.GenerateRequest(entity="order", count=200_000, request_id=request_id)
    async with tail(stack.rt.topics.requests) as requests:
        call = stub.GenerateDataStream(req)
        await requests.until(
            lambda got: any(r.key == request_id.encode() for r in got), timeout=HANG_GUARD_S
        )
        call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED
    deadline = time.monotonic() + HANG_GUARD_S
    while inbox.in_progress(request_id) or inbox.dropped == dropped:
        assert time.monotonic() < deadline, (inbox.in_progress(request_id), inbox.dropped)
        await asyncio.sleep(0.02)
    assert (await stub.GenerateData(pb.GenerateRequest(entity="cart", count=2))).success


async def test_stream_10000_records_in_order_identical_to_in_process(stub, stack):
    req = pb.GenerateRequest(
        entity="cart", count=10_000, seed=123, anchor="2026-02-01T00:00:00Z", request_id=rid("big")
    )
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert [c.is_final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert len(chunks) > 1 and all(c.request_id == req.request_id for c in chunks)
    records = [r for c in chunks for r in json.loads(c.data)]
    assert [r["_index"] for r in records] == list(range(10_000))
    plan = build_plan(
        GenerateRequest(entity="cart", count=10_000, seed=123, anchor="2026-02-01T00:00:00Z"),
        stack.registry,
    )
    assert records == generate_records(plan, 0, 10_000)
    one_shot = encode_all(plan.schema, OutputFormat.JSON, records)
    assert join_chunks(OutputFormat.JSON, [c.data for c in chunks]) == one_shot
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
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    assert sum(c.record_count for c in chunks) == 1000 and len(chunks) > 4
    assert max(len(c.data) for c in chunks) < 3 * 1024 * 1024
    assert [len(json.loads(c.data)) for c in chunks] == [c.record_count for c in chunks]


async def test_every_streamed_json_chunk_is_an_array_of_its_records(stub):
    """A caller can parse each chunk on its own (the spec of DataChunk.data)."""
    req = pb.GenerateRequest(entity="cart", count=2500, seed=8, request_id=rid("arrays"))
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    assert [c.record_count for c in chunks] == [128, 1000, 1000, 372]  # small first, CHUNK_SIZE
    lists = [json.loads(c.data) for c in chunks]
    assert all(isinstance(x, list) for x in lists)
    assert [len(x) for x in lists] == [c.record_count for c in chunks]
    records = [r for x in lists for r in x]
    assert len(records) == 2500
    assert [r["_index"] for r in records] == list(range(2500))


async def test_unary_joins_several_chunks_into_one_document(stub, stack):
    """Long records split a unary answer into several chunks; it is still one array."""
    fields = [pb.Field(name="body", type=pb.STRING, required=True)]
    limits = {"body": pb.FieldConstraint(min_length=9000, max_length=10000)}
    req = pb.GenerateRequest(
        entity="note",
        count=300,
        seed=2,
        anchor="2026-05-01T00:00:00Z",
        schema=pb.Schema(fields=fields),
        constraints=pb.Constraints(field_constraints=limits),
    )
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    resp = await stub.GenerateData(req, timeout=HANG_GUARD_S)
    assert len(chunks) > 1 and resp.success and resp.record_count == 300
    assert resp.data == join_chunks(OutputFormat.JSON, [c.data for c in chunks])
    assert [r["_index"] for r in json.loads(resp.data)] == list(range(300))


def read_csv(text):
    return list(csv.reader(io.StringIO(text, newline="")))


def read_sql(text):
    db = sqlite3.connect(":memory:")
    db.executescript(text)
    return db.execute('SELECT "_index" FROM "cart" ORDER BY rowid').fetchall()


@pytest.mark.parametrize("fmt", ["json", "csv", "sql"])
async def test_cli_stream_out_writes_one_valid_file(stack, tmp_path, fmt):
    out = tmp_path / f"carts.{fmt}"
    argv = ["generate", "--stream", "--entity", "cart", "--count", "2500", "--seed", "4"]
    argv += ["--format", fmt, "--out", str(out), "--target", f"127.0.0.1:{stack.grpc_port}"]
    argv += ["--timeout", str(HANG_GUARD_S)]  # the CLI's own default deadline is 300 s
    assert await asyncio.to_thread(cli_main, argv) == 0
    text = out.read_text()
    if fmt == "json":
        assert [r["_index"] for r in json.loads(text)] == list(range(2500))
    elif fmt == "csv":
        rows = read_csv(text)
        assert rows[0][0] == "_index" and [int(r[0]) for r in rows[1:]] == list(range(2500))
    else:
        assert text.count("CREATE TABLE") == 1
        assert read_sql(text) == [(i,) for i in range(2500)]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


async def test_cli_failed_call_leaves_no_file(stack, tmp_path):
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("earlier")
    target = ["--target", f"127.0.0.1:{stack.grpc_port}", "--timeout", str(HANG_GUARD_S)]
    for path, argv in [
        (new, ["--entity", "cart", "--count", "-1", "--stream"]),  # refused before any data
        (old, ["--entity", "spaceship"]),
    ]:
        assert (
            await asyncio.to_thread(cli_main, ["generate", *argv, "--out", str(path), *target]) == 1
        )
    assert not new.exists() and old.read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_cli_output_interrupted_mid_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), _Output(str(tmp_path / "part.json")) as out:
        out.file.write('[{"_index": 0}')
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


async def test_a_resume_arriving_before_its_cut_predecessor_is_let_go_waits_for_it(stub):
    """Seen (docs/datasets.md's recipe, a loaded machine): the resume reached the bridge
    before the cut stream's cancel did, and failed ALREADY_EXISTS. It now waits for the
    predecessor to be let go."""
    request_id = rid("resume-race")
    first = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id, entity="user", count=3000),
        timeout=HANG_GUARD_S,
    )
    got = [await first.read(), await first.read()]
    assert [c.chunk_index for c in got] == [0, 1]
    resumed = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id),
        metadata=[("resume-from-chunk", "1")],
        timeout=HANG_GUARD_S,
    )
    reading = asyncio.ensure_future(resumed.read())
    await asyncio.sleep(0.2)  # the resume is at the bridge while the first still runs
    first.cancel()  # only now is the cut stream let go
    rest = [await reading]
    while (chunk := await resumed.read()) is not grpc.aio.EOF:
        rest.append(chunk)
    assert rest[0].chunk_index == 2 and rest[-1].is_final
    assert sum(c.record_count for c in got + rest) == 3000
