"""Generation-core throughput: ours vs the naive per-field Faker generator; then what
planning costs at the request bounds (bench/planning.py)."""

from __future__ import annotations

import time

from bench import planning
from bench.naive import naive_carts
from services.core.coherence import score_records
from services.core.formats import encode_all
from services.core.generate import generate_records
from services.core.models import GenerateRequest, OutputFormat
from services.core.plan import build_plan
from services.core.pools import GENERATOR_VERSION, get_pools
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record


def _rate(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t)
    return n / best


def run() -> dict[str, float]:
    get_pools()
    reg = SchemaRegistry.load()
    n = 20_000
    plan = build_plan(GenerateRequest(entity="cart", count=n, seed=1), reg)
    ours = _rate(lambda k: generate_records(plan, 0, k), n)
    ours_json = _rate(
        lambda k: encode_all(plan.schema, OutputFormat.JSON, generate_records(plan, 0, k)), n
    )
    naive = _rate(naive_carts, 4_000)
    recs = generate_records(plan, 0, 2000)
    invalid = sum(bool(validate_record(plan.schema, r)) for r in recs)
    naive_coh = score_records("cart", naive_carts(500))
    print(f"core ({GENERATOR_VERSION}), one core, best of 3:")
    print(f"  carts/s ours (records)          {ours:>10,.0f}")
    print(f"  carts/s ours (records + JSON)   {ours_json:>10,.0f}")
    print(f"  carts/s naive per-field Faker   {naive:>10,.0f}")
    print(f"  ratio ours/naive                {ours / naive:>10.1f}x   (target >= 5x)")
    print(
        f"  coherence ours {score_records('cart', recs):.3f}, naive {naive_coh:.3f}; "
        f"invalid ours {invalid}/2000"
    )
    out = {"carts_per_s": ours, "naive_carts_per_s": naive, "ratio": ours / naive}
    for entity in reg.names():
        p = build_plan(GenerateRequest(entity=entity, count=n, seed=1), reg)
        r = _rate(lambda k, p=p: generate_records(p, 0, k), n)
        out[f"{entity}_per_s"] = r
        print(f"  {entity:<8} records/s           {r:>10,.0f}")
    out.update(planning.run())
    return out


if __name__ == "__main__":
    run()
