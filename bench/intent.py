"""Intent without an LLM: what reading a request's words costs the traditional path.

Records/s (records + JSON, as the traditional path emits them) for the same carts without
words, with a context and scenario descriptions (themes and constraints), and with edge
cases; and the planning time of a worded request. Target: words within 20 % of none."""

from __future__ import annotations

import time

from bench.core import _rate
from services.core.formats import encode_all
from services.core.generate import generate_records
from services.core.models import GenerateRequest, OutputFormat
from services.core.plan import build_plan
from services.core.pools import GENERATOR_VERSION, get_pools
from services.core.registry import SchemaRegistry

N = 20_000


def words(n: int) -> dict:
    return {
        "context": "shopping carts for marathon runners, 3-5 items, paid with a credit card",
        "scenarios": [
            {"name": "high_value", "description": "Cart total > $500", "count": n // 4},
            {"name": "single", "description": "single item carts for new parents", "count": n // 4},
            {"name": "happy_path"},
        ],
    }


def _plan(reg: SchemaRegistry, n: int, seed: int, extra: dict):
    return build_plan(
        GenerateRequest.model_validate({"entity": "cart", "count": n, "seed": seed, **extra}), reg
    )


def run() -> dict[str, float]:
    get_pools()
    reg = SchemaRegistry.load()
    out: dict[str, float] = {}
    cases = {
        "no words": {},
        "context + scenario descriptions": words(N),
        "defect_triggering (edge cases)": {"defect_triggering": True},
    }
    print(f"intent ({GENERATOR_VERSION}), carts, records + JSON, one core, best of 3:")
    base = None
    for label, extra in cases.items():
        plan = build_plan(
            GenerateRequest.model_validate({"entity": "cart", "count": N, "seed": 1, **extra}), reg
        )
        rate = _rate(
            lambda k, p=plan: encode_all(p.schema, OutputFormat.JSON, generate_records(p, 0, k)), N
        )
        base = base or rate
        out[label] = rate
        print(f"  {label:<34} {rate:>10,.0f} /s   {rate / base:>6.0%} of no words")
    t = time.perf_counter()
    for i in range(200):
        _plan(reg, 100, i, words(100))
    plan_ms = (time.perf_counter() - t) / 200 * 1000
    out["plan_ms"] = plan_ms
    print(f"  planning a worded request          {plan_ms:>10.2f} ms   (themes, phrases, bounds)")
    print("  target: context + scenario descriptions within 20 % of no words")
    return out


if __name__ == "__main__":
    run()
