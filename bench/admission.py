"""Admit once: what planning costs a request, planned fresh or bound from a kept plan.

A gRPC request is planned by the bridge (to refuse a bad one before it is logged), the
router (agents publish straight to Kafka) and the path. Each process keeps its plans by
request shape (services/core/admission.py), so a request of a shape it has seen is only
bound to its id, seed and anchor. The figures: microseconds per planning, best of 5
rounds, for the shapes callers send most and one with words and scenarios.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.core.admission import Planner, admit
from services.core.limits import Limits
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.pools import get_pools
from services.core.registry import SchemaRegistry

#: Planning calls one gRPC request costs the services (bridge, router, path).
PLANNINGS = 3
ROUNDS, CALLS = 5, 400
NOW = datetime(2026, 12, 7, tzinfo=UTC)

SHAPES: list[tuple[str, dict[str, Any]]] = [
    ("10 carts", {"entity": "cart", "count": 10}),
    (
        "100 orders, 2 scenarios",
        {
            "entity": "order",
            "count": 100,
            "scenarios": [
                {"name": "happy", "count": 80},
                {"name": "returned", "count": 20, "overrides": {"status": "returned"}},
            ],
        },
    ),
    (
        "50 carts, words + hints",
        {
            "entity": "cart",
            "count": 50,
            "context": "coherent shopping carts for marathon runners, over $200, 3-5 items",
            "hints": ["coherent", "realistic"],
        },
    ),
]


def _best_us(fn: Any) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for i in range(CALLS):
            fn(i)
        best = min(best, (time.perf_counter() - t) / CALLS)
    return best * 1e6


def _fresh(asked: GenerateRequest, reg: SchemaRegistry, limits: Limits) -> Callable[[int], Any]:
    def plan(i: int) -> None:
        req = asked.model_copy(update={"request_id": f"r{i}", "seed": i, "anchor": NOW})
        build_plan(req, reg, limits)

    return plan


def _kept(asked: GenerateRequest, planner: Planner) -> Callable[[int], Any]:
    def plan(i: int) -> None:
        admit(asked, planner, request_id=f"r{i}", seed=i, now=NOW)

    return plan


def run() -> dict[str, float]:
    get_pools()
    reg, limits = SchemaRegistry.load(), Limits()
    out: dict[str, float] = {}
    print(f"admit once: planning per request, us (best of {ROUNDS} x {CALLS}):")
    head = f"  {'shape':<26} {'fresh':>8} {'kept':>8} {'x':>6}"
    print(f"{head}   per gRPC request ({PLANNINGS} plannings)")
    for label, body in SHAPES:
        asked = GenerateRequest.model_validate(body)
        a, b = _best_us(_fresh(asked, reg, limits)), _best_us(_kept(asked, Planner(reg, limits)))
        saved = PLANNINGS * (a - b)
        out[f"plan_us_fresh[{label}]"], out[f"plan_us_kept[{label}]"] = a, b
        out[f"plan_us_saved_per_request[{label}]"] = saved
        print(
            f"  {label:<26} {a:>8.0f} {b:>8.0f} {a / b:>5.1f}x   "
            f"{PLANNINGS * a:,.0f} -> {PLANNINGS * b:,.0f} us, {saved:,.0f} us saved"
        )
    return out


if __name__ == "__main__":
    run()
