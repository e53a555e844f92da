"""Planning cost at the bounds: the worst request each limit accepts, and hostile ones.

Every bound is checked before any work, so the time to plan (or refuse) the largest
request the defaults allow is what one request can cost a process before it makes a
record. Regex timings are cold (caches cleared): a caller can always send a new pattern.
"""

from __future__ import annotations

import re
import time
from typing import Any

import re2

from services.core import regexgen
from services.core.errors import RequestInvalid
from services.core.generate import generate_records
from services.core.limits import Limits
from services.core.models import FieldConstraint, FieldSpec, FieldType, GenerateRequest
from services.core.plan import build_plan
from services.core.pools import get_pools
from services.core.registry import SchemaRegistry
from services.core.validate import check_value

L = Limits()
Body = dict[str, Any]


def _strings(n: int) -> list[Body]:
    return [{"name": f"f{i}", "type": "STRING"} for i in range(n)]


def _custom(fields: list[Body], constraints: Body | None = None, **kw: Any) -> Body:
    return {
        "entity": "t",
        "schema": {"fields": fields},
        "constraints": {"field_constraints": constraints or {}},
        **kw,
    }


def _deep() -> list[Body]:
    """The depth limit with 240 strings on every level: 1,928 fields."""
    level = _strings(240)
    for _ in range(L.max_depth - 1):
        level = [*_strings(240), {"name": "o", "type": "OBJECT", "nested_fields": level}]
    return level


def _arrays(depth: int) -> list[Body]:
    f: Body = {"name": "x", "type": "STRING"}
    for _ in range(depth - 1):
        f = {"name": "x", "type": "ARRAY", "nested_fields": [f]}
    return [f]


def _objects() -> list[Body]:
    return [{"name": f"o{j}", "type": "OBJECT", "nested_fields": _strings(499)} for j in range(4)]


TEN_K = "[a-z]{1000}" * 10  # longest match exactly 10,000 (RE2 counts stay <= 1,000)
# ~96k of the 100k RE2 budget: 70 distinct Unicode classes compile slowest of all.
COSTLY = "".join(f"[\\w{chr(0xE0 + i)}]" for i in range(70))
WORDS = "(" + "|".join(f"w{i:03d}" for i in range(199)) + ")"  # 999 characters
ENUM = [f"{i:04d}" + "v" * 996 for i in range(L.max_enum_values)]

CASES: list[tuple[str, Body]] = [
    ("depth 8, 1,928 fields", _custom(_deep(), count=100)),
    ("2,000 fields (4 objects x 499)", _custom(_objects(), count=1000)),
    (
        "2,000 fields, 1,996 constraints",
        _custom(
            _objects(),
            {f"o{j}.f{i}": {"max_length": 10} for j in range(4) for i in range(499)},
            count=1000,
        ),
    ),
    (
        "1,000 scenarios x 10 overrides of 100 chars",
        _custom(
            _strings(10),
            {f"f{i}": {"regex": "[a-z]{100}"} for i in range(10)},
            count=1000,
            scenarios=[
                {"name": f"s{j}", "overrides": {f"f{i}": "a" * 100 for i in range(10)}}
                for j in range(L.max_scenarios)
            ],
        ),
    ),
    (
        "100 overrides of 10,000 chars, 10k regex",
        _custom(
            _strings(1),
            {"f0": {"regex": TEN_K}},
            count=100,
            scenarios=[{"name": f"s{j}", "overrides": {"f0": "a" * 10_000}} for j in range(100)],
        ),
    ),
    ("regex of 70 Unicode classes, ~96k RE2 cost", _custom(_strings(1), {"f0": {"regex": COSTLY}})),
    ("regex of 1,000 chars, 199 branches", _custom(_strings(1), {"f0": {"regex": WORDS}})),
    (
        "regex (a|bbb){0,1000}, length 2,000",
        _custom(
            _strings(1),
            {"f0": {"regex": "(a|bbb){0,1000}", "min_length": 2000, "max_length": 2000}},
        ),
    ),
    (
        "enum of 1,000 x 1,000 chars + regex",
        _custom(
            [{"name": "e", "type": "ENUM"}], {"e": {"enum_values": ENUM, "regex": "[0-9]{4}v{996}"}}
        ),
    ),
    (
        "refused: 10,000 scenarios",
        {
            "entity": "cart",
            "count": 10_000,
            "scenarios": [{"name": f"s{i}"} for i in range(10_000)],
        },
    ),
    ("refused: 10,000 fields x 1,000", _custom(_strings(10_000), count=1000)),
    ("refused: arrays nested 50 deep", _custom(_arrays(50), count=5)),
    (
        "refused: (a{0,1000}){0,1000}",
        _custom(_strings(1), {"f0": {"regex": "(a{0,1000}){0,1000}"}}),
    ),
]


def _cold() -> None:
    re2.purge()  # the wrapper's own cache of compiled patterns
    regexgen.compile_pattern.cache_clear()
    regexgen.allowed_lengths.cache_clear()
    regexgen._atom_matcher.cache_clear()


def _plan_ms(
    reg: SchemaRegistry, req: GenerateRequest, limits: Limits = L, repeat: int = 3
) -> tuple[float, str]:
    best, outcome = float("inf"), ""
    for _ in range(repeat):
        _cold()
        t = time.perf_counter()
        try:
            build_plan(req, reg, limits)
            outcome = "planned"
        except RequestInvalid as exc:
            outcome = f"refused: {exc.errors[0].message[:60]}"
        best = min(best, time.perf_counter() - t)
    return best * 1e3, outcome


def _redos() -> tuple[float, float, int]:
    """(a+)+$: RE2 on 10,000 a's and '!' vs Python's re on far fewer."""
    f = FieldSpec(name="s", type=FieldType.STRING, constraint=FieldConstraint(regex="(a+)+$"))
    check_value(f, "a", "s")  # compiled once, as the planner would have
    value = "a" * 10_000 + "!"
    t = time.perf_counter()
    assert check_value(f, value, "s")
    ours = time.perf_counter() - t
    n = 22
    t = time.perf_counter()
    assert re.fullmatch("(a+)+$", "a" * n + "!") is None
    return ours * 1e3, (time.perf_counter() - t) * 1e3, n


def _costliest_record_ms(reg: SchemaRegistry) -> tuple[float, int]:
    """A record near the per-record cost cap: 1,000 strings of at least 180 characters."""
    body = _custom(
        [{"name": "a", "type": "ARRAY"}],
        {"a": {"min": 1000, "max": 1000, "min_length": 180}},
        count=20,
        seed=1,
    )
    plan = build_plan(GenerateRequest.model_validate(body), reg)
    t = time.perf_counter()
    generate_records(plan, 0, 20)
    return (time.perf_counter() - t) / 20 * 1e3, L.max_record_cost


def run() -> dict[str, float]:
    get_pools()
    reg = SchemaRegistry.load()
    out: dict[str, float] = {}
    print("planning at the bounds (default limits; cold regex caches; best of 3):")
    for label, body in CASES:
        ms, outcome = _plan_ms(reg, GenerateRequest.model_validate(body))
        out[f"plan_ms[{label}]"] = ms
        print(f"  {label:<44} {ms:>8.1f} ms  {outcome}")
    # Planning is linear in scenarios: 10,000 (the limit raised) took ~5 s before.
    many = GenerateRequest(entity="cart", scenarios=[{"name": f"s{i}"} for i in range(10_000)])
    ms, outcome = _plan_ms(reg, many, Limits(max_scenarios=10_000))
    out["plan_ms[10,000 scenarios, limit raised]"] = ms
    print(f"  {'10,000 scenarios (max_scenarios=10,000)':<44} {ms:>8.1f} ms  {outcome}")
    ours, python, n = _redos()
    out["redos_re2_ms"], out["redos_python_ms"] = ours, python
    print(
        f"  (a+)+$ on 10,000 a's + '!': RE2 {ours:.2f} ms (target < 50 ms); "
        f"Python re on {n} a's + '!': {python:,.0f} ms (doubles per extra a)"
    )
    per_record, cap = _costliest_record_ms(reg)
    out["costliest_record_ms"] = per_record
    print(f"  a record near the cost cap ({cap:,} steps): {per_record:.1f} ms")
    return out


if __name__ == "__main__":
    run()
