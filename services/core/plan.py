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
    clip,
)
from services.core.pools import Occasion
from services.core.registry import (
    MAX_REPORTED,
    SchemaRegistry,
    check_constraint,
    check_fields,
    fields_from_request,
)
from services.core.shaping import shape, with_constraints
from services.core.validate import with_defect_columns
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


def resolve_schema(
    req: GenerateRequest, registry: SchemaRegistry, errs: list[FieldError]
) -> tuple[EntitySchema | None, bool]:
    """The entity schema and whether it is predefined (composer-backed)."""
    if req.schema_.fields:
        name = (req.entity or req.schema_.predefined_schema or "custom").strip().lower()
        fields = fields_from_request(req.schema_.fields)
        return EntitySchema(name=name, domain=req.domain or "custom", fields=fields), False
    name = req.schema_.predefined_schema or req.entity
    if not name.strip():
        errs.append(
            FieldError(
                path="entity",
                message="entity is required (or schema.fields "
                f"for a custom schema); known: {', '.join(registry.names())}",
            )
        )
        return None, False
    schema = registry.get(name)
    if schema is None:
        path = "schema.predefined_schema" if req.schema_.predefined_schema else "entity"
        errs.append(
            FieldError(
                path=path,
                value=name,
                message=f"unknown entity {name!r} and no "
                f"schema.fields given; known: {', '.join(registry.names())}",
            )
        )
        return None, False
    return schema, True


def apply_constraints(
    req: GenerateRequest, schema: EntitySchema, limits: Limits, errs: list[FieldError]
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
            errs.append(
                FieldError(
                    path=f"constraints.field_constraints[{clip(path, 60)}]",
                    message=f"no field {path!r} in {schema.name}",
                    value=path,
                )
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
        errs.extend(
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
        v: int | float = int(raw) if t == FieldType.INTEGER else float(raw)
        if not math.isfinite(v):
            raise ValueError(f"{raw!r} is not a finite number")
        if abs(v) > limits.max_magnitude:
            raise ValueError(f"must be within ±{limits.max_magnitude:g}")
        return v
    if t == FieldType.BOOLEAN:
        low = raw.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{raw!r} is not a boolean")
        return low in ("true", "1", "yes")
    if t in (FieldType.OBJECT, FieldType.ARRAY):
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
    return raw


def build_slots(
    req: GenerateRequest,
    schema: EntitySchema,
    limits: Limits,
    errs: list[FieldError],
    check_values: bool = True,
) -> tuple[int, list[Slot]]:
    """Record counts per scenario and coerced overrides. Override values are checked
    against their fields only when the constraints are sound (`check_values`): a NaN
    bound or an uncompiled pattern cannot judge a value."""
    from services.core.validate import check_value  # local: validate imports plan types

    count = req.count
    given = [s.count for s in req.scenarios]
    if count < 0:
        errs.append(
            FieldError(
                path="count",
                value=count,
                message=f"count must be >= 0 (0 means the default, {limits.default_count})",
            )
        )
        count = 0
    for i, s in enumerate(req.scenarios):
        if s.count < 0:
            errs.append(
                FieldError(path=f"scenarios[{i}].count", value=s.count, message="must be >= 0")
            )
        if not s.name.strip():
            errs.append(FieldError(path=f"scenarios[{i}].name", message="must not be empty"))
    dupes = [n for n, k in Counter(s.name for s in req.scenarios).items() if k > 1]
    for n in dupes[:MAX_REPORTED]:
        errs.append(FieldError(path="scenarios", value=n, message=f"duplicate scenario {n!r}"))
    if len(dupes) > MAX_REPORTED:
        errs.append(
            FieldError(
                path="scenarios",
                value=len(dupes),
                message=f"{len(dupes)} scenario names are used more than once",
            )
        )
    fixed = sum(c for c in given if c > 0)
    if count == 0:
        count = fixed if fixed and all(c > 0 for c in given) else limits.default_count
        count = max(count, fixed)
    if count > limits.max_records:
        errs.append(
            FieldError(
                path="count",
                value=count,
                message=f"count {count} is above the limit of {limits.max_records}",
            )
        )
    if req.scenarios:
        free = [i for i, c in enumerate(given) if c <= 0]
        if fixed > count or (not free and fixed != count):
            errs.append(
                FieldError(
                    path="scenarios",
                    value=given,
                    message=f"scenario counts add up to {fixed} but count is {count}",
                )
            )
    overrides: list[dict[str, Any]] = []
    for i, s in enumerate(req.scenarios):
        coerced: dict[str, Any] = {}
        for path, raw in s.overrides.items():
            if len(raw) > limits.max_text or len(path) > limits.max_path_length:
                continue  # reported by the bounds check
            where = f"scenarios[{i}].overrides[{clip(path, 60)}]"
            f = lookup(schema.fields, path)
            if f is None:
                errs.append(FieldError(path=where, message=f"no field {path!r}", value=path))
                continue
            try:
                v = coerce(f, raw, limits)
            except ValueError as exc:
                errs.append(
                    FieldError(path=where, value=raw, message=f"not a valid {f.type.value}: {exc}")
                )
                continue
            if v is not None and check_values:
                errs.extend(
                    FieldError(path=where, message=e.message, value=raw)
                    for e in check_value(f, v, where)
                )
            coerced[path] = v
        overrides.append(coerced)
    if errs:
        return count, []
    if not req.scenarios:
        return count, [Slot(DEFAULT_SCENARIO, 0, count, {})]
    counts = list(given)
    free = [i for i, c in enumerate(given) if c <= 0]
    rest = count - fixed
    for j, i in enumerate(free):
        counts[i] = rest // len(free) + (1 if j < rest % len(free) else 0)
    slots, start = [], 0
    for s, c, ov in zip(req.scenarios, counts, overrides, strict=True):
        slots.append(Slot(s.name, start, start + c, ov))
        start += c
    return count, slots


def build_plan(
    req: GenerateRequest, registry: SchemaRegistry, limits: Limits | None = None
) -> Plan:
    """Check the whole request; raise RequestInvalid listing every problem found.

    The request's own size is checked first, in time linear in it: nothing else runs for
    a request with too many or too deeply nested parts. The output's estimated size is
    checked before any record is made."""
    limits = limits or Limits()
    found = check_request(req, limits)
    errs = found.errors
    if found.fatal:
        raise RequestInvalid(_capped(errs, limits))
    schema, predefined = resolve_schema(req, registry, errs)
    if schema is None:
        build_slots(req, EntitySchema(name="?", fields=[]), limits, errs)
        raise RequestInvalid(_capped(errs, limits))
    schema, touched = apply_constraints(req, schema, limits, errs)
    if not predefined:  # checked after merging: ENUM values may come from constraints
        errs.extend(
            FieldError(
                path=f"schema.fields.{e.path}" if e.path else "schema.fields",
                message=e.message,
                value=e.value,
            )
            for e in check_fields(schema.fields, skip=frozenset(touched), limits=limits)
        )
    count, slots = build_slots(req, schema, limits, errs, check_values=not errs)
    if not errs:
        where = "schema.fields" if not predefined else "entity"
        errs += check_output(schema.fields, count, limits, where)
    if errs:
        raise RequestInvalid(_capped(errs, limits))
    composer = COMPOSERS[schema.name](schema) if predefined and schema.name in COMPOSERS else None
    if composer is not None and (errs := composer.check_bounds(touched) or composer.check(touched)):
        raise RequestInvalid(errs)
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
    composers: dict[str, Composer] = {}
    fields_by_slot: dict[str, list[FieldSpec]] = {}
    occasions: dict[str, tuple[Occasion, ...]] = {}
    edges: dict[str, edgecases.EdgePlan] = {}
    shaped_slots = []
    for i, sl in enumerate(slots):
        sh = shaping.slots[sl.name]
        merged = _merged_intent(sl.name, intent)
        wanted = merged.edge_cases or ((edgecases.ALL,) if req.defect_triggering else ())
        if wanted and (ep := edgecases.edge_plan(schema, wanted)) is not None:
            edges[sl.name] = ep
        shaped_slots.append(
            Slot(sl.name, sl.start, sl.stop, {**sh.overrides, **sl.overrides}, merged)
        )
        if merged.themes and (occ := lexicon.resolve(merged.themes)):
            occasions[sl.name] = occ
        if not sh.constraints:
            continue
        slot_schema = with_constraints(schema, sh.constraints)
        fields_by_slot[sl.name] = slot_schema.fields
        if composer is not None:
            c = COMPOSERS[schema.name](slot_schema)
            paths = [*touched, *sh.constraints]
            if problems := c.check_bounds(paths) or c.check(paths):
                where = (
                    f"scenarios[{i}].description"
                    if any(u.scope == scenario_scope(sl.name) for u in intent.understood)
                    else "context"
                )
                raise RequestInvalid(
                    [
                        FieldError(path=where, message=f"{e.message} (from the request's words)")
                        for e in problems
                    ]
                )
            composers[sl.name] = c
    slots = shaped_slots
    seed = req.seed if req.seed is not None else 0
    anchor = utc(req.anchor) if req.anchor is not None else DEFAULT_ANCHOR
    return Plan(
        request=req,
        schema=schema,
        count=count,
        slots=tuple(slots),
        seed=seed,
        anchor=anchor,
        base_seed=base_seed(req, seed),
        composer=composer,
        enforce=enforce,
        intent=intent,
        composers=composers,
        fields_by_slot=fields_by_slot,
        occasions=occasions,
        edges=edges,
    )


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


def _capped(errs: list[FieldError], limits: Limits) -> list[FieldError]:
    """At most `max_errors` problems, then how many more there were."""
    if len(errs) <= limits.max_errors:
        return errs
    more = len(errs) - limits.max_errors
    return [
        *errs[: limits.max_errors],
        FieldError(path="(request)", value=more, message=f"and {more} more problems"),
    ]


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
