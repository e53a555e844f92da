"""Turns a request into a checked, resolved generation plan, or every reason it can't.

Everything that could fail mid-stream is decided here, before the first record: the
schema, merged constraints, scenario slots, coerced overrides, basket feasibility.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.core import edgecases, lexicon, phrases
from services.core.bounds import check_output, check_request
from services.core.entities import COMPOSERS, Composer, lookup
from services.core.errors import RequestInvalid
from services.core.intent import Intent, Recognizer, ScopeIntent, interpret, scenario_scope
from services.core.limits import Limits
from services.core.models import (
    DEFAULT_ANCHOR,
    EntitySchema,
    FieldError,
    FieldSpec,
    FieldType,
    GenerateRequest,
    Scenario,
    clip,
)
from services.core.pools import Occasion
from services.core.problems import MAX_REPORTED, Problems
from services.core.registry import (
    SchemaRegistry,
    check_constraint,
    check_fields,
    fields_from_request,
)
from services.core.shaping import Shaping, shape, with_constraints
from services.core.validate import check_value, with_defect_columns
from services.core.values import utc

__all__ = ["Limits", "Plan", "Slot", "build_plan"]

# What reads a request's words, in priority order where two find the same span.
RECOGNIZERS: list[Recognizer] = [phrases.recognize, edgecases.recognize, lexicon.recognize]

DEFAULT_SCENARIO = "default"


@dataclass(frozen=True)
class Slot:
    name: str
    start: int
    stop: int
    overrides: dict[str, Any]
    # What the request's words (context, hints, this scenario's description) asked of
    # these records: themes, constraints, edge cases (services/core/intent.py).
    intent: ScopeIntent = field(default_factory=ScopeIntent)


@dataclass(frozen=True)
class Plan:
    request: GenerateRequest
    schema: EntitySchema
    count: int
    slots: tuple[Slot, ...]
    seed: int
    anchor: datetime
    base_seed: int
    composer: Composer | None
    # Fields whose request constraints a composer does not model: regenerated generically.
    enforce: tuple[str, ...] = field(default=())
    intent: Intent = field(default_factory=Intent)
    # Per scenario, where its words changed them: its own composer (narrower bounds), its
    # own fields (custom schemas), and the occasions its records draw from.
    composers: dict[str, Composer] = field(default_factory=dict)
    fields_by_slot: dict[str, list[FieldSpec]] = field(default_factory=dict)
    occasions: dict[str, tuple[Occasion, ...]] = field(default_factory=dict)
    edges: dict[str, edgecases.EdgePlan] = field(default_factory=dict)  # edge-case scenarios
    _stops: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._stops.extend(s.stop for s in self.slots)

    @property
    def output_schema(self) -> EntitySchema:
        """The schema as the output shows it: a defect request's records carry the defect
        keys, so its CSV, SQL and Parquet have them as columns (and allow missing fields)."""
        if self.request.defect_triggering or self.edges:
            return with_defect_columns(self.schema)
        return self.schema

    def edge_case_counts(self) -> dict[str, int]:
        """Records per edge-case class, known before any record is made."""
        out: dict[str, int] = {}
        for s in self.slots:
            if (ep := self.edges.get(s.name)) is not None:
                for k, n in ep.counts(s.stop - s.start).items():
                    out[k] = out.get(k, 0) + n
        return out

    def scenario_counts(self) -> dict[str, int]:
        return {s.name: s.stop - s.start for s in self.slots}

    def slot_for(self, index: int) -> Slot:
        """The slot holding record `index` (a bisect: plans may have many scenarios)."""
        i = bisect.bisect_right(self._stops, index)
        if index < 0 or i >= len(self.slots):
            raise IndexError(index)
        return self.slots[i]


def fingerprint(request: GenerateRequest) -> bytes:
    """Canonical bytes of what determines the records (not id, format or cache use)."""
    body = request.model_dump(
        mode="json",
        by_alias=True,
        exclude={"request_id", "output_format", "use_cache", "replay_of"},
    )
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def base_seed(request: GenerateRequest, seed: int) -> int:
    h = hashlib.sha256(fingerprint(request) + b"|" + str(seed).encode()).digest()
    return int.from_bytes(h[:8], "big")


def seed_and_anchor(request: GenerateRequest) -> tuple[int, datetime]:
    """What a plan generates from: the request's seed and anchor (pinned at ingress; a
    request planned unpinned gets seed 0 and DEFAULT_ANCHOR)."""
    seed = request.seed if request.seed is not None else 0
    return seed, utc(request.anchor) if request.anchor is not None else DEFAULT_ANCHOR


def resolve_schema(
    req: GenerateRequest, registry: SchemaRegistry, problems: Problems
) -> tuple[EntitySchema | None, bool]:
    """The entity schema and whether it is predefined (composer-backed)."""
    if req.schema_.fields:
        name = (req.entity or req.schema_.predefined_schema or "custom").strip().lower()
        fields = fields_from_request(req.schema_.fields)
        return EntitySchema(name=name, domain=req.domain or "custom", fields=fields), False
    name = req.schema_.predefined_schema or req.entity
    if not name.strip():
        problems.add(
            "entity",
            "entity is required (or schema.fields "
            f"for a custom schema); known: {', '.join(registry.names())}",
        )
        return None, False
    schema = registry.get(name)
    if schema is None:
        path = "schema.predefined_schema" if req.schema_.predefined_schema else "entity"
        problems.add(
            path,
            f"unknown entity {name!r} and no "
            f"schema.fields given; known: {', '.join(registry.names())}",
            value=name,
        )
        return None, False
    return schema, True


def apply_constraints(
    req: GenerateRequest, schema: EntitySchema, limits: Limits, problems: Problems
) -> tuple[EntitySchema, list[str]]:
    """Schema with request constraints merged in; also the paths they touch.

    Only the fields on a constrained path are copied: registry schemas are shared and
    never mutated, and most requests carry no constraints at all. One pass over the
    schema however many constraints there are (a request may carry thousands).
    """
    if not req.constraints.field_constraints:
        return schema, []
    known = paths_of(schema.fields)
    tree: dict[str, Any] = {}  # name -> [constraint | None, subtree]
    touched = []
    for path, c in req.constraints.field_constraints.items():
        if len(path) > limits.max_path_length:
            continue  # reported by the bounds check
        if path not in known:
            problems.add(
                f"constraints.field_constraints[{clip(path, 60)}]",
                f"no field {path!r} in {schema.name}",
                value=path,
            )
            continue
        *parents, leaf = path.split(".")
        node = tree
        for name in parents:
            node = node.setdefault(name, [None, {}])[1]
        node.setdefault(leaf, [None, {}])[0] = c
        touched.append(path)
    fields = _merge(schema.fields, tree)
    merged = paths_of(fields)
    for path in touched:
        f = merged[path]
        where = f"constraints.field_constraints[{clip(path, 60)}]"
        problems.extend(
            check_constraint(f.constraint, f.type, where, limits, nested=bool(f.nested_fields))
        )
    return schema.model_copy(update={"fields": fields}), touched


def paths_of(fields: list[FieldSpec], prefix: str = "") -> dict[str, FieldSpec]:
    """Every field by dotted path (the first of duplicate names, as `lookup` finds)."""
    out: dict[str, FieldSpec] = {}
    for f in fields:
        path = prefix + f.name
        if path not in out:
            out[path] = f
            out.update(
                (p, g) for p, g in paths_of(f.nested_fields, path + ".").items() if p not in out
            )
    return out


def _merge(fields: list[FieldSpec], tree: dict[str, Any]) -> list[FieldSpec]:
    """A new field list with each constraint in `tree` merged into its field's."""
    out = []
    for f in fields:
        node = tree.get(f.name)
        if node is None:
            out.append(f)
            continue
        c, sub = node
        update: dict[str, Any] = {}
        if c is not None:
            update["constraint"] = f.constraint.merged(c)
        if sub:
            update["nested_fields"] = _merge(f.nested_fields, sub)
        out.append(f.model_copy(update=update))
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _json_depth(v: Any) -> int:
    """Nesting of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict | list):
            deepest = max(deepest, d)
            stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
    return deepest


def coerce(f: FieldSpec, raw: str, limits: Limits | None = None) -> Any:
    """An override's string as the field's type; ValueError says why not. Numbers must
    be finite and within the limits' magnitude (they are summed, encoded and stored)."""
    limits = limits or Limits()
    t = f.type
    if len(raw) < 16 and raw.strip().lower() == "null":
        if f.required:
            raise ValueError("null given for a required field")
        return None
    if t in (FieldType.INTEGER, FieldType.FLOAT):
        return _number(t, raw, limits)
    if t == FieldType.BOOLEAN:
        return _boolean(raw)
    if t in (FieldType.OBJECT, FieldType.ARRAY):
        return _json(t, raw, limits)
    return raw


def _number(t: FieldType, raw: str, limits: Limits) -> int | float:
    v: int | float = int(raw) if t == FieldType.INTEGER else float(raw)
    if not math.isfinite(v):
        raise ValueError(f"{raw!r} is not a finite number")
    if abs(v) > limits.max_magnitude:
        raise ValueError(f"must be within ±{limits.max_magnitude:g}")
    return v


def _boolean(raw: str) -> bool:
    low = raw.strip().lower()
    if low not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{raw!r} is not a boolean")
    return low in ("true", "1", "yes")


def _json(t: FieldType, raw: str, limits: Limits) -> Any:
    """An OBJECT's or ARRAY's JSON, without NaN or Infinity."""
    try:
        j = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    if not isinstance(j, dict if t == FieldType.OBJECT else list):
        raise ValueError(f"expected a JSON {t.value.lower()}")
    # Values follow the schema (checked next), but `_` keys are free: keep them shallow
    # enough for every encoder.
    if _json_depth(j) > 2 * limits.max_depth + 2:
        raise ValueError("nested deeper than the schema allows")
    return j


def build_slots(
    req: GenerateRequest,
    schema: EntitySchema,
    limits: Limits,
    problems: Problems,
    check_values: bool = True,
) -> tuple[int, list[Slot]]:
    """Record counts per scenario and coerced overrides. Override values are checked
    against their fields only when the constraints are sound (`check_values`): a NaN
    bound or an uncompiled pattern cannot judge a value. No slots once anything (here or
    before) is wrong: they are only made for a plan that will run."""
    count = req.count
    if count < 0:
        problems.add(
            "count",
            f"count must be >= 0 (0 means the default, {limits.default_count})",
            value=count,
        )
        count = 0
    _check_scenarios(req, problems)
    count = _total_count(req, count, limits, problems)
    overrides = [
        _scenario_overrides(i, s, schema, limits, problems, check_values)
        for i, s in enumerate(req.scenarios)
    ]
    if problems:
        return count, []
    return count, _assign_ranges(req.scenarios, count, overrides)


def _check_scenarios(req: GenerateRequest, problems: Problems) -> None:
    """Each scenario's own count and name, then names used twice (a few of them by name,
    the rest counted: a request may repeat thousands)."""
    for i, s in enumerate(req.scenarios):
        if s.count < 0:
            problems.add(f"scenarios[{i}].count", "must be >= 0", value=s.count)
        if not s.name.strip():
            problems.add(f"scenarios[{i}].name", "must not be empty")
    dupes = [n for n, k in Counter(s.name for s in req.scenarios).items() if k > 1]
    for n in dupes[:MAX_REPORTED]:
        problems.add("scenarios", f"duplicate scenario {n!r}", value=n)
    if len(dupes) > MAX_REPORTED:
        problems.add(
            "scenarios", f"{len(dupes)} scenario names are used more than once", value=len(dupes)
        )


def _total_count(req: GenerateRequest, count: int, limits: Limits, problems: Problems) -> int:
    """The records in all: the request's count, else the scenarios' own counts when every
    scenario has one, else the default (never fewer than the scenarios fix). It must be
    within the limit and agree with the scenarios' counts."""
    given = [s.count for s in req.scenarios]
    fixed = sum(c for c in given if c > 0)
    if count == 0:
        count = fixed if fixed and all(c > 0 for c in given) else limits.default_count
        count = max(count, fixed)
    if count > limits.max_records:
        problems.add(
            "count", f"count {count} is above the limit of {limits.max_records}", value=count
        )
    free = [c for c in given if c <= 0]
    if req.scenarios and (fixed > count or (not free and fixed != count)):
        problems.add(
            "scenarios", f"scenario counts add up to {fixed} but count is {count}", value=given
        )
    return count


def _scenario_overrides(
    i: int,
    scenario: Scenario,
    schema: EntitySchema,
    limits: Limits,
    problems: Problems,
    check_values: bool,
) -> dict[str, Any]:
    """One scenario's overrides as their fields' types, each reported where it fails:
    an unknown field, a value of the wrong type, or (`check_values`) one its field's
    constraints refuse."""

    coerced: dict[str, Any] = {}
    for path, raw in scenario.overrides.items():
        if len(raw) > limits.max_text or len(path) > limits.max_path_length:
            continue  # reported by the bounds check
        where = f"scenarios[{i}].overrides[{clip(path, 60)}]"
        f = lookup(schema.fields, path)
        if f is None:
            problems.add(where, f"no field {path!r}", value=path)
            continue
        try:
            v = coerce(f, raw, limits)
        except ValueError as exc:
            problems.add(where, f"not a valid {f.type.value}: {exc}", value=raw)
            continue
        if v is not None and check_values:
            problems.extend(
                FieldError(path=where, message=e.message, value=raw)
                for e in check_value(f, v, where)
            )
        coerced[path] = v
    return coerced


def _assign_ranges(
    scenarios: list[Scenario], count: int, overrides: list[dict[str, Any]]
) -> list[Slot]:
    """Consecutive index ranges in the request's order: scenarios without a count share
    what the others leave, the first ones one record more where it does not divide."""
    if not scenarios:
        return [Slot(DEFAULT_SCENARIO, 0, count, {})]
    counts = [s.count for s in scenarios]
    free = [i for i, c in enumerate(counts) if c <= 0]
    rest = count - sum(c for c in counts if c > 0)
    for j, i in enumerate(free):
        counts[i] = rest // len(free) + (1 if j < rest % len(free) else 0)
    slots, start = [], 0
    for s, c, ov in zip(scenarios, counts, overrides, strict=True):
        slots.append(Slot(s.name, start, start + c, ov))
        start += c
    return slots


def build_plan(
    req: GenerateRequest, registry: SchemaRegistry, limits: Limits | None = None
) -> Plan:
    """Check the whole request; raise RequestInvalid listing every problem found.

    The request's own size is checked first, in time linear in it: nothing else runs for
    a request with too many or too deeply nested parts. The output's estimated size is
    checked before any record is made."""
    limits = limits or Limits()
    schema, predefined, touched, count, slots = _checked(req, registry, limits)
    composer = _composer(schema, predefined, touched)
    enforce = tuple(p for p in touched if _needs_enforcement(schema, p)) if composer else ()
    intent = interpret(req, RECOGNIZERS)
    shaping = shape(
        intent,
        schema,
        [sl.name for sl in slots],
        dict(req.constraints.field_constraints),
        {sl.name: sl.overrides for sl in slots},
    )
    intent = _check_own_fields(shaping.intent, req, slots, count)
    shaped = _shape_slots(req, schema, slots, shaping, intent, composer, touched)
    seed, anchor = seed_and_anchor(req)
    return Plan(
        request=req,
        schema=schema,
        count=count,
        slots=tuple(shaped.slots),
        seed=seed,
        anchor=anchor,
        base_seed=base_seed(req, seed),
        composer=composer,
        enforce=enforce,
        intent=intent,
        composers=shaped.composers,
        fields_by_slot=shaped.fields_by_slot,
        occasions=shaped.occasions,
        edges=shaped.edges,
    )


def _checked(
    req: GenerateRequest, registry: SchemaRegistry, limits: Limits
) -> tuple[EntitySchema, bool, list[str], int, list[Slot]]:
    """The schema (with the request's constraints), whether it is predefined, the paths
    constrained, the count and the slots; or RequestInvalid with every problem, found in
    one pass: the request's bounds (a fatal one stops there), its schema, constraints,
    fields and scenarios, then the output's estimated size."""
    problems = check_request(req, limits)
    if problems.fatal:
        problems.raise_all(limits)
    schema, predefined = resolve_schema(req, registry, problems)
    if schema is None:  # the scenarios can still be checked, without a schema
        build_slots(req, EntitySchema(name="?", fields=[]), limits, problems)
        problems.raise_all(limits)
    schema, touched = apply_constraints(req, schema, limits, problems)
    if not predefined:  # checked after merging: ENUM values may come from constraints
        problems.extend(
            FieldError(
                path=f"schema.fields.{e.path}" if e.path else "schema.fields",
                message=e.message,
                value=e.value,
            )
            for e in check_fields(schema.fields, skip=frozenset(touched), limits=limits)
        )
    count, slots = build_slots(req, schema, limits, problems, check_values=not problems)
    if not problems:
        where = "schema.fields" if not predefined else "entity"
        problems.extend(check_output(schema.fields, count, limits, where))
    problems.raise_if_any(limits)
    return schema, predefined, touched, count, slots


def _composer(schema: EntitySchema, predefined: bool, touched: list[str]) -> Composer | None:
    """The predefined entity's composer, if it has one, and if it can meet the request's
    constraints (its problems are its own few, reported as they are)."""
    composer = COMPOSERS[schema.name](schema) if predefined and schema.name in COMPOSERS else None
    if composer is not None and (errs := composer.check_bounds(touched) or composer.check(touched)):
        raise RequestInvalid(errs)
    return composer


@dataclass
class _Shaped:
    """The slots as the request's words shape them, and what each scenario draws from."""

    slots: list[Slot] = field(default_factory=list)
    composers: dict[str, Composer] = field(default_factory=dict)
    fields_by_slot: dict[str, list[FieldSpec]] = field(default_factory=dict)
    occasions: dict[str, tuple[Occasion, ...]] = field(default_factory=dict)
    edges: dict[str, edgecases.EdgePlan] = field(default_factory=dict)


def _shape_slots(
    req: GenerateRequest,
    schema: EntitySchema,
    slots: list[Slot],
    shaping: Shaping,
    intent: Intent,
    composer: Composer | None,
    touched: list[str],
) -> _Shaped:
    """Each slot with what the words asked of it: overrides (the request's own win),
    edge cases, occasions, and where they constrain fields, its own fields and composer."""
    out = _Shaped()
    for i, sl in enumerate(slots):
        sh = shaping.slots[sl.name]
        merged = _merged_intent(sl.name, intent)
        wanted = merged.edge_cases or ((edgecases.ALL,) if req.defect_triggering else ())
        if wanted and (ep := edgecases.edge_plan(schema, wanted)) is not None:
            out.edges[sl.name] = ep
        out.slots.append(Slot(sl.name, sl.start, sl.stop, {**sh.overrides, **sl.overrides}, merged))
        if merged.themes and (occ := lexicon.resolve(merged.themes)):
            out.occasions[sl.name] = occ
        if not sh.constraints:
            continue
        slot_schema = with_constraints(schema, sh.constraints)
        out.fields_by_slot[sl.name] = slot_schema.fields
        if composer is not None:
            paths = [*touched, *sh.constraints]
            out.composers[sl.name] = _slot_composer(i, sl.name, schema, slot_schema, paths, intent)
    return out


def _slot_composer(
    i: int,
    name: str,
    schema: EntitySchema,
    slot_schema: EntitySchema,
    paths: list[str],
    intent: Intent,
) -> Composer:
    """Scenario `i`'s own composer, for the bounds its words narrowed. Words it cannot
    meet are reported at the words (the scenario's description, else the context), not
    at fields the caller never named."""
    c = COMPOSERS[schema.name](slot_schema)
    if errs := c.check_bounds(paths) or c.check(paths):
        where = (
            f"scenarios[{i}].description"
            if any(u.scope == scenario_scope(name) for u in intent.understood)
            else "context"
        )
        raise RequestInvalid(
            [
                FieldError(path=where, message=f"{e.message} (from the request's words)")
                for e in errs
            ]
        )
    return c


def _check_own_fields(
    intent: Intent, req: GenerateRequest, slots: list[Slot], count: int
) -> Intent:
    """Words about the request's own fields ("as SQL", "70% happy path") are checked
    against those fields, which win: a disagreement is reported, never acted on."""
    contradictions, unplaced = list(intent.contradictions), []
    shares = {s.name.lower(): (s.stop - s.start) for s in slots}
    for u in intent.understood:
        m = u.match
        if m is None:
            continue
        if m.output_format and m.output_format != req.output_format.value:
            contradictions.append(
                f"{u.scope}: {u.phrase!r} contradicts output_format {req.output_format.value}, "
                "which applies"
            )
        if m.scenario_share:
            name, pct = m.scenario_share
            if name not in shares:
                unplaced.append(u)
                continue
            got = shares[name] * 100 / count if count else 0.0
            if abs(got - pct) * count > 100:  # more than one record away
                contradictions.append(
                    f"{u.scope}: {u.phrase!r} contradicts the scenario counts ({name}: "
                    f"{shares[name]} of {count} = {got:g}%), which apply"
                )
    if not unplaced and len(contradictions) == len(intent.contradictions):
        return intent
    return replace(
        intent,
        understood=tuple(u for u in intent.understood if u not in unplaced),
        not_understood=(
            *intent.not_understood,
            *(f"{u.scope}: {u.phrase} (no scenario named so)" for u in unplaced),
        ),
        contradictions=tuple(contradictions),
    )


def _merged_intent(name: str, intent: Intent) -> ScopeIntent:
    """The effects of the request's words on one scenario: its own, then the request's."""
    own = intent.scenarios.get(name, ScopeIntent())
    req = intent.request
    return ScopeIntent(
        themes=tuple(dict.fromkeys((*own.themes, *req.themes))),
        constraints=(*req.constraints, *own.constraints),
        overrides=(*req.overrides, *own.overrides),
        edge_cases=tuple(dict.fromkeys((*req.edge_cases, *own.edge_cases))),
    )


def _needs_enforcement(schema: EntitySchema, path: str) -> bool:
    f = lookup(schema.fields, path)
    c = f.constraint if f else None
    return bool(
        f
        and c
        and f.type
        not in (
            FieldType.INTEGER,
            FieldType.FLOAT,
            FieldType.ENUM,
            FieldType.ARRAY,
            FieldType.OBJECT,
        )
        and (c.regex is not None or c.min_length is not None or c.max_length is not None)
    )
