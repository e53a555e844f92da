"""Every constraint is met or refused: for any request, the planner either refuses it with
located errors, or every record it lets the generator make is valid (and encodable).

Hypothesis draws custom schemas of every field type (nested), hostile and ordinary
constraints, scenarios and overrides; derandomized, so CI runs the same examples each time.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.errors import RequestInvalid
from services.core.generate import generate_records
from services.core.models import FieldType, GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record

REGISTRY = SchemaRegistry.load()
RECORDS = 6  # per accepted plan: enough to cross scenarios, few enough to stay fast

NAMES = ["a", "b", "name", "email", "price", "user_id", "city", "items", "x_1", "description"]
BAD_NAMES = ["", "a.b", "a"]  # empty, dotted, and (with "a" drawn before) a duplicate
GOOD_REGEXES = [
    r"^[A-Z]{3}-\d{4}$",
    r"[a-z]+",
    r"(a+)+$",
    r"\w{3,20}",
    r"(ab|c){1,3}",
    r"x{2,5}y?",
    r"",
    r".{0,50}",
    r"(?i)[a-f0-9]{8}",
    r"[é-ÿ]{2}",
    r"\s+\S",
    r"(a|bbb){0,30}",
    r"((((a))))",
    r"(?a)\w+",
    r"\d{1,3}(\.\d{1,3}){3}",
    r"[^a-z]{3}",
    r"(?s).\Z",
    r"[\W]{2}",
    r"\D\S\W",
    r"(x|)*y",
    r"[a-z]{0,900}[0-9]{0,200}",
    r"low|HIGH|x",
]
BAD_REGEXES = [
    r"(a{0,1000}){0,1000}",
    r"(?=x)abc",
    r"a^b",
    r"\bfoo\b",
    r"[^\W\d_]+",
    r"[\x00]",
    r"a\x00",
    r"a{1001}",
    r"([0-9]{3})-\1",
    r"a++",
    r"[a-z]{0,9000}[0-9]{0,2000}",
    r"([a-z",
]
NUMBERS = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6),
    st.integers(0, 20),
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6),
    st.sampled_from([0, 1, -1, 0.5, 0.001, 2.2, 2.8, 1e15, -1e15, 1000.5, 1e-9]),
    st.sampled_from([1e16, 1e308, -1e308, math.nan, math.inf, -math.inf]),
)
GOOD_LENGTHS = st.one_of(
    st.integers(0, 40), st.sampled_from([0, 5, 6, 7, 10, 20, 21, 36, 100, 2_000, 10_000])
)
LENGTHS = st.one_of(GOOD_LENGTHS, st.sampled_from([-1, 10_001]))
TEXTS = st.sampled_from(["", "x", "low", "HIGH", "a" * 30, "é", "ok value", "a@b.io"])
BAD_TEXTS = st.sampled_from(["\x00", "a\x00b", "x" * 1001])
OVERRIDES = st.sampled_from(
    [
        "1",
        "-3",
        "1.5",
        "0",
        "1e308",
        "inf",
        "nan",
        "1e15",
        "99999999999999999999",
        "true",
        "null",
        "abc",
        "low",
        "2024-01-01",
        "2024-01-01T00:00:00Z",
        "a@b.io",
        "+1-555-123-4567",
        "[]",
        '["x"]',
        '["x", "y", "z", "w", "v", "u"]',
        "{}",
        '{"a": 1}',
        '{"a": "x", "b": NaN}',
        '{"_x": [[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]}',
        "a" * 28 + "!",
        "550e8400-e29b-41d4-a716-446655440000",
    ]
)


def rarely(draw: Any, n: int) -> bool:
    """About one time in n (Hypothesis favours the ends of a range, so not 0 == n)."""
    return bool(draw(st.integers(0, n - 1)) == n // 2)


@st.composite
def fields(draw: Any, depth: int = 1, clean: bool = False) -> list[dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    if not clean and rarely(draw, 15):
        names.append(draw(st.sampled_from(BAD_NAMES)))
    out = []
    for name in names:
        t = draw(st.sampled_from(list(FieldType)))
        f: dict[str, Any] = {"name": name, "type": t.value, "required": draw(st.booleans())}
        if t in (FieldType.OBJECT, FieldType.ARRAY) and depth < 4 and draw(st.integers(0, 3)):
            f["nested_fields"] = draw(fields(depth + 1, clean))
        elif t == FieldType.OBJECT and clean:
            f["type"] = FieldType.STRING.value  # an OBJECT needs nested fields
        elif t == FieldType.OBJECT and rarely(draw, 10) and depth < 12:
            f["nested_fields"] = draw(fields(depth + 3))  # now and then: past the depth limit
        out.append(f)
    return out


def typed_paths(fs: list[dict[str, Any]], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for f in fs:
        p = prefix + f["name"]
        out[p] = f
        out.update(typed_paths(f.get("nested_fields", []), p + "."))
    return out


@st.composite
def hostile(draw: Any) -> dict[str, Any]:
    """Any mix of constraint keys with any values."""
    c: dict[str, Any] = {}
    for key, strategy in (
        ("min", NUMBERS),
        ("max", NUMBERS),
        ("min_length", LENGTHS),
        ("max_length", LENGTHS),
        ("regex", st.sampled_from(GOOD_REGEXES + BAD_REGEXES)),
        ("enum_values", st.lists(st.one_of(TEXTS, BAD_TEXTS), max_size=4)),
    ):
        if rarely(draw, 3):
            c[key] = draw(strategy)
    return c


@st.composite
def fitting(draw: Any, f: dict[str, Any], clean: bool = False) -> dict[str, Any]:
    """A constraint of the kind the field's type takes, with values that often work."""
    lengths = GOOD_LENGTHS if clean else LENGTHS
    t = FieldType(f["type"])
    c: dict[str, Any] = {}
    if t in (FieldType.INTEGER, FieldType.FLOAT) or (t == FieldType.ARRAY and draw(st.booleans())):
        nums = st.integers(0, 8) if t == FieldType.ARRAY else NUMBERS
        if clean and t != FieldType.ARRAY:
            nums = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6))
        a, b = draw(nums), draw(nums)
        if not rarely(draw, 5) and math.isfinite(a) and math.isfinite(b):
            a, b = min(a, b), max(a, b)
        for key, v in (("min", a), ("max", b)):
            if not rarely(draw, 4):
                c[key] = v
    if t == FieldType.ENUM or (t == FieldType.STRING and not clean and rarely(draw, 6)):
        c["enum_values"] = draw(st.lists(TEXTS, min_size=1, max_size=4))
    if t in (FieldType.STRING, FieldType.ADDRESS, FieldType.ENUM) and draw(st.booleans()):
        c["regex"] = draw(st.sampled_from(GOOD_REGEXES))
    if t not in (FieldType.INTEGER, FieldType.FLOAT, FieldType.BOOLEAN, FieldType.OBJECT):
        a, b = draw(lengths), draw(lengths)
        if not rarely(draw, 5):
            a, b = min(a, b), max(a, b)
        for key, v in (("min_length", a), ("max_length", b)):
            if rarely(draw, 3):
                c[key] = v
    return c


def value_for(f: dict[str, Any]) -> st.SearchStrategy[str]:
    """Override strings of the field's type (often valid), or any of OVERRIDES."""
    typed: dict[FieldType, st.SearchStrategy[str]] = {
        FieldType.INTEGER: st.integers(-2000, 2000).map(str),
        FieldType.FLOAT: st.floats(-2000, 2000).map(repr),
        FieldType.BOOLEAN: st.sampled_from(["true", "false", "1", "no"]),
        FieldType.ARRAY: st.lists(st.sampled_from(["x", "yy", "zzz"]), max_size=7).map(
            lambda v: orjson.dumps(v).decode()
        ),
    }
    return st.one_of(typed.get(FieldType(f["type"]), TEXTS), OVERRIDES)


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    """A third of the time anything goes; otherwise a request that is mostly sound, so
    the generator, not only the refusals, meets many constraint mixes."""
    clean = not rarely(draw, 3)
    fs = draw(fields(clean=clean))
    typed = typed_paths(fs)
    known = sorted(typed)
    constraints: dict[str, Any] = {}
    for path, f in typed.items():
        if f["type"] == "ENUM" or draw(st.booleans()):
            wild = not clean and rarely(draw, 4)
            constraints[path] = draw(hostile() if wild else fitting(f, clean))
    if not clean and rarely(draw, 10):
        constraints["nope"] = {}
    names = draw(st.lists(st.sampled_from(["s", "t", "edge"]), max_size=3, unique=True))
    if names and not clean and rarely(draw, 10):
        names.append(draw(st.sampled_from(["", names[0]])))
    scenarios = []
    for name in names:
        overrides = {}
        if draw(st.booleans()):
            path = draw(st.sampled_from(known))
            overrides[path] = draw(value_for(typed[path]))
        count = 0 if clean else draw(st.sampled_from([0, 1, 3, -1]))
        scenarios.append({"name": name, "count": count, "overrides": overrides})
    req: dict[str, Any] = {
        "entity": "thing",
        "schema": {"fields": fs},
        "constraints": {"field_constraints": constraints},
        "scenarios": scenarios,
        "count": draw(st.sampled_from([0, 1, 5, 12])),
        "seed": draw(st.integers(0, 2**63 - 1)),
    }
    if not clean and rarely(draw, 4):
        anchors = ["2025-06-01T00:00:00Z", "1900-01-01T00:00:00Z", "0001-01-01T00:00:00Z"]
        req["anchor"] = draw(st.sampled_from(anchors))
    return req


def met_or_refused(body: dict[str, Any]) -> str:
    """ "refused" (with located errors) or "planned" (and every record valid)."""
    req = GenerateRequest.model_validate(body)
    try:
        plan = build_plan(req, REGISTRY)
    except RequestInvalid as exc:
        assert exc.errors
        assert all(e.path for e in exc.errors), exc.errors
        return "refused"
    records = generate_records(plan, 0, min(plan.count, RECORDS))
    for r in records:
        assert validate_record(plan.schema, r) == [], (body, r)
    orjson.dumps(records)  # every record can go out as JSON
    return "planned"


PROPERTY = settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_custom_schemas_are_met_or_refused() -> None:
    seen: Counter[str] = Counter()

    @PROPERTY
    @given(requests())
    def check(body: dict[str, Any]) -> None:
        seen[met_or_refused(body)] += 1

    check()
    assert seen["planned"] >= 100, seen  # the search reaches generation, not only refusals


def _registry_fields(fields: list[Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for f in fields:
        out[prefix + f.name] = f
        out.update(_registry_fields(f.nested_fields, f"{prefix}{f.name}."))
    return out


@st.composite
def predefined(draw: Any) -> dict[str, Any]:
    entity = draw(st.sampled_from(REGISTRY.names()))
    schema = REGISTRY.get(entity)
    assert schema is not None
    typed = {p: {"type": f.type.value} for p, f in _registry_fields(schema.fields).items()}
    where = st.sampled_from(sorted(typed))
    constraints = {}
    for path in draw(st.lists(where, max_size=3, unique=True)):
        wild = rarely(draw, 4)
        constraints[path] = draw(hostile() if wild else fitting(typed[path], clean=True))
    overrides = {}
    if draw(st.booleans()):
        path = draw(where)
        overrides[path] = draw(value_for(typed[path]))
    return {
        "entity": entity,
        "constraints": {"field_constraints": constraints},
        "scenarios": [{"name": "s", "overrides": overrides}],
        "count": draw(st.integers(1, 8)),
        "seed": draw(st.integers(0, 1000)),
    }


def test_predefined_entities_are_met_or_refused() -> None:
    seen: Counter[str] = Counter()

    @PROPERTY
    @given(predefined())
    def check(body: dict[str, Any]) -> None:
        seen[met_or_refused(body)] += 1

    check()
    assert seen["planned"] >= 100, seen
