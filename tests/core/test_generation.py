import re
from collections import Counter

import pytest

from services.core.coherence import score_cart, score_order, score_records, score_review
from services.core.errors import RequestInvalid
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.validate import validate_record

ENTITIES = ["cart", "order", "payment", "product", "review", "user"]

CUSTOM_SCHEMAS = {
    "ticket": {
        "fields": [
            {"name": "ticket_id", "type": "UUID", "required": True},
            {"name": "title", "type": "STRING", "required": True},
            {"name": "severity", "type": "ENUM", "required": True},
            {"name": "reporter_email", "type": "EMAIL", "required": True},
            {"name": "opened", "type": "DATE", "required": True},
            {"name": "estimate_hours", "type": "FLOAT"},
            {"name": "labels", "type": "ARRAY"},
        ]
    },
    "shipment": {
        "fields": [
            {"name": "tracking", "type": "STRING", "required": True},
            {"name": "weight_kg", "type": "FLOAT", "required": True},
            {"name": "fragile", "type": "BOOLEAN", "required": True},
            {
                "name": "destination",
                "type": "OBJECT",
                "required": True,
                "nested_fields": [
                    {"name": "city", "type": "STRING", "required": True},
                    {"name": "zip", "type": "STRING", "required": True},
                    {"name": "phone", "type": "PHONE"},
                ],
            },
            {
                "name": "parcels",
                "type": "ARRAY",
                "required": True,
                "nested_fields": [
                    {"name": "parcel_no", "type": "INTEGER", "required": True},
                    {"name": "sku", "type": "STRING", "required": True},
                ],
            },
        ]
    },
    "account": {
        "fields": [
            {"name": "first_name", "type": "STRING", "required": True},
            {"name": "last_name", "type": "STRING", "required": True},
            {"name": "address", "type": "ADDRESS", "required": True},
            {"name": "created", "type": "DATETIME", "required": True},
            {"name": "credits", "type": "INTEGER", "required": True},
        ]
    },
}
CUSTOM_CONSTRAINTS = {
    "ticket": {
        "severity": {"enum_values": ["low", "high", "critical"]},
        "title": {"min_length": 10, "max_length": 40},
        "estimate_hours": {"min": 0.5, "max": 8},
    },
    "shipment": {
        "tracking": {"regex": r"^1Z[0-9A-F]{16}$"},
        "weight_kg": {"min": 0.1, "max": 30},
        "parcels": {"min": 1, "max": 3},
        "parcels.parcel_no": {"min": 1, "max": 9},
    },
    "account": {"credits": {"min": -50, "max": 50}},
}


def generate(registry, n=1000, **req):
    plan = build_plan(GenerateRequest.model_validate({"count": n, "seed": 11, **req}), registry)
    return plan, generate_records(plan, 0, plan.count)


@pytest.mark.parametrize("entity", ENTITIES)
def test_1000_records_of_each_entity_are_valid(registry, entity):
    plan, recs = generate(registry, entity=entity)
    assert len(recs) == 1000
    errors = [(r["_index"], e) for r in recs for e in validate_record(plan.schema, r)]
    assert errors == []
    assert [r["_index"] for r in recs] == list(range(1000))
    assert {r["_scenario"] for r in recs} == {"default"}
    # diversity: not one record repeated
    assert len({r[plan.schema.fields[0].name] for r in recs}) > 990


@pytest.mark.parametrize("name", sorted(CUSTOM_SCHEMAS))
def test_1000_records_of_custom_schemas_are_valid(registry, name):
    plan, recs = generate(
        registry,
        entity=name,
        schema=CUSTOM_SCHEMAS[name],
        constraints={"field_constraints": CUSTOM_CONSTRAINTS[name]},
    )
    assert [e for r in recs for e in validate_record(plan.schema, r)] == []
    assert len(recs) == 1000


def test_id_formats(registry):
    _, carts = generate(registry, n=50, entity="cart")
    _, orders = generate(registry, n=50, entity="order")
    _, users = generate(registry, n=50, entity="user")
    assert all(re.fullmatch(r"CRT-2025-[A-Z0-9]{7}", c["cart_id"]) for c in carts)
    assert all(re.fullmatch(r"USR-[A-Z0-9]{7}", c["customer_id"]) for c in carts)
    assert all(re.fullmatch(r"ORD-2025-[A-Z0-9]{7}", o["order_id"]) for o in orders)
    assert all(re.fullmatch(r"USR-[A-Z0-9]{7}", u["user_id"]) for u in users)
    skus = [i["sku"] for c in carts for i in c["items"]]
    assert all(re.fullmatch(r"[A-Z]{3}-[A-Z]{3}-[A-Z]{3}-[A-Z0-9]{1,4}", s) for s in skus)


def test_anchor_year_drives_ids_and_dates(registry):
    _, carts = generate(registry, n=20, entity="cart", anchor="2031-06-01T00:00:00Z")
    assert all(c["cart_id"].startswith("CRT-2031-") for c in carts)
    assert all(c["created_at"] < "2031-06-01" and c["created_at"] > "2031-01" for c in carts)


@pytest.mark.parametrize(("entity", "scorer"), [("cart", score_cart), ("order", score_order)])
def test_traditional_baskets_are_coherent(registry, entity, scorer):
    _, recs = generate(registry, entity=entity)
    assert score_records(entity, recs) >= 0.9
    assert min(scorer(r) for r in recs) >= 0.75
    for r in recs:
        sub = round(sum(i["quantity"] * i["price"] for i in r["items"]), 2)
        assert abs(sub - r["subtotal"]) < 0.005
        extra = r.get("shipping", 0) - r.get("discount", 0)
        assert abs(r["subtotal"] + r["tax"] + extra - r["total"]) < 0.005


def test_orders_are_chronological_and_paid_in_full(registry):
    _, orders = generate(registry, entity="order")
    for o in orders:
        times = [o[k] for k in ("created_at", "paid_at", "shipped_at", "delivered_at") if o[k]]
        assert times == sorted(times)
        assert o["payment"]["amount"] == o["total"]
        if o["status"] == "delivered":
            assert o["delivered_at"] is not None
        if o["status"] == "pending":
            assert o["paid_at"] is None
    assert Counter(o["status"] for o in orders).most_common(1)[0][0] == "delivered"


def test_reviews_rating_agrees_with_text(registry):
    _, reviews = generate(registry, entity="review")
    assert score_records("review", reviews) == 1.0
    assert {r["rating"] for r in reviews} == {1, 2, 3, 4, 5}


def test_scorer_separates_coherent_from_random_carts():
    coherent = {
        "items": [
            {
                "name": "Brooks Ghost 16 Running Shoes",
                "category": "Footwear",
                "quantity": 1,
                "price": 139.99,
            },
            {"name": "Running Socks", "category": "Activewear", "quantity": 2, "price": 10.0},
        ],
        "subtotal": 159.99,
        "tax": 10.0,
        "total": 169.99,
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-02T00:00:00Z",
    }
    random_cart = {
        "items": [
            {"name": "Cast Iron Skillet", "quantity": 40, "price": 10.0},
            {"name": "Baby Onesies", "quantity": 1, "price": 10.0},
            {"name": "Silk Tie", "quantity": 1, "price": 10.0},
        ],
        "subtotal": 99.0,
        "tax": 5.0,
        "total": 120.0,
        "created_at": "2025-02-01T00:00:00Z",
        "updated_at": "2025-01-02T00:00:00Z",
    }
    assert score_cart(coherent) > 0.95
    assert score_cart(random_cart) < 0.5
    assert score_review({"rating": 5, "title": "Terrible", "body": "Broke, awful."}) == 0.0


def test_scenarios_exact_counts_and_overrides(registry):
    plan, recs = generate(
        registry,
        n=100,
        entity="order",
        scenarios=[
            {"name": "happy_path", "count": 70},
            {"name": "cancelled", "count": 20, "overrides": {"status": "cancelled"}},
            {"name": "bulk", "overrides": {"items.quantity": "12"}},
        ],
    )
    assert plan.scenario_counts() == {"happy_path": 70, "cancelled": 20, "bulk": 10}
    assert Counter(r["_scenario"] for r in recs) == plan.scenario_counts()
    assert all(r["status"] == "cancelled" for r in recs if r["_scenario"] == "cancelled")
    assert all(i["quantity"] == 12 for r in recs if r["_scenario"] == "bulk" for i in r["items"])
    assert [e for r in recs for e in validate_record(plan.schema, r)] == []
    # overriding line items re-derives the money: the bulk orders still add up
    bulk = [r for r in recs if r["_scenario"] == "bulk"]
    assert min(score_order(r) for r in bulk) >= 0.75
    for r in bulk:
        sub = round(sum(i["quantity"] * i["price"] for i in r["items"]), 2)
        assert abs(sub - r["subtotal"]) < 0.005
        assert abs(r["subtotal"] + r["tax"] + r["shipping"] - r["discount"] - r["total"]) < 0.005
        assert r["payment"]["amount"] == r["total"]


def test_scenarios_without_counts_split_evenly(registry):
    plan, _ = generate(
        registry, n=10, entity="user", scenarios=[{"name": "a"}, {"name": "b"}, {"name": "c"}]
    )
    assert plan.scenario_counts() == {"a": 4, "b": 3, "c": 3}


def test_request_constraints_honoured_by_construction(registry):
    fc = {
        "items.quantity": {"min": 2, "max": 4},
        "items.price": {"min": 5, "max": 60},
        "total": {"min": 50, "max": 150},
        "currency": {"enum_values": ["CAD"]},
        "cart_id": {"regex": r"^CART_[0-9]{5}$"},
        "items": {"min": 2, "max": 3},
    }
    plan, recs = generate(registry, entity="cart", constraints={"field_constraints": fc})
    assert [e for r in recs for e in validate_record(plan.schema, r)] == []
    for r in recs:
        assert 50 <= r["total"] <= 150 and r["currency"] == "CAD"
        assert 2 <= len(r["items"]) <= 3
        assert all(2 <= i["quantity"] <= 4 and 5 <= i["price"] <= 60 for i in r["items"])
        assert re.fullmatch(r"CART_[0-9]{5}", r["cart_id"])
    assert score_records("cart", recs) >= 0.9


def test_narrow_total_window_is_solved_not_retried(registry):
    plan, recs = generate(
        registry,
        n=200,
        entity="order",
        constraints={"field_constraints": {"total": {"min": 99.5, "max": 100.5}}},
    )
    assert all(99.5 <= o["total"] <= 100.5 for o in recs)
    assert [e for r in recs for e in validate_record(plan.schema, r)] == []


def test_exact_total_unreachable_is_refused_up_front(registry):
    """$4.01 from $2.00 unit prices passes the range check, but no basket of whole units
    reaches it: the planner's probe finds that before the first record."""
    req = GenerateRequest.model_validate(
        {
            "entity": "cart",
            "count": 50,
            "seed": 1,
            "constraints": {
                "field_constraints": {
                    "items.price": {"min": 2, "max": 2},
                    "items.quantity": {"min": 1, "max": 5},
                    "items": {"min": 1, "max": 1},
                    "subtotal": {"min": 4.01, "max": 4.01},
                }
            },
        }
    )
    with pytest.raises(RequestInvalid, match="too narrow for a basket"):
        build_plan(req, registry)


def test_exact_subtotal_is_met_with_whole_units(registry):
    """A window narrower than a unit price: one line at quantity 1 takes the exact price."""
    plan, recs = generate(
        registry,
        n=200,
        entity="cart",
        constraints={"field_constraints": {"subtotal": {"min": 64, "max": 64}}},
    )
    assert {r["subtotal"] for r in recs} == {64.0}
    assert all(validate_record(plan.schema, r) == [] for r in recs)


def test_object_overrides_are_not_shared_between_records(registry):
    _, recs = generate(
        registry,
        n=3,
        entity="order",
        scenarios=[
            {
                "name": "fixed_address",
                "count": 3,
                "overrides": {
                    "shipping_address": '{"line1": "1 Main St", "city": "Austin", "state": "TX", '
                    '"postal_code": "73301", "country": "US"}'
                },
            }
        ],
    )
    assert all(r["shipping_address"]["city"] == "Austin" for r in recs)
    recs[0]["shipping_address"]["city"] = "Changed"
    assert [r["shipping_address"]["city"] for r in recs[1:]] == ["Austin", "Austin"]
