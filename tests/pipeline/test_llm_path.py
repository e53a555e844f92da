"""The LLM path end to end: router -> llm topic -> LLM generator -> results -> bridge,
with the real Anthropic SDK talking to a local server that speaks the Messages API."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from services.app import SERVICES, App
from services.core.generate import generate_records
from services.core.models import GenerateRequest, GenerationPath
from services.core.plan import build_plan
from services.core.validate import validate_record
from services.kit.ops.metrics import REGISTRY
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.fakes.llm_server import Fail, FakeLLMServer, Hang
from tests.support import HANG_GUARD_S, make_settings, wait_until

TASK_RE = re.compile(r"with _index (\d+) to (\d+)\.")


def competent_model(seed: int = 4242):
    """Answers each prompt with valid, coherent carts for exactly the requested indices."""
    registry = __import__("services.core.registry", fromlist=["x"]).SchemaRegistry.load()
    source = build_plan(GenerateRequest(entity="cart", count=10_000, seed=seed), registry)

    def respond(body):
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        lo, hi = map(int, TASK_RE.search(user).groups())
        return json.dumps(generate_records(source, lo, hi + 1))

    return respond


@pytest.fixture(scope="module")
def model():
    with FakeLLMServer(default=competent_model()) as server:
        yield server


@pytest.fixture(scope="module")
async def llm_stack(embedded_broker, model):
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix="llmpath.",
        instance_id="llm-a",
        anthropic_api_key="test-key",
        anthropic_base_url=model.url,
        claude_model="claude-fake",
        llm_batch_size=5,
        llm_concurrency=2,
        llm_retry_base_seconds=0.01,
        llm_retry_max_seconds=0.02,
        llm_timeout_seconds=HANG_GUARD_S,  # a model call here is expected to answer
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    await app.start(SERVICES, grpc_port=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield app, pb_grpc.TestDataServiceStub(ch)
    await app.stop()


CONTEXT = "Carts for marathon runners preparing for race day"


async def test_coherent_request_streams_through_the_llm_path(llm_stack, model):
    app, stub = llm_stack
    model.reset()
    req = pb.GenerateRequest(
        entity="cart",
        count=12,
        context=CONTEXT,
        hints=["coherent"],
        scenarios=[
            pb.Scenario(name="happy_path", count=9),
            pb.Scenario(name="high_value", count=3, description="total above $500"),
        ],
    )
    chunks = [c async for c in stub.GenerateDataStream(req, timeout=HANG_GUARD_S)]
    # one chunk per batch of 5, in order, as each batch finished
    assert [c.record_count for c in chunks] == [5, 5, 2]
    assert [c.chunk_index for c in chunks] == [0, 1, 2] and chunks[-1].is_final
    assert [len(json.loads(c.data)) for c in chunks] == [5, 5, 2]  # each chunk is an array
    records = [r for c in chunks for r in json.loads(c.data)]
    assert [r["_index"] for r in records] == list(range(12))
    assert [r["_scenario"] for r in records] == ["happy_path"] * 9 + ["high_value"] * 3
    schema = app.registry.get("cart")
    assert [e for r in records for e in validate_record(schema, r)] == []
    md = chunks[-1].metadata
    assert md.generation_path == "llm" and md.requested_path == "llm"
    assert "context provided" in md.routing_reason and "coherent" in md.routing_reason
    assert md.backend == "claude:claude-fake"
    assert md.llm_tokens_used > 0 and md.coherence_score >= 0.85
    assert dict(md.scenario_counts) == {"happy_path": 9, "high_value": 3}
    # the model saw the caller's context only as delimited data
    sent = model.requests[0]
    assert CONTEXT in sent.user_prompt and "untrusted" in sent.user_prompt
    assert REGISTRY.get_sample_value("testdata_llm_tokens_used_total", {"model": "claude-fake"}) > 0


async def test_backend_refusing_falls_back_to_traditional_and_says_so(llm_stack, model):
    _, stub = llm_stack
    model.reset()
    model.script("anthropic", *[Fail(401)] * 5)
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity="cart", count=6, context=CONTEXT, hints=["coherent"], seed=9),
        timeout=HANG_GUARD_S,
    )
    assert resp.success and resp.record_count == 6
    md = resp.metadata
    assert md.generation_path == "llm"
    assert any("traditional" in f for f in md.fallbacks), list(md.fallbacks)
    assert md.coherence_score >= 0.9  # the traditional carts are coherent too


async def test_an_llm_request_past_its_budget_is_stopped_and_its_caller_told(
    llm_stack, model, monkeypatch
):
    """A model call that hangs holds the request only until its budget runs out: the call
    is cancelled, the request parked and the caller told, long before the client timeout."""
    app, stub = llm_stack
    (llm,) = [p for p in app.paths if p.path == GenerationPath.LLM]
    monkeypatch.setattr(llm, "budget_seconds", 1.0)
    model.reset()
    model.script("anthropic", Hang(20))
    req = pb.GenerateRequest(entity="cart", count=6, context=CONTEXT, hints=["coherent"])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateDataStream(req, timeout=HANG_GUARD_S):
            pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Which call hangs (the batch's, or a coherence follow-up after records were kept)
    # depends on scheduling; either way the budget ends the request.
    assert re.search(
        r"generation budget of 1 s spent after [0-5] of 6 records", err.value.details()
    )
    assert REGISTRY.get_sample_value("testdata_over_budget_total", {"path": "llm"}) >= 1


async def test_simple_request_still_goes_traditional(llm_stack):
    _, stub = llm_stack
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user", count=3), timeout=HANG_GUARD_S)
    assert resp.metadata.generation_path == "traditional"


async def test_health_reports_the_llm_backend(llm_stack):
    _, stub = llm_stack
    resp = await stub.HealthCheck(pb.HealthCheckRequest())
    assert resp.components["llm_claude"] == "healthy"
    assert resp.status == "healthy"


async def test_without_backend_llm_requests_are_served_traditionally_with_reason(stub):
    """The default stack has no LLM configured: the router says why it did not use it."""
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity="cart", count=4, context=CONTEXT, hints=["coherent"]),
        timeout=HANG_GUARD_S,
    )
    md = resp.metadata
    assert md.requested_path == "llm" and md.generation_path == "traditional"
    assert "no LLM backend configured" in md.routing_reason
    assert any(f.startswith("llm -> traditional") for f in md.fallbacks)


async def test_router_stops_choosing_llm_when_the_backend_stops_answering(embedded_broker):
    server = FakeLLMServer(default=competent_model()).start()
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix="llmdown.",
        instance_id="llm-down",
        anthropic_api_key="test-key",
        anthropic_base_url=server.url,
        llm_batch_size=5,
        llm_health_interval_seconds=0.2,
        llm_timeout_seconds=HANG_GUARD_S,  # unhealthy is a 503 at once, not a timeout
        llm_max_retries=0,
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    await app.start(SERVICES, grpc_port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            req = pb.GenerateRequest(entity="cart", count=3, context=CONTEXT, hints=["coherent"])
            first = await stub.GenerateData(req, timeout=HANG_GUARD_S)
            assert first.metadata.generation_path == "llm"
            server.healthy = False
            await wait_until(
                lambda: app.probe(GenerationPath.LLM).reason is not None, "the router noticing"
            )
            md = (await stub.GenerateData(req, timeout=HANG_GUARD_S)).metadata
            assert md.requested_path == "llm" and md.generation_path == "traditional"
            assert "LLM backends unhealthy" in md.routing_reason
            health = await stub.HealthCheck(pb.HealthCheckRequest())
            assert health.components["llm_claude"].startswith("unhealthy")
            assert health.status == "degraded"
    finally:
        await app.stop()
        server.stop()


async def test_replay_reports_that_an_llm_dataset_differs_and_why(llm_stack, model, capsys):
    from services.cli import build_parser
    from services.datasets.cli import _replay

    app, stub = llm_stack
    model.reset()
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            entity="cart", count=5, seed=3, context=CONTEXT, hints=["coherent", "no_learn"]
        ),
        timeout=HANG_GUARD_S,
    )
    assert resp.metadata.generation_path == "llm" and resp.metadata.data_sha256
    before = model.default
    model.default = competent_model(seed=777)  # the model writes other carts today
    try:
        argv = ["replay", "--verify", "--quiet", "--request-id", resp.request_id]
        code = await _replay(build_parser().parse_args(argv), app.settings)
    finally:
        model.default = before
    out = capsys.readouterr().out
    assert code == 1, out
    assert "differs" in out and "path llm is not deterministic (a model wrote the records)" in out


async def test_an_llm_dataset_delivered_as_csv_or_sql_exports_to_any_format(
    llm_stack, model, tmp_path
):
    """The results log keeps a JSON copy of a model's CSV and SQL chunks: read back chunk
    by chunk, each exports to every format (its own with its delivered bytes)."""
    import pyarrow.parquet as pq

    from services.cli import build_parser
    from services.datasets.cli import _export

    app, stub = llm_stack
    model.reset()
    delivered = {}
    for fmt in (pb.CSV, pb.SQL):
        resp = await stub.GenerateData(
            pb.GenerateRequest(
                entity="cart",
                count=12,
                seed=5,
                context=CONTEXT,
                hints=["coherent", "no_learn"],
                output_format=fmt,
            ),
            timeout=HANG_GUARD_S,
        )
        assert resp.metadata.generation_path == "llm"
        delivered[resp.request_id] = (pb.OutputFormat.Name(fmt).lower(), resp.data)
    picks = [a for i in delivered for a in ("--request-id", i)]
    for fmt in ("jsonl", "json", "csv", "sql", "parquet"):
        argv = ["export", "--quiet", "--format", fmt, "--out", str(tmp_path / fmt), *picks]
        assert await _export(build_parser().parse_args(argv), app.settings) == 0, fmt
    for request_id, (fmt, data) in delivered.items():
        assert (tmp_path / fmt / f"{request_id}.{fmt}").read_bytes().decode() == data
        lines = (tmp_path / "jsonl" / f"{request_id}.jsonl").read_text().splitlines()
        assert [json.loads(line)["_index"] for line in lines] == list(range(12))
        table = pq.read_table(tmp_path / "parquet" / f"{request_id}.parquet")
        assert table.num_rows == 12 and str(table.schema.field("items").type).startswith("list")
