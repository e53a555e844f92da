"""Intent without an LLM, as a caller sees it over gRPC: contexts choose occasions and
products, phrases become constraints listed in the metadata, defect requests produce edge
cases, every entity reports coherence. No LLM is configured in this stack."""

from __future__ import annotations

import collections
import json

import pytest

from services.core import lexicon
from services.core.pools import get_pools
from services.core.validate import validate_record, with_defect_columns
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid

OCCASION_PRODUCTS = {o.name: {p.name for p in o.products} for o in get_pools().occasions}
ALL_PRODUCTS = {p for names in OCCASION_PRODUCTS.values() for p in names}


async def call(stub, **kw) -> tuple[list[dict], pb.GenerationMetadata]:
    kw.setdefault("seed", 21)
    kw["hints"] = [*kw.get("hints", []), "no_learn"]  # the shared store stays as seeded
    resp = await stub.GenerateData(
        pb.GenerateRequest(request_id=rid("intent"), **kw), timeout=HANG_GUARD_S
    )
    assert resp.success, resp.error
    return json.loads(resp.data), resp.metadata


def product_names(entity: str, r: dict) -> set[str]:
    if entity in ("cart", "order"):
        return {i["name"] for i in r["items"]}
    if entity == "product":
        return {r["name"]}
    return {n for n in ALL_PRODUCTS if n in r["body"]}  # a review names its product


# Wordings are synonyms and inflections, not the occasions' names: what a tester writes.
THEMES = [
    ("cart", "50 carts for long-distance joggers training for a race", ["marathon_training"]),
    ("order", "orders from expecting parents getting the nursery ready", ["baby_shower_gift"]),
    # "winter" names an occasion of its own: records may come from either
    ("cart", "carts of skiers heading to the slopes this winter", ["ski_trip", "winter_outerwear"]),
    ("product", "products for campers visiting a national park", ["camping_trip"]),
    ("order", "orders placed by home bakers who love sourdough", ["baking"]),
    ("cart", "carts for newlyweds' registry", ["wedding_registry"]),
]


@pytest.mark.parametrize(("entity", "context", "occasions"), THEMES)
async def test_context_selects_matching_occasions(stub, entity, context, occasions):
    records, md = await call(stub, entity=entity, count=30, context=context)
    expected = set().union(*(OCCASION_PRODUCTS[o] for o in occasions))
    hits = sum(1 for r in records if product_names(entity, r) <= expected)
    assert hits / len(records) >= 0.8, (hits, context)
    first = occasions[0]
    assert f"occasion:{first}" in md.themes
    assert any(u.meaning == f"occasion {first}" and u.scope == "context" for u in md.understood)
    assert md.generation_path == "traditional"


async def test_reviews_are_about_the_products_the_context_names(stub):
    records, md = await call(
        stub,
        entity="review",
        count=30,
        context="reviews for wireless headphones with mixed opinions",
    )
    headphones = {p.name for p in lexicon.resolve_products("product:wireless headphone")}
    assert all(product_names("review", r) & headphones for r in records)
    assert all(2 <= r["rating"] <= 4 for r in records)
    meanings = {u.phrase: u.meaning for u in md.understood}
    assert meanings["mixed opinions"] == "rating 2-4 (mixed)"


async def test_scenario_descriptions_and_context_become_constraints(stub):
    records, md = await call(
        stub,
        entity="cart",
        count=40,
        context="3-5 items",
        scenarios=[
            pb.Scenario(name="high_value", description="Cart total > $500", count=20),
            pb.Scenario(name="regular", count=20),
        ],
    )
    assert all(3 <= len(r["items"]) <= 5 for r in records)
    assert all(r["total"] > 500 for r in records if r["_scenario"] == "high_value")
    got = {(u.phrase, u.meaning, u.scope) for u in md.understood}
    assert ("Cart total > $500", "total > 500", "scenario:high_value") in got
    assert ("3-5 items", "items count 3-5", "context") in got
    assert list(md.not_understood) == []


@pytest.mark.parametrize(
    ("entity", "context", "check"),
    [
        ("cart", "single item carts", lambda r: len(r["items"]) == 1),
        ("order", "orders over $1k", lambda r: r["total"] > 1000),
        ("order", "international shipping", lambda r: r["shipping_address"]["country"] == "CA"),
        ("order", "express shipping", lambda r: r["shipping"] == 19.95),
        (
            "payment",
            "payments with an expired card",
            lambda r: (
                r["status"] == "declined"
                and r["method"] in ("credit_card", "debit_card", "macys_card")
            ),
        ),
        ("user", "Gold tier members", lambda r: r["loyalty_tier"] == "Gold"),
        ("user", "first-time customers", lambda r: r["loyalty_tier"] == "Bronze"),
        ("review", "negative reviews", lambda r: r["rating"] <= 2),
        ("payment", "paid with Apple Pay", lambda r: r["method"] == "apple_pay"),
    ],
)
async def test_each_supported_phrase_holds_and_is_listed(stub, entity, context, check):
    records, md = await call(stub, entity=entity, count=15, context=context)
    assert all(check(r) for r in records), context
    assert [u.scope for u in md.understood] == ["context", "hints"]
    assert list(md.not_understood) == [] and list(md.contradictions) == []


async def test_unsupported_words_are_listed_as_not_understood(stub):
    _, md = await call(stub, entity="cart", count=5, context="single item, with a touch of whimsy")
    assert "context: a touch of whimsy" in md.not_understood
    assert [u.phrase for u in md.understood] == ["single item", "no_learn"]


async def test_contradiction_with_an_explicit_constraint_is_reported(stub):
    records, md = await call(
        stub,
        entity="order",
        count=10,
        context="orders over $1k",
        constraints=pb.Constraints(field_constraints={"total": pb.FieldConstraint(max=800)}),
    )
    assert all(r["total"] <= 800 for r in records)
    assert len(md.contradictions) == 1 and "explicit constraint on total" in md.contradictions[0]


@pytest.mark.parametrize(
    ("entity", "kw"),
    [
        ("order", {"defect_triggering": True, "hints": ["fast"]}),
        ("payment", {"defect_triggering": True, "hints": ["fast"]}),
        ("user", {"defect_triggering": True}),
        ("cart", {"hints": ["edge_case"]}),
    ],
)
async def test_defect_requests_produce_every_applicable_edge_case(stub, stack, entity, kw):
    records, md = await call(stub, entity=entity, count=60, **kw)
    counts = collections.Counter(r["_edge_case_type"] for r in records)
    assert dict(md.edge_case_counts) == dict(counts)
    assert len(counts) >= 6 and max(counts.values()) - min(counts.values()) <= 1
    schema = with_defect_columns(stack.registry.get(entity))
    assert all(validate_record(schema, r, honour_marks=True) == [] for r in records)
    assert any(r.get("_intentionally_invalid") for r in records)
    assert md.generation_path == "traditional"


@pytest.mark.parametrize("entity", ["cart", "order", "payment", "product", "review", "user"])
async def test_coherence_is_reported_for_every_entity(stub, entity):
    _, md = await call(stub, entity=entity, count=20)
    assert md.coherence_status == "scored" and md.coherence_score >= 0.9


async def test_a_custom_schema_says_coherence_does_not_apply(stub):
    schema = pb.Schema(fields=[pb.Field(name="code", type=pb.STRING)])
    _, md = await call(stub, entity="gadget", count=5, schema=schema)
    assert md.coherence_status.startswith("not_applicable: no coherence rules")


async def test_words_and_defects_are_reproducible(stub):
    kw = dict(
        entity="order",
        count=30,
        context="campers, 3-5 items, express shipping",
        hints=["edge_case"],
        scenarios=[
            pb.Scenario(name="big", description="total over $800", count=10),
            pb.Scenario(name="rest"),
        ],
    )
    a, _ = await call(stub, **kw)
    b, _ = await call(stub, **kw)
    assert a == b
