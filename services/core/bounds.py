"""Cost bounds: what a request may ask for, checked before any work is done for it.

`check_request` looks only at the request (sizes, counts, nesting, numbers, anchor) and
runs in time linear in its size, without recursion, so even a hostile request is cheap
to refuse. `check_output` runs once the schema is resolved: it estimates the JSON size
and the generation cost of a record from the schema and refuses what would be too big.
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any, NamedTuple

from services.core import regexgen
from services.core.errors import UnsupportedRegex
from services.core.limits import Limits
from services.core.models import FieldError, FieldSpec, FieldType, GenerateRequest, clip
from services.core.problems import Problems
from services.core.values import array_bounds

INT64 = 1 << 63


def _key(path: str) -> str:
    """A caller's path as it may appear inside an error's path."""
    return clip(path, 60)


def _longer(found: Problems, path: str, text: str, n: int) -> None:
    if len(text) > n:
        found.add(path, f"longer than {n} characters", len(text))


def _unprintable(found: Problems, path: str, text: str) -> None:
    """Names are printed (logs, headers, file names): no control characters."""
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        found.add(path, f"must be printable (it contains {bad!r})")


def check_request(req: GenerateRequest, limits: Limits) -> Problems:
    """Every bound the request itself crosses (see Limits). A fatal one stops the planner;
    the others do not, as each later check is bounded on its own: lengths before parsing,
    numbers before comparing, a pattern's length and cost before compiling it."""
    found = Problems()
    for name in ("request_id", "domain", "entity"):
        _longer(found, name, getattr(req, name), limits.max_name_length)
        _unprintable(found, name, getattr(req, name))
    _longer(
        found, "schema.predefined_schema", req.schema_.predefined_schema, limits.max_name_length
    )
    _longer(found, "context", req.context, limits.max_text)
    if len(req.hints) > limits.max_hints:
        found.add("hints", f"more than {limits.max_hints}", len(req.hints), fatal=True)
    else:
        for i, h in enumerate(req.hints):
            _longer(found, f"hints[{i}]", h, limits.max_name_length)
    if req.seed is not None and not -INT64 <= req.seed < INT64:
        found.add("seed", "must fit in 64 bits", req.seed)
    counts = [("count", req.count)]
    counts += [(f"scenarios[{i}].count", s.count) for i, s in enumerate(req.scenarios)]
    for path, n in counts:
        if not -INT64 <= n < INT64:  # counts are summed and printed: keep them small
            found.add(path, "must fit in 64 bits", n, fatal=True)
            break
    if req.anchor is not None and not _anchor_ok(req, limits):
        found.add(
            "anchor",
            f"must lie in the years {limits.min_anchor_year}..{limits.max_anchor_year}",
            req.anchor.isoformat(),
        )
    _schema(req, limits, found)
    _constraints(req, limits, found)
    _scenarios(req, limits, found)
    return found


def _anchor_ok(req: GenerateRequest, limits: Limits) -> bool:
    """Times are generated up to a few years before the anchor, and stamped with 4-digit
    years: an anchor near year 1 or 9999 would overflow mid-stream."""
    assert req.anchor is not None
    a = req.anchor
    if not limits.min_anchor_year <= a.year <= limits.max_anchor_year:
        return False  # checked before converting: near year 1 or 9999 that overflows
    year = (a if a.tzinfo else a.replace(tzinfo=UTC)).astimezone(UTC).year
    return limits.min_anchor_year <= year <= limits.max_anchor_year


def _schema(req: GenerateRequest, limits: Limits, found: Problems) -> None:
    """Depth, fields per object and in all, name and description lengths: one pass over
    the caller's fields, with a stack instead of recursion."""
    total = 0
    stack: list[tuple[str, list[Any], int]] = [("schema.fields", req.schema_.fields, 1)]
    while stack:
        where, fields, depth = stack.pop()
        if not fields:
            continue
        if depth > limits.max_depth:
            found.add(where, f"fields nested more than {limits.max_depth} levels deep", fatal=True)
            continue
        if len(fields) > limits.max_fields_per_object:
            found.add(
                where,
                f"{len(fields)} fields, above the limit of {limits.max_fields_per_object} "
                "per object",
                len(fields),
                fatal=True,
            )
            continue
        total += len(fields)
        if total > limits.max_fields_total:
            found.add(
                "schema.fields", f"more than {limits.max_fields_total} fields in all", fatal=True
            )
            return
        for i, f in enumerate(fields):
            if len(f.name) > limits.max_name_length:
                found.add(
                    f"{where}[{i}].name", f"longer than {limits.max_name_length} characters", f.name
                )
                continue
            _longer(
                found, f"{where}.{f.name}.description", f.description, limits.max_description_length
            )
            stack.append((f"{where}.{f.name}.nested_fields", f.nested_fields, depth + 1))


def _constraints(req: GenerateRequest, limits: Limits, found: Problems) -> None:
    """Counts and lengths, and the distinct regexes' summed RE2 cost (each is parsed here,
    linear in its length; nothing is compiled until the cost is known). Numbers are checked with
    each constraint, before anything compares them."""
    fc = req.constraints.field_constraints
    if len(fc) > limits.max_fields_total:
        found.add(
            "constraints.field_constraints",
            f"more than {limits.max_fields_total} constraints",
            len(fc),
            fatal=True,
        )
        return
    cost, seen = 0, set()
    for path, c in fc.items():
        where = f"constraints.field_constraints[{_key(path)}]"
        if len(path) > limits.max_path_length:
            found.add(where, f"path longer than {limits.max_path_length}")
            continue
        if len(c.enum_values) > limits.max_enum_values:
            found.add(
                f"{where}.enum_values",
                f"more than {limits.max_enum_values} values",
                len(c.enum_values),
                fatal=True,
            )
        if c.format is not None:
            _longer(found, f"{where}.format", c.format, limits.max_name_length)
        if c.regex is None or c.regex in seen or len(c.regex) > limits.max_regex_length:
            continue  # a long pattern is reported with its constraint, unparsed
        seen.add(c.regex)  # compiled once, counted once
        try:
            p = regexgen.compile_pattern(c.regex)
        except UnsupportedRegex:
            continue  # reported with the constraint
        if p.hi > limits.max_text:
            continue  # likewise, before its cost counts
        cost += p.cost
        if cost > limits.max_regex_cost:
            found.add(
                f"{where}.regex",
                "too costly to match in linear time (estimated RE2 program of the request's "
                f"patterns {cost:,} > {limits.max_regex_cost:,}); ASCII classes ([0-9], "
                "[A-Za-z0-9_] or (?a)) cost far less than Unicode \\d \\w",
                c.regex,
                fatal=True,
            )
            return


def _scenarios(req: GenerateRequest, limits: Limits, found: Problems) -> None:
    if len(req.scenarios) > limits.max_scenarios:
        found.add(
            "scenarios",
            f"{len(req.scenarios)} scenarios, above the limit of {limits.max_scenarios}",
            len(req.scenarios),
            fatal=True,
        )
        return
    overrides = chars = 0
    for i, s in enumerate(req.scenarios):
        _longer(found, f"scenarios[{i}].name", s.name, limits.max_name_length)
        _longer(found, f"scenarios[{i}].description", s.description, limits.max_description_length)
        overrides += len(s.overrides)
        if overrides > limits.max_overrides:
            found.add(
                f"scenarios[{i}].overrides",
                f"more than {limits.max_overrides} overrides in all scenarios",
                fatal=True,
            )
            return
        chars += sum(len(raw) for raw in s.overrides.values())
        if chars > limits.max_override_chars:
            found.add(
                f"scenarios[{i}].overrides",
                f"override values longer than {limits.max_override_chars:,} characters in all",
                fatal=True,
            )
            return
        for path, raw in s.overrides.items():
            where = f"scenarios[{i}].overrides[{_key(path)}]"
            if len(path) > limits.max_path_length:
                found.add(where, f"path longer than {limits.max_path_length}")
            elif len(raw) > limits.max_text:
                found.add(where, f"value longer than {limits.max_text} characters", len(raw))


# ---- output estimate -----------------------------------------------------------------------
# Typical and largest JSON size of a value by type, quotes included (from generated data).
_SIZES: dict[FieldType, tuple[float, float]] = {
    FieldType.STRING: (24, 100),
    FieldType.INTEGER: (4, 17),
    FieldType.FLOAT: (8, 22),
    FieldType.BOOLEAN: (5, 5),
    FieldType.DATE: (12, 12),
    FieldType.DATETIME: (22, 22),
    FieldType.EMAIL: (26, 40),
    FieldType.PHONE: (17, 23),
    FieldType.ADDRESS: (45, 80),
    FieldType.UUID: (38, 38),
}
RECORD_OVERHEAD = 40  # braces, `_index`, `_scenario`


class Estimate(NamedTuple):
    """One value or record: typical and largest JSON bytes, and generation steps at most."""

    typical: float
    largest: float
    steps: float


def _sum(parts: list[Estimate]) -> Estimate:
    return Estimate(
        sum(p.typical for p in parts), sum(p.largest for p in parts), sum(p.steps for p in parts)
    )


def _text(f: FieldSpec) -> Estimate:
    """A text value: its length bounds and regex decide its size; drawn characters and
    added words decide its steps."""
    c = f.constraint
    typ, big = _SIZES.get(f.type, (24, 100))
    steps = 1.0
    if c.regex is not None:
        try:
            p = regexgen.compile_pattern(c.regex)
        except UnsupportedRegex:
            return Estimate(typ, big, steps)
        lo, hi = max(p.lo, c.min_length or 0), min(p.hi, c.max_length or p.hi)
        return Estimate((lo + hi) / 2 + 2, hi + 2, 1 + hi)
    if c.min_length is not None:
        typ, big = max(typ, c.min_length + 2), max(big, c.min_length + 20)
        steps += c.min_length / 4  # words added one at a time, or email characters
    if c.max_length is not None:
        typ, big = min(typ, c.max_length + 2), min(big, c.max_length + 2)
    return Estimate(typ, big, steps)


def estimate_value(f: FieldSpec) -> Estimate:
    """Size and cost of one value of `f` (recursion as deep as the checked schema)."""
    t = f.type
    if t == FieldType.OBJECT:
        inner = estimate_fields(f.nested_fields)
        return Estimate(inner.typical + 2, inner.largest + 2, inner.steps + 1)
    if t == FieldType.ARRAY:
        lo, hi = array_bounds(f)
        if f.nested_fields:
            inner = estimate_fields(f.nested_fields)
            item = Estimate(inner.typical + 3, inner.largest + 3, inner.steps + 1)
        else:
            item = _text(f)
        mean = (lo + hi) / 2
        return Estimate(item.typical * mean + 2, item.largest * hi + 2, item.steps * hi + 1)
    if t == FieldType.ENUM:
        sizes = [len(v) + 2 for v in f.constraint.enum_values] or [2]
        return Estimate(sum(sizes) / len(sizes), max(sizes), 1)
    if t in (FieldType.INTEGER, FieldType.FLOAT, FieldType.BOOLEAN):
        typ, big = _SIZES[t]
        return Estimate(typ, big, 1)
    return _text(f)


def estimate_fields(fields: list[FieldSpec]) -> Estimate:
    parts = []
    for f in fields:
        v, key = estimate_value(f), len(f.name) + 4
        parts.append(Estimate(v.typical + key, v.largest + key, v.steps))
    return _sum(parts)


def estimate_record(fields: list[FieldSpec]) -> Estimate:
    e = estimate_fields(fields)
    return Estimate(e.typical + RECORD_OVERHEAD, e.largest + RECORD_OVERHEAD, e.steps + 1)


def estimate_output_bytes(fields: list[FieldSpec], count: int) -> float:
    """The typical size of `count` records' JSON (what an answer carrying them weighs)."""
    return estimate_record(fields).typical * count


def _size(n: float) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:,.1f} {unit}"
    return f"{n:,.0f} bytes"


def check_output(
    fields: list[FieldSpec], count: int, limits: Limits, where: str
) -> list[FieldError]:
    """Refuse a request whose records, estimated from the schema, are too large or too
    costly one by one, or whose whole output is too large."""
    e = estimate_record(fields)
    errs = []
    if e.largest > limits.max_record_bytes:
        errs.append(
            FieldError(
                path=where,
                message=f"a record may be ~{_size(e.largest)} of JSON (estimated from the "
                f"schema: arrays at their most items), above the limit of "
                f"{_size(limits.max_record_bytes)}",
            )
        )
    if e.steps > limits.max_record_cost:
        errs.append(
            FieldError(
                path=where,
                message=f"a record may take ~{e.steps:,.0f} generation steps (estimated from "
                f"the schema), above the limit of {limits.max_record_cost:,}",
            )
        )
    total = estimate_output_bytes(fields, count)
    if not errs and (total > limits.max_output_bytes or not math.isfinite(total)):
        errs.append(
            FieldError(
                path="count",
                value=count,
                message=f"the output is estimated at ~{_size(total)} of JSON ({count:,} records "
                f"of ~{_size(e.typical)}), above the limit of {_size(limits.max_output_bytes)}",
            )
        )
    return errs
