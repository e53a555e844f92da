"""The RAG and hybrid paths end to end: bridge (gRPC) -> requests topic -> router (pattern
counts) -> rag/hybrid topic -> retrieval from a seeded embedded store -> variation or the
LLM (the real Anthropic SDK against the local wire-format fake) -> results -> bridge."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

import grpc
import pytest

from services.app import App
from services.core.coherence import score_records
from services.core.models import GenerateRequest, GenerationPath
from services.core.plan import build_plan
from services.core.validate import EDGE_CASE_KEY, INVALID_KEY, validate_record
from services.core.variation import Variation
from services.patterns import Collection, Hit, open_store
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.rag.retrieval import examples_of
from services.rag.service import STORE_BACKEND
from tests.fakes.llm_server import FakeLLMServer
from tests.pipeline.test_llm_path import competent_model
from tests.support import HANG_GUARD_S, make_settings, temp_store_path

from .conftest import rid

ANCHOR = "2026-04-01T09:00:00Z"


def content(rec: dict) -> str:
    return json.dumps({k: v for k, v in rec.items() if k not in ("_index", "_scenario")})


async def stored(settings, collection: Collection, ids) -> list:
    store = open_store(settings)
    await store.start()
    try:
        return await store.get(collection, list(ids))
    finally:
        await store.aclose()


def as_request(m: pb.GenerateRequest) -> GenerateRequest:
    from services.bridge.convert import request_from_proto

    return request_from_proto(m)


async def test_rag_varies_the_retrieved_patterns_and_names_them(stub, stack, settings):
    req = pb.GenerateRequest(
        request_id=rid("rag"),
        domain="ecommerce",
        entity="cart",
        count=60,
        seed=11,
        anchor=ANCHOR,
        hints=["similar to our marathon training carts"],
    )
    resp = await stub.GenerateData(req, timeout=HANG_GUARD_S)
    assert resp.success, resp.error
    md = resp.metadata
    assert (md.generation_path, md.requested_path) == ("rag", "rag")
    assert list(md.fallbacks) == []
    assert md.backend == f"{STORE_BACKEND}:embedded"
    assert 0 < len(md.pattern_ids) <= settings.rag_top_k and md.rag_examples_used > 0
    records = json.loads(resp.data)
    schema = stack.registry.get("cart")
    assert [e for r in records for e in validate_record(schema, r)] == []
    assert len({content(r) for r in records}) == 60  # more records than examples, none twice
    assert md.coherence_score >= 0.9 and score_records("cart", records) >= 0.9
    patterns = await stored(settings, Collection.PATTERNS, md.pattern_ids)
    by_id = {p.id: p for p in patterns}
    assert set(by_id) == set(md.pattern_ids)
    assert "marathon" in by_id[md.pattern_ids[0]].search_text()  # best match first
    # The records are exactly the named patterns' examples, varied: the same plan and the
    # same examples reproduce them in process.
    examples = examples_of(
        [Hit(pattern=by_id[i], score=1.0) for i in md.pattern_ids], Collection.PATTERNS
    )
    assert md.rag_examples_used == len(examples)
    plan = build_plan(as_request(req), stack.registry)
    assert Variation(plan, examples).records(0, 60).records == records
    seen = {it["name"] for p in patterns for r in p.records for it in r["items"]}
    assert {it["name"] for r in records for it in r["items"]} <= seen


async def test_rag_is_deterministic_across_runs_and_chunking(stub, stack):
    def req(n: str) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            request_id=rid(n),
            entity="payment",
            count=300,
            seed=5,
            anchor=ANCHOR,
            production_like=True,
        )

    one = await stub.GenerateData(req("one"), timeout=HANG_GUARD_S)
    two = await stub.GenerateData(req("two"), timeout=HANG_GUARD_S)
    chunks = [c async for c in stub.GenerateDataStream(req("three"), timeout=HANG_GUARD_S)]
    assert one.metadata.generation_path == "rag" and one.metadata.pattern_ids
    assert list(two.metadata.pattern_ids) == list(one.metadata.pattern_ids)
    assert two.data == one.data
    streamed = [r for c in chunks for r in json.loads(c.data)]
    assert streamed == json.loads(one.data)
    assert list(chunks[-1].metadata.pattern_ids) == list(one.metadata.pattern_ids)
    schema = stack.registry.get("payment")
    assert [e for r in streamed for e in validate_record(schema, r)] == []
    assert len({content(r) for r in streamed}) == 300


async def test_defect_requests_keep_their_defects_and_mark_them(stub, stack):
    base = dict(entity="cart", count=12, seed=2, anchor=ANCHOR, defect_triggering=True)
    resp = await stub.GenerateData(pb.GenerateRequest(**base), timeout=HANG_GUARD_S)
    md = resp.metadata
    assert md.generation_path == "rag" and md.pattern_ids
    records = json.loads(resp.data)
    schema = stack.registry.get("cart")
    kinds = {r[EDGE_CASE_KEY] for r in records}
    assert "negative_quantity" in kinds
    for r in records:
        assert validate_record(schema, r, honour_marks=True) == []
        assert [e.path for e in validate_record(schema, r)] == r[INVALID_KEY]
        if r[EDGE_CASE_KEY] == "negative_quantity":
            assert r["items"][0]["quantity"] < 0 and "items[0].quantity" in r[INVALID_KEY]
    as_csv = await stub.GenerateData(
        pb.GenerateRequest(**base, output_format=pb.CSV), timeout=HANG_GUARD_S
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.data)))
    assert [row[EDGE_CASE_KEY] for row in rows] == [r[EDGE_CASE_KEY] for r in records]
    assert [json.loads(row[INVALID_KEY]) for row in rows] == [r[INVALID_KEY] for r in records]


async def test_usage_counts_of_retrieved_patterns_rise(stub, settings):
    req = pb.GenerateRequest(entity="cart", count=5, production_like=True, seed=3)

    async def usage(ids: list[str], at_least: dict[str, int]) -> dict[str, int]:
        deadline = time.monotonic() + HANG_GUARD_S  # marked in the background, after the answer
        while True:
            got = {p.id: p.usage_count for p in await stored(settings, Collection.PRODUCTION, ids)}
            if all(got[i] >= at_least[i] for i in ids):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"usage counts stayed {got}, expected at least {at_least}")
            await asyncio.sleep(0.1)

    ids = list((await stub.GenerateData(req, timeout=HANG_GUARD_S)).metadata.pattern_ids)
    assert ids
    before = await usage(ids, dict.fromkeys(ids, 1))  # seeds start unused
    await stub.GenerateData(req, timeout=HANG_GUARD_S)
    after = await usage(ids, {i: before[i] + 1 for i in ids})
    assert after == {i: before[i] + 1 for i in ids}


async def test_entity_without_patterns_is_served_traditionally_with_the_reason(stub):
    resp = await stub.GenerateData(
        pb.GenerateRequest(entity="user", count=5, hints=["similar"]), timeout=HANG_GUARD_S
    )
    md = resp.metadata
    assert (md.requested_path, md.generation_path) == ("rag", "traditional")
    assert list(md.fallbacks) == [
        "rag -> traditional: no patterns for ecommerce/user in the pattern store"
    ]
    assert list(md.pattern_ids) == [] and md.rag_examples_used == 0


async def test_hybrid_without_an_llm_steps_down_to_llm_then_traditional(stub):
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            entity="cart", count=4, learn_from_history=True, context="a guest-room makeover"
        ),
        timeout=HANG_GUARD_S,
    )
    md = resp.metadata
    assert (md.requested_path, md.generation_path) == ("hybrid", "traditional")
    assert [f.split(":")[0] for f in md.fallbacks] == ["hybrid -> llm", "llm -> traditional"]
    assert all("no LLM backend configured" in f for f in md.fallbacks)


async def test_health_reports_the_pattern_store(stub):
    resp = await stub.HealthCheck(pb.HealthCheckRequest())
    assert resp.components["pattern_store"].startswith("healthy")


# ---- the store failing -----------------------------------------------------------------
async def _stack(broker, prefix: str, services, **over) -> App:
    over.setdefault("instance_id", prefix.strip("."))
    settings = make_settings(broker.bootstrap_servers, topic_prefix=prefix, **over)
    return await App(settings, broker.bootstrap_servers).start(services, grpc_port=0)


async def test_store_down_routes_traditionally_with_the_reason(embedded_broker):
    app = await _stack(
        embedded_broker, "ragdown.", ["router", "rag", "traditional", "bridge"],
        pattern_store_path="/proc/no-such-dir/patterns.sqlite",
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resp = await stub.GenerateData(
                pb.GenerateRequest(entity="cart", count=3, hints=["similar"]), timeout=HANG_GUARD_S
            )
            md = resp.metadata
            assert (md.requested_path, md.generation_path) == ("rag", "traditional")
            (step,) = md.fallbacks
            assert step.startswith("rag -> traditional: pattern store unavailable: ")
            health = await stub.HealthCheck(pb.HealthCheckRequest())
            assert health.components["pattern_store"].startswith("unavailable")
            assert health.status == "degraded"
    finally:
        await app.stop()


@pytest.mark.parametrize("store", ["empty", "broken"])
async def test_retrieval_failing_after_routing_falls_back_and_says_why(
    embedded_broker, settings, store
):
    """The router saw the patterns; the RAG service's store then has none, or fails."""
    prefix = f"ragmid{store}."
    router = await _stack(
        embedded_broker, prefix, ["router"], pattern_store_path=settings.pattern_store_path
    )
    path = temp_store_path() if store == "empty" else "/proc/no-such-dir/patterns.sqlite"
    rag = await _stack(
        embedded_broker, prefix, ["rag", "bridge"], pattern_store_path=path,
        instance_id=f"ragmid-{store}",
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rag.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resp = await stub.GenerateData(
                pb.GenerateRequest(entity="order", count=7, seed=1, hints=["similar"]),
                timeout=HANG_GUARD_S,
            )
        assert resp.success and resp.record_count == 7
        md = resp.metadata
        assert (md.requested_path, md.generation_path) == ("rag", "rag")
        assert md.backend == "traditional" and list(md.pattern_ids) == []
        (step,) = md.fallbacks
        reason = (
            "no patterns for ecommerce/order in the pattern store"
            if store == "empty"
            else "pattern store unavailable: "
        )
        assert step.startswith(f"rag -> traditional: {reason}")
        records = json.loads(resp.data)
        assert [e for r in records for e in validate_record(rag.registry.get("order"), r)] == []
    finally:
        await rag.stop()
        await router.stop()


# ---- hybrid with an LLM ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    with FakeLLMServer(default=competent_model()) as server:
        yield server


@pytest.fixture(scope="module")
async def hybrid_stack(embedded_broker, model, settings):
    app = await _stack(
        embedded_broker,
        "hybridpath.",
        ["router", "hybrid", "llm", "traditional", "bridge"],
        pattern_store_path=settings.pattern_store_path,
        anthropic_api_key="test-key",
        anthropic_base_url=model.url,
        claude_model="claude-fake",
        llm_batch_size=5,
        llm_concurrency=2,
        llm_retry_base_seconds=0.01,
        llm_retry_max_seconds=0.02,
        llm_timeout_seconds=HANG_GUARD_S,  # a model call here is expected to answer
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield app, pb_grpc.TestDataServiceStub(ch)
    await app.stop()


async def test_hybrid_writes_with_the_retrieved_examples_in_the_prompt(hybrid_stack, model):
    app, stub = hybrid_stack
    model.reset()
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            entity="cart", count=8, learn_from_history=True, context="training for a marathon"
        ),
        timeout=HANG_GUARD_S,
    )
    md = resp.metadata
    assert (md.requested_path, md.generation_path) == ("hybrid", "hybrid")
    assert md.backend == "claude:claude-fake" and md.llm_tokens_used > 0
    assert md.pattern_ids and md.rag_examples_used > 0
    records = json.loads(resp.data)
    assert [e for r in records for e in validate_record(app.registry.get("cart"), r)] == []
    prompt = model.requests[0].user_prompt
    assert "reference examples" in prompt and "<untrusted_examples>" in prompt
    best = (await stored(app.settings, Collection.PATTERNS, md.pattern_ids[:1]))[0]
    assert best.records[0]["items"][0]["name"] in prompt


async def test_hybrid_defect_request_shows_the_defect_patterns(hybrid_stack, model):
    _, stub = hybrid_stack
    model.reset()
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            entity="order", count=5, defect_triggering=True, context="a new checkout release"
        ),
        timeout=HANG_GUARD_S,
    )
    md = resp.metadata
    assert md.generation_path == "hybrid" and md.pattern_ids
    prompt = model.requests[0].user_prompt
    assert "Historical defect patterns" in prompt and "Edge-case records" in prompt
    assert "_edge_case_type" in prompt


async def test_hybrid_for_a_scope_without_patterns_goes_to_the_llm(hybrid_stack):
    app, stub = hybrid_stack
    resp = await stub.GenerateData(
        pb.GenerateRequest(
            domain="retail",
            entity="cart",
            count=3,
            learn_from_history=True,
            context="carts for marathon runners",
        ),
        timeout=HANG_GUARD_S,
    )
    md = resp.metadata
    assert (md.requested_path, md.generation_path) == ("hybrid", "llm")
    assert list(md.fallbacks) == ["hybrid -> llm: no patterns for retail/cart in the pattern store"]
    assert md.backend == "claude:claude-fake"
    assert app.probe(GenerationPath.HYBRID).reason is None  # the path itself can serve
