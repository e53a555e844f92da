"""Admission: a plan kept by request shape makes the same bytes as a fresh one, is checked
as a fresh one is, and the cache stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.core.admission import Planner, admit, shape_of
from services.core.errors import RequestInvalid
from services.core.formats import encode_all
from services.core.generate import generate_records
from services.core.limits import Limits
from services.core.models import GenerateRequest
from services.core.plan import Plan, build_plan

pytestmark = pytest.mark.unit

SHAPES: list[dict[str, Any]] = [
    {"entity": "cart", "count": 10},
    {
        "entity": "order",
        "count": 40,
        "context": "orders over $500 shipping to Canada",
        "hints": ["coherent"],
        "scenarios": [
            {"name": "happy", "count": 30},
            {"name": "returned", "count": 10, "overrides": {"status": "returned"}},
        ],
    },
    {"entity": "payment", "count": 25, "defect_triggering": True},
    {"entity": "review", "count": 12, "context": "angry reviews with unicode names"},
    {
        "entity": "t",
        "count": 15,
        "schema": {
            "fields": [
                {"name": "code", "type": "STRING"},
                {"name": "n", "type": "INTEGER"},
            ]
        },
        "constraints": {
            "field_constraints": {"code": {"regex": "[A-Z]{3}-[0-9]{4}"}, "n": {"min": 3}}
        },
    },
]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _bytes(plan: Plan) -> bytes:
    return encode_all(
        plan.schema, plan.request.output_format, generate_records(plan, 0, plan.count)
    )


def _request(shape: dict[str, Any], **over: Any) -> GenerateRequest:
    return GenerateRequest.model_validate({**shape, **over})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s["entity"])
def test_a_kept_plan_makes_the_bytes_a_fresh_plan_makes(registry, shape):
    planner = Planner(registry, Limits())
    first = admit(_request(shape), planner, request_id="req-1", seed=1, now=NOW)
    for i, over in enumerate(
        [
            {"seed": 7},
            {"seed": 7, "anchor": "2024-02-29T23:59:59Z"},
            {"request_id": "caller-chosen"},
            {"output_format": "CSV"},
        ]
    ):
        got = admit(_request(shape, **over), planner, request_id=f"req-{i}", seed=99, now=NOW)
        fresh = build_plan(got.request, registry, Limits())
        assert got.plan.request == got.request
        assert (got.plan.seed, got.plan.anchor, got.plan.base_seed) == (
            fresh.seed,
            fresh.anchor,
            fresh.base_seed,
        )
        assert _bytes(got.plan) == _bytes(fresh)
    assert (planner.misses, planner.hits) == (2, 3)  # CSV is another shape
    assert first.plan.request.request_id == "req-1"


def test_a_kept_shape_is_still_refused_for_its_own_id_seed_or_anchor(registry):
    planner = Planner(registry, Limits())
    planner.plan(_request(SHAPES[0], seed=1))
    for bad in (
        {"anchor": "0001-01-01T00:00:00Z"},
        {"seed": 2**64},
        {"request_id": "r" * 10_000},
    ):
        req = _request(SHAPES[0], **bad)
        with pytest.raises(RequestInvalid) as kept:
            planner.plan(req)
        with pytest.raises(RequestInvalid) as fresh:
            build_plan(req, registry, Limits())
        assert kept.value.errors == fresh.value.errors


def test_an_invalid_request_is_refused_every_time_with_every_problem(registry):
    planner = Planner(registry, Limits())
    req = _request({"entity": "cart", "count": -1, "hints": ["x" * 5000]})
    for _ in range(2):
        with pytest.raises(RequestInvalid) as exc:
            planner.plan(req)
        assert {e.path for e in exc.value.errors} >= {"count"}
    assert planner.hits == 0


def test_the_kept_plans_are_bounded_and_the_least_recent_goes(registry):
    planner = Planner(registry, Limits(), kept=3)
    for n in range(1, 6):
        planner.plan(_request(SHAPES[0], count=n))
    assert len(planner._plans) == 3
    planner.plan(_request(SHAPES[0], count=5))  # kept
    planner.plan(_request(SHAPES[0], count=1))  # gone: planned again
    assert (planner.hits, planner.misses) == (1, 6)


def test_the_shape_ignores_only_id_seed_and_anchor():
    base = _request(SHAPES[1])
    same = [base.model_copy(update={"request_id": "x", "seed": 5, "anchor": NOW})]
    other = [
        base.model_copy(update={"count": 41}),
        base.model_copy(update={"context": "orders"}),
        base.model_copy(update={"use_cache": True}),
        base.model_copy(update={"replay_of": "req-0"}),
    ]
    assert all(shape_of(r) == shape_of(base) for r in same)
    assert all(shape_of(r) != shape_of(base) for r in other)
