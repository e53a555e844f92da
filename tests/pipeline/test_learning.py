"""The learning loop through the broker: served datasets become patterns.

A request is served (gRPC or an agent on Kafka; traditional with a context, or the LLM path
against the wire-format fake), its path publishes an outcome, the learner stores the
pattern in the embedded store (a temp file), and `store.search` finds it by meaning. What
must not be learned is not; a redelivered outcome is one pattern; the per-entity bound
holds; a store that is down holds outcomes back in their topic while datasets are served.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import pytest

from services.app import SERVICES, App
from services.core.models import GenerateRequest
from services.core.report import ErrorKind
from services.kit.ops import metrics
from services.kit.runtime.control import publish_cancel
from services.kit.runtime.kafka import assign_all, end_positions, make_consumer
from services.kit.wire.codec import AVRO, JSON
from services.kit.wire.headers import CONTENT_TYPE
from services.learner.gate import Policy, judge
from services.learner.service import LearnerService
from services.patterns import Collection
from services.patterns.scope import scope_of
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.fakes.llm_server import FakeLLMServer
from tests.support import HANG_GUARD_S, make_settings

from .conftest import rid
from .test_llm_path import competent_model

T = TypeVar("T")
KEEP = 3
MARATHON = "Carts of marathon runners stocking up the week before race day"
OFFICE = "Office supplies ordered by a small accounting firm at the end of the quarter"


@pytest.fixture(scope="module")
def model():
    with FakeLLMServer(default=competent_model()) as server:
        yield server


@pytest.fixture(scope="module")
async def learning(embedded_broker, model):
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix="learn.",
        instance_id="learn-a",
        anthropic_api_key="test-key",
        anthropic_base_url=model.url,
        claude_model="claude-fake",
        llm_batch_size=5,
        llm_retry_base_seconds=0.01,
        llm_retry_max_seconds=0.02,
        llm_timeout_seconds=HANG_GUARD_S,  # a model call here is expected to answer
        patterns_per_entity_max=KEEP,
        pattern_store_timeout_seconds=2.0,
        learner_retry_max_seconds=0.3,
        pattern_store_refresh_seconds=0.2,
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    await app.start(SERVICES, grpc_port=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield app, pb_grpc.TestDataServiceStub(ch)
    await app.stop()


# ---- helpers -------------------------------------------------------------------------
async def eventually(check: Callable[[], Any], timeout: float = HANG_GUARD_S) -> Any:
    """`check()` (sync or async) until it returns something truthy; `timeout` only guards
    against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.05)


def learner_of(app: App) -> LearnerService:
    assert app.learner is not None
    return app.learner


async def count(app: App, domain: str) -> int:
    return await learner_of(app).store.count(Collection.PATTERNS, domain=domain, entity="cart")


async def has(app: App, domain: str, n: int) -> bool:
    return await count(app, domain) == n


def requests_done(path: str, domain: str, status: str) -> float:
    """Requests a path finished with `status`: counted after its outcome was handled."""
    labels = {"path": path, "domain": domain, "entity": "cart", "status": status}
    return metrics.REGISTRY.get_sample_value("testdata_requests_total", labels) or 0.0


def waiting(app: App) -> float:
    """Outcomes the learner fetched but has not finished with (its consumer lag)."""
    topic = app.rt.topics.outcomes
    group = f"{topic}.learner"
    return sum(
        s.value
        for m in metrics.REGISTRY.collect()
        if m.name == "testdata_consumer_lag"
        for s in m.samples
        if s.labels.get("group") == group and s.labels.get("topic") == topic
    )


async def outcomes_on_topic(app: App) -> dict[str, list[bytes]]:
    """Every outcome on the topic up to its current end, by request id."""
    consumer = make_consumer(app.rt.bootstrap, None)
    await consumer.start()
    try:
        tps = await assign_all(consumer, app.rt.topics.outcomes, at_end=False)
        end = await end_positions(consumer, tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[str, list[bytes]] = {}
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                for r in recs:
                    out.setdefault(r.key.decode(), []).append(r.value)
        return out
    finally:
        await consumer.stop()


async def outcome_of(app: App, request_id: str) -> bytes:
    async def find() -> bytes | None:
        found = (await outcomes_on_topic(app)).get(request_id)
        return found[0] if found else None

    return await eventually(find)


async def agent_request(app: App, body: dict[str, Any]) -> None:
    await app.rt.publish(
        app.rt.topics.requests,
        json.dumps(body).encode(),
        body["request_id"],
        [(CONTENT_TYPE, JSON.encode())],
    )


async def final_chunk(app: App, request_id: str, final: bool = True):
    """An agent's wait for its request's final (or first) chunk on the results topic."""
    consumer = make_consumer(app.rt.bootstrap, None)
    await consumer.start()
    try:
        await assign_all(consumer, app.rt.topics.results, at_end=False)
        await consumer.seek_to_beginning()

        async def look():
            for recs in (await consumer.getmany(timeout_ms=200)).values():
                for r in recs:
                    c = app.rt.codec.decode_chunk(r.value)
                    if c.request_id == request_id and (c.is_final or not final):
                        return c
            return None

        return await eventually(look)
    finally:
        await consumer.stop()


def traditional(domain: str, seed: int, context: str = MARATHON, **kw: Any) -> pb.GenerateRequest:
    """Served by the traditional path ("fast") although a context shapes it."""
    return pb.GenerateRequest(
        request_id=rid(domain),
        domain=domain,
        entity="cart",
        count=30,
        seed=seed,
        context=context,
        hints=["fast", *kw.pop("hints", [])],
        **kw,
    )


async def skipped_after(app: App, reason: str, action: Callable[[], Awaitable[T]]) -> T:
    """Run `action` and wait until the learner skipped one more outcome for `reason`."""
    learner = learner_of(app)
    before = learner.skipped[reason]
    out = await action()
    await eventually(lambda: learner.skipped[reason] > before)
    return out


# ---- the loop --------------------------------------------------------------------------
async def test_served_datasets_become_patterns_found_by_meaning(learning):
    app, stub = learning
    marathon = await stub.GenerateData(traditional("running", 1), timeout=HANG_GUARD_S)
    office = await stub.GenerateData(traditional("running", 2, OFFICE), timeout=HANG_GUARD_S)
    assert marathon.success and office.success
    assert marathon.metadata.generation_path == "traditional"
    await eventually(lambda: has(app, "running", 2))
    hits = await learner_of(app).store.search(
        Collection.PATTERNS,
        "stocking up on energy gels before a long race",
        domain="running",
        entity="cart",
        top_k=2,
        alpha=app.settings.rag_alpha,
    )
    assert [h.pattern.description.split(".")[0] for h in hits] == [MARATHON, OFFICE]
    learned = hits[0].pattern
    assert learned.source == "learned:traditional" and learned.entity == "cart"
    assert learned.records == json.loads(marathon.data)[: app.settings.learn_sample_records]
    assert learned.quality >= app.settings.coherence_threshold


async def test_an_agents_llm_dataset_is_learned_too(learning, model):
    app, _ = learning
    request_id = rid("agent-llm")
    await agent_request(
        app,
        {
            "request_id": request_id,
            "domain": "agents",
            "entity": "cart",
            "count": 6,
            "context": "Carts of parents buying back-to-school supplies",
            "hints": ["coherent"],
        },
    )
    final = await final_chunk(app, request_id)
    assert final.success and final.metadata.generation_path == "llm"
    await eventually(lambda: has(app, "agents", 1))
    (pattern,) = await learner_of(app).store.list_patterns(
        Collection.PATTERNS, domain="agents", entity="cart"
    )
    assert pattern.source == "learned:llm" and "back-to-school" in pattern.description
    assert len(pattern.records) == 6


async def test_a_later_request_learns_from_history_and_names_the_pattern(learning):
    """The loop closed: a learned dataset is what a later learn_from_history request is
    varied from (its metadata names the pattern), and that rag output is not learned."""
    app, stub = learning
    served = await stub.GenerateData(traditional("history", 11), timeout=HANG_GUARD_S)
    assert served.success
    await eventually(lambda: has(app, "history", 1))
    (learned,) = await learner_of(app).store.list_patterns(Collection.PATTERNS, domain="history")
    asked = GenerateRequest(domain="history", entity="cart", learn_from_history=True)
    scope = scope_of(asked, app.registry.get("cart"))
    await eventually(lambda: app.pattern_gap(scope) is None)  # the router's cached counts
    later = pb.GenerateRequest(
        domain="history", entity="cart", count=8, seed=5, learn_from_history=True
    )
    resp = await skipped_after(
        app, "rag_path", lambda: stub.GenerateData(later, timeout=HANG_GUARD_S)
    )
    assert resp.success and resp.metadata.generation_path == "rag", resp.metadata
    assert list(resp.metadata.pattern_ids) == [learned.id]
    assert resp.metadata.rag_examples_used > 0
    assert await count(app, "history") == 1  # its own variations are not fed back


# ---- what is not learned ---------------------------------------------------------------
async def test_plain_and_low_coherence_datasets_are_offered_but_not_learned(learning):
    app, stub = learning
    plain = pb.GenerateRequest(domain="unlearned", entity="cart", count=10, seed=1)
    resp = await skipped_after(
        app, "no_context", lambda: stub.GenerateData(plain, timeout=HANG_GUARD_S)
    )
    assert resp.success and resp.metadata.generation_path == "traditional"
    broken = traditional(
        "unlearned",
        2,
        scenarios=[pb.Scenario(name="broken", overrides={"subtotal": "1.0"}, description="x")],
    )
    resp = await skipped_after(
        app, "low_coherence", lambda: stub.GenerateData(broken, timeout=HANG_GUARD_S)
    )
    assert resp.success and resp.metadata.coherence_score < app.settings.coherence_threshold
    assert await count(app, "unlearned") == 0


async def test_opted_out_failed_and_cancelled_datasets_publish_no_outcome(learning):
    app, stub = learning
    domain = "nooutcome"
    # opted out: served, but nothing for the learner
    done = requests_done("traditional", domain, "success")
    opted = traditional(domain, 1, hints=["no_learn"])
    assert (await stub.GenerateData(opted, timeout=HANG_GUARD_S)).success
    await eventually(lambda: requests_done("traditional", domain, "success") > done)
    # failed: constraints no basket of whole quantities and cent prices can meet
    failed_id = rid("failed")
    constraints = {
        "items.price": {"min": 2, "max": 2},
        "items.quantity": {"min": 1, "max": 5},
        "items": {"min": 1, "max": 1},
        "subtotal": {"min": 4.01, "max": 4.01},
    }
    done = requests_done("traditional", domain, "failed")
    await agent_request(
        app,
        {
            "request_id": failed_id,
            "domain": domain,
            "entity": "cart",
            "count": 20,
            "context": MARATHON,
            "hints": ["fast"],
            "constraints": {"field_constraints": constraints},
        },
    )
    final = await final_chunk(app, failed_id)
    # The planner's basket probe refuses most such windows up front; one it lets through
    # fails mid-stream. Neither may become an outcome.
    assert not final.success
    assert final.error_kind in (ErrorKind.GENERATION, ErrorKind.INVALID_REQUEST)
    if final.error_kind == ErrorKind.GENERATION:
        await eventually(lambda: requests_done("traditional", domain, "failed") > done)
    # cancelled by its agent while streaming
    cancelled_id = rid("cancelled")
    done = requests_done("traditional", domain, "abandoned")
    await app.rt.publish(
        app.rt.topics.requests,
        app.rt.codec.encode_request(
            GenerateRequest(
                request_id=cancelled_id,
                domain=domain,
                entity="cart",
                count=500_000,
                context=MARATHON,
                hints=["fast"],
            )
        ),
        cancelled_id,
        [(CONTENT_TYPE, AVRO.encode())],
    )
    await final_chunk(app, cancelled_id, final=False)  # streaming
    await publish_cancel(app.rt, cancelled_id, reason="enough")
    final = await final_chunk(app, cancelled_id)
    assert final.error_kind == ErrorKind.CANCELLED
    await eventually(lambda: requests_done("traditional", domain, "abandoned") > done)
    # every path handler finished (after its outcome, if any): the topic has none of them
    on_topic = await outcomes_on_topic(app)
    assert {opted.request_id, failed_id, cancelled_id} & set(on_topic) == set()
    assert await count(app, domain) == 0


async def test_rag_outputs_are_not_learned(learning):
    """The store must not feed on its own variations: an outcome of the rag path (as that
    path publishes it) is skipped."""
    app, stub = learning
    served = await stub.GenerateData(traditional("ragsource", 7), timeout=HANG_GUARD_S)
    real = app.rt.codec.decode_outcome(await outcome_of(app, served.request_id))
    as_rag = real.model_copy(update={"path": "rag", "request_id": rid("rag"), "domain": "ragged"})
    await skipped_after(
        app,
        "rag_path",
        lambda: app.rt.publish(
            app.rt.topics.outcomes, app.rt.codec.encode_outcome(as_rag), as_rag.request_id
        ),
    )
    assert await count(app, "ragged") == 0
    await eventually(lambda: has(app, "ragsource", 1))  # the real one was learned


async def test_a_redelivered_outcome_is_stored_once(learning):
    app, stub = learning
    served = await stub.GenerateData(traditional("redelivered", 3), timeout=HANG_GUARD_S)
    value = await outcome_of(app, served.request_id)
    await eventually(lambda: has(app, "redelivered", 1))

    async def twice() -> None:
        for _ in range(2):
            await app.rt.publish(app.rt.topics.outcomes, value, served.request_id)

    learner = learner_of(app)
    before = learner.skipped["duplicate"]
    await twice()
    await eventually(lambda: learner.skipped["duplicate"] >= before + 2)
    assert await count(app, "redelivered") == 1


async def test_the_store_stays_within_its_bound_per_entity(learning):
    """At most `patterns_per_entity_max` per (domain, entity): the best kept, by quality,
    then use, then age, as the learned patterns' own figures rank them."""
    app, stub = learning
    learner = learner_of(app)
    ids = []
    for seed in (1, 2, 3):
        ids.append(
            (await stub.GenerateData(traditional("bounded", seed), timeout=HANG_GUARD_S)).request_id
        )
    await eventually(lambda: has(app, "bounded", KEEP))
    first = await learner.store.list_patterns(Collection.PATTERNS, domain="bounded")
    used = min(first, key=lambda p: (p.quality, p.created_at))  # the first to go, unused
    await learner.store.mark_used(Collection.PATTERNS, [used.id])
    stored = learner.stored
    for seed in (4, 5):
        ids.append(
            (await stub.GenerateData(traditional("bounded", seed), timeout=HANG_GUARD_S)).request_id
        )
    await eventually(lambda: learner.stored >= stored + 2)
    kept = await learner.store.list_patterns(Collection.PATTERNS, domain="bounded")
    assert len(kept) == KEEP
    policy = Policy.from_settings(app.settings)
    learned = []
    for request_id in ids:
        pattern = judge(
            app.rt.codec.decode_outcome(await outcome_of(app, request_id)), app.registry, policy
        ).pattern
        assert pattern is not None
        learned.append(pattern.model_copy(update={"usage_count": int(pattern.id == used.id)}))
    best = sorted(learned, key=lambda p: (p.quality, p.usage_count, p.created_at), reverse=True)
    assert {p.id for p in kept} == {p.id for p in best[:KEEP]}


# ---- the store being down --------------------------------------------------------------
async def test_outcomes_wait_while_the_store_is_down_and_datasets_are_still_served(learning):
    app, stub = learning
    learner = learner_of(app)
    await eventually(lambda: learner.unavailable is None)
    retries = metrics.REGISTRY.get_sample_value("testdata_learner_store_retries_total") or 0.0
    # another process holds the store's write lock: every write times out
    blocker = sqlite3.connect(
        app.settings.pattern_store_path, timeout=HANG_GUARD_S, isolation_level=None
    )
    blocker.execute("begin exclusive")
    try:
        resp = await stub.GenerateData(traditional("outage", 1), timeout=HANG_GUARD_S)
        assert resp.success  # learning is never in a dataset's way
        await eventually(lambda: learner.unavailable)
        health = await stub.HealthCheck(pb.HealthCheckRequest())
        assert health.components["learner_store"].startswith("unavailable:"), health.components
        assert "outcomes wait in learn.testdata.outcomes" in health.components["learner_store"]
        assert (metrics.REGISTRY.get_sample_value("testdata_learner_store_retries_total")) > (
            retries
        )
        another = await stub.GenerateData(traditional("outage", 2, OFFICE), timeout=HANG_GUARD_S)
        assert another.success
        await eventually(lambda: waiting(app) >= 2)  # both wait in the topic, not lost
        rows = blocker.execute("select count(*) from patterns where domain = 'outage'")
        assert rows.fetchone()[0] == 0
    finally:
        blocker.execute("rollback")
        blocker.close()
    # nothing was lost or parked: both are stored once the store answers again
    await eventually(lambda: has(app, "outage", 2))
    assert learner.unavailable is None
    health = await stub.HealthCheck(pb.HealthCheckRequest())
    assert health.components["learner_store"].startswith("healthy:"), health.components


async def test_a_learner_started_without_its_store_waits_for_it(
    embedded_broker, learning, tmp_path
):
    """`testdata service learner` with its volume not there yet: it starts, says why it
    cannot store, and stores what waited once the directory appears."""
    source, stub = learning
    served = await stub.GenerateData(traditional("late", 1), timeout=HANG_GUARD_S)
    value = await outcome_of(source, served.request_id)
    volume = tmp_path / "volume"
    volume.write_text("not a directory (yet)")
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix="learnlate.",
        pattern_store_path=str(volume / "patterns.sqlite"),
        pattern_store_timeout_seconds=1.0,
        learner_retry_max_seconds=0.3,
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    await app.start(["learner"], http_port=0)
    try:

        def health() -> dict[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{app.http_port}/health") as r:
                return json.loads(r.read())["components"]

        assert (await asyncio.to_thread(health))["learner_store"].startswith("unavailable:")
        await app.rt.publish(app.rt.topics.outcomes, value, served.request_id)
        await eventually(lambda: waiting(app) == 1)  # fetched, held back: not stored, not parked
        volume.unlink()
        volume.mkdir()
        await eventually(lambda: has(app, "late", 1))
        assert (await asyncio.to_thread(health))["learner_store"].startswith("healthy:")
    finally:
        await app.stop()
