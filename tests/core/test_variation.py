"""Variation of retrieved examples into a plan's records (the RAG path's generator)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest

from services.core.coherence import chronology, score_records
from services.core.errors import NoExamples
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.validate import EDGE_CASE_KEY, INVALID_KEY, validate_record
from services.core.variation import Example, Variation, vary_records

ENTITIES = ["cart", "order", "payment", "product", "review", "user"]
ANCHOR = "2026-03-01T12:00:00Z"
TIMES = {
    "cart": ("created_at", "updated_at"),
    "order": ("created_at", "paid_at", "shipped_at", "delivered_at"),
    "payment": ("created_at", "updated_at"),
    "product": ("created_at",),
    "review": ("created_at",),
    "user": ("created_at", "updated_at"),
}
ID_FIELDS = {
    "cart": ("cart_id", "customer_id"),
    "order": ("order_id", "customer_id"),
    "payment": ("payment_id", "order_id"),
    "product": ("product_id",),
    "review": ("review_id", "product_id", "user_id"),
    "user": ("user_id", "email", "phone"),
}


def seed_like(registry, entity: str, n: int = 4, seed: int = 7) -> list[Example]:
    """Examples as the store holds them: accepted records from another request and time."""
    src = build_plan(
        GenerateRequest(entity=entity, count=n, seed=seed, anchor="2024-07-15T08:00:00Z"),
        registry,
    )
    return [Example(r) for r in generate_records(src, 0, n)]


def plan_for(registry, entity: str, count: int = 300, **over: Any):
    return build_plan(
        GenerateRequest.model_validate(
            {"entity": entity, "count": count, "seed": 42, "anchor": ANCHOR, **over}
        ),
        registry,
    )


def content(rec: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps({k: v for k, v in rec.items() if k not in ("_index", "_scenario")}).decode()


def ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


@pytest.mark.parametrize("entity", ENTITIES)
def test_every_record_valid_unique_fresh_and_before_the_anchor(registry, entity):
    examples = seed_like(registry, entity)
    plan = plan_for(registry, entity)
    varied = Variation(plan, examples).records(0, plan.count)
    records = varied.records
    assert varied.traditional == []
    assert [r["_index"] for r in records] == list(range(300))
    assert [e for r in records for e in validate_record(plan.schema, r)] == []
    assert len({content(r) for r in records}) == 300  # 300 records from 4 examples
    old_ids = {e.record[k] for e in examples for k in ID_FIELDS[entity]}
    new_ids = [r[k] for r in records for k in ID_FIELDS[entity]]
    assert not old_ids & set(new_ids)
    anchor = ts(ANCHOR)
    for r in records:
        times = [ts(r[k]) for k in TIMES[entity] if r.get(k)]
        assert times and all(t <= anchor for t in times)
        assert times == sorted(times)  # order within the record kept
    if entity in ("cart", "order", "review"):
        assert score_records(entity, records) >= 0.95  # money re-derived, text kept


@pytest.mark.parametrize("entity", ENTITIES)
def test_deterministic_and_independent_of_chunking(registry, entity):
    examples = seed_like(registry, entity)
    plan = plan_for(registry, entity, count=100)
    whole = vary_records(plan, examples, 0, 100)
    again = Variation(plan_for(registry, entity, count=100), seed_like(registry, entity))
    assert again.records(0, 100).records == whole
    for size in (1, 7, 16, 33):
        v = Variation(plan, examples)
        parts = [
            r for lo in range(0, 100, size) for r in v.records(lo, min(lo + size, 100)).records
        ]
        assert parts == whole, size
    assert vary_records(plan_for(registry, entity, count=100, seed=43), examples, 0, 100) != whole


def test_records_follow_the_examples_in_retrieval_order(registry):
    examples = seed_like(registry, "cart", n=3)
    plan = plan_for(registry, "cart", count=9)
    records = vary_records(plan, examples, 0, 9)
    for i, r in enumerate(records):
        ex = examples[i % 3].record
        assert r["_shopping_occasion"] == ex["_shopping_occasion"]
        assert [it["name"] for it in r["items"]] == [it["name"] for it in ex["items"]]
        assert r["cart_id"] != ex["cart_id"] and re.fullmatch(r"CRT-2026-[A-Z0-9]{7}", r["cart_id"])


def test_numbers_vary_inside_request_constraints_and_money_adds_up(registry):
    examples = seed_like(registry, "order", n=5)
    plan = plan_for(
        registry,
        "order",
        count=400,
        constraints={
            "field_constraints": {"items.quantity": {"max": 2}, "items.price": {"max": 150}}
        },
    )
    varied = Variation(plan, examples).records(0, 400)
    records = varied.records
    assert [e for r in records for e in validate_record(plan.schema, r)] == []
    items = [it for r in records for it in r["items"]]
    assert all(1 <= it["quantity"] <= 2 and 0.01 <= it["price"] <= 150 for it in items)
    ex_prices = {it["name"]: it["price"] for e in examples for it in e.record["items"]}
    free = [it for it in items if ex_prices[it["name"]] < 130]  # not held at the bound
    moved = [it for it in free if it["price"] != ex_prices[it["name"]]]
    assert free and len(moved) > 0.8 * len(free)  # perturbed, not copied
    for r in records:
        sub = sum(round(it["quantity"] * round(it["price"] * 100)) for it in r["items"])
        assert round(r["subtotal"] * 100) == sub
        total = r["subtotal"] + r["tax"] + r["shipping"] - r["discount"]
        assert abs(r["total"] - total) < 0.011 and r["payment"]["amount"] == r["total"]


def test_ratings_keep_agreeing_with_review_text(registry):
    examples = seed_like(registry, "review", n=6)
    records = vary_records(plan_for(registry, "review", count=120), examples, 0, 120)
    for i, r in enumerate(records):
        ex = examples[i % 6].record
        assert (r["rating"], r["title"], r["body"]) == (ex["rating"], ex["title"], ex["body"])
    assert score_records("review", records) == 1.0


def test_people_are_fresh_and_consistent(registry):
    examples = seed_like(registry, "user", n=3)
    records = vary_records(plan_for(registry, "user", count=60), examples, 0, 60)
    for r in records:
        local = r["email"].split("@")[0]
        assert r["first_name"].lower().replace(" ", "")[:1] in local
    assert len({(r["first_name"], r["last_name"]) for r in records}) > 30


def test_scenario_overrides_apply_as_on_every_path(registry):
    examples = seed_like(registry, "order", n=4)
    plan = plan_for(
        registry,
        "order",
        count=20,
        scenarios=[
            {"name": "happy", "count": 15},
            {"name": "returned", "count": 5, "overrides": {"status": "returned"}},
        ],
    )
    records = vary_records(plan, examples, 0, 20)
    assert [r["_scenario"] for r in records] == ["happy"] * 15 + ["returned"] * 5
    assert all(r["status"] == "returned" for r in records[15:])


def test_examples_that_cannot_fit_come_from_the_traditional_generator(registry):
    examples = seed_like(registry, "cart", n=4)
    short = [e for e in examples if len(e.record["items"]) < 5]
    assert short
    plan = plan_for(
        registry, "cart", count=40, constraints={"field_constraints": {"items": {"min": 5}}}
    )
    varied = Variation(plan, examples).records(0, 40)
    unfit = {i for i in range(40) if len(examples[i % 4].record["items"]) < 5}
    assert set(varied.traditional) == unfit
    assert varied.records[min(unfit)] == generate_records(plan, min(unfit), min(unfit) + 1)[0]
    assert [e for r in varied.records for e in validate_record(plan.schema, r)] == []


def test_money_outside_a_total_window_falls_back_per_record(registry):
    examples = seed_like(registry, "cart", n=6, seed=3)
    plan = plan_for(
        registry, "cart", count=60, constraints={"field_constraints": {"total": {"max": 150}}}
    )
    varied = Variation(plan, examples).records(0, 60)
    assert all(r["total"] <= 150 for r in varied.records)
    assert [e for r in varied.records for e in validate_record(plan.schema, r)] == []
    # a cheap example's record that perturbation pushed too high is taken as the example's
    # own numbers; only dear examples' records can need the traditional generator
    dear = {i for i in range(60) if examples[i % 6].record["total"] > 150}
    assert varied.traditional and set(varied.traditional) <= dear


def test_custom_schema_takes_what_fits_from_the_examples(registry):
    plan = build_plan(
        GenerateRequest.model_validate(
            {
                "entity": "ticket",
                "count": 30,
                "seed": 1,
                "anchor": ANCHOR,
                "schema": {
                    "fields": [
                        {"name": "ticket_id", "type": "UUID", "required": True},
                        {"name": "title", "type": "STRING", "required": True},
                        {"name": "opened", "type": "DATE", "required": True},
                        {"name": "hours", "type": "FLOAT", "required": True},
                        {"name": "owner_email", "type": "EMAIL", "required": True},
                    ]
                },
            }
        ),
        registry,
    )
    examples = [
        Example({"ticket_id": "5f0f9d7e-0000-4000-8000-000000000001", "title": "Login fails",
                 "opened": "2024-02-01", "hours": 2.5, "extra": "dropped"}),
        Example({"ticket_id": "not-a-uuid", "title": "Slow checkout", "opened": "bad",
                 "hours": "three"}),
    ]  # fmt: skip
    records = vary_records(plan, examples, 0, 30)
    assert [e for r in records for e in validate_record(plan.schema, r)] == []
    assert all("extra" not in r for r in records)
    assert [r["title"] for r in records[:4]] == ["Login fails", "Slow checkout"] * 2
    assert len({r["ticket_id"] for r in records}) == 30
    assert all(len(r["opened"]) == 10 and r["opened"] <= ANCHOR[:10] for r in records)


# ---- defects -------------------------------------------------------------------------
def defect_examples(registry) -> list[Example]:
    carts = [e.record for e in seed_like(registry, "cart", n=3)]
    negative = {**carts[0], "items": [{**carts[0]["items"][0], "quantity": -1}]}
    mismatch = {**carts[1], "total": round(carts[1]["total"] + 10, 2)}  # valid, incoherent
    midnight = {
        **carts[2],
        "created_at": "2024-02-29T00:00:00Z",
        "updated_at": "2024-02-29T23:59:59Z",
        "cart_id": "CRT-24-BAD",
        "_edge_case_type": "leap_day_midnight",
    }
    missing = {k: v for k, v in carts[0].items() if k != "currency"}
    return [
        Example(negative, edge_case="negative_quantity"),
        Example(mismatch, edge_case="total_mismatch"),
        Example(midnight),
        Example(missing, edge_case="missing_currency"),
    ]


def test_defects_keep_what_makes_them_defects_and_say_which(registry):
    examples = defect_examples(registry)
    plan = plan_for(registry, "cart", count=80, defect_triggering=True)
    varied = Variation(plan, examples).records(0, 80)
    records = varied.records
    assert varied.traditional == []
    assert len({content(r) for r in records}) == 80
    expected_marks = [["items[0].quantity"], [], ["cart_id"], ["currency"]]
    kinds = ["negative_quantity", "total_mismatch", "leap_day_midnight", "missing_currency"]
    for i, r in enumerate(records):
        k = i % 4
        ex = examples[k].record
        assert r[EDGE_CASE_KEY] == kinds[k]
        assert r[INVALID_KEY] == expected_marks[k]
        assert validate_record(plan.schema, r, honour_marks=True) == []
        assert [e.path for e in validate_record(plan.schema, r)] == expected_marks[k]
        assert r["items"] == ex["items"] and r["total"] == ex["total"]  # numbers verbatim
        if k != 2:
            assert r["cart_id"] != ex["cart_id"]
            assert re.fullmatch(r"CRT-2026-[A-Z0-9]{7}", r["cart_id"])
    for r in (r for i, r in enumerate(records) if i % 4 == 2):
        assert r["cart_id"] == "CRT-24-BAD"  # the broken id is the defect: kept
        assert (r["created_at"], r["updated_at"]) == (
            "2024-02-29T00:00:00Z",
            "2024-02-29T23:59:59Z",
        )
    mismatch = [r for i, r in enumerate(records) if i % 4 == 1]
    assert all(abs(r["subtotal"] + r["tax"] - r["total"]) > 5 for r in mismatch)
    assert all("currency" not in r for i, r in enumerate(records) if i % 4 == 3)
    assert all(chronology(r, ("created_at", "updated_at")) == 1.0 for r in records)


def test_defect_records_are_deterministic_across_chunks(registry):
    examples = defect_examples(registry)
    plan = plan_for(registry, "cart", count=50, defect_triggering=True)
    whole = vary_records(plan, examples, 0, 50)
    v = Variation(plan, examples)
    assert [r for lo in range(0, 50, 9) for r in v.records(lo, min(lo + 9, 50)).records] == whole


def test_marks_are_exact():
    from services.core.models import EntitySchema, FieldSpec, FieldType

    schema = EntitySchema(name="x", fields=[FieldSpec(name="n", type=FieldType.INTEGER)])
    base = {"_index": 0, "_scenario": "d"}
    bad = {**base, "n": "x", EDGE_CASE_KEY: "wrong_type", INVALID_KEY: ["n"]}
    assert validate_record(schema, bad, honour_marks=True) == []
    assert [e.path for e in validate_record(schema, bad)] == ["n"]  # only when asked
    stale = {**base, "n": 1, EDGE_CASE_KEY: "wrong_type", INVALID_KEY: ["n"]}
    assert "marked intentionally invalid but is valid" in str(
        validate_record(schema, stale, honour_marks=True)[0]
    )
    unnamed = {**base, "n": "x", INVALID_KEY: ["n"]}
    assert [e.path for e in validate_record(schema, unnamed, honour_marks=True)] == [
        "n",
        EDGE_CASE_KEY,
    ]


def test_nothing_to_vary_is_an_error(registry):
    with pytest.raises(NoExamples):
        Variation(plan_for(registry, "cart"), [Example(["not", "a", "record"])])  # type: ignore[arg-type]


# ---- every seed pattern ----------------------------------------------------------------
def seed_patterns() -> list[tuple[str, dict[str, Any]]]:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "schemas" / "patterns"
    out = []
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text())
        out += [(data["collection"], p) for p in data["patterns"]]
    return out


SEEDS = seed_patterns()
PEOPLE_FIELDS = ("shipping_address", "billing_address", "addresses", "first_name", "last_name")


@pytest.mark.parametrize(
    ("collection", "pattern"), SEEDS, ids=[f"{c}-{p['entity']}-{p['scenario']}" for c, p in SEEDS]
)
def test_every_seed_pattern_varies_into_valid_unique_records(registry, collection, pattern):
    """The shipped seeds, each varied into 200 records: all valid (defects exactly where
    their example says), none twice, the same twice, defects' properties kept."""
    defect = collection == "defects"
    kind = pattern.get("defect_type") or None
    examples = [Example(r, edge_case=kind if defect else None) for r in pattern["records"]]
    plan = plan_for(registry, pattern["entity"], count=200, defect_triggering=defect)
    varied = Variation(plan, examples).records(0, 200)
    assert varied.traditional == []
    records = varied.records
    assert records == Variation(plan, examples).records(0, 200).records
    assert len({content(r) for r in records}) == 200
    anchor = ts(ANCHOR)
    for i, r in enumerate(records):
        ex = pattern["records"][i % len(pattern["records"])]
        assert validate_record(plan.schema, r, honour_marks=True) == []
        if not defect:
            assert validate_record(plan.schema, r) == []
            assert all(ts(r[k]) <= anchor for k in TIMES[pattern["entity"]] if r.get(k))
            continue
        assert r[EDGE_CASE_KEY] == kind
        assert r[INVALID_KEY] == ex["_invalid_fields"]  # the seed's own account agrees
        for key, value in ex.items():
            if key.startswith("_") or key in (*ID_FIELDS[pattern["entity"]], *PEOPLE_FIELDS):
                continue
            assert r.get(key) == value, key  # everything but identities kept verbatim


def test_compiled_examples_are_reused_only_for_the_same_shape(registry):
    """Keyed examples (pattern id and position) compile once per plan shape; the records
    are the same as from unkeyed ones, and other constraints compile anew."""
    from services.core import variation

    plain = seed_like(registry, "cart", n=3)
    keyed = [Example(e.record, key=f"p{i}:0") for i, e in enumerate(plain)]
    plan = plan_for(registry, "cart", count=50)
    expected = vary_records(plan, plain, 0, 50)
    assert vary_records(plan, keyed, 0, 50) == expected
    cached = [k for k in variation._COMPILED if k[1] in ("p0:0", "p1:0", "p2:0")]
    assert len(cached) == 3
    assert vary_records(plan_for(registry, "cart", count=50), keyed, 0, 50) == expected
    tight = plan_for(
        registry, "cart", count=50, constraints={"field_constraints": {"items": {"min": 5}}}
    )
    assert Variation(tight, keyed).records(0, 50).traditional  # not the cached builders
    assert len([k for k in variation._COMPILED if k[1] == "p0:0"]) == 2
