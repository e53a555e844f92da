"""Intent without an LLM, in core: catalogue, lexicon themes, phrases, edge cases,
coherence rules. The same behaviour over gRPC is in tests/pipeline/test_intent.py."""

from __future__ import annotations

import collections
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.core import edgecases, lexicon, phrases
from services.core.coherence import SCORERS, score_records
from services.core.entities import KIND_OF_CATEGORY
from services.core.errors import RequestInvalid
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import RECOGNIZERS, build_plan
from services.core.pools import get_pools
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record

REGISTRY = SchemaRegistry.load()
SIZED = {"Apparel", "Activewear", "Outerwear", "Swimwear", "Sleepwear", "Baby Apparel"}
SIZED |= {"Kids Apparel", "Footwear", "Rings", "Bedding", "Luggage"}
CLOTHING_SIZES = {"XS", "S", "M", "L", "XL", "XXL"}


def plan_of(**kw):
    return build_plan(GenerateRequest.model_validate({"seed": 11, **kw}), REGISTRY)


def records_of(**kw):
    plan = plan_of(**kw)
    return plan, generate_records(plan, 0, plan.count)


# ---- catalogue --------------------------------------------------------------------------
def test_catalogue_is_large_enough_with_sane_price_ranges():
    pools = get_pools()
    products = {p.name: p for o in pools.occasions for p in o.products}
    assert len(pools.occasions) >= 30 and len(products) >= 300
    for p in products.values():
        assert 0 < p.low <= p.price < 5000, p
        assert len({p.cents(r / 10) for r in range(10)}) > 1 or p.low == p.price
    for o in pools.occasions:
        assert len(o.products) >= 10 and o.synonyms, o.name


def test_skus_carry_sizes_only_where_the_category_has_sizes():
    seen = collections.Counter()
    for entity in ("cart", "order"):
        _, recs = records_of(entity=entity, count=400)
        for r in recs:
            for item in r["items"]:
                variant = item["sku"].rsplit("-", 1)[1]
                seen[item["category"]] += 1
                if variant in CLOTHING_SIZES:
                    assert item["category"] in SIZED, item
                if item["category"] not in SIZED:
                    assert variant in ("OS", "STD") or variant.endswith("ML"), item
    assert len(seen) >= 15  # the mix spans the catalogue


def test_review_text_suits_the_kind_of_product():
    _, recs = records_of(entity="review", count=400)
    names = {p.name: p.category for o in get_pools().occasions for p in o.products}
    for r in recs:
        product = next(n for n in names if n in r["body"])  # the review names its product
        if KIND_OF_CATEGORY.get(names[product]) != "wearable":
            assert "fit" not in f"{r['title']} {r['body']}".lower().split(), r


# ---- lexicon ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "theme"),
    [
        ("50 shopping carts for marathon runners", "occasion:marathon_training"),
        ("Carts for long-distance joggers", "occasion:marathon_training"),
        ("gifts for expecting parents", "occasion:baby_shower_gift"),
        ("newlyweds' registry", "occasion:wedding_registry"),
        ("skiers heading to the slopes", "occasion:ski_trip"),
        ("reviews for wireless headphones", "product:wireless headphone"),
        ("fine jewelry", "category:Jewelry"),
    ],
)
def test_lexicon_finds_themes_in_synonyms_and_inflections(text, theme):
    assert theme in {t for m in lexicon.recognize(text) for t in m.themes}


def test_lexicon_has_no_themes_in_plain_request_words():
    assert lexicon.recognize("Please generate 20 realistic records for a test, thanks") == []


def test_longest_phrase_wins_and_matching_is_deterministic():
    ms = lexicon.recognize("a half marathon runner")
    assert [m.meaning for m in ms] == ["occasion marathon_training"] * len(ms)
    assert ms == lexicon.recognize("a half marathon runner")


def test_a_theme_decides_what_records_draw_from():
    _, recs = records_of(entity="cart", count=60, context="carts for campers in a national park")
    assert {r["_shopping_occasion"] for r in recs} == {"camping_trip"}
    _, recs = records_of(entity="product", count=40, context="wireless headphones")
    headphones = {p.name for p in lexicon.resolve_products("product:wireless headphone")}
    assert {r["name"] for r in recs} <= headphones


# ---- phrases ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "meaning"),
    [
        ("Cart total > $500", "total > 500"),
        ("over $1k", "total > 1,000"),
        ("at least $1.5k", "total >= 1,500"),
        ("under 50 dollars", "total < 50"),
        ("between $100 and $200", "total between 100 and 200"),
        ("3-5 items", "items count 3-5"),
        ("single item", "items count 1"),
        ("at least 4 items", "items count >= 4"),
        ("expired card", "status declined (card expired); method a card"),
        ("international shipping", "shipping country CA (outside the US)"),
        ("express shipping", "shipping 19.95 (express)"),
        ("BOPIS", "shipping 0 (store pickup)"),
        ("Gold tier", "loyalty_tier Gold"),
        ("first-time customers", "loyalty_tier Bronze (a first-time customer has no tier yet)"),
        ("5-star reviews", "rating 5"),
        ("paid with PayPal", "method paypal"),
    ],
)
def test_phrases_are_read(text, meaning):
    assert meaning in [m.meaning for m in phrases.recognize(text)]


def test_constraints_from_words_hold_per_scenario():
    plan, recs = records_of(
        entity="cart",
        count=40,
        context="3-5 items",
        scenarios=[
            {"name": "high_value", "description": "Cart total > $500", "count": 20},
            {"name": "regular", "count": 20},
        ],
    )
    assert all(3 <= len(r["items"]) <= 5 for r in recs)
    assert all(r["total"] > 500 for r in recs if r["_scenario"] == "high_value")
    assert any(r["total"] <= 500 for r in recs if r["_scenario"] == "regular")
    got = {(u.phrase, u.meaning, u.scope) for u in plan.intent.understood}
    assert ("Cart total > $500", "total > 500", "scenario:high_value") in got
    assert ("3-5 items", "items count 3-5", "context") in got
    assert all(validate_record(plan.schema, r) == [] for r in recs)


def test_unknown_words_are_listed_and_words_without_a_field_say_why():
    plan = plan_of(entity="payment", context="expired card, Gold tier, with a touch of whimsy")
    nu = plan.intent.not_understood
    assert "context: a touch of whimsy" in nu
    assert any("Gold tier" in x and "no field" in x for x in nu)
    assert [u.phrase for u in plan.intent.understood] == ["expired card"]


def test_an_explicit_constraint_wins_and_the_contradiction_is_reported():
    plan, recs = records_of(
        entity="order",
        count=20,
        context="over $1k",
        constraints={"field_constraints": {"total": {"max": 800}}},
    )
    assert all(r["total"] <= 800 for r in recs)
    assert len(plan.intent.contradictions) == 1 and "over $1k" in plan.intent.contradictions[0]


def test_a_scenario_override_wins_over_a_phrase():
    plan, recs = records_of(
        entity="payment",
        count=10,
        scenarios=[
            {"name": "s", "description": "declined payments", "overrides": {"status": "captured"}}
        ],
    )
    assert {r["status"] for r in recs} == {"captured"}
    assert plan.intent.contradictions


def test_words_that_no_record_can_satisfy_are_refused_with_where_they_were():
    with pytest.raises(RequestInvalid) as e:
        plan_of(
            entity="cart",
            constraints={"field_constraints": {"items.price": {"max": 1}}},
            scenarios=[{"name": "big", "description": "total over $5000", "count": 5}],
        )
    assert e.value.errors[0].path in ("scenarios[0].description", "constraints.field_constraints")


def test_interpretation_is_deterministic():
    kw = dict(entity="cart", count=30, context="marathon runners, 3-5 items, edge cases")
    assert records_of(**kw)[1] == records_of(**kw)[1]
    assert plan_of(**kw).intent == plan_of(**kw).intent


def test_a_request_without_words_is_unchanged_by_the_recognizers():
    assert RECOGNIZERS  # and none of them found anything:
    assert plan_of(entity="cart").intent.understood == ()


# ---- edge cases -------------------------------------------------------------------------
def test_dst_instants_are_real_transitions():
    ny = ZoneInfo("America/New_York")
    for year in (2024, 2025, 2026):
        for instant in edgecases.dst_instants(year):
            before = (instant - timedelta(seconds=1)).astimezone(ny).utcoffset()
            after = instant.astimezone(ny).utcoffset()
            assert before != after, instant


@pytest.mark.parametrize("entity", ["cart", "order", "payment", "user", "product", "review"])
def test_defect_requests_cover_every_applicable_class_evenly_and_mark_breakage(entity):
    plan, recs = records_of(entity=entity, count=90, defect_triggering=True)
    counts = collections.Counter(r["_edge_case_type"] for r in recs)
    applicable = {name for name, _ in plan.edges["default"].classes}
    assert set(counts) == applicable and len(applicable) >= 6
    assert max(counts.values()) - min(counts.values()) <= 1
    assert dict(counts) == plan.edge_case_counts()
    for r in recs:
        assert validate_record(plan.schema, r, honour_marks=True) == [], r
    invalid = {r["_edge_case_type"] for r in recs if r.get("_intentionally_invalid")}
    assert "missing_required" in invalid
    assert "invalid_enum" in invalid or "invalid_enum" not in applicable


def test_edge_case_values_are_what_they_claim():
    _, recs = records_of(entity="order", count=150, defect_triggering=True)
    by = collections.defaultdict(list)
    for r in recs:
        by[r["_edge_case_type"]].append(r)
    text = lambda r: repr(r)  # noqa: E731
    assert all(re.search(r"T00:00:00Z", text(r)) for r in by["midnight_utc"])
    assert all(
        "DROP TABLE" in text(r) or "OR '1'='1" in text(r) or "DELETE FROM" in text(r)
        for r in by["sql_injection"]
    )
    assert all("<script>" in text(r) or "onerror" in text(r) for r in by["script_injection"])
    assert all("9999-12-31" in text(r) for r in by["far_future_date"])
    assert all(any(ord(ch) > 0x2000 for ch in text(r)) for r in by["emoji_text"])
    assert all(
        (r["items"][0]["name"] and len(r["items"][0]["name"]) == 120)
        or any(isinstance(v, str) and len(v) == 120 for v in r.values())
        for r in by["max_length_string"]
    )


def test_edge_cases_can_be_narrowed_by_words():
    _, recs = records_of(entity="user", count=20, context="unicode names")
    assert {r["_edge_case_type"] for r in recs} == {"unicode_name"}
    assert all(any(ord(c) > 127 for c in r["first_name"] + r["last_name"]) for r in recs)
    _, recs = records_of(
        entity="product",
        count=20,
        scenarios=[
            {"name": "ok", "count": 10},
            {"name": "edges", "description": "boundary values", "count": 10},
        ],
    )
    assert all("_edge_case_type" not in r for r in recs[:10])
    assert {r["_edge_case_type"] for r in recs[10:]} == {"boundary_min", "boundary_max"}
    stock = {r["stock"] for r in recs[10:] if r["_edge_case_type"] == "boundary_max"}
    assert stock <= {5000} or any(r["price"] for r in recs[10:])


# ---- coherence --------------------------------------------------------------------------
@pytest.mark.parametrize("entity", ["cart", "order", "payment", "user", "product", "review"])
def test_every_entity_is_scored_and_broken_records_score_lower(entity):
    assert entity in SCORERS
    _, recs = records_of(entity=entity, count=50)
    clean = score_records(entity, recs)
    assert clean >= 0.95
    broken = [dict(r) for r in recs]
    for r in broken:
        if entity == "payment":
            r["card_last_four"] = None if r["card_last_four"] else "1234"
            r["amount"] = -1.0
        elif entity == "user":
            r["email"] = "someone.else@example.com"
        elif entity == "product":
            r["price"] = 99999.0
            r["stock"] = -4
        elif entity == "review":
            r["rating"] = 1 if r["rating"] >= 4 else 5
        else:
            r["total"] = r["total"] + 50
    assert score_records(entity, broken) <= clean - 0.1


def test_edge_cases_are_left_out_of_coherence():
    _, recs = records_of(entity="cart", count=30, defect_triggering=True)
    assert score_records("cart", recs) is None
    assert score_records("nothing", recs) is None


def test_when_a_record_opens_with_datetime():
    assert datetime.fromisoformat(edgecases.FAR_FUTURE.replace("Z", "+00:00")).year == 9999


def test_words_about_the_requests_own_fields_are_checked_not_acted_on():
    words = "50 shopping carts for marathon runners, 70% happy path, as SQL"
    scenarios = [{"name": "happy_path", "count": 35}, {"name": "high_value", "count": 15}]
    ok = plan_of(entity="cart", count=50, output_format="SQL", context=words, scenarios=scenarios)
    assert ok.intent.not_understood == () and ok.intent.contradictions == ()
    meanings = {u.meaning for u in ok.intent.understood}
    assert {"scenario happy_path 70%", "output format SQL"} <= meanings
    scenarios[0]["count"], scenarios[1]["count"] = 30, 20
    off = plan_of(entity="cart", count=50, output_format="CSV", context=words, scenarios=scenarios)
    assert len(off.intent.contradictions) == 2
    assert off.request.output_format.value == "CSV" and off.scenario_counts()["happy_path"] == 30
    none = plan_of(entity="cart", count=10, context="70% happy path")
    assert none.intent.not_understood == ("context: 70% happy path (no scenario named so)",)


def test_edge_case_counts_come_from_the_records_made():
    from services.core.report import Batch, RunReport

    _, recs = records_of(entity="payment", count=20, defect_triggering=True)
    report = RunReport()
    report.add(Batch(records=recs))
    assert report.edge_cases == dict(collections.Counter(r["_edge_case_type"] for r in recs))
