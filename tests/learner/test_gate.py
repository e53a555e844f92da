"""The learner's gate, without a broker or a store: outcomes as the path service builds
them from real plans and records, judged by the settings' policy."""

from __future__ import annotations

import os

import orjson
import pytest
from pydantic import ValidationError

from services.core.coherence import score_records
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.kit.path.outcomes import Sample, build_outcome, opts_out
from services.kit.wire.messages import Outcome
from services.learner.gate import Policy, Skip, describe, judge, scenario_of, shaped
from services.patterns import Collection
from tests.support import make_settings

REGISTRY = SchemaRegistry.load()
POLICY = Policy.from_settings(make_settings())
CONTEXT = "Carts of marathon runners the week before race day"


def outcome(path: str = "traditional", sample_size: int = 8, **request) -> Outcome:
    """What a path publishes after serving `request` in full."""
    req = GenerateRequest.model_validate({"request_id": "r-1", "seed": 3, **request})
    plan = build_plan(req, REGISTRY)
    records = generate_records(plan, 0, plan.count)
    sample = Sample(sample_size, 64 * 1024)
    sample.add(records)
    coherence = score_records(plan.schema.name, records)
    return build_outcome(plan, path, coherence, sample)


def test_a_traditional_dataset_shaped_by_a_context_becomes_a_pattern():
    o = outcome(
        entity="cart",
        count=12,
        context=CONTEXT,
        scenarios=[{"name": "race_week", "count": 12, "description": "energy gels and shoes"}],
    )
    v = judge(o, REGISTRY, POLICY)
    assert v.skip is None and v.pattern is not None
    p = v.pattern
    assert p.collection == Collection.PATTERNS
    assert (p.domain, p.entity, p.scenario) == ("ecommerce", "cart", "race_week")
    assert p.source == "learned:traditional"
    assert p.records == o.sample() and len(p.records) == 8
    assert p.quality == pytest.approx(score_records("cart", p.records))
    assert p.id == p.content_id()
    # retrieval by meaning: the words of the request are the pattern's words
    assert CONTEXT in p.description and "energy gels and shoes" in p.description
    assert "cart" in p.search_text() and "ecommerce" in p.search_text()


def test_plain_traditional_output_is_not_learned_but_llm_output_is():
    assert judge(outcome(entity="cart", count=5), REGISTRY, POLICY).skip == Skip.UNSHAPED
    # a scenario description alone shapes it
    shaped_req = {"entity": "cart", "count": 5, "scenarios": [{"name": "a", "description": "d"}]}
    assert judge(outcome(**shaped_req), REGISTRY, POLICY).pattern is not None
    llm = judge(outcome("llm", entity="cart", count=5), REGISTRY, POLICY)
    assert llm.pattern is not None and llm.pattern.source == "learned:llm"
    assert llm.pattern.scenario == ""  # no scenario asked for


def test_rag_outputs_are_never_learned_whatever_the_policy():
    o = outcome("rag", entity="cart", count=5, context=CONTEXT)
    assert judge(o, REGISTRY, POLICY).skip == Skip.RAG
    assert judge(o, REGISTRY, Policy.of(["rag", "llm"], 0.85)).skip == Skip.RAG
    with pytest.raises(ValidationError, match="never learned"):
        make_settings(learn_paths=["llm", "rag"])


def test_which_paths_are_learned_is_a_setting(monkeypatch):
    only_llm = Policy.from_settings(make_settings(learn_paths=["llm"]))
    o = outcome(entity="cart", count=5, context=CONTEXT)
    assert judge(o, REGISTRY, only_llm).skip == Skip.PATH
    everything = Policy.of(["traditional", "hybrid:context", "hybrid"], 0.85)
    assert everything.paths == {"traditional": False, "hybrid": False}
    assert judge(outcome(entity="cart", count=5), REGISTRY, everything).pattern is not None
    monkeypatch.setitem(os.environ, "LEARN_PATHS", "llm, traditional:context")
    assert make_settings().learn_paths == ["llm", "traditional:context"]
    monkeypatch.setitem(os.environ, "LEARN_PATHS", '["hybrid"]')
    assert make_settings().learn_paths == ["hybrid"]
    with pytest.raises(ValidationError, match="expected <path> or <path>:context"):
        make_settings(learn_paths=["llm:always"])


@pytest.mark.parametrize("hint", ["no_learn", "No-Learn", " no_learn "])
def test_a_request_can_opt_out(hint):
    o = outcome("llm", entity="cart", count=5, hints=["coherent", hint])
    assert opts_out([hint])
    assert judge(o, REGISTRY, POLICY).skip == Skip.OPTED_OUT


def test_low_coherence_is_not_learned():
    broken = {"name": "broken", "overrides": {"subtotal": "1.0"}, "description": "wrong sums"}
    o = outcome(entity="cart", count=6, context=CONTEXT, scenarios=[broken])
    assert o.coherence_score == pytest.approx(0.7)
    v = judge(o, REGISTRY, POLICY)
    assert v.skip == Skip.LOW_COHERENCE and "0.700 < 0.850" in v.detail
    assert judge(o, REGISTRY, Policy.of(["traditional"], 0.6)).pattern is not None
    # the run's own figure counts too, not only the sample's
    good = outcome(entity="cart", count=6, context=CONTEXT)
    assert judge(good.model_copy(update={"coherence_score": 0.5}), REGISTRY, POLICY).skip == (
        Skip.LOW_COHERENCE
    )


def test_payments_users_and_products_are_gated_on_their_coherence_rules():
    for entity in ("payment", "user", "product"):
        o = outcome("llm", entity=entity, count=4)
        assert o.coherence_score == 1.0, entity
        v = judge(o, REGISTRY, POLICY)
        assert v.pattern is not None and v.pattern.quality == 1.0


def test_any_invalid_record_keeps_the_dataset_out():
    o = outcome("llm", entity="cart", count=4)
    records = o.sample()
    records[2]["items"][0]["quantity"] = "two"
    bad = o.model_copy(update={"sample_json": orjson.dumps(records).decode()})
    v = judge(bad, REGISTRY, POLICY)
    assert v.skip == Skip.INVALID and "record 2: items[0].quantity" in v.detail
    unchecked = bad.model_copy(update={"invalid_count": None})  # the producer did not look
    assert judge(unchecked, REGISTRY, POLICY).skip == Skip.INVALID
    assert judge(o.model_copy(update={"invalid_count": 1}), REGISTRY, POLICY).skip == Skip.INVALID
    assert judge(o.model_copy(update={"sample_json": "[{"}), REGISTRY, POLICY).skip == Skip.INVALID
    assert judge(o.model_copy(update={"sample_json": "[]"}), REGISTRY, POLICY).skip == Skip.EMPTY


def test_custom_schemas_and_unknown_entities_are_not_learned():
    custom = outcome(
        "llm",
        entity="gadget",
        count=3,
        schema={"fields": [{"name": "name", "type": "STRING", "required": True}]},
    )
    assert custom.custom_schema and judge(custom, REGISTRY, POLICY).skip == Skip.CUSTOM_SCHEMA
    o = outcome("llm", entity="cart", count=3).model_copy(update={"entity": "spaceship"})
    assert judge(o, REGISTRY, POLICY).skip == Skip.UNKNOWN_ENTITY


def test_the_same_dataset_twice_is_one_pattern():
    a = judge(outcome("llm", entity="cart", count=5), REGISTRY, POLICY).pattern
    again = outcome("llm", entity="cart", count=5).model_copy(update={"request_id": "r-2"})
    b = judge(again, REGISTRY, POLICY).pattern
    other = judge(outcome("llm", entity="cart", count=5, seed=4), REGISTRY, POLICY).pattern
    assert a is not None and b is not None and other is not None
    assert a.id == b.id != other.id


def test_the_sample_is_bounded_in_records_and_bytes():
    plan = build_plan(GenerateRequest(entity="cart", count=50, seed=1), REGISTRY)
    records = generate_records(plan, 0, 50)
    by_count = Sample(10, 1024 * 1024)
    by_count.add(records[:4])
    by_count.add(records[4:])
    assert by_count.records == records[:10] and by_count.full
    by_bytes = Sample(50, 2000)
    by_bytes.add(records)
    assert 0 < len(by_bytes.records) < 50
    assert len(by_bytes.json()) <= 2000 < len(orjson.dumps(records[: len(by_bytes.records) + 1]))
    tiny = Sample(50, 10)
    tiny.add(records)
    assert tiny.records == [] and tiny.json() == "[]"


def test_words_and_scenarios_of_a_pattern():
    o = outcome(
        entity="cart",
        count=4,
        context="Holiday gifts.",
        scenarios=[
            {"name": "a", "count": 2, "description": "wrapped presents"},
            {"name": "b", "count": 2},
        ],
    )
    assert shaped(o)
    assert describe(o) == "Holiday gifts. a: wrapped presents. cart records (ecommerce)"
    assert scenario_of(o.sample()) == "a,b"
    assert scenario_of([{"_scenario": "default"}]) == ""


def test_a_learned_pattern_is_its_tenants_unless_the_operator_shares_that_tenant(monkeypatch):
    o = outcome(entity="cart", count=6, context=CONTEXT).model_copy(update={"tenant": "team-a"})
    assert judge(o, REGISTRY, POLICY).pattern.tenant == "team-a"
    shared = Policy.of(["traditional:context"], 0.85, ["team-a"])
    assert judge(o, REGISTRY, shared).pattern.tenant == ""
    monkeypatch.setitem(os.environ, "PATTERNS_SHARED_TENANTS", "team-a, team-s")
    assert make_settings().patterns_shared_tenants == ["team-a", "team-s"]
