"""Cost bounds: what a request may ask for is checked before any work, and every crossing
is a located field error (never a Python exception, a frozen process or an endless
generator)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.core.errors import RequestInvalid
from services.core.generate import generate_records
from services.core.limits import HARD_MAX_DEPTH, Limits
from services.core.models import FieldError, GenerateRequest
from services.core.plan import build_plan
from services.core.validate import EMAIL_RE, PHONE_RE, validate_record
from services.kit.settings import Settings


def refusal(registry, limits=None, **req) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as exc:
        build_plan(GenerateRequest.model_validate(req), registry, limits)
    assert all(e.path for e in exc.value.errors)
    return {e.path: e.message for e in exc.value.errors}


def custom(fields, constraints=None, **req):
    body = {"entity": "t", "count": 5, "schema": {"fields": fields}, **req}
    if constraints:
        body["constraints"] = {"field_constraints": constraints}
    return body


def nested(depth: int, kind: str = "ARRAY") -> list[dict]:
    f: dict = {"name": "x", "type": "STRING"}
    for _ in range(depth - 1):
        f = {"name": "x", "type": kind, "nested_fields": [f]}
    return [f]


def plan_and_records(registry, body, n=20):
    plan = build_plan(GenerateRequest.model_validate(body), registry)
    recs = generate_records(plan, 0, min(plan.count, n))
    assert all(validate_record(plan.schema, r) == [] for r in recs)
    return plan, recs


# ---- shape ---------------------------------------------------------------------------
def test_nesting_beyond_the_limit_is_a_field_error(registry):
    errs = refusal(registry, **custom(nested(50)))
    (path,) = errs
    assert path.startswith("schema.fields.x.nested_fields.x.nested_fields")
    assert "nested more than 8 levels" in errs[path]
    plan_and_records(registry, custom(nested(8, "OBJECT")))


def test_a_thousand_levels_are_refused_while_parsing_not_by_recursion_error():
    with pytest.raises(ValidationError, match=f"nested more than {HARD_MAX_DEPTH} levels"):
        GenerateRequest.model_validate(custom(nested(1000)))


def test_fields_per_object_and_in_all(registry):
    many = [{"name": f"f{i}", "type": "STRING"} for i in range(10_000)]
    assert "above the limit of 500 per object" in refusal(registry, **custom(many))["schema.fields"]
    objects = [{"name": f"o{j}", "type": "OBJECT", "nested_fields": many[:499]} for j in range(5)]
    assert "more than 2000 fields in all" in refusal(registry, **custom(objects))["schema.fields"]


def test_output_estimate_names_the_estimate_and_the_limit(registry):
    fields = [{"name": f"f{i}", "type": "STRING"} for i in range(500)]
    errs = refusal(registry, **custom(fields, count=1_000_000))
    assert "the output is estimated at ~" in errs["count"]
    assert "above the limit of 2.0 GiB" in errs["count"]
    small = Limits(max_output_bytes=1 << 20)
    assert (
        "above the limit of 1.0 MiB"
        in refusal(registry, small, **custom(fields, count=200))["count"]
    )


def test_a_record_too_large_or_too_costly_is_refused(registry):
    body = custom(
        [{"name": "a", "type": "ARRAY"}],
        {"a": {"min": 1000, "max": 1000, "min_length": 2000}},
    )
    errs = refusal(registry, **body)["schema.fields"]
    assert "a record may" in errs and "above the limit of" in errs
    tall = custom(nested(8))  # 8 levels of 1..5 items: 5**7 strings at most
    assert "a record may" in refusal(registry, **tall)["schema.fields"]


def test_a_million_of_every_predefined_entity_is_still_accepted(registry):
    for entity in registry.names():
        build_plan(GenerateRequest(entity=entity, count=1_000_000), registry)


# ---- text, regexes, numbers ----------------------------------------------------------------
def test_regex_longest_match_not_only_shortest(registry):
    body = custom([{"name": "s", "type": "STRING"}], {"s": {"regex": "(a{0,1000}){0,1000}"}})
    msg = refusal(registry, **body)["constraints.field_constraints[s].regex"]
    assert "1,000,000 characters, longer than 10000" in msg


def test_regex_cost_budget_is_per_request(registry):
    fields = [{"name": f"s{i}", "type": "STRING"} for i in range(3)]
    constraints = {f"s{i}": {"regex": rf"\w{{60}}x{i}"} for i in range(3)}  # ~81k each
    errs = refusal(registry, **custom(fields, constraints))
    assert any("too costly to match in linear time" in m for m in errs.values())
    plan_and_records(registry, custom(fields[:1], dict(list(constraints.items())[:1])))


def test_a_catastrophic_override_is_decided_not_frozen(registry):
    body = custom(
        [{"name": "s", "type": "STRING"}],
        {"s": {"regex": "(a+)+$"}},
        scenarios=[{"name": "x", "overrides": {"s": "a" * 28 + "!"}}],
    )
    assert refusal(registry, **body)["scenarios[0].overrides[s]"] == "does not match (a+)+$"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 1e308, -1e16])
def test_numeric_bounds_are_finite_and_bounded(registry, bad):
    body = custom([{"name": "n", "type": "INTEGER"}], {"n": {"min": bad}})
    assert "must be" in refusal(registry, **body)["constraints.field_constraints[n].min"]


@pytest.mark.parametrize("raw", ["1e308", "inf", "nan", "-Infinity", "1e16"])
def test_numeric_overrides_are_finite_and_bounded(registry, raw):
    errs = refusal(
        registry,
        entity="cart",
        count=1,
        scenarios=[{"name": "x", "overrides": {"items.price": raw}}],
    )
    assert "not a valid FLOAT" in errs["scenarios[0].overrides[items.price]"]


def test_json_overrides_refuse_nan_and_deep_nesting(registry):
    fields = [{"name": "o", "type": "OBJECT", "nested_fields": [{"name": "a", "type": "FLOAT"}]}]
    for raw in ('{"a": NaN}', '{"_x": ' + "[" * 100 + "]" * 100 + "}", "[" * 5000 + "]" * 5000):
        body = custom(fields, scenarios=[{"name": "x", "overrides": {"o": raw}}])
        assert "not a valid OBJECT" in refusal(registry, **body)["scenarios[0].overrides[o]"]


@pytest.mark.parametrize("anchor", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_anchor_in_a_sane_range(registry, anchor):
    errs = refusal(registry, entity="cart", count=1, anchor=anchor)
    assert errs == {"anchor": "must lie in the years 1900..2200"}


def test_huge_integers_are_errors_not_crashes(registry):
    errs = refusal(registry, entity="cart", count=10**5000, seed=2**64)
    assert errs["count"] == errs["seed"] == "must fit in 64 bits"


# ---- arrays and text types: met or refused ---------------------------------------------------
@pytest.mark.parametrize(
    "bounds", [{"min": -5, "max": -1}, {"min": 1001}, {"max": 1001}, {"min": 1.5}]
)
def test_array_bounds_are_whole_and_within_the_limit(registry, bounds):
    body = custom([{"name": "a", "type": "ARRAY"}], {"a": bounds})
    errs = refusal(registry, **body)
    assert any("at most 1000 items" in m for m in errs.values())


def test_array_max_below_its_default_min_is_met(registry):
    body = custom([{"name": "a", "type": "ARRAY"}], {"a": {"max": 0}})
    _, recs = plan_and_records(registry, body)
    assert all(r["a"] == [] for r in recs)


@pytest.mark.parametrize("n", [3, 5])
def test_email_shorter_than_any_address_is_refused(registry, n):
    body = custom([{"name": "e", "type": "EMAIL"}], {"e": {"max_length": n}})
    assert (
        "shortest email address is 6"
        in refusal(registry, **body)["constraints.field_constraints[e]"]
    )


@pytest.mark.parametrize("n", [6, 7, 9])
def test_short_emails_fit_and_validate(registry, n):
    body = custom([{"name": "e", "type": "EMAIL"}], {"e": {"max_length": n}}, count=50)
    _, recs = plan_and_records(registry, body, 50)
    assert all(len(r["e"]) <= n and EMAIL_RE.match(r["e"]) for r in recs)


@pytest.mark.parametrize(
    ("ftype", "bounds", "why"),
    [
        ("PHONE", {"max_length": 6}, "phone number has 7..21"),
        ("PHONE", {"min_length": 22}, "phone number has 7..21"),
        ("UUID", {"max_length": 35}, "always 36"),
        ("DATE", {"min_length": 11}, "always 10"),
        ("DATETIME", {"max_length": 19}, "always 20"),
        ("INTEGER", {"max_length": 3}, "need a text field"),
    ],
)
def test_lengths_a_type_cannot_have_are_refused(registry, ftype, bounds, why):
    body = custom([{"name": "f", "type": ftype}], {"f": bounds})
    assert why in refusal(registry, **body)["constraints.field_constraints[f]"]


@pytest.mark.parametrize("n", [7, 8, 12, 21])
def test_phone_numbers_fit_any_allowed_length(registry, n):
    body = custom(
        [{"name": "p", "type": "PHONE"}], {"p": {"min_length": n, "max_length": n}}, count=30
    )
    _, recs = plan_and_records(registry, body, 30)
    assert all(len(r["p"]) == n and PHONE_RE.match(r["p"]) for r in recs)


def test_regex_lengths_are_met_by_construction(registry):
    """Lengths 20..22 of `[a-z]{0,9}(-[0-9]{3}){1,5}` exist but are rarely drawn: each
    record still has one, and matches."""
    body = custom(
        [{"name": "s", "type": "STRING"}],
        {"s": {"regex": "[a-z]{0,9}(-[0-9]{3}){1,5}", "min_length": 20, "max_length": 22}},
        count=200,
    )
    _, recs = plan_and_records(registry, body, 200)
    assert {len(r["s"]) for r in recs} <= {20, 21, 22}


def test_regex_needs_a_free_text_field(registry):
    body = custom([{"name": "e", "type": "EMAIL"}], {"e": {"regex": "[a-z]+@x\\.io"}})
    assert (
        "use a STRING field" in refusal(registry, **body)["constraints.field_constraints[e].regex"]
    )


def test_enum_values_must_meet_the_other_constraints(registry):
    body = custom(
        [{"name": "e", "type": "ENUM"}],
        {"e": {"enum_values": ["low", "HIGH", "a\x00"], "regex": "[a-z]+", "max_length": 3}},
    )
    errs = refusal(registry, **body)
    assert "contains a NUL" in errs["constraints.field_constraints[e].enum_values[2]"]
    assert "['HIGH']" in errs["constraints.field_constraints[e].regex"]
    assert "HIGH" in errs["constraints.field_constraints[e]"]


def test_bounds_on_derived_money_are_refused(registry):
    errs = refusal(
        registry, entity="cart", count=1, constraints={"field_constraints": {"tax": {"max": 0}}}
    )
    assert "cart derives tax" in errs["constraints.field_constraints[tax]"]


# ---- errors stay few and small -------------------------------------------------------------
def test_duplicate_names_are_reported_a_few_times_then_counted(registry):
    fields = [{"name": "a", "type": "STRING"}] * 200
    errs = refusal(registry, **custom(fields))
    assert errs["schema.fields"] == "199 duplicate field names in all"
    with pytest.raises(RequestInvalid) as exc:
        build_plan(GenerateRequest.model_validate(custom(fields)), registry)
    assert len(exc.value.errors) == 6


def test_long_paths_and_values_are_not_echoed_whole(registry):
    path = "a" * 3000
    with pytest.raises(RequestInvalid) as exc:
        build_plan(
            GenerateRequest(
                entity="cart", count=1, scenarios=[{"name": "x", "overrides": {path: "1"}}]
            ),
            registry,
        )
    (err,) = exc.value.errors
    assert err.message == "path longer than 1000" and len(err.path) < 100
    e = FieldError(path="p" * 1000, message="m" * 1000, value=["v" * 50] * 100)
    assert len(e.path) <= 300 and len(e.message) <= 500 and len(e.value) <= 100


def test_problems_beyond_the_cap_are_counted(registry):
    scenarios = [{"name": "", "count": -1} for _ in range(100)]
    with pytest.raises(RequestInvalid) as exc:
        build_plan(GenerateRequest(entity="cart", scenarios=scenarios), registry)
    *_, last = exc.value.errors
    assert len(exc.value.errors) == 51
    assert last.path == "(request)" and "more problems" in last.message


def test_scenarios_plan_in_one_pass(registry):
    scenarios = [{"name": f"s{i}", "count": i % 3} for i in range(1000)]
    plan = build_plan(GenerateRequest(entity="cart", scenarios=scenarios), registry)
    linear = [s for s in plan.slots for _ in range(s.start, s.stop)]
    assert [plan.slot_for(i) for i in range(plan.count)] == linear
    with pytest.raises(IndexError):
        plan.slot_for(plan.count)
    errs = refusal(registry, entity="cart", scenarios=[{"name": "s"}] * 1001)
    assert "above the limit of 1000" in errs["scenarios"]


# ---- settings ------------------------------------------------------------------------------
def test_limits_come_from_settings_in_one_place():
    s = Settings(max_schema_depth=3, max_number_magnitude=1e6, max_output_bytes=1 << 20)
    limits = s.limits
    assert (limits.max_depth, limits.max_magnitude, limits.max_output_bytes) == (3, 1e6, 1 << 20)
    assert Settings().limits == Limits()  # the defaults agree
    with pytest.raises(ValidationError):
        Settings(max_schema_depth=HARD_MAX_DEPTH + 1)
    with pytest.raises(ValidationError):
        Settings(min_anchor_year=2100, max_anchor_year=2000)
