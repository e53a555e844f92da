"""The LLM generation engine through the real SDKs against the fake LLM server.

A "competent model" here is a callable responder that reads the requested `_index` range
from the prompt and answers with traditional records of a *differently seeded* plan, so
its records are valid and coherent but distinguishable from our own fallback records.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from services.core.generate import generate_records
from services.core.models import GenerateRequest, Scenario
from services.core.plan import Plan, build_plan
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record
from services.kit.ops.metrics import REGISTRY
from services.llm.availability import probe_backends
from services.llm.clients import ClaudeClient, LLMClient, OpenAICompatClient, RetryPolicy
from services.llm.engine import LLMBatch, LLMEngine, LLMRun
from services.llm.feedback import coherence_notes, quote_errors, salvage_records
from tests.fakes.llm_server import Fail, FakeLLMServer, Hang, Reply
from tests.support import HANG_GUARD_S

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
TASK_RE = re.compile(r"with _index (\d+) to (\d+)\.")

REGISTRY_ = SchemaRegistry.load()


def make_plan(entity: str = "cart", count: int = 10, seed: int = 7, **kw: Any) -> Plan:
    return build_plan(
        GenerateRequest(entity=entity, domain="ecommerce", count=count, seed=seed, **kw),
        REGISTRY_,
    )


def model_plan(plan: Plan) -> Plan:
    """The same request with another seed: what our fake model 'knows'."""
    return build_plan(plan.request.model_copy(update={"seed": plan.seed + 1000}), REGISTRY_)


def user_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def requested(body: dict[str, Any]) -> tuple[int, int]:
    """(first _index, count) the prompt asks for."""
    m = TASK_RE.search(user_prompt(body))
    assert m, user_prompt(body)[:300]
    lo, hi = int(m.group(1)), int(m.group(2))
    return lo, hi - lo + 1


Mutate = Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]


def competent(
    plan: Plan, mutate: Mutate | None = None, delay: Callable[[int], float] | None = None
):
    """Responder answering every prompt with valid records for the requested range."""
    source = model_plan(plan)

    def respond(body: dict[str, Any]) -> str:
        start, n = requested(body)
        if delay is not None:
            time.sleep(delay(start))
        records = generate_records(source, start, start + n)
        if mutate is not None:
            records = mutate(records, body)
        return json.dumps(records)

    return respond


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def claude_client(server: FakeLLMServer, **kw: Any) -> ClaudeClient:
    args: dict[str, Any] = {
        "api_key": "test",
        "base_url": server.url,
        "model": "claude-engine-test",
        "retry": FAST,
        "timeout": 10.0,
    }
    args.update(kw)
    return ClaudeClient(**args)


def local_client(server: FakeLLMServer, **kw: Any) -> OpenAICompatClient:
    args: dict[str, Any] = {
        "base_url": server.openai_base_url,
        "model": "local-engine-test",
        "retry": FAST,
        "timeout": 10.0,
    }
    args.update(kw)
    return OpenAICompatClient(**args)


@pytest.fixture
async def engines() -> AsyncIterator[list[LLMEngine]]:
    made: list[LLMEngine] = []
    yield made
    for e in made:
        await e.aclose()


@pytest.fixture
def make_engine(server: FakeLLMServer, engines: list[LLMEngine]):
    def make(*backends: str, clients: list[LLMClient] | None = None, **kw: Any) -> LLMEngine:
        if clients is None:
            clients = [
                claude_client(server) if b == "claude" else local_client(server)
                for b in backends or ("claude",)
            ]
        kw.setdefault("batch_size", 25)
        kw.setdefault("concurrency", 4)
        kw.setdefault("coherence_threshold", 0.85)
        engine = LLMEngine(clients, **kw)
        engines.append(engine)
        return engine

    return make


async def collect(run: LLMRun) -> list[LLMBatch]:
    return [b async for b in run]


def flat(batches: list[LLMBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.records]


def assert_valid(plan: Plan, records: list[dict[str, Any]]) -> None:
    assert [r["_index"] for r in records] == list(range(plan.count))
    for r in records:
        assert validate_record(plan.schema, r) == [], r
        assert r["_scenario"] == plan.slot_for(r["_index"]).name


def body_of(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("_index", "_scenario")}


# ---------------------------------------------------------------------------- happy path


async def test_three_scenarios_in_order_with_exact_counts(server, make_engine):
    plan = make_plan(
        count=60,
        scenarios=[
            Scenario(name="abandoned", count=20),
            Scenario(name="canadian", count=20, overrides={"currency": "CAD"}),
            Scenario(name="regular"),
        ],
    )
    server.default = competent(plan)
    engine = make_engine("claude")
    run = engine.run(plan)
    batches = await collect(run)

    assert [(b.start, len(b.records)) for b in batches] == [(0, 25), (25, 25), (50, 10)]
    records = flat(batches)
    assert_valid(plan, records)
    assert Counter(r["_scenario"] for r in records) == plan.scenario_counts()
    assert {r["currency"] for r in records[20:40]} == {"CAD"}
    # The model's records, with our meta keys.
    expected = generate_records(model_plan(plan), 0, 60)
    assert [body_of(r) for r in records[:20]] == [body_of(r) for r in expected[:20]]

    reported = sum(
        r.usage["input_tokens"] + r.usage["output_tokens"]
        for r in server.requests_for("anthropic")
        if r.status == 200 and r.usage
    )
    assert reported > 0
    assert run.summary.tokens == sum(b.tokens for b in batches) == reported
    assert engine.summary == run.summary
    assert run.summary.records == 60 and run.summary.batches == 3
    assert run.summary.retries == 0 and [str(f) for f in run.summary.fallbacks] == []
    assert run.summary.backends == ["claude:claude-engine-test"]
    assert run.traditional_records == 0
    assert run.summary.coherence is not None and run.summary.coherence >= 0.85
    assert all(b.backend == "claude" and b.model == "claude-engine-test" for b in batches)
    assert server.calls("anthropic") == 3

    prompts = sorted(user_prompt(r.body) for r in server.requests_for("anthropic"))
    second = next(p for p in prompts if "_index 25 to 49" in p)
    assert "BATCH PLAN (exactly 25 records, in this order)" in second
    assert '- _index 40-49 (10 records): _scenario "regular"' in second
    assert '- _index 25-39 (15 records): _scenario "canadian"' in second


async def test_model_meta_keys_are_overwritten_and_overrides_applied(server, make_engine):
    plan = make_plan(
        count=6,
        scenarios=[
            Scenario(name="single", count=3, overrides={"items.quantity": "1"}),
            Scenario(name="rest", count=3),
        ],
    )

    def scramble(records: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
        for r in records:
            r["_scenario"] = "made-up"
            r["_index"] = 999
            for item in r["items"]:
                item["quantity"] = 7
        return records

    server.default = competent(plan, scramble)
    run = make_engine("claude", coherence_threshold=0.0).run(plan)
    records = flat(await collect(run))
    assert_valid(plan, records)
    assert all(it["quantity"] == 1 for r in records[:3] for it in r["items"])
    assert all(it["quantity"] == 7 for r in records[3:] for it in r["items"])


async def test_records_are_matched_by_the_models_index_when_consistent(server, make_engine):
    plan = make_plan(count=5)
    server.default = competent(plan, lambda recs, body: list(reversed(recs)))
    records = flat(await collect(make_engine("claude").run(plan)))
    expected = generate_records(model_plan(plan), 0, 5)
    assert [body_of(r) for r in records] == [body_of(r) for r in expected]


# ----------------------------------------------------------------------- counts, fixes


async def test_too_many_and_too_few_records_give_exact_counts(server, make_engine):
    plan = make_plan(count=20)
    source = model_plan(plan)
    server.script(
        "anthropic",
        Reply(json.dumps(generate_records(source, 0, 13))),  # batch 0: 3 extra
        Reply(json.dumps(generate_records(source, 10, 16))),  # batch 1: 4 missing
    )
    server.default = competent(plan)
    before = metric("testdata_llm_retries_total", backend="claude", reason="too_few_records")
    engine = make_engine("claude", batch_size=10, concurrency=1)
    run = engine.run(plan)
    batches = await collect(run)

    assert [len(b.records) for b in batches] == [10, 10]
    assert_valid(plan, flat(batches))
    assert [b.retries for b in batches] == [0, 1]
    follow_up = user_prompt(server.requests_for("anthropic")[2].body)
    assert "Generate 4 cart records" in follow_up and "with _index 16 to 19." in follow_up
    assert "only 6 of the 10 requested records came back" in follow_up
    assert run.summary.retries == 1
    after = metric("testdata_llm_retries_total", backend="claude", reason="too_few_records")
    assert after - before == 1


async def test_invalid_records_are_asked_for_again_with_the_errors_quoted(server, make_engine):
    plan = make_plan(count=10)
    first = generate_records(model_plan(plan), 0, 10)
    first[2]["currency"] = "EUR"
    del first[5]["cart_id"]
    first[7]["items"][0]["price"] = -1
    server.script("anthropic", Reply(json.dumps(first)))
    server.default = competent(plan)
    before = metric("testdata_llm_retries_total", backend="claude", reason="invalid_records")
    run = make_engine("claude", batch_size=10).run(plan)
    (batch,) = await collect(run)

    assert_valid(plan, batch.records)
    assert batch.retries == 1 and run.summary.retries == 1
    assert [str(f) for f in batch.fallbacks] == [] and batch.traditional_records == 0
    retry = user_prompt(server.requests_for("anthropic")[1].body)
    assert "PREVIOUS ATTEMPT REJECTED" in retry
    # Three gappy indexes (2, 5, 7) are asked for as 2..4; errors quote those numbers.
    assert "Generate 3 cart records" in retry and "with _index 2 to 4." in retry
    assert "_index 2: currency: not one of ['USD', 'CAD'] (got \"EUR\")" in retry
    assert "_index 3: cart_id: required field missing" in retry
    assert "_index 4: items[0].price: below min 0.01 (got -1)" in retry
    # Untouched records are the first answer's; the fixed ones come from the retry.
    assert body_of(batch.records[0]) == body_of(first[0])
    assert batch.records[2]["currency"] in ("USD", "CAD")
    after = metric("testdata_llm_retries_total", backend="claude", reason="invalid_records")
    assert after - before == 1


async def test_unreadable_answer_counts_as_a_retry(server, make_engine):
    plan = make_plan(count=4)
    server.script("anthropic", Reply("Sorry, I cannot help with that."))
    server.default = competent(plan)
    before = metric("testdata_llm_retries_total", backend="claude", reason="parse_error")
    (batch,) = await collect(make_engine("claude").run(plan))
    assert_valid(plan, batch.records)
    assert batch.retries == 1
    retry = user_prompt(server.requests_for("anthropic")[1].body)
    assert "could not be read as a JSON array" in retry
    after = metric("testdata_llm_retries_total", backend="claude", reason="parse_error")
    assert after - before == 1


async def test_cut_off_answer_keeps_complete_records_and_asks_for_the_rest(server, make_engine):
    plan = make_plan(count=10)
    text = json.dumps(generate_records(model_plan(plan), 0, 10))
    cut = text[: text.index('{"_index": 6')] + '{"_index": 6, "cart_id": "CRT-20'
    server.script("anthropic", Reply(cut, stop_reason="max_tokens"))
    server.default = competent(plan)
    (batch,) = await collect(make_engine("claude").run(plan))
    assert_valid(plan, batch.records)
    assert batch.retries == 1
    retry = user_prompt(server.requests_for("anthropic")[1].body)
    assert "Generate 4 cart records" in retry and "(the answer was cut off)" in retry


async def test_persistently_invalid_records_come_from_the_traditional_generator(
    server, make_engine
):
    plan = make_plan(count=10)

    def break_index_3(records: list[dict[str, Any]], body: dict[str, Any]) -> list[dict]:
        for r in records:
            if r["_index"] == 3:
                r["currency"] = "EUR"
        return records

    server.default = competent(plan, break_index_3)
    before = metric(
        "testdata_fallbacks_total", source="llm", target="traditional", reason="invalid_records"
    )
    run = make_engine("claude").run(plan)
    (batch,) = await collect(run)

    assert_valid(plan, batch.records)
    assert batch.records[3] == generate_records(plan, 3, 4)[0]
    expected = generate_records(model_plan(plan), 0, 10)
    assert [body_of(r) for i, r in enumerate(batch.records) if i != 3] == [
        body_of(r) for i, r in enumerate(expected) if i != 3
    ]
    assert server.calls("anthropic") == 3
    assert batch.retries == 2
    assert [str(f) for f in batch.fallbacks] == [
        "llm -> traditional: 1 record still invalid after 2 retries"
    ]
    assert batch.traditional_records == 1 and run.traditional_records == 1
    assert batch.backend == "claude"
    after = metric(
        "testdata_fallbacks_total", source="llm", target="traditional", reason="invalid_records"
    )
    assert after - before == 1


# ----------------------------------------------------------------------------- fallbacks


async def test_401_on_the_first_backend_moves_the_request_to_the_second(server, make_engine):
    plan = make_plan(count=60)
    server.script("anthropic", Fail(401, "invalid x-api-key"))
    server.default = competent(plan)
    before = metric(
        "testdata_fallbacks_total", source="claude", target="openai_compat", reason="authentication"
    )
    run = make_engine("claude", "openai_compat", concurrency=1).run(plan)
    batches = await collect(run)

    assert_valid(plan, flat(batches))
    assert server.calls("anthropic") == 1
    assert server.calls("openai") == 3
    assert all(b.backend == "openai_compat" for b in batches)
    assert [str(f) for f in run.summary.fallbacks] == [
        "claude -> openai_compat: 401 authentication"
    ]
    assert batches[0].fallbacks == run.summary.fallbacks
    assert run.summary.backends == [f"openai_compat:{batches[0].model}"]
    after = metric(
        "testdata_fallbacks_total", source="claude", target="openai_compat", reason="authentication"
    )
    assert after - before == 1


async def test_calls_in_flight_on_an_abandoned_backend_are_redone_elsewhere(server, make_engine):
    plan = make_plan(count=50)
    # Whichever batch reaches Claude first gets the 401; the other one hangs there.
    server.script("anthropic", Fail(401), Hang(HANG_GUARD_S))  # waited for: a hang
    server.default = competent(plan)
    run = make_engine("claude", "openai_compat", concurrency=2).run(plan)
    batches = await collect(run)
    assert_valid(plan, flat(batches))
    assert server.calls("anthropic") == 2 and server.calls("openai") == 2
    assert [str(f) for f in run.summary.fallbacks] == [
        "claude -> openai_compat: 401 authentication"
    ]


async def test_every_backend_failing_makes_the_whole_request_traditional(server, make_engine):
    plan = make_plan(count=60)
    server.script("anthropic", Fail(401))
    server.default = Fail(500, "boom")
    run = make_engine("claude", "openai_compat", concurrency=2).run(plan)
    batches = await collect(run)

    assert flat(batches) == generate_records(plan, 0, 60)
    # Which batch notes each step depends on timing (concurrency 2), so not their order.
    fallbacks = [str(f) for f in run.summary.fallbacks]
    assert len(fallbacks) == 2
    assert any(f.startswith("claude -> openai_compat: ") for f in fallbacks), fallbacks
    assert (
        "llm -> traditional: no LLM backend left (openai_compat: 500 server_error after 3 attempts)"
        in fallbacks
    )
    assert run.traditional_records == 60 and run.summary.tokens == 0
    assert run.summary.backends == ["traditional"]
    assert all(b.backend == "traditional" for b in batches)


async def test_no_configured_backend_is_traditional_with_a_note(server, make_engine):
    plan = make_plan(count=30)
    engine = make_engine(clients=[ClaudeClient(api_key=None)])
    run = engine.run(plan)
    assert flat(await collect(run)) == generate_records(plan, 0, 30)
    assert [str(f) for f in run.summary.fallbacks] == [
        "llm -> traditional: no LLM backend configured"
    ]
    assert server.requests == []


async def test_an_internal_error_in_a_batch_falls_back_instead_of_failing(
    server, make_engine, monkeypatch
):
    import services.llm.engine as engine_module

    plan = make_plan(count=10)
    server.default = competent(plan)

    def broken(*args: Any, **kwargs: Any) -> tuple[str, str]:
        raise ValueError("template exploded")

    monkeypatch.setattr(engine_module, "build_prompt", broken)
    run = make_engine("claude", batch_size=5).run(plan)
    batches = await collect(run)
    assert flat(batches) == generate_records(plan, 0, 10)
    note = "llm -> traditional: internal error (ValueError: template exploded)"
    assert [[str(f) for f in b.fallbacks] for b in batches] == [[note]] * 2
    assert [str(f) for f in run.summary.fallbacks] == [note]  # the run reports it once


# ----------------------------------------------------------------------------- coherence


def _break_math(records: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    for r in records:
        r["subtotal"] = round(r["subtotal"] + 10, 2)
        r["total"] = round(r["total"] + 50, 2)
    return records


async def test_low_coherence_batch_is_retried_with_a_stricter_prompt(server, make_engine):
    plan = make_plan(count=5)
    server.script("anthropic", competent(plan, _break_math))
    server.default = competent(plan)
    before = metric("testdata_llm_retries_total", backend="claude", reason="low_coherence")
    run = make_engine("claude", coherence_threshold=0.85).run(plan)
    (batch,) = await collect(run)

    assert_valid(plan, batch.records)
    assert batch.retries == 1 and server.calls("anthropic") == 2
    assert batch.coherence == pytest.approx(1.0)
    retry = user_prompt(server.requests_for("anthropic")[1].body)
    assert "PREVIOUS ATTEMPT REJECTED" in retry
    assert "is not sum(quantity x price)" in retry and "is not subtotal + tax" in retry
    assert "line items clearly belong together" in retry  # the coherent template
    after = metric("testdata_llm_retries_total", backend="claude", reason="low_coherence")
    assert after - before == 1


async def test_coherence_retry_keeps_the_better_result(server, make_engine):
    plan = make_plan(count=5)
    first = _break_math(generate_records(model_plan(plan), 0, 5), {})
    server.script("anthropic", Reply(json.dumps(first)), Reply("not json at all"))
    run = make_engine("claude").run(plan)
    (batch,) = await collect(run)
    assert_valid(plan, batch.records)
    assert [body_of(r) for r in batch.records] == [body_of(r) for r in first]
    assert batch.retries == 1 and batch.coherence is not None and batch.coherence < 0.85
    assert server.calls("anthropic") == 2


async def test_entities_without_coherence_rules_are_not_scored(server, make_engine):
    schema = {"fields": [{"name": "code", "type": "STRING"}, {"name": "n", "type": "INTEGER"}]}
    plan = build_plan(
        GenerateRequest.model_validate(
            {"entity": "gadget", "count": 5, "seed": 7, "schema": schema}
        ),
        REGISTRY_,
    )
    server.default = competent(plan)
    (batch,) = await collect(make_engine("claude").run(plan))
    assert_valid(plan, batch.records)
    assert batch.coherence is None and server.calls("anthropic") == 1


# ----------------------------------------------------------------------- ordering, timing


async def test_batches_come_in_index_order_under_concurrency(server, make_engine):
    plan = make_plan(count=200)
    rng = random.Random(3)
    server.default = competent(plan, delay=lambda start: rng.uniform(0.0, 0.08))
    concurrency = 3
    run = make_engine("claude", batch_size=10, concurrency=concurrency).run(plan)
    starts, records = [], []
    async for batch in run:
        starts.append(batch.start)
        records.extend(batch.records)
        # Never more than 2 * concurrency batches started ahead of the consumer.
        assert server.calls("anthropic") <= len(starts) + 2 * concurrency
        await asyncio.sleep(0.04)  # a consumer slower than the producers
    assert starts == list(range(0, 200, 10))
    assert_valid(plan, records)
    assert server.max_in_flight <= concurrency
    assert server.max_in_flight >= 2  # it did run concurrently
    assert run.summary.records == 200


async def test_first_batch_is_yielded_before_the_others_finish(server, make_engine):
    """The other batches are answered only once the first was yielded (no timing: the
    machine may be loaded); an engine that waited for all would wait them out."""
    plan = make_plan(count=100)
    source = competent(plan)
    released = threading.Event()
    waited_out: list[int] = []

    def respond(body: dict[str, Any]) -> str:
        start, _ = requested(body)
        if start != 0 and not released.wait(HANG_GUARD_S):
            waited_out.append(start)
        return source(body)

    server.default = respond
    starts = []
    async for batch in make_engine("claude", concurrency=4).run(plan):
        starts.append(batch.start)
        released.set()  # the others answer only now
    assert starts[0] == 0 and len(starts) > 1
    assert waited_out == []


async def test_leaving_early_cancels_the_running_batches(server, make_engine):
    plan = make_plan(count=100)
    source = competent(plan)
    released = threading.Event()  # the other batches answer only after the run is left

    def respond(body: dict[str, Any]) -> str:
        start, _ = requested(body)
        if start != 0:
            released.wait(HANG_GUARD_S)
        return source(body)

    server.default = respond
    try:
        t0 = time.monotonic()
        async with make_engine("claude", concurrency=4).run(plan) as run:
            async for batch in run:
                assert batch.start == 0
                break
        assert time.monotonic() - t0 < HANG_GUARD_S  # left without waiting for them
    finally:
        released.set()


# -------------------------------------------------------------------------------- health


async def test_health_reports_each_backend(server):
    states = await probe_backends(
        [
            claude_client(server),
            local_client(server, base_url=f"http://127.0.0.1:{closed_port()}/v1"),
            ClaudeClient(api_key=None),
        ],
        timeout=2.0,
    )
    assert states["claude"] == "healthy"
    assert states["openai_compat"].startswith("unhealthy")
    assert states["claude#2"] == "not configured"


# ------------------------------------------------------------------------ feedback helpers


def test_quote_errors_groups_by_problem():
    from services.core.models import FieldError

    lines = quote_errors(
        {
            1: [FieldError(path="currency", message="not one of ['USD']", value="EUR")],
            4: [
                FieldError(path="currency", message="not one of ['USD']", value="GBP"),
                FieldError(path="cart_id", message="required field missing"),
            ],
        }
    )
    assert lines == [
        "_indexes 1, 4: currency: not one of ['USD'] (got \"EUR\")",
        "_index 4: cart_id: required field missing",
    ]


def test_coherence_notes_name_the_broken_rule():
    plan = make_plan(count=1)
    (rec,) = generate_records(plan, 0, 1)
    assert coherence_notes("cart", rec) == []
    rec["total"] = rec["total"] + 5
    assert any("is not subtotal + tax" in n for n in coherence_notes("cart", rec))


def test_salvage_reads_only_complete_objects():
    assert salvage_records('[{"a": 1}, {"b": [1, 2]}, {"c": "unfini') == [{"a": 1}, {"b": [1, 2]}]
    assert salvage_records('[{"a": 1') == []
    assert salvage_records("nothing here") == []


async def test_overrides_rederive_money_on_both_paths(server, make_engine):
    """One finalisation step: an override of line items re-derives the totals whichever
    path produced the record (the LLM copy once skipped it)."""
    plan = make_plan(
        count=6,
        scenarios=[Scenario(name="bulk", count=6, overrides={"items.quantity": "3"})],
    )
    server.default = competent(plan)
    llm_records = flat(await collect(make_engine("claude", coherence_threshold=0.0).run(plan)))
    for records in (llm_records, generate_records(plan, 0, 6)):
        for r in records:
            assert all(it["quantity"] == 3 for it in r["items"])
            lines = sum(round(it["price"] * 100) * 3 for it in r["items"])
            assert round(r["subtotal"] * 100) == lines, r
            assert round(r["total"] * 100) == round((r["subtotal"] + r["tax"]) * 100), r
