import pytest

from services.core.errors import RequestInvalid
from services.core.models import GenerateRequest
from services.core.plan import Limits, build_plan


def errors_of(registry, limits=None, **req):
    with pytest.raises(RequestInvalid) as exc:
        build_plan(GenerateRequest.model_validate(req), registry, limits)
    return {e.path: e.message for e in exc.value.errors}


def test_count_zero_means_default(registry):
    plan = build_plan(GenerateRequest(entity="user"), registry, Limits(default_count=7))
    assert plan.count == 7
    assert plan.scenario_counts() == {"default": 7}


def test_count_zero_with_scenarios_means_their_sum(registry):
    req = GenerateRequest(
        entity="cart", scenarios=[{"name": "a", "count": 3}, {"name": "b", "count": 4}]
    )
    assert build_plan(req, registry).count == 7


def test_unknown_entity(registry):
    errs = errors_of(registry, entity="spaceship", count=5)
    assert "unknown entity 'spaceship'" in errs["entity"]
    assert "cart" in errs["entity"]


def test_negative_and_too_large_counts(registry):
    assert "count must be >= 0" in errors_of(registry, entity="cart", count=-1)["count"]
    errs = errors_of(registry, Limits(max_records=100), entity="cart", count=101)
    assert "above the limit of 100" in errs["count"]


def test_scenario_counts_must_add_up(registry):
    errs = errors_of(
        registry,
        entity="cart",
        count=10,
        scenarios=[{"name": "a", "count": 3}, {"name": "b", "count": 4}],
    )
    assert errs["scenarios"] == "scenario counts add up to 7 but count is 10"


def test_every_problem_reported_at_once_with_paths(registry):
    errs = errors_of(
        registry,
        entity="cart",
        count=-5,
        constraints={
            "field_constraints": {
                "items.quantity": {"min": 9, "max": 2},
                "cart_id": {"enum_values": ["a"], "regex": "([a-z"},
                "nonexistent": {"min": 1},
            }
        },
        scenarios=[{"name": "s", "count": 1, "overrides": {"total": "abc"}}],
    )
    assert "count" in errs
    assert "above max" in errs["constraints.field_constraints[items.quantity].min"]
    assert "need an ENUM field" in errs["constraints.field_constraints[cart_id].enum_values"]
    assert "invalid regex" in errs["constraints.field_constraints[cart_id].regex"]
    assert "no field 'nonexistent'" in errs["constraints.field_constraints[nonexistent]"]
    assert "not a valid FLOAT" in errs["scenarios[0].overrides[total]"]


def test_override_outside_constraint_is_refused(registry):
    errs = errors_of(
        registry,
        entity="review",
        count=2,
        scenarios=[{"name": "s", "count": 2, "overrides": {"rating": "9"}}],
    )
    assert "above max 5" in errs["scenarios[0].overrides[rating]"]


def test_impossible_basket_constraints_fail_up_front(registry):
    errs = errors_of(
        registry,
        entity="cart",
        count=3,
        constraints={"field_constraints": {"items.price": {"min": 100}, "total": {"max": 50}}},
    )
    assert "no basket satisfies" in errs["constraints.field_constraints"]


def test_custom_schema_problems(registry):
    errs = errors_of(
        registry,
        entity="ticket",
        count=3,
        schema={
            "fields": [
                {"name": "status", "type": "ENUM"},
                {"name": "meta", "type": "OBJECT"},
                {"name": "code", "type": "STRING"},
            ]
        },
        constraints={"field_constraints": {"code": {"regex": "(?=x)abc"}}},
    )
    assert "ENUM field needs enum_values" in errs["schema.fields.status"]
    assert "needs nested_fields" in errs["schema.fields.meta"]
    assert "unsupported regex" in errs["constraints.field_constraints[code].regex"]


def test_integer_range_without_integers(registry):
    errs = errors_of(
        registry,
        entity="review",
        count=1,
        constraints={"field_constraints": {"rating": {"min": 2.2, "max": 2.8}}},
    )
    assert "no integer" in errs["constraints.field_constraints[rating]"]


def test_values_too_large_for_a_record_are_refused_up_front(registry):
    errs = errors_of(
        registry,
        entity="blob",
        count=1,
        schema={
            "fields": [
                {"name": "text", "type": "STRING"},
                {"name": "tags", "type": "ARRAY"},
                {"name": "code", "type": "STRING"},
            ]
        },
        constraints={
            "field_constraints": {
                "text": {"min_length": 10**9, "max_length": 10**9},
                "tags": {"min": 10**9, "max": 10**9},
                "code": {"regex": "^a{100000000}$"},
            }
        },
    )
    assert "must be 0..10000" in errs["constraints.field_constraints[text].min_length"]
    assert "at most 1000 items" in errs["constraints.field_constraints[tags].max"]
    assert "longer than 10000" in errs["constraints.field_constraints[code].regex"]
